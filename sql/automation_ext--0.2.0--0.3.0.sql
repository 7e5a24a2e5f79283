-- automation_ext 0.2.0 -> 0.3.0
--
-- Frozen once released, like every upgrade script: it repeats the 0.3.0
-- objects from the install files as they were at 0.3.0. pg_test/sql/upgrade.sql
-- checks that an upgraded database has exactly the catalog of a fresh install.
-- Runs with search_path = pg_catalog; everything is schema-qualified.

-- A CHECK that pg_dump can restore onto every partition.
ALTER TABLE automation.pipeline_metrics
    DROP CONSTRAINT pipeline_metrics_status_check,
    ADD CONSTRAINT pipeline_metrics_status_check
        CHECK (status::text OPERATOR(pg_catalog.=) ANY ('{running,success,error,warning,skipped,timeout,cancelled}'::text[]));

-- Indexes per partition instead of on the partitioned table, so that a
-- restore does not make them twice (see sql/automation.sql).
DROP INDEX automation.pipeline_metrics_time_brin, automation.pipeline_metrics_pipeline_time;
CREATE INDEX pipeline_metrics_default_time_brin
    ON automation.pipeline_metrics_default USING brin (time);
CREATE INDEX pipeline_metrics_default_pipeline_time
    ON automation.pipeline_metrics_default (pipeline_name, time DESC);
DO $partitions$
DECLARE
    part name;
BEGIN
    FOR part IN SELECT c.relname FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
                 WHERE i.inhparent OPERATOR(pg_catalog.=) 'automation.pipeline_metrics'::pg_catalog.regclass
                   AND c.relname OPERATOR(pg_catalog.<>) 'pipeline_metrics_default'
    LOOP
        EXECUTE pg_catalog.format('CREATE INDEX %I ON automation.%I USING brin (time)', part OPERATOR(pg_catalog.||) '_time_brin', part);
        EXECUTE pg_catalog.format('CREATE INDEX %I ON automation.%I (pipeline_name, time DESC)',
                                  part OPERATOR(pg_catalog.||) '_pipeline_time', part);
    END LOOP;
END
$partitions$;

-- time_bucket: calendar widths start on the 1st; infinities as date_bin.
CREATE OR REPLACE FUNCTION automation.time_bucket(bucket_width interval, ts timestamptz,
                                       origin timestamptz DEFAULT NULL)
RETURNS timestamptz
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'time_bucket_wrapper';

CREATE OR REPLACE FUNCTION automation.time_bucket(bucket_width interval, ts timestamp,
                                       origin timestamp DEFAULT NULL)
RETURNS timestamp
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'time_bucket_ts_wrapper';

COMMENT ON FUNCTION automation.time_bucket(interval, timestamptz, timestamptz) IS
'The start of the bucket of width bucket_width that holds ts (TimescaleDB''s time_bucket): days and time are fixed lengths counted in UTC from origin (Monday 2000-01-03 when NULL); months, quarters and years follow the calendar from origin (2000-01-01 when NULL, so they start on the 1st). An infinite ts is returned as it is (as date_bin); an infinite origin is an error (22008). NULL width or ts gives NULL.';

-- Retention: 0 keeps everything, a negative value is refused.
CREATE OR REPLACE FUNCTION automation.maintain_metrics_partitions()
RETURNS TABLE (action text, partition_name text, range_start timestamptz, range_end timestamptz, row_count bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    width interval;
    keep interval;
    ahead integer;
    fmt text;
    b timestamptz;
    e timestamptz;
    part text;
    n bigint;
    r record;
BEGIN
    SELECT s.partition_interval, s.retention, s.partitions_ahead INTO r FROM automation.metrics_settings() s;
    BEGIN
        width := r.partition_interval::interval;
        keep := r.retention::interval;
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'automation.metrics_partition_interval (%) and automation.metrics_retention (%) must be intervals',
                        r.partition_interval, r.retention
              USING ERRCODE = 'invalid_parameter_value';
    END;
    ahead := r.partitions_ahead;
    -- one rule for every retention setting: 0 keeps everything, a negative
    -- value is refused (it would drop the current partition)
    IF keep < interval '0' THEN
        RAISE EXCEPTION 'automation.metrics_retention must not be negative (it is %)', r.retention
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Set it to how long pipeline metrics are kept, e.g. ''90 days'', or to 0 to keep them all.';
    END IF;
    IF width <= interval '0' THEN
        RAISE EXCEPTION 'automation.metrics_partition_interval must be positive (it is %)', r.partition_interval
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Use e.g. ''1 day'' (the default), ''1 hour'', ''7 days'' or ''1 month''.';
    END IF;
    IF width < interval '1 hour' AND pg_catalog.date_part('month', width) = 0 THEN
        RAISE EXCEPTION 'automation.metrics_partition_interval is %, partitions narrower than an hour are not supported', width
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    fmt := CASE WHEN pg_catalog.date_part('month', width) > 0 OR pg_catalog.date_part('year', width) > 0 THEN 'YYYYMM'
                WHEN width >= interval '1 day' AND pg_catalog.date_part('hour', width) = 0 THEN 'YYYYMMDD'
                ELSE 'YYYYMMDD"_"HH24MI' END;

    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('automation.maintain_metrics_partitions'));

    FOR b IN
        SELECT DISTINCT automation.time_bucket(width, d.time) FROM automation.pipeline_metrics_default d
         WHERE keep = interval '0' OR d.time >= pg_catalog.now() - keep
        UNION
        SELECT pg_catalog.generate_series(automation.time_bucket(width, pg_catalog.now()),
                                          automation.time_bucket(width, pg_catalog.now()) + width * ahead, width)
        ORDER BY 1
    LOOP
        e := b + width;
        part := 'pipeline_metrics_p' || pg_catalog.to_char(b AT TIME ZONE 'UTC', fmt);
        CONTINUE WHEN pg_catalog.to_regclass(pg_catalog.format('automation.%I', part)) IS NOT NULL;
        BEGIN
            -- rows for the period waiting in the default partition move in
            IF pg_catalog.to_regclass('pg_temp.automation_moving') IS NULL THEN
                CREATE TEMP TABLE automation_moving (LIKE automation.pipeline_metrics) ON COMMIT DROP;
            ELSE
                TRUNCATE pg_temp.automation_moving;
            END IF;
            WITH moved AS (DELETE FROM automation.pipeline_metrics_default d
                            WHERE d.time >= b AND d.time < e RETURNING d.*)
            INSERT INTO pg_temp.automation_moving SELECT * FROM moved;
            GET DIAGNOSTICS n = ROW_COUNT;
            EXECUTE pg_catalog.format('CREATE TABLE automation.%I PARTITION OF automation.pipeline_metrics FOR VALUES FROM (%L) TO (%L)',
                                      part, b, e);
            -- the indexes of every partition (none on the partitioned table: see sql/automation.sql)
            EXECUTE pg_catalog.format('CREATE INDEX %I ON automation.%I USING brin (time)', part || '_time_brin', part);
            EXECUTE pg_catalog.format('CREATE INDEX %I ON automation.%I (pipeline_name, time DESC)', part || '_pipeline_time', part);
            INSERT INTO automation.pipeline_metrics SELECT * FROM pg_temp.automation_moving;
            action := CASE WHEN n > 0 THEN 'split from default' ELSE 'created' END;
        EXCEPTION WHEN invalid_object_definition THEN
            -- overlaps a partition of another width (the setting changed)
            action := 'skipped: overlaps an existing partition';
            n := 0;
        END;
        partition_name := part; range_start := b; range_end := e; row_count := n;
        RETURN NEXT;
    END LOOP;

    FOR r IN
        SELECT c.oid::regclass AS rel, c.relname,
               (pg_catalog.regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)')) AS bounds
          FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'automation.pipeline_metrics'::regclass
           AND c.oid <> 'automation.pipeline_metrics_default'::regclass
    LOOP
        CONTINUE WHEN keep = interval '0' OR r.bounds IS NULL OR r.bounds[2]::timestamptz > pg_catalog.now() - keep;
        EXECUTE pg_catalog.format('SELECT count(*) FROM %s', r.rel) INTO n;
        EXECUTE pg_catalog.format('DROP TABLE %s', r.rel);
        action := 'dropped'; partition_name := r.relname;
        range_start := r.bounds[1]::timestamptz; range_end := r.bounds[2]::timestamptz; row_count := n;
        RETURN NEXT;
    END LOOP;

    DELETE FROM automation.pipeline_metrics_default d WHERE keep > interval '0' AND d.time < pg_catalog.now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        action := 'expired from default'; partition_name := 'pipeline_metrics_default';
        range_start := NULL; range_end := pg_catalog.now() - keep; row_count := n;
        RETURN NEXT;
    END IF;
END
$fn$;

COMMENT ON FUNCTION automation.maintain_metrics_partitions() IS
'Create pipeline_metrics partitions ahead (automation.metrics_partition_interval, automation.metrics_partitions_ahead), split rows out of the default partition, drop partitions older than automation.metrics_retention (0 keeps everything; a negative retention is refused with 22023). Returns what it did.';

-- The SECURITY DEFINER trigger function runs for pipeline_metrics only, and nobody else may attach it.
CREATE OR REPLACE FUNCTION automation.pipeline_metrics_invalidate()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_RELID IS DISTINCT FROM 'automation.pipeline_metrics'::regclass
       OR TG_LEVEL IS DISTINCT FROM 'STATEMENT' OR TG_WHEN IS DISTINCT FROM 'AFTER' THEN
        RAISE EXCEPTION 'automation.pipeline_metrics_invalidate() only runs as an AFTER ... FOR EACH STATEMENT trigger of automation.pipeline_metrics'
              USING ERRCODE = 'wrong_object_type';
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO automation.pipeline_metrics_invalidations (bucket)
        SELECT DISTINCT pg_catalog.date_trunc('hour', c.time, 'UTC') FROM changed_rows c
        ON CONFLICT DO NOTHING;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO automation.pipeline_metrics_invalidations (bucket)
        SELECT DISTINCT pg_catalog.date_trunc('hour', o.time, 'UTC') FROM old_rows o
        ON CONFLICT DO NOTHING;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE automation.pipeline_metrics_hourly_state SET watermark = NULL;
    END IF;
    RETURN NULL;
END
$fn$;

REVOKE EXECUTE ON FUNCTION automation.pipeline_metrics_invalidate() FROM PUBLIC;
COMMENT ON FUNCTION automation.pipeline_metrics_invalidate() IS
'Internal: statement trigger of automation.pipeline_metrics that marks the hours a change touched for the next rollup refresh (refuses to run for any other table).';

-- The audit log records only what the extension did: maintain_index_blocking acts, then logs.
DROP FUNCTION automation.record_maintenance(text, regclass, jsonb);
-- Not STRICT: NULL bloat_ratio/estimated_by are fine; NULL index or action
-- are refused by the function itself.
CREATE FUNCTION automation.maintain_index_blocking(index regclass, action text, lock_timeout_ms integer,
                                                   bloat_ratio numeric DEFAULT NULL, estimated_by text DEFAULT NULL)
RETURNS text
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'maintain_index_blocking_wrapper';

COMMENT ON FUNCTION automation.maintain_index_blocking(regclass, text, integer, numeric, text) IS
'Internal (maintain_indexes with blocking => true): as the caller, who must own the table, REINDEX INDEX (action reindex) or DROP INDEX an invalid leftover (action drop) within lock_timeout_ms, and write the audit row of what was done (REINDEX, REINDEX FAILED, DROP INVALID INDEX). Returns NULL, or the error of a REINDEX that failed.';
-- only superusers queue concurrent rebuilds (maintain_indexes checks)
REVOKE EXECUTE ON FUNCTION automation.start_index_maintenance() FROM PUBLIC;

CREATE OR REPLACE FUNCTION automation.maintain_indexes(schema_name text DEFAULT NULL, bloat_threshold numeric DEFAULT 30,
                                            min_size_bytes bigint DEFAULT 1000000, dry_run boolean DEFAULT false,
                                            max_indexes integer DEFAULT 5, blocking boolean DEFAULT false,
                                            lock_timeout interval DEFAULT '5s')
RETURNS TABLE (table_name text, index_name text, index_size text, bloat_ratio numeric, action_taken text,
               estimated_by text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
    rebuilt integer := 0;
    queued integer := 0;
    ms integer;
    failure text;
BEGIN
    IF bloat_threshold IS NULL OR bloat_threshold < 0 OR bloat_threshold > 100 THEN
        RAISE EXCEPTION 'bloat_threshold must be a percentage from 0 to 100, not %', bloat_threshold
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_indexes IS NULL OR max_indexes < 0 OR min_size_bytes IS NULL OR min_size_bytes < 0 THEN
        RAISE EXCEPTION 'max_indexes and min_size_bytes must be zero or more'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lock_timeout IS NULL OR lock_timeout < interval '0' THEN
        RAISE EXCEPTION 'lock_timeout must be an interval of zero or more' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF schema_name IS NOT NULL AND NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = schema_name) THEN
        RAISE EXCEPTION 'schema "%" does not exist', schema_name
              USING ERRCODE = 'invalid_schema_name',
                    HINT = 'Pass the schema name as it is stored (case matters), or NULL for every user schema.';
    END IF;
    IF NOT dry_run AND NOT blocking
       AND NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) THEN
        RAISE EXCEPTION 'concurrent rebuilds are handed to a background worker, which only a superuser may ask for'
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'Use blocking => true to rebuild indexes of your own tables in this session, or dry_run => true to see what would be done.';
    END IF;
    ms := LEAST(pg_catalog.date_part('epoch', lock_timeout) * 1000, 2147483647)::integer;

    -- One pass over the estimates (they may read whole indexes): first what
    -- failed concurrent rebuilds left (invalid *_ccnew / *_ccold indexes),
    -- then the rebuild candidates, most bloated first.
    FOR r IN SELECT x.*
               FROM (SELECT b.*, NOT b.is_valid AND b.index_name ~ '_cc(new|old)[0-9]*$' AS leftover
                       FROM automation.index_bloat(schema_name) b) x
              WHERE x.leftover
                 OR (x.is_valid AND x.index_bytes >= min_size_bytes
                     AND (x.bloat_ratio IS NULL OR x.bloat_ratio >= bloat_threshold))
              ORDER BY x.leftover DESC, x.bloat_ratio DESC NULLS LAST, x.index_bytes DESC,
                       x.table_schema, x.table_name, x.index_name
    LOOP
        table_name := pg_catalog.format('%I.%I', r.table_schema, r.table_name);
        index_name := pg_catalog.format('%I.%I', r.table_schema, r.index_name);
        index_size := pg_catalog.pg_size_pretty(r.index_bytes);
        bloat_ratio := CASE WHEN r.leftover THEN NULL ELSE r.bloat_ratio END;
        estimated_by := CASE WHEN r.leftover THEN NULL ELSE r.estimated_by END;
        IF r.leftover THEN
            IF NOT r.may_rebuild THEN
                action_taken := 'skipped: invalid leftover of a failed concurrent rebuild, but the table is not yours';
            ELSIF dry_run THEN
                action_taken := 'would drop: invalid leftover of a failed concurrent rebuild';
            ELSIF blocking THEN
                PERFORM automation.maintain_index_blocking(r.index_oid::regclass, 'drop', ms);
                action_taken := 'dropped: invalid leftover of a failed concurrent rebuild';
            ELSE
                INSERT INTO automation.index_maintenance_queue (index_oid, index_name, action, size_before, lock_timeout_ms)
                VALUES (r.index_oid, index_name, 'drop', r.index_bytes, ms);
                queued := queued + 1;
                action_taken := 'drop scheduled: invalid leftover of a failed concurrent rebuild';
            END IF;
        ELSE
            IF r.bloat_ratio IS NULL THEN
                action_taken := 'not rebuilt: no estimate';
            ELSIF NOT r.may_rebuild THEN
                action_taken := 'skipped: only the owner of the table may rebuild its indexes';
            ELSIF rebuilt >= max_indexes THEN
                action_taken := pg_catalog.format('skipped: max_indexes (%s) reached', max_indexes);
            ELSIF dry_run THEN
                action_taken := CASE WHEN blocking THEN 'would reindex (blocking)' ELSE 'would reindex concurrently' END;
                rebuilt := rebuilt + 1;
            ELSIF blocking THEN
                failure := automation.maintain_index_blocking(r.index_oid::regclass, 'reindex', ms, r.bloat_ratio, r.estimated_by);
                IF failure IS NULL THEN
                    action_taken := pg_catalog.format('reindexed (blocking): %s -> %s', index_size,
                                                      pg_catalog.pg_size_pretty(pg_catalog.pg_relation_size(r.index_oid)));
                ELSE
                    action_taken := 'reindex failed: ' || failure;
                END IF;
                rebuilt := rebuilt + 1;
            ELSE
                INSERT INTO automation.index_maintenance_queue
                       (index_oid, index_name, action, size_before, bloat_ratio, estimated_by, lock_timeout_ms)
                VALUES (r.index_oid, index_name, 'reindex', r.index_bytes, r.bloat_ratio, r.estimated_by, ms);
                queued := queued + 1;
                rebuilt := rebuilt + 1;
                action_taken := 'reindex scheduled';
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;

    -- (nested, so that only a caller who queued something, a superuser,
    -- needs the privilege to execute it)
    IF queued > 0 THEN
        IF NOT automation.start_index_maintenance() THEN
            RAISE EXCEPTION 'could not start the index maintenance worker: every background worker slot is in use'
                  USING ERRCODE = 'configuration_limit_exceeded',
                        HINT = 'Raise max_worker_processes, or run again with blocking => true.';
        END IF;
    END IF;
END
$fn$;

-- Runtime: clear errors for NULL ids, non-object metadata, a non-positive age; failures only of failed executions.
-- Metadata is merged with || later on (complete_execution's patch, retries):
-- only an object (or NULL, meaning {}) merges as users expect.
CREATE FUNCTION automation.check_metadata(metadata jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF metadata IS NOT NULL AND jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object, not %', jsonb_typeof(metadata)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Wrap the value in an object, for example jsonb_build_object(''input'', ...).';
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.start_execution(workflow_name text, metadata jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    new_id uuid;
BEGIN
    PERFORM automation.check_workflow_name(start_execution.workflow_name);
    PERFORM automation.check_metadata(start_execution.metadata);
    INSERT INTO automation_workflows.workflow_executions AS e
           (workflow_name, status, started_at, metadata, attempts)
    VALUES (start_execution.workflow_name, 'running', now(), coalesce(start_execution.metadata, '{}'), 1)
    RETURNING e.id INTO new_id;
    RETURN new_id;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.enqueue_execution(workflow_name text, metadata jsonb DEFAULT '{}',
                                             run_after timestamptz DEFAULT now())
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    new_id uuid;
BEGIN
    PERFORM automation.check_workflow_name(enqueue_execution.workflow_name);
    PERFORM automation.check_metadata(enqueue_execution.metadata);
    INSERT INTO automation_workflows.workflow_executions AS e
           (workflow_name, status, started_at, run_after, metadata)
    VALUES (enqueue_execution.workflow_name, 'pending', NULL,
            coalesce(enqueue_execution.run_after, now()), coalesce(enqueue_execution.metadata, '{}'))
    RETURNING e.id INTO new_id;
    RETURN new_id;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.raise_not_running(id uuid, worker_id text, verb text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cur record;
BEGIN
    IF raise_not_running.id IS NULL THEN
        RAISE EXCEPTION 'the execution id must not be NULL'
              USING ERRCODE = 'null_value_not_allowed',
                    HINT = 'Use an id returned by start_execution(), enqueue_execution() or claim_executions().';
    END IF;
    SELECT e.status, e.claimed_by INTO cur
      FROM automation_workflows.workflow_executions e WHERE e.id = raise_not_running.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow execution % does not exist', raise_not_running.id
              USING ERRCODE = 'no_data_found',
                    HINT = 'Use an id returned by start_execution(), enqueue_execution() or claim_executions().';
    ELSIF cur.status <> 'running' THEN
        RAISE EXCEPTION 'cannot % workflow execution %: it is %, not running', verb, raise_not_running.id, cur.status
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = CASE WHEN cur.status = 'pending'
                                THEN 'A pending execution must be claimed first, with automation.claim_executions().'
                                ELSE 'A finished execution keeps its outcome; to run it again use automation.retry_failed_workflow() or enqueue a new one.'
                           END;
    ELSE
        RAISE EXCEPTION 'cannot % workflow execution %: it is claimed by %, not by %',
                        verb, raise_not_running.id, coalesce(cur.claimed_by, '(nobody)'), worker_id
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Its lease expired and another worker claimed it; discard this result. Use automation.extend_lease() for long work.';
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.complete_executions(ids uuid[], metadata_patch jsonb DEFAULT NULL,
                                               worker_id text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    done uuid[];
    refused uuid;
BEGIN
    IF complete_executions.ids IS NULL OR array_position(complete_executions.ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'ids must not be NULL or contain NULL'
              USING ERRCODE = 'null_value_not_allowed',
                    HINT = 'Pass the ids returned by start_execution(), enqueue_execution() or claim_executions().';
    END IF;
    PERFORM automation.check_metadata(complete_executions.metadata_patch);
    WITH completed AS (
        UPDATE automation_workflows.workflow_executions e
           SET status = 'success',
               completed_at = now(),
               lease_expires_at = NULL,
               metadata = CASE WHEN complete_executions.metadata_patch IS NULL THEN e.metadata
                               ELSE coalesce(e.metadata, '{}') || complete_executions.metadata_patch END
         WHERE e.id = ANY (complete_executions.ids)
           AND e.status = 'running'
           AND (complete_executions.worker_id IS NULL OR e.claimed_by = complete_executions.worker_id)
        RETURNING e.id)
    SELECT array_agg(completed.id) INTO done FROM completed;
    -- all or nothing: an id that could not be completed fails the whole call
    SELECT x INTO refused
      FROM (SELECT unnest(complete_executions.ids) EXCEPT SELECT unnest(done)) AS r(x)
     LIMIT 1;
    IF refused IS NOT NULL THEN
        PERFORM automation.raise_not_running(refused, complete_executions.worker_id, 'complete');
    END IF;
    -- a retry that succeeds resolves the error it retried
    UPDATE automation.errors r
       SET resolved_at = now()
     WHERE r.retry_execution_id = ANY (done) AND r.resolved_at IS NULL;
    RETURN coalesce(cardinality(done), 0);
END
$fn$;

CREATE OR REPLACE FUNCTION automation.record_failure(execution_id uuid, workflow_name text, error_type text,
                                          error_message text, error_context jsonb)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    error_id uuid;
    failed record;
BEGIN
    IF record_failure.execution_id IS NULL OR coalesce(record_failure.error_type, '') = '' THEN
        RAISE EXCEPTION 'a failure needs an execution id and an error type'
              USING ERRCODE = 'null_value_not_allowed',
                    HINT = 'Failures are recorded by automation.fail_execution() and automation.timeout_stale_executions().';
    END IF;
    SELECT e.workflow_name, e.status INTO failed
      FROM automation_workflows.workflow_executions e WHERE e.id = record_failure.execution_id;
    IF NOT FOUND OR failed.status NOT IN ('error', 'timeout') THEN
        RAISE EXCEPTION 'workflow execution % has not failed', record_failure.execution_id
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Failures are recorded by automation.fail_execution() and automation.timeout_stale_executions().';
    END IF;
    IF record_failure.workflow_name IS DISTINCT FROM failed.workflow_name THEN
        RAISE EXCEPTION 'workflow execution % belongs to workflow %, not %', record_failure.execution_id,
                        failed.workflow_name, record_failure.workflow_name
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE automation.errors r
       SET error_type = record_failure.error_type,
           error_message = record_failure.error_message,
           error_context = record_failure.error_context,
           next_retry_at = now() + automation.retry_delay(r.retry_count)
     WHERE r.retry_execution_id = record_failure.execution_id AND r.resolved_at IS NULL
    RETURNING r.id INTO error_id;
    IF NOT FOUND THEN
        INSERT INTO automation.errors AS r
               (workflow_name, error_type, error_message, error_context, execution_id, next_retry_at)
        VALUES (record_failure.workflow_name, record_failure.error_type, record_failure.error_message,
                record_failure.error_context, record_failure.execution_id, now() + automation.retry_delay(0))
        RETURNING r.id INTO error_id;
    END IF;
    RETURN error_id;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.timeout_stale_executions(older_than interval DEFAULT '1 hour',
                                                    batch integer DEFAULT 1000)
RETURNS TABLE (id uuid)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    stale record;
BEGIN
    IF batch IS NULL OR batch < 1 THEN
        RAISE EXCEPTION 'batch must be positive, not %', batch USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF older_than IS NULL OR older_than <= interval '0' THEN
        RAISE EXCEPTION 'older_than must be a positive interval, not %', coalesce(older_than::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Executions running for longer than older_than are timed out; ''0'' or less would time out every running one.';
    END IF;
    -- the seed's sweep, one batch per call; rows being updated elsewhere are skipped
    FOR stale IN
        WITH batch_rows AS (
            SELECT e.id FROM automation_workflows.workflow_executions e
             WHERE e.status = 'running' AND e.started_at < now() - timeout_stale_executions.older_than
             ORDER BY e.started_at
             LIMIT timeout_stale_executions.batch
               FOR UPDATE SKIP LOCKED)
        UPDATE automation_workflows.workflow_executions e
           SET status = 'timeout',
               completed_at = now(),
               lease_expires_at = NULL,
               error_details = jsonb_build_object('reason', 'execution_timeout')
          FROM batch_rows WHERE e.id = batch_rows.id
        RETURNING e.id AS execution_id, e.workflow_name
    LOOP
        PERFORM automation.record_failure(stale.execution_id, stale.workflow_name, 'execution_timeout',
                                          format('running for longer than %s', older_than), NULL);
        id := stale.execution_id;
        RETURN NEXT;
    END LOOP;
END
$fn$;

COMMENT ON FUNCTION automation.record_failure(uuid, text, text, text, jsonb) IS
'Internal: record the failure of an execution that failed (status error or timeout) in automation.errors (a failed retry updates the error it retried).';
COMMENT ON FUNCTION automation.check_metadata(jsonb) IS 'Internal: refuse execution metadata that is not a JSON object.';

-- Jobs bound to their role (oid) and, when local, to the database that
-- holds them; every job is dumped, default ones included.
ALTER TABLE automation.job
    ADD COLUMN owner oid,
    ADD COLUMN local boolean,
    ADD COLUMN inactive_reason text;
UPDATE automation.job j
   SET owner = COALESCE((SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) j.username), 0),
       local = j.database OPERATOR(pg_catalog.=) pg_catalog.current_database();
UPDATE automation.job j
   SET active = false,
       inactive_reason = pg_catalog.format('role "%s" does not exist', j.username)
 WHERE j.owner OPERATOR(pg_catalog.=) 0;
ALTER TABLE automation.job
    ALTER COLUMN owner SET NOT NULL,
    ALTER COLUMN local SET NOT NULL,
    DROP CONSTRAINT job_jobname_username_key,
    ADD CONSTRAINT job_jobname_owner_key UNIQUE (jobname, owner);
DROP POLICY job_owner_policy ON automation.job;
DROP POLICY job_run_details_owner_policy ON automation.job_run_details;
CREATE POLICY job_owner_policy ON automation.job
    USING (owner OPERATOR(pg_catalog.=) (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER))
    WITH CHECK (owner OPERATOR(pg_catalog.=) (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER));
CREATE POLICY job_run_details_owner_policy ON automation.job_run_details
    USING (jobid IN (SELECT j.jobid FROM automation.job j));

CREATE FUNCTION automation.job_check_target()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    superuser boolean := (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER);
    role_oid oid;
    problem text;
BEGIN
    IF TG_RELID IS DISTINCT FROM 'automation.job'::regclass OR TG_LEVEL <> 'ROW' OR TG_WHEN <> 'BEFORE' THEN
        RAISE EXCEPTION 'automation.job_check_target() only runs as a BEFORE ROW trigger of automation.job'
              USING ERRCODE = 'wrong_object_type';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.username IS DISTINCT FROM OLD.username THEN
        IF NEW.username IS DISTINCT FROM CURRENT_USER::text AND NOT superuser THEN
            RAISE EXCEPTION 'must be superuser to create or move a job for another role'
                  USING ERRCODE = 'insufficient_privilege',
                        HINT = pg_catalog.format('Schedule the job as %s itself, or leave username NULL.', NEW.username);
        END IF;
        IF NOT superuser OR TG_OP = 'UPDATE' THEN
            PERFORM automation.check_job_target(NULL, NEW.username);
        END IF;
        SELECT r.oid INTO role_oid FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.username;
        IF role_oid IS NULL THEN
            problem := pg_catalog.format('role "%s" does not exist', NEW.username);
        END IF;
        NEW.owner := COALESCE(role_oid, 0);
    END IF;
    IF TG_OP = 'INSERT' AND NEW.local IS NULL OR TG_OP = 'UPDATE' AND NEW.database IS DISTINCT FROM OLD.database THEN
        NEW.local := NEW.database IS NULL OR NEW.database = pg_catalog.current_database();
    END IF;
    IF NEW.local THEN
        NEW.database := pg_catalog.current_database();
    ELSIF NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = NEW.database) THEN
        IF NOT superuser OR TG_OP = 'UPDATE' THEN
            PERFORM automation.check_job_target(NEW.database, NEW.username);
        END IF;
        problem := COALESCE(problem || '; ', '') || pg_catalog.format('database "%s" does not exist', NEW.database);
    END IF;
    IF problem IS NULL AND NEW.active THEN
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = NEW.owner) THEN
            RAISE EXCEPTION 'the role that owned job % (%) no longer exists', NEW.jobid, NEW.username
                  USING ERRCODE = 'undefined_object',
                        HINT = 'A superuser can give the job to an existing role: automation.alter_job(jobid, username => ...).';
        END IF;
        IF NOT pg_catalog.has_database_privilege(NEW.owner, NEW.database, 'CONNECT') THEN
            RAISE EXCEPTION 'role "%" may not connect to database "%"', NEW.username, NEW.database
                  USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    IF problem IS NOT NULL THEN
        RAISE WARNING 'job % (%) is inactive: %', NEW.jobid, COALESCE(NEW.jobname, 'unnamed'), problem;
        NEW.active := false;
        NEW.inactive_reason := problem;
    ELSIF NEW.active AND (TG_OP = 'INSERT' OR NOT OLD.active) THEN
        NEW.inactive_reason := NULL;
    END IF;
    -- pg_restore brings the default jobs of the dumped database (as the DBA
    -- left them): they replace the ones CREATE EXTENSION has just made
    IF TG_OP = 'INSERT' AND NEW.jobname LIKE 'automation: %' AND superuser THEN
        DELETE FROM automation.job j
         WHERE j.jobname LIKE 'automation: %' AND (j.jobname = NEW.jobname OR j.jobid = NEW.jobid);
        DELETE FROM automation.job_removed_defaults d WHERE d.jobname = NEW.jobname;
    END IF;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER job_check_target
    BEFORE INSERT OR UPDATE OF database, username, active ON automation.job
    FOR EACH ROW EXECUTE FUNCTION automation.job_check_target();

-- The default jobs a DBA unscheduled, so that a restore (whose CREATE
-- EXTENSION makes them again) removes them again.
CREATE TABLE automation.job_removed_defaults (
    jobname    text PRIMARY KEY,
    removed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE automation.job_removed_defaults IS
    'Default jobs (named ''automation: ...'') that were unscheduled; dumped, so that a restore leaves them unscheduled.';

CREATE FUNCTION automation.job_default_removed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_RELID = 'automation.job'::regclass AND TG_OP = 'DELETE' AND TG_LEVEL = 'ROW' THEN
        IF OLD.jobname LIKE 'automation: %'
           AND (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) THEN
            INSERT INTO automation.job_removed_defaults (jobname) VALUES (OLD.jobname) ON CONFLICT DO NOTHING;
        END IF;
        RETURN OLD;
    ELSIF TG_RELID = 'automation.job_removed_defaults'::regclass AND TG_OP = 'INSERT' AND TG_LEVEL = 'ROW' THEN
        DELETE FROM automation.job j WHERE j.jobname = NEW.jobname;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'automation.job_default_removed() only runs as a row trigger of automation.job and automation.job_removed_defaults'
          USING ERRCODE = 'wrong_object_type';
END
$fn$;

CREATE TRIGGER job_default_removed
    AFTER DELETE ON automation.job
    FOR EACH ROW EXECUTE FUNCTION automation.job_default_removed();
CREATE TRIGGER job_removed_defaults_apply
    AFTER INSERT ON automation.job_removed_defaults
    FOR EACH ROW EXECUTE FUNCTION automation.job_default_removed();

-- Does the role exist, and the database (when not NULL)? The errors the API
-- functions give for a typo, and the trigger for anyone but a superuser.
CREATE OR REPLACE FUNCTION automation.check_job_target(database text, username text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = username) THEN
        RAISE EXCEPTION 'role "%" does not exist', username USING ERRCODE = 'undefined_object';
    END IF;
    IF database IS NOT NULL AND NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = database) THEN
        RAISE EXCEPTION 'database "%" does not exist', database USING ERRCODE = 'invalid_catalog_name';
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.schedule(job_name text, schedule text, command text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    id bigint;
BEGIN
    -- the same name for the same role replaces the job (pg_cron's upsert)
    INSERT INTO automation.job AS j (jobname, schedule, command)
    VALUES (job_name, schedule, command)
    ON CONFLICT ON CONSTRAINT job_jobname_owner_key DO UPDATE
       SET schedule = EXCLUDED.schedule, command = EXCLUDED.command
    RETURNING j.jobid INTO id;
    RETURN id;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.schedule_in_database(job_name text, schedule text, command text, database text,
                                                username text DEFAULT NULL, active boolean DEFAULT true,
                                                timeout interval DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    id bigint;
    who text := COALESCE(username, CURRENT_USER::text);
BEGIN
    PERFORM automation.check_job_target(database, who);
    INSERT INTO automation.job AS j (jobname, schedule, command, database, username, active, timeout)
    VALUES (job_name, schedule, command, database, who, COALESCE(active, true), timeout)
    ON CONFLICT ON CONSTRAINT job_jobname_owner_key DO UPDATE
       SET schedule = EXCLUDED.schedule, command = EXCLUDED.command, database = EXCLUDED.database,
           active = EXCLUDED.active, timeout = EXCLUDED.timeout
    RETURNING j.jobid INTO id;
    RETURN id;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.alter_job(job_id bigint, schedule text DEFAULT NULL, command text DEFAULT NULL,
                                     database text DEFAULT NULL, username text DEFAULT NULL,
                                     active boolean DEFAULT NULL, timeout interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    current automation.job;
BEGIN
    SELECT * INTO current FROM automation.job j WHERE j.jobid = job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'could not find valid entry for job %', job_id
              USING ERRCODE = 'undefined_object',
                    HINT = 'automation.job lists the jobs you own.';
    END IF;
    PERFORM automation.check_job_target(alter_job.database, COALESCE(alter_job.username, current.username));
    UPDATE automation.job j
       SET schedule = COALESCE(alter_job.schedule, j.schedule),
           command  = COALESCE(alter_job.command, j.command),
           database = COALESCE(alter_job.database, j.database),
           username = COALESCE(alter_job.username, j.username),
           active   = COALESCE(alter_job.active, j.active),
           -- a zero timeout removes it
           timeout  = CASE WHEN alter_job.timeout IS NULL THEN j.timeout
                           WHEN alter_job.timeout = interval '0' THEN NULL
                           ELSE alter_job.timeout END
     WHERE j.jobid = job_id;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.unschedule(job_name text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    DELETE FROM automation.job j
     WHERE j.jobname = job_name
       AND j.owner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'could not find valid entry for job %', pg_catalog.quote_literal(job_name)
              USING ERRCODE = 'undefined_object',
                    HINT = 'automation.job lists the jobs you own.';
    END IF;
    RETURN true;
END
$fn$;

CREATE OR REPLACE PROCEDURE automation.purge_job_run_details(batch integer DEFAULT 10000)
LANGUAGE plpgsql
AS $fn$
DECLARE
    cutoff timestamptz := pg_catalog.now() OPERATOR(pg_catalog.-) automation.job_run_retention();
    n bigint;
BEGIN
    -- automation.job_run_retention = 0 keeps every run (as every retention setting)
    IF automation.job_run_retention() OPERATOR(pg_catalog.=) interval '0' THEN
        RETURN;
    END IF;
    LOOP
        DELETE FROM automation.job_run_details
         WHERE runid IN (SELECT d.runid FROM automation.job_run_details d
                          WHERE d.end_time OPERATOR(pg_catalog.<) cutoff
                          LIMIT batch);
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n OPERATOR(pg_catalog.<) batch;
        COMMIT;
    END LOOP;
END
$fn$;

COMMENT ON PROCEDURE automation.purge_job_run_details(integer) IS
'Delete finished runs older than automation.job_run_retention (0 keeps them all), batch rows per transaction (CALL it at top level).';
COMMENT ON FUNCTION automation.check_job_target(text, text) IS 'Internal: raise when the role (or the database, if not NULL) does not exist.';
COMMENT ON FUNCTION automation.job_check_target() IS
'Internal: trigger on automation.job checking, however a job is written, that the current role may schedule it as its role in its database; binds the job to the role''s oid and, for this database''s jobs, to this database.';
COMMENT ON FUNCTION automation.job_check_schedule() IS 'Internal: validates a job''s schedule and sets next_run_at.';
COMMENT ON FUNCTION automation.job_default_removed() IS 'Internal: remembers unscheduled default jobs (and applies that memory on restore).';
-- trigger functions: nobody else attaches them to anything
REVOKE EXECUTE ON FUNCTION automation.job_check_target(), automation.job_check_schedule(),
                           automation.job_default_removed(), automation.job_cache_invalidate() FROM PUBLIC;

-- Schedulers run only while jobs are due; the shared state says who waits.
-- What the launcher and the schedulers share (0.3.0; src/scheduler/sql.rs).
CREATE FUNCTION automation.scheduler_state()
RETURNS TABLE (database_oid oid, extension text, scheduler_pid integer, next_due timestamptz,
               waiting_since timestamptz, runs_waiting integer, runs_running integer,
               max_workers integer, scheduler_workers integer)
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'scheduler_state_wrapper';

COMMENT ON FUNCTION automation.scheduler_state() IS
'Per database the launcher knows: whether it has the extension, its scheduler''s pid (schedulers run only while jobs are due), when it needs one next, since when it has waited for one, its runs waiting for a worker and running; and the cluster-wide budgets in force (automation.max_workers, automation.scheduler_workers, clamped to max_worker_processes).';

CREATE OR REPLACE FUNCTION automation.scheduler_status()
RETURNS TABLE (component text, pid integer, database name, state text, since timestamptz, detail text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH workers AS (
        SELECT a.backend_type, a.pid, a.datname, a.backend_start, a.query, a.application_name, a.query_start, a.state
          FROM pg_catalog.pg_stat_activity a
         WHERE a.backend_type IN ('automation_ext launcher', 'automation_ext scheduler', 'automation_ext job')
    ), preloaded AS (
        SELECT 'automation_ext' = ANY (pg_catalog.string_to_array(
                   pg_catalog.replace(pg_catalog.current_setting('shared_preload_libraries'), ' ', ''), ',')) AS yes
    )
    SELECT 'launcher', w.pid, NULL::name, 'running', w.backend_start, NULL::text
      FROM workers w WHERE w.backend_type = 'automation_ext launcher'
    UNION ALL
    SELECT 'launcher', NULL, NULL,
           CASE WHEN pg_catalog.pg_is_in_recovery() THEN 'waiting: this server is a standby; scheduling starts after promotion'
                WHEN NOT p.yes THEN 'not running: automation_ext is not in shared_preload_libraries'
                WHEN pg_catalog.current_setting('automation.enabled') = 'off' THEN 'stopped: automation.enabled is off'
                ELSE 'not running (restarting?)' END,
           NULL, NULL
      FROM preloaded p WHERE NOT EXISTS (SELECT FROM workers WHERE backend_type = 'automation_ext launcher')
    UNION ALL
    SELECT 'scheduler', w.pid, w.datname, 'running', w.backend_start, w.query
      FROM workers w WHERE w.backend_type = 'automation_ext scheduler'
    UNION ALL
    SELECT 'database', NULL, d.datname,
           CASE WHEN s.waiting_since IS NOT NULL THEN 'waiting for a scheduler'
                WHEN s.runs_waiting > 0 THEN 'runs waiting for a worker'
                ELSE 'idle' END,
           COALESCE(s.waiting_since, s.next_due),
           pg_catalog.format('next fire %s; %s run(s) waiting for a worker, %s running; up to %s runs and %s schedulers at once in the cluster (automation.max_workers, automation.scheduler_workers, within max_worker_processes)',
                             COALESCE(s.next_due::text, 'not known'), s.runs_waiting, s.runs_running,
                             s.max_workers, s.scheduler_workers)
      FROM automation.scheduler_state() s JOIN pg_catalog.pg_database d ON d.oid = s.database_oid
     WHERE s.extension = 'installed' AND s.scheduler_pid IS NULL
    UNION ALL
    SELECT 'job', w.pid, w.datname, COALESCE(w.state, 'starting'), w.query_start,
           w.application_name || ': ' || COALESCE(w.query, '')
      FROM workers w WHERE w.backend_type = 'automation_ext job'
    UNION ALL
    SELECT 'next run', NULL, pg_catalog.current_database(), 'scheduled', j.next_run_at,
           pg_catalog.format('job %s%s: %s', j.jobid, COALESCE(' (' || j.jobname || ')', ''), j.schedule)
      FROM (SELECT * FROM automation.job WHERE active AND next_run_at IS NOT NULL
             ORDER BY next_run_at, jobid LIMIT 1) j
$fn$;

COMMENT ON FUNCTION automation.scheduler_status() IS
'The scheduler''s state: launcher (or why it is not running), each database''s scheduler with its next run, or (database) why none runs now (idle until its next fire, waiting for a scheduler, runs waiting for a worker), runs in progress, and this database''s next job.';

-- every job is dumped, the default ones as the DBA left them (a restored
-- default job replaces the one CREATE EXTENSION made: job_check_target),
-- and the default jobs that were unscheduled (removed again on restore)
SELECT pg_catalog.pg_extension_config_dump('automation.job', '');
SELECT pg_catalog.pg_extension_config_dump('automation.job_removed_defaults', '');

-- 0.3.0: the support functions take `internal` and are only for the
-- aggregate (whose execution checks the aggregate's owner, not the caller,
-- for them): nobody calls them directly.
REVOKE EXECUTE ON FUNCTION automation.success_rate_sfunc(internal, text), automation.success_rate_minvfunc(internal, text),
       automation.success_rate_combine(internal, internal), automation.success_rate_serialize(internal),
       automation.success_rate_deserialize(bytea, internal), automation.success_rate_final(internal) FROM PUBLIC;

-- 0.3.0: a trigger function of the extension's own tables; nobody else
-- attaches it to anything.
REVOKE EXECUTE ON FUNCTION automation_workflows.touch_updated_at() FROM PUBLIC;

-- Schedulers of databases still at 0.2.0 wait for this upgrade: wake this one.
SELECT automation.wake_scheduler();

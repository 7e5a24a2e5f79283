-- Pipeline metrics as time series without TimescaleDB (0.2.0; src/timeseries.rs):
-- partitions made ahead and dropped after retention, an hourly rollup kept
-- current incrementally, a live view over it, bulk ingest through an UNLOGGED
-- staging table.

-- origin NULL: Monday 2000-01-03 for widths in days and time, 2000-01-01 for
-- widths in months (TimescaleDB's defaults), so months start on the 1st.
CREATE FUNCTION automation.time_bucket(bucket_width interval, ts timestamptz,
                                       origin timestamptz DEFAULT NULL)
RETURNS timestamptz
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'time_bucket_wrapper';

CREATE FUNCTION automation.time_bucket(bucket_width interval, ts timestamp,
                                       origin timestamp DEFAULT NULL)
RETURNS timestamp
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'time_bucket_ts_wrapper';

CREATE FUNCTION automation.try_timestamptz(value text)
RETURNS timestamptz
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'try_timestamptz_wrapper';

CREATE FUNCTION automation.metrics_settings()
RETURNS TABLE (partition_interval text, retention text, partitions_ahead integer)
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'metrics_settings_wrapper';

COMMENT ON FUNCTION automation.time_bucket(interval, timestamptz, timestamptz) IS
'The start of the bucket of width bucket_width that holds ts (TimescaleDB''s time_bucket): days and time are fixed lengths counted in UTC from origin (Monday 2000-01-03 when NULL); months, quarters and years follow the calendar from origin (2000-01-01 when NULL, so they start on the 1st). An infinite ts is returned as it is (as date_bin); an infinite origin is an error (22008). NULL width or ts gives NULL.';
COMMENT ON FUNCTION automation.time_bucket(interval, timestamp, timestamp) IS
'time_bucket for timestamp without time zone.';
COMMENT ON FUNCTION automation.try_timestamptz(text) IS
'An ISO 8601 timestamp (UTC when it has no offset), or NULL when the text is not one. Never raises.';
COMMENT ON FUNCTION automation.metrics_settings() IS
'automation.metrics_partition_interval, automation.metrics_retention and automation.metrics_partitions_ahead in force.';

------------------------------------------------------------------------------
-- Partitions

-- Create the partitions from the current one to metrics_partitions_ahead
-- ahead, and one for every period with rows in the default partition (moving
-- those rows into it); drop partitions that ended before now() - retention
-- and expire such rows from the default partition. Partitions are named
-- pipeline_metrics_p<start in UTC>. Idempotent; one call at a time.
CREATE FUNCTION automation.maintain_metrics_partitions()
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
         WHERE (keep = interval '0' OR d.time >= pg_catalog.now() - keep)
           -- (0.8.0) no partition holds 'infinity' (the table refuses it
           -- now; one left from before stays in the default partition)
           AND pg_catalog.isfinite(d.time)
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

------------------------------------------------------------------------------
-- Hourly rollup (the seed's continuous aggregate)

CREATE TABLE automation.pipeline_metrics_hourly (
    bucket        timestamptz  NOT NULL,
    pipeline_name varchar(255) NOT NULL,
    stage         varchar(100) NOT NULL,
    executions    bigint       NOT NULL,
    avg_duration  numeric,
    total_records bigint,
    successes     bigint       NOT NULL,
    errors        bigint       NOT NULL,
    PRIMARY KEY (bucket, pipeline_name, stage)
);

COMMENT ON TABLE automation.pipeline_metrics_hourly IS
    'Hourly rollup of pipeline_metrics (UTC hours), complete up to the watermark; refreshed incrementally by automation.refresh_pipeline_metrics_hourly(). Query automation.pipeline_metrics_hourly_live for up-to-the-second figures.';

-- Hours whose rows changed since they were last rolled up: one row per hour
-- and writing transaction (so that a refresh never deletes the mark of a
-- transaction it could not see yet).
CREATE TABLE automation.pipeline_metrics_invalidations (
    bucket timestamptz NOT NULL,
    xid    xid8        NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    PRIMARY KEY (bucket, xid)
);

CREATE TABLE automation.pipeline_metrics_hourly_state (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- every hour before this is in pipeline_metrics_hourly, except invalidated ones
    watermark        timestamptz,
    refreshed_at     timestamptz,
    last_buckets     bigint,
    last_duration_ms numeric
);
INSERT INTO automation.pipeline_metrics_hourly_state DEFAULT VALUES;

-- SECURITY DEFINER: whoever may write pipeline_metrics marks the hours it
-- touched, without a privilege on the bookkeeping table (the function only
-- inserts hour marks derived from the statement's own rows). It runs for the
-- statement triggers of automation.pipeline_metrics and nothing else: on any
-- other table, or fired any other way, it refuses; and nobody but the
-- extension's owner may name it in a CREATE TRIGGER (no EXECUTE for PUBLIC).
CREATE FUNCTION automation.pipeline_metrics_invalidate()
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

CREATE TRIGGER pipeline_metrics_invalidate_insert
    AFTER INSERT ON automation.pipeline_metrics REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION automation.pipeline_metrics_invalidate();
CREATE TRIGGER pipeline_metrics_invalidate_update
    AFTER UPDATE ON automation.pipeline_metrics REFERENCING OLD TABLE AS old_rows NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION automation.pipeline_metrics_invalidate();
CREATE TRIGGER pipeline_metrics_invalidate_delete
    AFTER DELETE ON automation.pipeline_metrics REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION automation.pipeline_metrics_invalidate();
CREATE TRIGGER pipeline_metrics_invalidate_truncate
    AFTER TRUNCATE ON automation.pipeline_metrics
    FOR EACH STATEMENT EXECUTE FUNCTION automation.pipeline_metrics_invalidate();

-- Roll up the hours that changed (or, the first time and on request, all of
-- them), up to the start of the current hour: the new watermark.
CREATE FUNCTION automation.refresh_pipeline_metrics_hourly(full_refresh boolean DEFAULT false)
RETURNS TABLE (buckets bigint, rows_aggregated bigint, watermark timestamptz, was_full boolean, duration_ms numeric)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    new_watermark timestamptz := pg_catalog.date_trunc('hour', pg_catalog.now(), 'UTC');
    old_watermark timestamptz;
    touched timestamptz[];
    span record;
    nr bigint;
    n bigint;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('automation.refresh_pipeline_metrics_hourly'));
    SELECT s.watermark INTO old_watermark FROM automation.pipeline_metrics_hourly_state s;
    was_full := full_refresh OR old_watermark IS NULL;
    IF was_full THEN
        DELETE FROM automation.pipeline_metrics_invalidations i WHERE i.bucket < new_watermark;
        DELETE FROM automation.pipeline_metrics_hourly;
    ELSE
        WITH gone AS (DELETE FROM automation.pipeline_metrics_invalidations i
                       WHERE i.bucket < new_watermark RETURNING i.bucket)
        SELECT pg_catalog.array_agg(DISTINCT g.bucket) INTO touched FROM gone g;
        touched := COALESCE(touched, '{}');
        DELETE FROM automation.pipeline_metrics_hourly h WHERE h.bucket = ANY (touched);
    END IF;
    -- one range scan per run of consecutive hours (everything before the
    -- watermark for a full refresh): constant bounds let the planner prune
    -- partitions and use the BRIN index on time, where a join against the
    -- list of hours would scan the whole table
    nr := 0;
    FOR span IN
        SELECT '-infinity'::timestamptz AS lo, new_watermark AS hi WHERE was_full
        UNION ALL
        SELECT min(g.b), max(g.b) + interval '1 hour'
          FROM (SELECT u.b, u.b - pg_catalog.row_number() OVER (ORDER BY u.b) * interval '1 hour' AS run
                  FROM pg_catalog.unnest(touched) AS u(b)) g
         GROUP BY g.run
         ORDER BY 1
    LOOP
        INSERT INTO automation.pipeline_metrics_hourly
        SELECT pg_catalog.date_trunc('hour', m.time, 'UTC'), m.pipeline_name, m.stage, count(*), avg(m.duration_ms),
               sum(m.records_processed), count(*) FILTER (WHERE m.status = 'success'),
               count(*) FILTER (WHERE m.status = 'error')
          FROM automation.pipeline_metrics m
         WHERE m.time >= span.lo AND m.time < span.hi
         GROUP BY 1, 2, 3;
        GET DIAGNOSTICS n = ROW_COUNT;
        nr := nr + n;
    END LOOP;
    IF was_full THEN
        SELECT count(DISTINCT h.bucket) INTO buckets FROM automation.pipeline_metrics_hourly h;
    ELSE
        buckets := pg_catalog.cardinality(touched);
    END IF;
    rows_aggregated := nr;
    watermark := new_watermark;
    duration_ms := pg_catalog.round((pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - started) * 1000)::numeric, 3);
    UPDATE automation.pipeline_metrics_hourly_state s
       SET watermark = new_watermark, refreshed_at = pg_catalog.clock_timestamp(),
           last_buckets = buckets, last_duration_ms = refresh_pipeline_metrics_hourly.duration_ms;
    RETURN NEXT;
END
$fn$;

COMMENT ON FUNCTION automation.refresh_pipeline_metrics_hourly(boolean) IS
'Bring automation.pipeline_metrics_hourly up to the start of the current hour, recomputing only the hours whose rows changed since the last refresh (late rows included); full_refresh => true recomputes everything. Returns hours refreshed, rollup rows written, the new watermark, whether it was a full refresh, and how long it took.';

-- Materialized hours, with the hours not rolled up yet (the current one,
-- and any changed since the last refresh) computed from the raw rows.
CREATE VIEW automation.pipeline_metrics_hourly_live WITH (security_invoker = true) AS
WITH state AS (SELECT COALESCE(s.watermark, '-infinity') AS watermark FROM automation.pipeline_metrics_hourly_state s),
pending AS (SELECT DISTINCT i.bucket FROM automation.pipeline_metrics_invalidations i, state
             WHERE i.bucket < state.watermark)
SELECT h.bucket, h.pipeline_name, h.stage, h.executions, h.avg_duration, h.total_records, h.successes, h.errors
  FROM automation.pipeline_metrics_hourly h, state
 WHERE h.bucket < state.watermark
   AND NOT EXISTS (SELECT FROM pending p WHERE p.bucket = h.bucket)
UNION ALL
SELECT pg_catalog.date_trunc('hour', m.time, 'UTC'), m.pipeline_name, m.stage, count(*), avg(m.duration_ms),
       sum(m.records_processed), count(*) FILTER (WHERE m.status = 'success'), count(*) FILTER (WHERE m.status = 'error')
  FROM automation.pipeline_metrics m
 WHERE m.time >= (SELECT watermark FROM state)
 GROUP BY 1, 2, 3
UNION ALL
SELECT pg_catalog.date_trunc('hour', m.time, 'UTC'), m.pipeline_name, m.stage, count(*), avg(m.duration_ms),
       sum(m.records_processed), count(*) FILTER (WHERE m.status = 'success'), count(*) FILTER (WHERE m.status = 'error')
  FROM automation.pipeline_metrics m
 -- bounds the planner can prune and index with, then the exact hours
 WHERE m.time >= (SELECT min(p.bucket) FROM pending p)
   AND m.time < (SELECT max(p.bucket) + interval '1 hour' FROM pending p)
   AND pg_catalog.date_trunc('hour', m.time, 'UTC') IN (SELECT p.bucket FROM pending p)
 GROUP BY 1, 2, 3;

COMMENT ON VIEW automation.pipeline_metrics_hourly_live IS
    'pipeline_metrics_hourly plus the hours not rolled up yet, computed on the fly (TimescaleDB''s real-time aggregate).';

------------------------------------------------------------------------------
-- Bulk ingest

-- COPY target. Typed columns, or one jsonb object per row in payload with
-- the same keys (time as ISO 8601, UTC when it has no offset). Numbers are
-- bigint and names unbounded here so that a bad value fails one row at flush
-- time, not the whole COPY.
CREATE UNLOGGED TABLE automation.metrics_staging (
    time              timestamptz,
    pipeline_name     text,
    stage             text,
    duration_ms       bigint,
    records_processed bigint,
    status            text,
    error_message     text,
    payload           jsonb
);

COMMENT ON TABLE automation.metrics_staging IS
    'UNLOGGED staging for bulk metric ingest (COPY into it, then automation.flush_metrics_staging()). Not crash-safe by design: flush promptly.';

-- Each staged row as it would land, with the reason it cannot (NULL when it
-- can). Typed columns are checked as they are (no casts, no regular
-- expressions); only jsonb payload values are parsed; an unusable payload
-- number becomes -1 so that the range check reports it.
CREATE VIEW automation.metrics_staging_checked WITH (security_invoker = true) AS
SELECT p.t_time AS time, p.t_pipeline AS pipeline_name, p.t_stage AS stage, p.t_duration AS duration_ms,
       p.t_records AS records_processed, p.t_status AS status, p.t_error AS error_message, p.payload,
       CASE
         WHEN p.t_time IS NULL AND p.bad_time_text
           THEN pg_catalog.format('time is not an ISO 8601 timestamp: %s', p.payload->>'time')
         WHEN p.t_time IS NULL THEN 'time is missing'
         WHEN NOT pg_catalog.isfinite(p.t_time) THEN pg_catalog.format('time is not finite: %s', p.t_time)
         WHEN p.t_pipeline IS NULL OR p.t_pipeline = '' THEN 'pipeline_name is missing'
         WHEN pg_catalog.length(p.t_pipeline) > 255 THEN 'pipeline_name is longer than 255 characters'
         WHEN p.t_stage IS NULL OR p.t_stage = '' THEN 'stage is missing'
         WHEN pg_catalog.length(p.t_stage) > 100 THEN 'stage is longer than 100 characters'
         WHEN p.t_duration < 0 OR p.t_duration > 2147483647
           THEN pg_catalog.format('duration_ms is not an integer from 0 to 2147483647: %s',
                                  COALESCE(p.duration_ms::text, p.payload->>'duration_ms'))
         WHEN p.t_records < 0 OR p.t_records > 2147483647
           THEN pg_catalog.format('records_processed is not an integer from 0 to 2147483647: %s',
                                  COALESCE(p.records_processed::text, p.payload->>'records_processed'))
         WHEN p.t_status IS NOT NULL
              AND p.t_status NOT IN ('running', 'success', 'error', 'warning', 'skipped', 'timeout', 'cancelled')
           THEN pg_catalog.format('status is not one of running, success, error, warning, skipped, timeout, cancelled: %s', p.t_status)
       END AS reason
  FROM (SELECT COALESCE(t.time, automation.try_timestamptz(t.payload->>'time')) AS t_time,
               COALESCE(t.pipeline_name, t.payload->>'pipeline_name') AS t_pipeline,
               COALESCE(t.stage, t.payload->>'stage') AS t_stage,
               COALESCE(t.status, t.payload->>'status') AS t_status,
               COALESCE(t.error_message, t.payload->>'error_message') AS t_error,
               CASE WHEN t.duration_ms IS NOT NULL OR t.payload IS NULL THEN t.duration_ms
                    WHEN t.payload->>'duration_ms' ~ '^[0-9]{1,10}$' THEN (t.payload->>'duration_ms')::bigint
                    WHEN t.payload->>'duration_ms' IS NOT NULL THEN -1 END AS t_duration,
               CASE WHEN t.records_processed IS NOT NULL OR t.payload IS NULL THEN t.records_processed
                    WHEN t.payload->>'records_processed' ~ '^[0-9]{1,10}$' THEN (t.payload->>'records_processed')::bigint
                    WHEN t.payload->>'records_processed' IS NOT NULL THEN -1 END AS t_records,
               t.time IS NULL AND t.payload ? 'time' AS bad_time_text,
               t.duration_ms, t.records_processed, t.payload
          FROM automation.metrics_staging t) p;

COMMENT ON VIEW automation.metrics_staging_checked IS
    'The staged metric rows as automation.flush_metrics_staging() would move them, with the reason a row would be rejected (NULL: it lands).';

-- Staging is locked for the flush (writers wait a few seconds; nothing
-- COPYed meanwhile can be lost), read for the good rows (and again for the
-- bad ones only if there are any), and truncated: no DELETE, so no dead rows
-- to vacuum and no second copy.
-- Rows go in sorted the way the (pipeline_name, time DESC) index is: index
-- insertions then touch neighbouring pages instead of random ones, which
-- saves more than the sort costs (work_mem is raised for this function so the
-- sort of a large batch stays in memory).
CREATE FUNCTION automation.flush_metrics_staging()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET work_mem = '256MB'
AS $fn$
DECLARE
    moved bigint;
    rejected bigint;
BEGIN
    LOCK TABLE automation.metrics_staging IN ACCESS EXCLUSIVE MODE;
    INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, duration_ms, records_processed, status, error_message)
    SELECT c.time, c.pipeline_name, c.stage, c.duration_ms::integer, c.records_processed::integer, c.status, c.error_message
      FROM automation.metrics_staging_checked c WHERE c.reason IS NULL
     ORDER BY c.pipeline_name, c.time DESC;
    GET DIAGNOSTICS moved = ROW_COUNT;
    -- counting is much cheaper than checking every row again: look for the
    -- rejected rows only when there are some
    SELECT count(*) - moved INTO rejected FROM automation.metrics_staging;
    IF rejected > 0 THEN
        INSERT INTO automation.errors (workflow_name, error_type, error_message, error_context)
        SELECT pg_catalog.left(c.pipeline_name, 255), 'invalid_metric_row', c.reason,
               pg_catalog.jsonb_build_object('row', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                   'time', c.time, 'pipeline_name', c.pipeline_name, 'stage', c.stage, 'duration_ms', c.duration_ms,
                   'records_processed', c.records_processed, 'status', c.status, 'error_message', c.error_message,
                   'payload', c.payload)),
                   'source', 'automation.metrics_staging')
          FROM automation.metrics_staging_checked c WHERE c.reason IS NOT NULL;
    END IF;
    TRUNCATE automation.metrics_staging;
    IF rejected > 0 THEN
        RAISE WARNING '% staged metric row(s) rejected, % moved', rejected, moved
              USING HINT = 'The rejected rows and their reasons are in automation.errors (error_type invalid_metric_row).';
    END IF;
    RETURN moved;
END
$fn$;

COMMENT ON FUNCTION automation.flush_metrics_staging() IS
'Move the rows of automation.metrics_staging into pipeline_metrics in one transaction and return how many moved; rows that fail a check go to automation.errors (error_type invalid_metric_row) with the reason, and the good ones still land.';

-- The scheduler keeps partitions made and the rollup current.
INSERT INTO automation.job (jobname, schedule, command) VALUES
    ('automation: refresh pipeline_metrics_hourly', '1 minute', 'SELECT * FROM automation.refresh_pipeline_metrics_hourly()'),
    ('automation: maintain pipeline_metrics partitions', '10 minutes', 'SELECT * FROM automation.maintain_metrics_partitions()');

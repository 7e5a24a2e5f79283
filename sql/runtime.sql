-- The workflow runtime: what workers in any language drive with plain SQL.
--
--   enqueue_execution ─► pending ──claim_executions──► running ──complete_execution──► success
--   start_execution ──────────────────────────────────► running ──fail_execution──────► error
--                                        (lease expired: claimable again)    timeout_stale_executions ─► timeout
--   error / timeout ─► automation.errors ──retry_failed_workflow──► a new pending execution (retry_of)
--                      resolved when a retry succeeds; dead-lettered when retries run out
--
-- 0.4.0, where executions live:
--   automation_workflows.execution_queue   pending and running executions of
--       enqueue_execution: narrow, a time-ordered primary key, one claim
--       index; a claim changes only unindexed columns (a HOT update)
--   automation_workflows.execution_log     finished ones, appended (no index)
--       by the transaction that completes, fails or times them out
--   automation_workflows.workflow_executions  the history users query: the
--       database's scheduler moves logged executions here in bulk,
--       milliseconds later, and sends their completion NOTIFYs (src/queue/);
--       start_execution's executions live here from the start, as before
--   automation.executions                  all three as one view
--
-- Functions are SECURITY INVOKER (callers need the table privileges) with a
-- pinned search_path; parameters are referred to as function.parameter so
-- they never collide with column names.

CREATE TABLE automation_workflows.execution_queue (
    id                uuid        NOT NULL DEFAULT automation.uuid_v7(),
    workflow_name     text        NOT NULL,
    -- higher first; within a priority, oldest run_after first, then id
    priority          integer     NOT NULL DEFAULT 0,
    run_after         timestamptz NOT NULL,
    -- claimable from: run_after while pending, the lease's end while running
    visible_at        timestamptz NOT NULL,
    -- NULL while pending; the worker holding it while running
    claimed_by        text,
    attempts          integer     NOT NULL DEFAULT 0,
    enqueued_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    started_at        timestamptz,
    metadata          jsonb       NOT NULL DEFAULT '{}',
    retry_of          uuid,
    -- at most one pending or running execution per (workflow_name, unique_key)
    unique_key        text,
    -- at most concurrency_limit running per (workflow_name, concurrency_key)
    concurrency_key   text,
    concurrency_limit integer,
    -- 0.8.0: the role that enqueued it
    owner             regrole     NOT NULL DEFAULT automation.invoker(),
    CONSTRAINT execution_queue_pkey PRIMARY KEY (id),
    CONSTRAINT execution_queue_name_check
        CHECK (workflow_name <> '' AND pg_catalog.char_length(workflow_name) <= 255),
    CONSTRAINT execution_queue_attempts_check CHECK (attempts >= 0),
    CONSTRAINT execution_queue_metadata_check CHECK (pg_catalog.jsonb_typeof(metadata) = 'object'),
    CONSTRAINT execution_queue_concurrency_check
        CHECK ((concurrency_key IS NULL) = (concurrency_limit IS NULL) AND concurrency_limit >= 1)
) WITH (-- a queue's heap shrinks and grows all day: autovacuum's truncation of
        -- its empty tail takes an ACCESS EXCLUSIVE lock that stalls every
        -- claim (seen in bench/claim.sh's sustained run); and dead rows are
        -- vacuumed early, so claims do not walk over them
        vacuum_truncate = false, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0,
        -- (0.12.0, issue 33; 80 before, listed last as the upgrade's ALTER
        -- TABLE leaves it) half of each page free: a claim rewrites its row
        -- (claimant, lease, start) and a batch claims neighbours, so with 80
        -- only a quarter of the claims found room on the row's page (a HOT
        -- update); the others inserted into both the primary key and the
        -- claim index. With 50 every claim stays on its page (bench/claim.sh:
        -- +26% claimed and completed at batch 50)
        fillfactor = 50);

-- the claim order; no column a claim changes is indexed
CREATE INDEX execution_queue_claim
    ON automation_workflows.execution_queue (workflow_name, priority DESC, run_after, id);
-- (0.8.0: a key is its owner's)
CREATE UNIQUE INDEX execution_queue_unique_key
    ON automation_workflows.execution_queue (workflow_name, owner, unique_key)
    WHERE unique_key IS NOT NULL;
CREATE INDEX execution_queue_concurrency_key
    ON automation_workflows.execution_queue (workflow_name, concurrency_key)
    WHERE concurrency_key IS NOT NULL;

COMMENT ON TABLE automation_workflows.execution_queue IS
    'Pending (claimed_by NULL) and running executions of automation.enqueue_execution(); finished ones move to workflow_executions. Read automation.executions for all of them.';

CREATE TABLE automation_workflows.execution_log (
    id            uuid        NOT NULL,
    workflow_name text        NOT NULL,
    status        text        NOT NULL,
    started_at    timestamptz,
    completed_at  timestamptz NOT NULL,
    metadata      jsonb,
    error_details jsonb,
    run_after     timestamptz,
    claimed_by    text,
    attempts      integer     NOT NULL,
    retry_of      uuid,
    -- 0.8.0
    owner         regrole     NOT NULL DEFAULT automation.invoker()
) WITH (vacuum_truncate = false, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0);

COMMENT ON TABLE automation_workflows.execution_log IS
    'Executions that finished in the queue, until the scheduler records them in workflow_executions (milliseconds; automation.record_executions() does it at once).';

SELECT pg_catalog.pg_extension_config_dump('automation_workflows.execution_queue', '');
SELECT pg_catalog.pg_extension_config_dump('automation_workflows.execution_log', '');

-- (0.13.0) with the lowest and the highest TID of the rows logged: the
-- recorder reads those blocks of the log, not all of it
CREATE FUNCTION automation.executions_logged(ids uuid[], first_row tid, last_row tid)
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'executions_logged_in_wrapper';

-- (0.15.0) a success of a queue without history, handed to the scheduler
-- through shared memory instead of the log (src/queue/handoff.rs)
CREATE FUNCTION automation.hand_off_successes(ids uuid[], workflow_names text[], started_at timestamptz[])
RETURNS uuid[]
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'hand_off_successes_wrapper';

CREATE FUNCTION automation.record_executions(batch integer DEFAULT 10000)
RETURNS bigint
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'record_executions_wrapper';

CREATE FUNCTION automation.executions_enqueued(workflow_name text)
RETURNS void
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'executions_enqueued_wrapper';

CREATE FUNCTION automation.wait_for_executions(workflow_name text, deadline timestamptz)
RETURNS void
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wait_for_executions_wrapper';

CREATE FUNCTION automation.execution_retention()
RETURNS interval
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'execution_retention_wrapper';

CREATE FUNCTION automation.error_retention()
RETURNS interval
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'error_retention_wrapper';

-- Every execution: in the queue, in the log, in the history.
CREATE VIEW automation.executions WITH (security_invoker = true) AS
SELECT q.id,
       q.workflow_name::varchar(255) AS workflow_name,
       (CASE WHEN q.claimed_by IS NULL THEN 'pending' ELSE 'running' END)::varchar(50) AS status,
       q.started_at,
       NULL::timestamptz AS completed_at,
       q.metadata,
       NULL::jsonb AS error_details,
       q.run_after,
       q.claimed_by,
       CASE WHEN q.claimed_by IS NOT NULL THEN q.visible_at END AS lease_expires_at,
       q.attempts,
       q.retry_of,
       q.owner
  FROM automation_workflows.execution_queue q
UNION ALL
SELECT l.id, l.workflow_name::varchar(255), l.status::varchar(50), l.started_at, l.completed_at, l.metadata,
       l.error_details, l.run_after, l.claimed_by, NULL::timestamptz, l.attempts, l.retry_of, l.owner
  FROM automation_workflows.execution_log l
UNION ALL
SELECT e.id, e.workflow_name, e.status, e.started_at, e.completed_at, e.metadata, e.error_details, e.run_after,
       e.claimed_by, e.lease_expires_at, e.attempts, e.retry_of, e.owner
  FROM automation_workflows.workflow_executions e;

COMMENT ON VIEW automation.executions IS
    'Every workflow execution with the columns of workflow_executions: pending and running ones of the queue, finished ones not yet recorded, and the history.';

CREATE FUNCTION automation.start_execution(workflow_name text, metadata jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.start_execution_as(caller oid, workflow_name text, metadata jsonb)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    new_id uuid;
BEGIN
    PERFORM automation.check_workflow_name(start_execution_as.workflow_name);
    PERFORM automation.check_metadata(start_execution_as.metadata);
    PERFORM automation.check_may_start(start_execution_as.caller, start_execution_as.workflow_name);
    INSERT INTO automation_workflows.workflow_executions AS e
           (workflow_name, status, started_at, metadata, attempts, owner)
    VALUES (start_execution_as.workflow_name, 'running', now(), coalesce(start_execution_as.metadata, '{}'), 1,
            start_execution_as.caller)
    RETURNING e.id INTO new_id;
    RETURN new_id;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.start_execution_as(oid, text, jsonb) FROM PUBLIC;

CREATE FUNCTION automation.enqueue_execution(workflow_name text, metadata jsonb DEFAULT '{}',
                                             run_after timestamptz DEFAULT now(),
                                             priority integer DEFAULT 0,
                                             unique_key text DEFAULT NULL,
                                             debounce boolean DEFAULT false,
                                             concurrency_key text DEFAULT NULL,
                                             concurrency_limit integer DEFAULT NULL)
RETURNS uuid
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.enqueue_execution_as(caller oid, workflow_name text, metadata jsonb, run_after timestamptz,
                                                priority integer, unique_key text, debounce boolean,
                                                concurrency_key text, concurrency_limit integer)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    new_id uuid;
    due timestamptz := coalesce(enqueue_execution_as.run_after, now());
    meta jsonb := coalesce(enqueue_execution_as.metadata, '{}');
BEGIN
    -- (the checks of check_workflow_name and check_metadata, called only
    -- when one fails: a function call per enqueue costs more than the test)
    IF coalesce(enqueue_execution_as.workflow_name, '') = '' OR char_length(enqueue_execution_as.workflow_name) > 255 THEN
        PERFORM automation.check_workflow_name(enqueue_execution_as.workflow_name);
    END IF;
    IF enqueue_execution_as.metadata IS NOT NULL AND jsonb_typeof(enqueue_execution_as.metadata) <> 'object' THEN
        PERFORM automation.check_metadata(enqueue_execution_as.metadata);
    END IF;
    IF due = 'infinity' THEN
        RAISE EXCEPTION 'run_after must be a time, not infinity: the execution could never be claimed'
              USING ERRCODE = 'datetime_field_overflow',
                    HINT = 'Leave run_after out to make it claimable now, or give the time from which it is.';
    END IF;
    IF enqueue_execution_as.priority IS NULL THEN
        RAISE EXCEPTION 'priority must not be NULL'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'The default priority is 0; higher runs first.';
    END IF;
    IF (enqueue_execution_as.concurrency_key IS NULL) <> (enqueue_execution_as.concurrency_limit IS NULL)
       OR enqueue_execution_as.concurrency_limit < 1 THEN
        RAISE EXCEPTION 'concurrency_key and concurrency_limit go together, and the limit must be at least 1'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'For example concurrency_key => ''customer-42'', concurrency_limit => 2: at most two of that customer''s executions run at once.';
    END IF;
    PERFORM automation.check_may_start(enqueue_execution_as.caller, enqueue_execution_as.workflow_name);
    PERFORM automation.executions_enqueued(enqueue_execution_as.workflow_name);
    IF enqueue_execution_as.unique_key IS NULL THEN
        INSERT INTO automation_workflows.execution_queue AS q
               (workflow_name, priority, run_after, visible_at, metadata, concurrency_key, concurrency_limit, owner)
        VALUES (enqueue_execution_as.workflow_name, enqueue_execution_as.priority, due, due, meta,
                enqueue_execution_as.concurrency_key, enqueue_execution_as.concurrency_limit, enqueue_execution_as.caller)
        RETURNING q.id INTO new_id;
        RETURN new_id;
    END IF;
    -- a unique key (the enqueuing role's: 0.8.0): the pending or running
    -- execution with that key, if any, instead of a second one (debounce: a
    -- pending one takes the new payload and due time)
    LOOP
        INSERT INTO automation_workflows.execution_queue AS q
               (workflow_name, priority, run_after, visible_at, metadata, unique_key, concurrency_key, concurrency_limit,
                owner)
        VALUES (enqueue_execution_as.workflow_name, enqueue_execution_as.priority, due, due, meta,
                enqueue_execution_as.unique_key, enqueue_execution_as.concurrency_key, enqueue_execution_as.concurrency_limit,
                enqueue_execution_as.caller)
        ON CONFLICT (workflow_name, owner, unique_key) WHERE unique_key IS NOT NULL DO NOTHING
        RETURNING q.id INTO new_id;
        IF FOUND THEN
            RETURN new_id;
        END IF;
        IF enqueue_execution_as.debounce THEN
            UPDATE automation_workflows.execution_queue q
               SET metadata = meta, run_after = due, visible_at = due, priority = enqueue_execution_as.priority
             WHERE q.workflow_name = enqueue_execution_as.workflow_name
               AND q.owner = enqueue_execution_as.caller
               AND q.unique_key = enqueue_execution_as.unique_key
               AND q.claimed_by IS NULL
            RETURNING q.id INTO new_id;
            IF FOUND THEN
                RETURN new_id;
            END IF;
        END IF;
        SELECT q.id INTO new_id FROM automation_workflows.execution_queue q
         WHERE q.workflow_name = enqueue_execution_as.workflow_name AND q.owner = enqueue_execution_as.caller
           AND q.unique_key = enqueue_execution_as.unique_key;
        IF FOUND THEN
            RETURN new_id;
        END IF;
        -- it finished in the meantime: enqueue again
    END LOOP;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.enqueue_execution_as(oid, text, jsonb, timestamptz, integer, text, boolean, text, integer) FROM PUBLIC;

CREATE FUNCTION automation.check_workflow_name(workflow_name text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF coalesce(workflow_name, '') = '' THEN
        RAISE EXCEPTION 'workflow_name must not be empty'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass the name of the workflow the execution belongs to.';
    END IF;
    IF char_length(workflow_name) > 255 THEN
        RAISE EXCEPTION 'workflow_name is % characters long; at most 255 are allowed', char_length(workflow_name)
              USING ERRCODE = 'string_data_right_truncation';
    END IF;
END
$fn$;

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

-- (0.8.0) Raise 42501 unless `caller` may start workflow `workflow_name`:
-- it has no definition, or caller owns it (may act as its owner), or was
-- granted run.
CREATE FUNCTION automation.check_may_start(caller oid, workflow_name text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT automation.may_start_workflow(check_may_start.caller, check_may_start.workflow_name) THEN
        RAISE EXCEPTION 'permission denied to start workflow %', check_may_start.workflow_name
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'A workflow with a definition is started by its owner, roles that may SET ROLE to it, and roles it was granted to (automation.grant_workflow(name, role)).';
    END IF;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.check_may_start(oid, text) FROM PUBLIC;

-- (0.8.0) May `caller` work execution of `workflow_name` owned by `owner`
-- (complete, fail, extend, claim it): act as its owner, or work (own, or
-- be granted work on) its workflow.
-- (0.12.0, issue 33) no SET clause, so that the planner inlines it into
-- the statements that ask it for every row (a function with a SET clause is
-- called, and sets and resets search_path, each time: 9% of the queue's
-- claim-and-complete at batch 50). Nothing in it looks up a name through
-- search_path: both functions are schema-qualified, OR is not an operator.
CREATE FUNCTION automation.may_work(caller oid, owner oid, workflow_name text)
RETURNS boolean
LANGUAGE sql STABLE
AS $fn$
    SELECT automation.role_may_act_as(caller, owner) OR automation.may_work_workflow(caller, workflow_name)
$fn$;
REVOKE EXECUTE ON FUNCTION automation.may_work(oid, oid, text) FROM PUBLIC;

-- Raise the error that explains why execution `id` could not be completed
-- or failed by `worker_id` (0.8.0: 42501 first, when caller may not work it).
CREATE FUNCTION automation.raise_not_running(caller oid, id uuid, worker_id text, verb text)
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
    SELECT e.status, e.claimed_by, e.owner, e.workflow_name INTO cur
      FROM automation.executions e WHERE e.id = raise_not_running.id;
    IF FOUND AND NOT automation.may_work(raise_not_running.caller, cur.owner, cur.workflow_name) THEN
        RAISE EXCEPTION 'permission denied for workflow execution %', raise_not_running.id
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'An execution is worked by the role that started it (or a role that may SET ROLE to it), and by roles its workflow''s owner granted work.';
    ELSIF NOT FOUND THEN
        RAISE EXCEPTION 'workflow execution % does not exist', raise_not_running.id
              USING ERRCODE = 'no_data_found',
                    HINT = 'Use an id returned by start_execution(), enqueue_execution() or claim_executions().';
    ELSIF cur.status <> 'running' THEN
        RAISE EXCEPTION 'cannot % workflow execution %: it is %, not running', raise_not_running.verb, raise_not_running.id, cur.status
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = CASE WHEN cur.status = 'pending'
                                THEN 'A pending execution must be claimed first, with automation.claim_executions().'
                                ELSE 'A finished execution keeps its outcome; to run it again use automation.retry_failed_workflow() or enqueue a new one.'
                           END;
    ELSE
        RAISE EXCEPTION 'cannot % workflow execution %: it is claimed by %, not by %',
                        verb, raise_not_running.id, coalesce(cur.claimed_by, '(nobody)'), raise_not_running.worker_id
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Its lease expired and another worker claimed it; discard this result. Use automation.extend_lease() for long work.';
    END IF;
END
$fn$;

CREATE FUNCTION automation.complete_executions(ids uuid[], metadata_patch jsonb DEFAULT NULL,
                                               worker_id text DEFAULT NULL)
RETURNS integer
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.complete_executions_as(caller oid, ids uuid[], metadata_patch jsonb, worker_id text)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- (0.10.0, issue 33) every statement here finds its rows by id: a kept
-- generic plan is as good as a custom one, and planning each call anew
-- (what "auto" chose) was a quarter of the hot path (bench/claim.sh)
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    done uuid[];
    logged_ids uuid[];
    legacy uuid[];
    retried boolean;
    refused uuid;
    first_row tid;
    last_row tid;
BEGIN
    IF complete_executions_as.ids IS NULL OR array_position(complete_executions_as.ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'ids must not be NULL or contain NULL'
              USING ERRCODE = 'null_value_not_allowed',
                    HINT = 'Pass the ids returned by start_execution(), enqueue_execution() or claim_executions().';
    END IF;
    IF complete_executions_as.metadata_patch IS NOT NULL AND jsonb_typeof(complete_executions_as.metadata_patch) <> 'object' THEN
        PERFORM automation.check_metadata(complete_executions_as.metadata_patch);
    END IF;
    -- the queue's: out of the queue, into the log, in one statement;
    -- (0.15.0) a success of a queue whose history keeps nothing is handed
    -- to the scheduler through shared memory instead, when it can be
    WITH finished AS (
        DELETE FROM automation_workflows.execution_queue q
         WHERE q.id = ANY (complete_executions_as.ids)
           AND q.claimed_by IS NOT NULL
           AND (complete_executions_as.worker_id IS NULL OR q.claimed_by = complete_executions_as.worker_id)
           AND automation.may_work(complete_executions_as.caller, q.owner, q.workflow_name)
        RETURNING q.*, (SELECT s.history FROM automation.queue_settings s WHERE s.workflow_name = q.workflow_name)
                       AS history),
    -- (one call for the batch; the ids it returns are logged instead)
    handed AS (
        SELECT automation.hand_off_successes(array_agg(f.id), array_agg(f.workflow_name), array_agg(f.started_at))
               AS refused
          FROM finished f
         WHERE f.history = 'none'),
    logged AS (
        INSERT INTO automation_workflows.execution_log AS l
               (id, workflow_name, status, started_at, completed_at, metadata, run_after, claimed_by, attempts, retry_of,
                owner)
        SELECT f.id, f.workflow_name, 'success', f.started_at, GREATEST(now(), f.started_at),
               CASE WHEN complete_executions_as.metadata_patch IS NULL THEN f.metadata
                    ELSE f.metadata || complete_executions_as.metadata_patch END,
               f.run_after, f.claimed_by, f.attempts, f.retry_of, f.owner
          FROM finished f
         WHERE f.history IS DISTINCT FROM 'none'
            OR f.id = ANY ((SELECT h.refused FROM handed h)::uuid[])
        RETURNING l.id, l.ctid)
    SELECT (SELECT array_agg(f.id) FROM finished f), (SELECT bool_or(f.retry_of IS NOT NULL) FROM finished f),
           (SELECT array_agg(g.id) FROM logged g), (SELECT min(g.ctid) FROM logged g), (SELECT max(g.ctid) FROM logged g)
      INTO done, retried, logged_ids, first_row, last_row;
    IF coalesce(cardinality(done), 0) < cardinality(complete_executions_as.ids) THEN
        -- the others: started by start_execution() (or queued before 0.4.0)
        WITH completed AS (
            UPDATE automation_workflows.workflow_executions e
               SET status = 'success',
                   completed_at = now(),
                   lease_expires_at = NULL,
                   metadata = CASE WHEN complete_executions_as.metadata_patch IS NULL THEN e.metadata
                                   ELSE coalesce(e.metadata, '{}') || complete_executions_as.metadata_patch END
             WHERE e.id = ANY (complete_executions_as.ids)
               AND e.status = 'running'
               AND (complete_executions_as.worker_id IS NULL OR e.claimed_by = complete_executions_as.worker_id)
               AND automation.may_work(complete_executions_as.caller, e.owner, e.workflow_name)
               -- (executions of the workflow engine end with their steps)
               AND NOT EXISTS (SELECT FROM automation_workflows.workflow_runs w WHERE w.execution_id = e.id)
            RETURNING e.id)
        SELECT array_agg(completed.id) INTO legacy FROM completed;
        -- all or nothing: an id that could not be completed fails the whole call
        SELECT x INTO refused
          FROM (SELECT unnest(complete_executions_as.ids) EXCEPT SELECT unnest(done || legacy)) AS r(x)
         LIMIT 1;
        IF refused IS NOT NULL THEN
            PERFORM automation.raise_not_running(complete_executions_as.caller, refused, complete_executions_as.worker_id, 'complete');
        END IF;
        retried := true;
    END IF;
    -- a retry that succeeds resolves the error it retried
    IF retried THEN
        UPDATE automation.errors r
           SET resolved_at = now()
         WHERE r.retry_execution_id = ANY (done || legacy) AND r.resolved_at IS NULL;
    END IF;
    IF logged_ids IS NOT NULL THEN
        PERFORM automation.executions_logged(logged_ids, first_row, last_row);
    END IF;
    RETURN coalesce(cardinality(done), 0) + coalesce(cardinality(legacy), 0);
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.complete_executions_as(oid, uuid[], jsonb, text) FROM PUBLIC;

CREATE FUNCTION automation.complete_execution(id uuid, metadata_patch jsonb DEFAULT NULL,
                                              worker_id text DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT FROM automation.complete_executions(ARRAY[complete_execution.id], complete_execution.metadata_patch,
                                               complete_execution.worker_id)
$fn$;

-- Record a failure of execution `execution_id` in automation.errors: the
-- failure of a retry updates the error it retried (so its retry count
-- carries on); any other failure opens a new error. Returns the error's id.
-- Only the failure of an execution that did fail (status error or timeout)
-- can be recorded, under that execution's own workflow name: the function
-- cannot write anything the executions table does not already say.
CREATE FUNCTION automation.record_failure(execution_id uuid, workflow_name text, error_type text,
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
    SELECT e.workflow_name, e.status, e.owner, e.metadata INTO failed
      FROM automation.executions e WHERE e.id = record_failure.execution_id;
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
           next_retry_at = now() + automation.retry_delay(r.retry_count),
           retry_input = coalesce(failed.metadata, r.retry_input)
     WHERE r.retry_execution_id = record_failure.execution_id AND r.resolved_at IS NULL
    RETURNING r.id INTO error_id;
    IF NOT FOUND THEN
        INSERT INTO automation.errors AS r
               (workflow_name, error_type, error_message, error_context, execution_id, next_retry_at, owner,
                retry_input)
        VALUES (record_failure.workflow_name, record_failure.error_type, record_failure.error_message,
                record_failure.error_context, record_failure.execution_id, now() + automation.retry_delay(0),
                failed.owner, failed.metadata)
        RETURNING r.id INTO error_id;
    END IF;
    RETURN error_id;
END
$fn$;

CREATE FUNCTION automation.fail_execution(id uuid, error_type text, error_message text,
                                          error_context jsonb DEFAULT NULL, worker_id text DEFAULT NULL)
RETURNS uuid
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.fail_execution_as(caller oid, id uuid, error_type text, error_message text,
                                             error_context jsonb, worker_id text)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    wf text;
    logged boolean;
    first_row tid;
    error_id uuid;
    details jsonb := jsonb_build_object('error_type', fail_execution_as.error_type,
                                        'error_message', fail_execution_as.error_message,
                                        'error_context', fail_execution_as.error_context);
BEGIN
    WITH failed AS (
        DELETE FROM automation_workflows.execution_queue q
         WHERE q.id = fail_execution_as.id
           AND q.claimed_by IS NOT NULL
           AND (fail_execution_as.worker_id IS NULL OR q.claimed_by = fail_execution_as.worker_id)
           AND automation.may_work(fail_execution_as.caller, q.owner, q.workflow_name)
        RETURNING q.*)
    INSERT INTO automation_workflows.execution_log AS l
           (id, workflow_name, status, started_at, completed_at, metadata, error_details, run_after, claimed_by,
            attempts, retry_of, owner)
    SELECT f.id, f.workflow_name, 'error', f.started_at, GREATEST(now(), f.started_at), f.metadata, details, f.run_after, f.claimed_by,
           f.attempts, f.retry_of, f.owner
      FROM failed f
    RETURNING l.workflow_name, l.ctid INTO wf, first_row;
    logged := FOUND;
    IF NOT logged THEN
        UPDATE automation_workflows.workflow_executions e
           SET status = 'error',
               completed_at = now(),
               lease_expires_at = NULL,
               error_details = details
         WHERE e.id = fail_execution_as.id
           AND e.status = 'running'
           AND (fail_execution_as.worker_id IS NULL OR e.claimed_by = fail_execution_as.worker_id)
           AND automation.may_work(fail_execution_as.caller, e.owner, e.workflow_name)
           AND NOT EXISTS (SELECT FROM automation_workflows.workflow_runs w WHERE w.execution_id = e.id)
        RETURNING e.workflow_name INTO wf;
        IF NOT FOUND THEN
            PERFORM automation.raise_not_running(fail_execution_as.caller, fail_execution_as.id, fail_execution_as.worker_id, 'fail');
        END IF;
    END IF;
    error_id := automation.record_failure(fail_execution_as.id, wf, fail_execution_as.error_type,
                                          fail_execution_as.error_message, fail_execution_as.error_context);
    -- (0.10.0) handed to the recorder after its failure is recorded: with
    -- no scheduler, recording happens here, and may drop the execution
    -- (history modes) that record_failure reads
    IF logged THEN
        PERFORM automation.executions_logged(ARRAY[fail_execution_as.id], first_row, first_row);
    END IF;
    RETURN error_id;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.fail_execution_as(oid, uuid, text, text, jsonb, text) FROM PUBLIC;

CREATE FUNCTION automation.claim_executions(workflow_name text, worker_id text, batch integer DEFAULT 100,
                                            lease interval DEFAULT '5 minutes', wait interval DEFAULT NULL)
RETURNS SETOF automation_workflows.workflow_executions
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.claim_executions_as(caller oid, workflow_name text, worker_id text, batch integer,
                                               lease interval, wait interval)
RETURNS SETOF automation_workflows.workflow_executions
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- (0.10.0, issue 33) plans kept from call to call: the claim is written so
-- that its generic plan walks the claim index and updates by id (see below)
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    claimed integer;
    deadline timestamptz;
    cutoff timestamptz;
    -- (0.8.0) caller may work every execution of the workflow, or only
    -- those of the roles it may act as
    everyone boolean := automation.may_work_workflow(claim_executions_as.caller, claim_executions_as.workflow_name);
BEGIN
    IF coalesce(claim_executions_as.workflow_name, '') = '' THEN
        RAISE EXCEPTION 'workflow_name must not be empty'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Claim the executions of one workflow: the name given to enqueue_execution().';
    END IF;
    IF coalesce(worker_id, '') = '' THEN
        RAISE EXCEPTION 'worker_id must not be empty'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Identify the worker, for example host:pid; complete_execution() and fail_execution() can check it.';
    END IF;
    IF batch IS NULL OR batch < 1 OR batch > 10000 THEN
        RAISE EXCEPTION 'batch must be between 1 and 10000, not %', batch
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lease IS NULL OR lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', lease
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF wait < interval '0' OR wait > interval '1 hour' THEN
        RAISE EXCEPTION 'wait must be between 0 and 1 hour, not %', wait
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'NULL or 0 returns at once; a wait returns as soon as an execution can be claimed.';
    END IF;
    deadline := clock_timestamp() + wait;
    LOOP
        -- the time of this attempt (now() stays at the transaction's start,
        -- and a waiting claim's attempts are later)
        cutoff := clock_timestamp();
        IF EXISTS (SELECT FROM automation_workflows.execution_queue q
                    WHERE q.workflow_name = claim_executions_as.workflow_name AND q.concurrency_key IS NOT NULL) THEN
            RETURN QUERY SELECT * FROM automation.claim_limited(claim_executions_as.caller, everyone,
                                                                claim_executions_as.workflow_name,
                                                                claim_executions_as.worker_id,
                                                                claim_executions_as.batch, claim_executions_as.lease,
                                                                cutoff);
        ELSE
            -- in priority order, oldest due first (an execution whose lease
            -- expired is claimable again, in its place); rows another
            -- claimer holds are skipped, never waited for
            RETURN QUERY
            WITH taken AS (
                UPDATE automation_workflows.execution_queue q
                   SET claimed_by = claim_executions_as.worker_id,
                       visible_at = cutoff + claim_executions_as.lease,
                       started_at = cutoff,
                       attempts = q.attempts + 1
                 -- (0.10.0) = ANY (ARRAY(...)), not IN (...): with the batch
                 -- size unknown to a generic plan, IN made it a hash join
                 -- over a scan of the whole queue
                 WHERE q.id = ANY (ARRAY(SELECT c.id FROM automation_workflows.execution_queue c
                                 WHERE c.workflow_name = claim_executions_as.workflow_name AND c.visible_at <= cutoff
                                   AND (everyone OR automation.role_may_act_as(claim_executions_as.caller, c.owner))
                                 ORDER BY c.priority DESC, c.run_after, c.id
                                 LIMIT claim_executions_as.batch
                                   FOR UPDATE SKIP LOCKED))
                RETURNING q.*)
            SELECT t.id, t.workflow_name::varchar(255), 'running'::varchar(50), t.started_at, NULL::timestamptz,
                   t.metadata, NULL::jsonb, t.run_after, t.claimed_by, t.visible_at, t.attempts, t.retry_of, t.owner
              FROM taken t
             ORDER BY t.priority DESC, t.run_after, t.id;
        END IF;
        GET DIAGNOSTICS claimed = ROW_COUNT;
        EXIT WHEN claimed > 0 OR deadline IS NULL OR clock_timestamp() >= deadline;
        -- until an enqueue of the workflow commits, or the deadline; no
        -- later than the next second while some of its executions are
        -- delayed or leased (they come due without waking anybody)
        PERFORM automation.wait_for_executions(
            claim_executions_as.workflow_name,
            CASE WHEN EXISTS (SELECT FROM automation_workflows.execution_queue q
                               WHERE q.workflow_name = claim_executions_as.workflow_name
                                 AND q.visible_at > clock_timestamp())
                 THEN least(deadline, clock_timestamp() + interval '1 second')
                 ELSE deadline END);
    END LOOP;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.claim_executions_as(oid, text, text, integer, interval, interval) FROM PUBLIC;

-- claim_executions when executions of the workflow have a concurrency key:
-- rows whose key has room (a first look), locked; then per key, holding a
-- transaction advisory lock on it (rows of a key another claimer is
-- deciding about are left for later) and counting again in a statement that
-- sees every committed claim, as many as the limit leaves room for.
CREATE FUNCTION automation.claim_limited(caller oid, everyone boolean, workflow_name text, worker_id text,
                                         batch integer, lease interval, cutoff timestamptz)
RETURNS SETOF automation_workflows.workflow_executions
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
-- (0.10.0) not its caller's forced generic plans: these depend on the keys
SET plan_cache_mode = auto
AS $fn$
DECLARE
    candidates uuid[];
    accepted uuid[];
    k record;
    room integer;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'executions with a concurrency key can only be claimed at READ COMMITTED isolation, not %',
                        upper(current_setting('transaction_isolation'))
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Claim in a transaction of its own, at the default isolation level.';
    END IF;
    SELECT array_agg(c.id) INTO candidates FROM (
        SELECT c.id FROM automation_workflows.execution_queue c
         WHERE c.workflow_name = claim_limited.workflow_name AND c.visible_at <= claim_limited.cutoff
           AND (claim_limited.everyone OR automation.role_may_act_as(claim_limited.caller, c.owner))
           AND (c.concurrency_key IS NULL
                OR (SELECT count(*) FROM automation_workflows.execution_queue r
                     WHERE r.workflow_name = c.workflow_name AND r.concurrency_key = c.concurrency_key
                       AND r.claimed_by IS NOT NULL AND r.visible_at > claim_limited.cutoff) < c.concurrency_limit)
         ORDER BY c.priority DESC, c.run_after, c.id
         LIMIT claim_limited.batch
           FOR UPDATE SKIP LOCKED) c;
    IF candidates IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(c.id) INTO accepted
      FROM automation_workflows.execution_queue c
     WHERE c.id = ANY (candidates) AND c.concurrency_key IS NULL;
    FOR k IN SELECT c.concurrency_key AS key, min(c.concurrency_limit) AS lim
               FROM automation_workflows.execution_queue c
              WHERE c.id = ANY (candidates) AND c.concurrency_key IS NOT NULL
              GROUP BY c.concurrency_key ORDER BY c.concurrency_key
    LOOP
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(hashtext('automation_ext concurrency key'),
                                                    hashtext(claim_limited.workflow_name || '/' || k.key));
        SELECT k.lim - count(*) INTO room FROM automation_workflows.execution_queue r
         WHERE r.workflow_name = claim_limited.workflow_name AND r.concurrency_key = k.key
           AND r.claimed_by IS NOT NULL AND r.visible_at > claim_limited.cutoff;
        IF room > 0 THEN
            accepted := accepted || ARRAY(
                SELECT c.id FROM automation_workflows.execution_queue c
                 WHERE c.id = ANY (candidates) AND c.concurrency_key = k.key
                 ORDER BY c.priority DESC, c.run_after, c.id
                 LIMIT room);
        END IF;
    END LOOP;
    RETURN QUERY
    WITH taken AS (
        UPDATE automation_workflows.execution_queue q
           SET claimed_by = claim_limited.worker_id,
               visible_at = claim_limited.cutoff + claim_limited.lease,
               started_at = claim_limited.cutoff,
               attempts = q.attempts + 1
         WHERE q.id = ANY (accepted)
        RETURNING q.*)
    SELECT t.id, t.workflow_name::varchar(255), 'running'::varchar(50), t.started_at, NULL::timestamptz,
           t.metadata, NULL::jsonb, t.run_after, t.claimed_by, t.visible_at, t.attempts, t.retry_of, t.owner
      FROM taken t
     ORDER BY t.priority DESC, t.run_after, t.id;
END
$fn$;

CREATE FUNCTION automation.extend_lease(id uuid, worker_id text, lease interval DEFAULT '5 minutes')
RETURNS timestamptz
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.extend_lease_as(caller oid, id uuid, worker_id text, lease interval)
RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    expires timestamptz;
BEGIN
    UPDATE automation_workflows.execution_queue q
       SET visible_at = now() + extend_lease_as.lease
     WHERE q.id = extend_lease_as.id AND q.claimed_by = extend_lease_as.worker_id
       AND automation.may_work(extend_lease_as.caller, q.owner, q.workflow_name)
    RETURNING q.visible_at INTO expires;
    IF FOUND THEN
        RETURN expires;
    END IF;
    UPDATE automation_workflows.workflow_executions e
       SET lease_expires_at = now() + extend_lease_as.lease
     WHERE e.id = extend_lease_as.id AND e.status = 'running' AND e.claimed_by = extend_lease_as.worker_id
       AND automation.may_work(extend_lease_as.caller, e.owner, e.workflow_name)
    RETURNING e.lease_expires_at INTO expires;
    IF NOT FOUND THEN
        PERFORM automation.raise_not_running(extend_lease_as.caller, extend_lease_as.id, extend_lease_as.worker_id, 'extend the lease of');
    END IF;
    RETURN expires;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.extend_lease_as(oid, uuid, text, interval) FROM PUBLIC;

CREATE FUNCTION automation.timeout_stale_executions(older_than interval DEFAULT '1 hour',
                                                    batch integer DEFAULT 1000)
RETURNS TABLE (id uuid)
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.timeout_stale_executions_as(caller oid, older_than interval, batch integer)
RETURNS TABLE (id uuid)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    stale record;
    logged uuid[];
    logged_names text[];
    first_row tid;
    last_row tid;
BEGIN
    IF batch IS NULL OR batch < 1 THEN
        RAISE EXCEPTION 'batch must be positive, not %', batch USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF older_than IS NULL OR older_than <= interval '0' THEN
        RAISE EXCEPTION 'older_than must be a positive interval, not %', coalesce(older_than::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Executions running for longer than older_than are timed out; ''0'' or less would time out every running one.';
    END IF;
    -- 0.5.0: steps of workflow executions whose lease or timeout expired,
    -- and executions past their workflow's timeout (run_workflow's
    -- executions are timed out by their definition, not by older_than)
    PERFORM automation.expire_steps(NULL, timeout_stale_executions_as.batch);
    -- the queue's running executions, then the history's (start_execution's);
    -- one batch per call; rows being updated elsewhere are skipped
    WITH batch_rows AS (
        SELECT q.id FROM automation_workflows.execution_queue q
         WHERE q.claimed_by IS NOT NULL AND q.started_at < now() - timeout_stale_executions_as.older_than
           AND automation.may_work(timeout_stale_executions_as.caller, q.owner, q.workflow_name)
         ORDER BY q.started_at
         LIMIT timeout_stale_executions_as.batch
           FOR UPDATE SKIP LOCKED),
    timed_out AS (
        DELETE FROM automation_workflows.execution_queue q USING batch_rows b WHERE q.id = b.id RETURNING q.*),
    moved AS (
        INSERT INTO automation_workflows.execution_log AS l
               (id, workflow_name, status, started_at, completed_at, metadata, error_details, run_after,
                claimed_by, attempts, retry_of, owner)
        SELECT t.id, t.workflow_name, 'timeout', t.started_at, GREATEST(now(), t.started_at), t.metadata,
               jsonb_build_object('reason', 'execution_timeout'), t.run_after, t.claimed_by, t.attempts, t.retry_of,
               t.owner
          FROM timed_out t
        RETURNING l.id, l.workflow_name, l.ctid)
    SELECT array_agg(moved.id), array_agg(moved.workflow_name), min(moved.ctid), max(moved.ctid)
      INTO logged, logged_names, first_row, last_row FROM moved;
    -- (0.10.0) failures first, while the executions are in the log:
    -- recording them may drop them (history modes)
    FOR stale IN
        SELECT u.execution_id, u.workflow_name FROM unnest(logged, logged_names) AS u(execution_id, workflow_name)
    LOOP
        PERFORM automation.record_failure(stale.execution_id, stale.workflow_name, 'execution_timeout',
                                          format('running for longer than %s', older_than), NULL);
        id := stale.execution_id;
        RETURN NEXT;
    END LOOP;
    IF logged IS NOT NULL THEN
        PERFORM automation.executions_logged(logged, first_row, last_row);
    END IF;
    IF coalesce(cardinality(logged), 0) >= batch THEN
        RETURN;
    END IF;
    FOR stale IN
        WITH batch_rows AS (
            SELECT e.id FROM automation_workflows.workflow_executions e
             WHERE e.status = 'running' AND e.started_at < now() - timeout_stale_executions_as.older_than
               AND NOT EXISTS (SELECT FROM automation_workflows.workflow_runs w WHERE w.execution_id = e.id)
               AND automation.may_work(timeout_stale_executions_as.caller, e.owner, e.workflow_name)
             ORDER BY e.started_at
             LIMIT timeout_stale_executions_as.batch - coalesce(cardinality(logged), 0)
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
REVOKE EXECUTE ON FUNCTION automation.timeout_stale_executions_as(oid, interval, integer) FROM PUBLIC;

CREATE FUNCTION automation.retry_failed_workflow(workflow_name text, max_retries integer DEFAULT 3)
RETURNS boolean
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.retry_failed_workflow_as(caller oid, workflow_name text, max_retries integer)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    err automation.errors;
    original_metadata jsonb;
    retry_id uuid;
BEGIN
    IF max_retries IS NULL OR max_retries < 0 THEN
        RAISE EXCEPTION 'max_retries must be zero or more, not %', max_retries
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- errors whose retries ran out (and whose last retry is not still
    -- running) move to the dead-letter state
    UPDATE automation.errors r
       SET dead_lettered_at = now()
     WHERE r.id IN (
            SELECT d.id FROM automation.errors d
             WHERE d.workflow_name = retry_failed_workflow_as.workflow_name
               AND d.resolved_at IS NULL AND d.dead_lettered_at IS NULL
               -- (0.8.0) the caller's to retry; never the workflow engine's
               -- failures (its executions retry through their definition's
               -- retry, and are re-run with rerun_workflow)
               AND automation.may_work(retry_failed_workflow_as.caller, d.owner, d.workflow_name)
               AND d.error_type NOT IN ('step_failed', 'workflow_timeout')
               AND d.retry_count >= retry_failed_workflow_as.max_retries
               AND NOT automation.retry_in_flight(d.retry_execution_id)
               FOR UPDATE SKIP LOCKED);
    -- the oldest open error whose backoff has passed and whose last retry ended
    SELECT r.* INTO err
      FROM automation.errors r
     WHERE r.workflow_name = retry_failed_workflow_as.workflow_name
       AND r.resolved_at IS NULL AND r.dead_lettered_at IS NULL
       AND automation.may_work(retry_failed_workflow_as.caller, r.owner, r.workflow_name)
       AND r.error_type NOT IN ('step_failed', 'workflow_timeout')
       AND r.retry_count < retry_failed_workflow_as.max_retries
       AND coalesce(r.next_retry_at, '-infinity') <= now()
       AND NOT automation.retry_in_flight(r.retry_execution_id)
     ORDER BY r.error_time
     LIMIT 1
       FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- re-enqueue with the failed execution's own metadata: kept in the error
    -- since 0.10.0 (the history may not keep the execution: history modes,
    -- retention), else read from the execution; errors recorded by hand,
    -- with no execution, retry with their error_context
    original_metadata := coalesce(err.retry_input,
                                  (SELECT e.metadata FROM automation.executions e WHERE e.id = err.execution_id),
                                  err.error_context, '{}');
    INSERT INTO automation_workflows.execution_queue AS q
           (workflow_name, run_after, visible_at, metadata, retry_of, owner)
    VALUES (err.workflow_name, now(), now(),
            CASE WHEN jsonb_typeof(original_metadata) = 'object' THEN original_metadata
                 ELSE jsonb_build_object('error_context', original_metadata) END,
            err.execution_id, err.owner)
    RETURNING q.id INTO retry_id;
    PERFORM automation.executions_enqueued(err.workflow_name);
    UPDATE automation.errors r
       SET retry_count = r.retry_count + 1,
           last_retry_at = now(),
           retry_execution_id = retry_id
     WHERE r.id = err.id;
    RETURN true;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.retry_failed_workflow_as(oid, text, integer) FROM PUBLIC;

-- Is the retry `id` still pending or running?
CREATE FUNCTION automation.retry_in_flight(id uuid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT id IS NOT NULL AND (
        EXISTS (SELECT FROM automation_workflows.execution_queue q WHERE q.id = retry_in_flight.id)
        OR EXISTS (SELECT FROM automation_workflows.workflow_executions e
                    WHERE e.id = retry_in_flight.id AND e.status IN ('pending', 'running', 'retrying')))
$fn$;

-- The seed's workflow status view, over definitions and executions.
-- security_invoker: callers see through it only what they may read.
CREATE VIEW automation.v_workflow_status WITH (security_invoker = true) AS
SELECT wf.id,
       wf.name,
       wf.version,
       wf.is_active,
       count(we.id) AS total_executions,
       count(we.id) FILTER (WHERE we.status = 'success') AS successes,
       count(we.id) FILTER (WHERE we.status = 'error') AS errors,
       count(we.id) FILTER (WHERE we.status = 'timeout') AS timeouts,
       count(we.id) FILTER (WHERE we.status IN ('pending', 'running')) AS in_progress,
       avg(extract(epoch FROM we.completed_at - we.started_at)) AS avg_duration_seconds,
       max(we.started_at) AS last_started_at
  FROM automation_workflows.definitions wf
  LEFT JOIN automation.executions we ON we.workflow_name = wf.name
 GROUP BY wf.id, wf.name, wf.version, wf.is_active;

-- Bounded history: finished executions older than
-- automation.execution_retention, and resolved or dead-lettered errors older
-- than automation.error_retention, a batch per transaction. An execution an
-- open error still refers to is kept (its retry needs its metadata). A
-- procedure that COMMITs may not have a SET clause: every name and operator
-- is qualified instead.
CREATE PROCEDURE automation.purge_executions(batch integer DEFAULT 10000)
LANGUAGE plpgsql
AS $fn$
DECLARE
    keep_executions interval := automation.execution_retention();
    keep_errors interval := automation.error_retention();
    n bigint;
BEGIN
    IF batch IS NULL OR batch OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch must be positive, not %', batch USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- 0 keeps everything (as every retention setting)
    IF keep_executions OPERATOR(pg_catalog.>) interval '0' THEN
        LOOP
            DELETE FROM automation_workflows.workflow_executions e
             WHERE e.id OPERATOR(pg_catalog.=) ANY (ARRAY(
                    SELECT o.id FROM automation_workflows.workflow_executions o
                     WHERE o.completed_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) keep_executions)
                       AND o.status OPERATOR(pg_catalog.=) ANY ('{success,error,timeout,cancelled}'::text[])
                       -- an open error keeps its execution (its retry needs the
                       -- metadata) until error_retention: then both go (0.8.0;
                       -- 0.7.0 kept every failed execution for ever)
                       AND (NOT EXISTS (SELECT FROM automation.errors r
                                         WHERE r.resolved_at IS NULL AND r.dead_lettered_at IS NULL
                                           AND (r.execution_id OPERATOR(pg_catalog.=) o.id
                                                OR r.retry_execution_id OPERATOR(pg_catalog.=) o.id))
                            OR (keep_errors OPERATOR(pg_catalog.>) interval '0'
                                AND o.completed_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) keep_errors)))
                     LIMIT batch));
            GET DIAGNOSTICS n = ROW_COUNT;
            COMMIT;
            EXIT WHEN n OPERATOR(pg_catalog.<) batch;
        END LOOP;
    END IF;
    IF keep_errors OPERATOR(pg_catalog.>) interval '0' THEN
        LOOP
            DELETE FROM automation.errors r
             WHERE r.id OPERATOR(pg_catalog.=) ANY (ARRAY(
                    SELECT o.id FROM automation.errors o
                     -- (0.8.0) open errors too, error_retention after they happened
                     WHERE COALESCE(o.resolved_at, o.dead_lettered_at, o.error_time)
                           OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) keep_errors)
                     LIMIT batch));
            GET DIAGNOSTICS n = ROW_COUNT;
            COMMIT;
            EXIT WHEN n OPERATOR(pg_catalog.<) batch;
        END LOOP;
    END IF;
END
$fn$;

COMMENT ON FUNCTION automation.start_execution(text, jsonb) IS
'Record an execution that starts now (status running, in workflow_executions). Returns its id.';
COMMENT ON FUNCTION automation.enqueue_execution(text, jsonb, timestamptz, integer, text, boolean, text, integer) IS
'Queue an execution (status pending) that workers may claim from run_after on; higher priority first. With unique_key, returns the pending or running execution with that key instead of queueing a second (debounce: a pending one takes the new metadata, run_after and priority). With concurrency_key and concurrency_limit, at most that many executions with the key run at once. Returns the id.';
COMMENT ON FUNCTION automation.complete_execution(uuid, jsonb, text) IS
'Mark a running execution success, merging metadata_patch into its metadata; with worker_id, only if that worker holds it. Resolves the error it retried, if any.';
COMMENT ON FUNCTION automation.complete_executions(uuid[], jsonb, text) IS
'Mark running executions success in one statement (all or none: one that is not running, or not held by worker_id, fails the call). Returns how many.';
COMMENT ON FUNCTION automation.fail_execution(uuid, text, text, jsonb, text) IS
'Mark a running execution error and record the failure in automation.errors in the same transaction. Returns the error id.';
COMMENT ON FUNCTION automation.claim_executions(text, text, integer, interval, interval) IS
'Claim up to batch due executions of a workflow for worker_id (FOR UPDATE SKIP LOCKED; higher priority first, then oldest due; an expired lease is claimable again). With wait, waits up to that long for one to become claimable. Returns the claimed rows, now running.';
REVOKE EXECUTE ON FUNCTION automation.claim_limited(oid, boolean, text, text, integer, interval, timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION automation.claim_limited(oid, boolean, text, text, integer, interval, timestamptz) IS
'Internal: claim_executions for a workflow whose queued executions have concurrency keys.';
COMMENT ON FUNCTION automation.extend_lease(uuid, text, interval) IS
'Extend the lease of an execution the worker holds; returns the new expiry.';
COMMENT ON FUNCTION automation.timeout_stale_executions(interval, integer) IS
'Time out up to batch executions running for longer than older_than (status timeout, error recorded). Returns their ids; call again until it returns none.';
COMMENT ON FUNCTION automation.retry_failed_workflow(text, integer) IS
'Re-enqueue the oldest open error of a workflow whose backoff has passed, with the original metadata. Returns whether it did. Errors out of retries are dead-lettered.';
COMMENT ON FUNCTION automation.retry_delay(integer) IS
'Backoff before the next retry: automation.retry_base_delay * 2^retry_count, at most automation.retry_max_delay, with jitter over the upper half.';
REVOKE EXECUTE ON FUNCTION automation.record_failure(uuid, text, text, text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION automation.retry_in_flight(uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION automation.executions_logged(uuid[], tid, tid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION automation.hand_off_successes(uuid[], text[], timestamptz[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION automation.executions_enqueued(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION automation.wait_for_executions(text, timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION automation.record_failure(uuid, text, text, text, jsonb) IS
'Internal: record the failure of an execution that failed (status error or timeout) in automation.errors (a failed retry updates the error it retried).';
COMMENT ON FUNCTION automation.check_metadata(jsonb) IS 'Internal: refuse execution metadata that is not a JSON object.';
REVOKE EXECUTE ON FUNCTION automation.raise_not_running(oid, uuid, text, text) FROM PUBLIC;
COMMENT ON FUNCTION automation.raise_not_running(oid, uuid, text, text) IS
'Internal: raise the error explaining why an execution cannot be completed or failed.';
COMMENT ON FUNCTION automation.check_workflow_name(text) IS 'Internal: refuse an empty workflow name.';
COMMENT ON FUNCTION automation.retry_in_flight(uuid) IS 'Internal: is this retry execution still pending or running?';
COMMENT ON FUNCTION automation.executions_logged(uuid[], tid, tid) IS
'Internal: the runtime functions logged these finished executions, between TIDs first_row and last_row; the scheduler records them after commit, reading only those blocks of the log (or, with none running, this records them now).';
COMMENT ON FUNCTION automation.hand_off_successes(uuid[], text[], timestamptz[]) IS
'Internal: the successes of queues whose history keeps nothing (ids, workflow names, start times), handed to the scheduler through shared memory to be counted and notified after commit; returns the ids that must be logged instead (no scheduler, no room, a name over 64 bytes).';
COMMENT ON FUNCTION automation.record_executions(integer) IS
'Move up to batch finished executions from the execution log into workflow_executions now, notifying their completion, and count and notify the successes of queues without history handed to the scheduler; the scheduler does both within milliseconds of their commit. Returns how many.';
COMMENT ON FUNCTION automation.executions_enqueued(text) IS
'Internal: executions of this workflow were enqueued; its waiting claimers are woken when the transaction commits.';
COMMENT ON FUNCTION automation.wait_for_executions(text, timestamptz) IS
'Internal: one step of a waiting claim_executions (sleeps on the latch until an enqueue of the workflow commits, the deadline, or a second).';
COMMENT ON FUNCTION automation.execution_retention() IS 'The setting automation.execution_retention as an interval.';
COMMENT ON FUNCTION automation.error_retention() IS 'The setting automation.error_retention as an interval.';
COMMENT ON FUNCTION automation.uuid_v7() IS 'A time-ordered (version 7) UUID: the ids of queued executions.';
COMMENT ON PROCEDURE automation.purge_executions(integer) IS
'Delete finished executions older than automation.execution_retention (those an open error refers to: once older than automation.error_retention) and errors resolved, dead-lettered or raised more than automation.error_retention ago, batch rows per transaction (0 keeps them; CALL it at top level).';

-- 0.8.0 (issue 27): the queue's tables are read through row-level security
-- (each role what it may act on or work; monitors everything) and written
-- only by the functions above.
ALTER TABLE automation_workflows.execution_queue ENABLE ROW LEVEL SECURITY;
CREATE POLICY execution_queue_read ON automation_workflows.execution_queue FOR SELECT
    USING (automation.may_read(owner, workflow_name));
ALTER TABLE automation_workflows.execution_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY execution_log_read ON automation_workflows.execution_log FOR SELECT
    USING (automation.may_read(owner, workflow_name));
ALTER TABLE automation.errors ENABLE ROW LEVEL SECURITY;
CREATE POLICY errors_read ON automation.errors FOR SELECT
    USING (automation.may_read(owner, workflow_name::text));
CREATE POLICY errors_insert ON automation.errors FOR INSERT
    WITH CHECK (automation.may_act_as(owner));
CREATE POLICY errors_update ON automation.errors FOR UPDATE
    USING (automation.may_act_as(owner)) WITH CHECK (automation.may_act_as(owner));

-- 0.8.0 (issue 29): counters of finished executions, by workflow and
-- status, for alerts (a rate of failures): every execution that enters a
-- finished status in workflow_executions (the queue's, recorded from the
-- log; the engine's; start_execution's) counts once, whatever the history
-- keeps later. Sharded by backend (pid % 8) so that concurrent completions
-- of one workflow do not queue on one row; read summed (live_metrics).
-- Counters: not dumped (a restore starts them at 0, a counter reset).
CREATE TABLE automation.execution_stats (
    workflow_name text    NOT NULL,
    status        text    NOT NULL,
    shard         integer NOT NULL,
    finished      bigint  NOT NULL DEFAULT 0,
    since         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT execution_stats_pkey PRIMARY KEY (workflow_name, status, shard)
);
COMMENT ON TABLE automation.execution_stats IS
    'Finished executions counted by workflow and status (summed over shards) since "since": the counters behind automation_executions_finished_total. Not dumped.';

CREATE FUNCTION automation.count_finished_executions()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_RELID IS DISTINCT FROM 'automation_workflows.workflow_executions'::regclass OR TG_LEVEL <> 'STATEMENT' THEN
        RAISE EXCEPTION 'automation.count_finished_executions() only runs as a statement trigger of automation_workflows.workflow_executions'
              USING ERRCODE = 'wrong_object_type';
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO automation.execution_stats AS s (workflow_name, status, shard, finished)
        SELECT n.workflow_name, n.status, pg_backend_pid() % 8, count(*)
          FROM new_rows n
         WHERE n.status IN ('success', 'error', 'timeout', 'cancelled')
         GROUP BY n.workflow_name, n.status
        ON CONFLICT (workflow_name, status, shard) DO UPDATE SET finished = s.finished + EXCLUDED.finished;
    ELSE
        INSERT INTO automation.execution_stats AS s (workflow_name, status, shard, finished)
        SELECT n.workflow_name, n.status, pg_backend_pid() % 8, count(*)
          FROM new_rows n JOIN old_rows o ON o.id = n.id
         WHERE n.status IN ('success', 'error', 'timeout', 'cancelled') AND o.status IS DISTINCT FROM n.status
         GROUP BY n.workflow_name, n.status
        ON CONFLICT (workflow_name, status, shard) DO UPDATE SET finished = s.finished + EXCLUDED.finished;
    END IF;
    RETURN NULL;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.count_finished_executions() FROM PUBLIC;
COMMENT ON FUNCTION automation.count_finished_executions() IS
'Internal: statement triggers of workflow_executions that count executions entering a finished status in automation.execution_stats.';

CREATE TRIGGER workflow_executions_count_inserted
    AFTER INSERT ON automation_workflows.workflow_executions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION automation.count_finished_executions();
CREATE TRIGGER workflow_executions_count_finished
    AFTER UPDATE ON automation_workflows.workflow_executions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION automation.count_finished_executions();

-- 0.10.0 (issue 33): what the history keeps of a queue's finished
-- executions, per workflow. The recorder (src/queue/) reads it when it moves
-- the log into workflow_executions:
--   full    every finished execution (the default: no row here)
--   errors  failures, timeouts, cancellations (and so dead letters); a
--           success is counted in execution_stats and notified, not kept
--   none    nothing: every finished execution is counted and notified only
-- The completion NOTIFY, the counters, automation.errors (retries, dead
-- letters) and automation.executions (until recorded) work in every mode.
-- Only the queue's executions (enqueue_execution) are concerned: the
-- workflow engine's and start_execution's live in the history from the start.
-- Written only by set_queue_history (by who may manage the workflow);
-- read by whoever may read the workflow. Dumped.
CREATE TABLE automation.queue_settings (
    workflow_name text        NOT NULL,
    history       text        NOT NULL,
    set_by        regrole     NOT NULL,
    set_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT queue_settings_pkey PRIMARY KEY (workflow_name),
    CONSTRAINT queue_settings_history_check CHECK (history IN ('errors', 'none')),
    -- a workflow's settings go with its definition (and its name)
    CONSTRAINT queue_settings_workflow_name_fkey FOREIGN KEY (workflow_name)
        REFERENCES automation_workflows.definitions (name) ON UPDATE CASCADE ON DELETE CASCADE
);
COMMENT ON TABLE automation.queue_settings IS
    'What the history keeps of the finished executions of a queue (workflow), when not everything: errors (failures only) or none (counters and NOTIFYs only). Set with automation.set_queue_history().';
SELECT pg_catalog.pg_extension_config_dump('automation.queue_settings', '');
ALTER TABLE automation.queue_settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY queue_settings_read ON automation.queue_settings FOR SELECT
    USING (automation.may_read_workflow(workflow_name));

CREATE FUNCTION automation.set_queue_history(workflow_name text, mode text)
RETURNS text
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';
CREATE FUNCTION automation.set_queue_history_as(caller oid, workflow_name text, mode text)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    def automation_workflows.definitions;
    previous text;
BEGIN
    IF set_queue_history_as.mode IS NULL OR set_queue_history_as.mode NOT IN ('full', 'errors', 'none') THEN
        RAISE EXCEPTION 'history mode must be full, errors or none, not %', coalesce(set_queue_history_as.mode, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'full: keep every finished execution; errors: keep failures, timeouts and cancellations, count successes; none: count and notify only.';
    ELSIF set_queue_history_as.workflow_name IS NULL THEN
        RAISE EXCEPTION 'workflow_name must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO def FROM automation_workflows.definitions d WHERE d.name = set_queue_history_as.workflow_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow % has no definition', set_queue_history_as.workflow_name
              USING ERRCODE = 'undefined_object',
                    HINT = 'A queue''s settings belong to the owner of its workflow''s definition; a queue-only workflow may have a definition without steps: INSERT INTO automation_workflows.definitions (name, definition) VALUES (''...'', ''{}'').';
    ELSIF NOT automation.role_may_act_as(set_queue_history_as.caller, def.owner) THEN
        RAISE EXCEPTION 'permission denied for workflow %', set_queue_history_as.workflow_name
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'Only the owner of the workflow''s definition (and roles that may SET ROLE to it) set what its history keeps.';
    END IF;
    SELECT s.history INTO previous FROM automation.queue_settings s
     WHERE s.workflow_name = set_queue_history_as.workflow_name FOR UPDATE;
    IF set_queue_history_as.mode = 'full' THEN
        DELETE FROM automation.queue_settings s WHERE s.workflow_name = set_queue_history_as.workflow_name;
    ELSE
        INSERT INTO automation.queue_settings AS s (workflow_name, history, set_by)
        VALUES (set_queue_history_as.workflow_name, set_queue_history_as.mode, set_queue_history_as.caller::regrole)
        ON CONFLICT ON CONSTRAINT queue_settings_pkey
        DO UPDATE SET history = EXCLUDED.history, set_by = EXCLUDED.set_by, set_at = now();
    END IF;
    RETURN coalesce(previous, 'full');
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.set_queue_history_as(oid, text, text) FROM PUBLIC;
COMMENT ON FUNCTION automation.set_queue_history(text, text) IS
'Set what the history (workflow_executions) keeps of the queue''s finished executions of workflow_name: full (every one, the default), errors (failures, timeouts and cancellations; successes are counted and notified only) or none (counted and notified only). Applies to executions recorded from now on. Returns the previous mode. For the owner of the workflow''s definition.';
COMMENT ON FUNCTION automation.set_queue_history_as(oid, text, text) IS
'Internal: set_queue_history as caller (SECURITY DEFINER; nobody may execute it directly).';

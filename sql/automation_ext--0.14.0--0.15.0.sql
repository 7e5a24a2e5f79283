-- automation_ext 0.14.0 -> 0.15.0
--
-- Frozen once released, like every upgrade script. Runs with search_path =
-- pg_catalog; everything is schema-qualified. pg_test/sql/upgrade.sql checks
-- that an upgraded database has exactly the catalog of a fresh install.
--
-- 0.15.0, issue 33 (the queue at the lean table's speed): a success of a
-- queue whose history keeps nothing (set_queue_history(..., 'none')) is no
-- longer written to the execution log by the completing transaction: it is
-- handed to the database's scheduler through shared memory
-- (automation.hand_off_successes, one call per completion), which counts it in execution_stats and
-- sends its completion NOTIFY once the completing transaction committed. A
-- crash loses the counts and NOTIFYs of the hand-offs not yet drained
-- (milliseconds' worth); 'errors' and 'full' queues go through the log as
-- before. With no scheduler recording for the database, no room in shared
-- memory or a workflow name over 64 bytes, the success is logged as before.
-- Executions already in the log when this runs are recorded as before.

CREATE FUNCTION automation.hand_off_successes(ids uuid[], workflow_names text[], started_at timestamptz[])
RETURNS uuid[]
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'hand_off_successes_wrapper';
REVOKE EXECUTE ON FUNCTION automation.hand_off_successes(uuid[], text[], timestamptz[]) FROM PUBLIC;
COMMENT ON FUNCTION automation.hand_off_successes(uuid[], text[], timestamptz[]) IS
'Internal: the successes of queues whose history keeps nothing (ids, workflow names, start times), handed to the scheduler through shared memory to be counted and notified after commit; returns the ids that must be logged instead (no scheduler, no room, a name over 64 bytes).';

COMMENT ON FUNCTION automation.record_executions(integer) IS
'Move up to batch finished executions from the execution log into workflow_executions now, notifying their completion, and count and notify the successes of queues without history handed to the scheduler; the scheduler does both within milliseconds of their commit. Returns how many.';

CREATE OR REPLACE FUNCTION automation.complete_executions_as(caller oid, ids uuid[], metadata_patch jsonb, worker_id text)
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

-- automation_ext 0.12.0 -> 0.13.0
--
-- Frozen once released, like every upgrade script. Runs with search_path =
-- pg_catalog; everything is schema-qualified. pg_test/sql/upgrade.sql checks
-- that an upgraded database has exactly the catalog of a fresh install.
--
-- 0.13.0, issue 33 (the recorder's reading of the execution log): the
-- functions that log finished executions (complete_executions,
-- fail_execution, timeout_stale_executions, cancel_workflow of a queued
-- execution) hand the scheduler the lowest and the highest TID of the rows
-- they logged, through automation.executions_logged(uuid[], tid, tid),
-- which replaces executions_logged(uuid[]); a recording reads those blocks
-- of the log (a TID range scan) instead of all of it, past every row
-- earlier recordings removed and every empty page of its high-water mark.
-- Until this script runs, the 0.12.0 functions go on calling the
-- one-argument function, which the library keeps: their recordings read the
-- whole log, as before.

-- (0.13.0) with the lowest and the highest TID of the rows logged: the
-- recorder reads those blocks of the log, not all of it
CREATE FUNCTION automation.executions_logged(ids uuid[], first_row tid, last_row tid)
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'executions_logged_in_wrapper';
REVOKE EXECUTE ON FUNCTION automation.executions_logged(uuid[], tid, tid) FROM PUBLIC;
COMMENT ON FUNCTION automation.executions_logged(uuid[], tid, tid) IS
'Internal: the runtime functions logged these finished executions, between TIDs first_row and last_row; the scheduler records them after commit, reading only those blocks of the log (or, with none running, this records them now).';

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
    -- the queue's: out of the queue, into the log, in one statement
    WITH finished AS (
        DELETE FROM automation_workflows.execution_queue q
         WHERE q.id = ANY (complete_executions_as.ids)
           AND q.claimed_by IS NOT NULL
           AND (complete_executions_as.worker_id IS NULL OR q.claimed_by = complete_executions_as.worker_id)
           AND automation.may_work(complete_executions_as.caller, q.owner, q.workflow_name)
        RETURNING q.*),
    logged AS (
        INSERT INTO automation_workflows.execution_log AS l
               (id, workflow_name, status, started_at, completed_at, metadata, run_after, claimed_by, attempts, retry_of,
                owner)
        SELECT f.id, f.workflow_name, 'success', f.started_at, GREATEST(now(), f.started_at),
               CASE WHEN complete_executions_as.metadata_patch IS NULL THEN f.metadata
                    ELSE f.metadata || complete_executions_as.metadata_patch END,
               f.run_after, f.claimed_by, f.attempts, f.retry_of, f.owner
          FROM finished f
        RETURNING l.id, l.retry_of, l.ctid)
    SELECT array_agg(logged.id), bool_or(logged.retry_of IS NOT NULL), min(logged.ctid), max(logged.ctid)
      INTO done, retried, first_row, last_row FROM logged;
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
    IF done IS NOT NULL THEN
        PERFORM automation.executions_logged(done, first_row, last_row);
    END IF;
    RETURN coalesce(cardinality(done), 0) + coalesce(cardinality(legacy), 0);
END
$fn$;

CREATE OR REPLACE FUNCTION automation.fail_execution_as(caller oid, id uuid, error_type text, error_message text,
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

CREATE OR REPLACE FUNCTION automation.timeout_stale_executions_as(caller oid, older_than interval, batch integer)
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

CREATE OR REPLACE FUNCTION automation.cancel_queued(caller oid, id uuid, reason text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    q automation_workflows.execution_queue;
    first_row tid;
BEGIN
    SELECT * INTO q FROM automation_workflows.execution_queue x WHERE x.id = cancel_queued.id FOR UPDATE;
    IF NOT FOUND THEN
        IF EXISTS (SELECT FROM automation_workflows.execution_log l WHERE l.id = cancel_queued.id)
           OR EXISTS (SELECT FROM automation_workflows.workflow_executions e WHERE e.id = cancel_queued.id) THEN
            RETURN false;
        END IF;
        RAISE EXCEPTION 'workflow execution % does not exist', cancel_queued.id
              USING ERRCODE = 'no_data_found',
                    HINT = 'Use an id that automation.executions shows (run_workflow, enqueue_execution, start_execution).';
    ELSIF NOT (automation.role_may_act_as(cancel_queued.caller, q.owner)
               OR automation.may_manage_workflow(cancel_queued.caller, q.workflow_name)) THEN
        RAISE EXCEPTION 'permission denied for workflow execution %', cancel_queued.id
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'An execution is cancelled by the role that started it (or a role that may SET ROLE to it) and by its workflow''s owner.';
    END IF;
    DELETE FROM automation_workflows.execution_queue x WHERE x.id = q.id;
    INSERT INTO automation_workflows.execution_log
           (id, workflow_name, status, started_at, completed_at, metadata, error_details, run_after, claimed_by, attempts,
            retry_of, owner)
    VALUES (q.id, q.workflow_name, 'cancelled', q.started_at, GREATEST(now(), q.started_at), q.metadata,
            jsonb_build_object('message', coalesce(cancel_queued.reason, 'cancelled'),
                               'cancelled_by', cancel_queued.caller::regrole::text),
            q.run_after, q.claimed_by, q.attempts, q.retry_of, q.owner)
    RETURNING ctid INTO first_row;
    PERFORM automation.executions_logged(ARRAY[q.id], first_row, first_row);
    RETURN true;
END
$fn$;

DROP FUNCTION automation.executions_logged(uuid[]);

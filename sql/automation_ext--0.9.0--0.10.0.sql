-- automation_ext 0.9.0 -> 0.10.0
--
-- Frozen once released, like every upgrade script. Runs with search_path =
-- pg_catalog; everything is schema-qualified. pg_test/sql/upgrade.sql checks
-- that an upgraded database has exactly the catalog of a fresh install.
--
-- 0.10.0, issue 33 (queue history modes):
-- * automation.queue_settings and automation.set_queue_history(): per
--   workflow, what the history keeps of the queue's finished executions
--   (full, errors, none); the recorder (in the library) reads it.
-- * automation.errors.retry_input: a failed execution's input, kept with its
--   error, so that retries do not depend on the history keeping the execution.
-- * fail_execution and timeout_stale_executions record the failure before
--   the execution may be recorded (and, in a history mode that does not
--   keep it, dropped).

ALTER TABLE automation.errors ADD COLUMN retry_input jsonb;

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

CREATE OR REPLACE FUNCTION automation.fail_execution_as(caller oid, id uuid, error_type text, error_message text,
                                             error_context jsonb, worker_id text)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    wf text;
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
    RETURNING l.workflow_name INTO wf;
    IF FOUND THEN
        -- (0.10.0) the failure is recorded first, while the execution is
        -- still in the log: recording it may drop it (history modes)
        error_id := automation.record_failure(fail_execution_as.id, wf, fail_execution_as.error_type,
                                              fail_execution_as.error_message, fail_execution_as.error_context);
        PERFORM automation.executions_logged(ARRAY[fail_execution_as.id]);
        RETURN error_id;
    ELSE
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
    RETURN automation.record_failure(fail_execution_as.id, wf, fail_execution_as.error_type,
                                     fail_execution_as.error_message, fail_execution_as.error_context);
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
        RETURNING l.id, l.workflow_name)
    SELECT array_agg(moved.id), array_agg(moved.workflow_name) INTO logged, logged_names FROM moved;
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
        PERFORM automation.executions_logged(logged);
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

CREATE OR REPLACE FUNCTION automation.retry_failed_workflow_as(caller oid, workflow_name text, max_retries integer)
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
    IF err.retry_input IS NOT NULL THEN
        original_metadata := err.retry_input;
    ELSE
        SELECT e.metadata INTO original_metadata
          FROM automation.executions e WHERE e.id = err.execution_id;
    END IF;
    original_metadata := coalesce(original_metadata, err.error_context, '{}');
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

GRANT SELECT ON automation.queue_settings TO automation_runner, automation_monitor;

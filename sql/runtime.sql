-- The workflow runtime: what workers in any language drive with plain SQL.
--
--   enqueue_execution ─► pending ──claim_executions──► running ──complete_execution──► success
--   start_execution ──────────────────────────────────► running ──fail_execution──────► error
--                                        (lease expired: claimable again)    timeout_stale_executions ─► timeout
--   error / timeout ─► automation.errors ──retry_failed_workflow──► a new pending execution (retry_of)
--                      resolved when a retry succeeds; dead-lettered when retries run out
--
-- Functions are SECURITY INVOKER (callers need the table privileges) with a
-- pinned search_path; parameters are referred to as function.parameter so
-- they never collide with column names.

CREATE FUNCTION automation.start_execution(workflow_name text, metadata jsonb DEFAULT '{}')
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

CREATE FUNCTION automation.enqueue_execution(workflow_name text, metadata jsonb DEFAULT '{}',
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

-- Raise the error that explains why execution `id` could not be completed
-- or failed by `worker_id`.
CREATE FUNCTION automation.raise_not_running(id uuid, worker_id text, verb text)
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

CREATE FUNCTION automation.complete_executions(ids uuid[], metadata_patch jsonb DEFAULT NULL,
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

CREATE FUNCTION automation.fail_execution(id uuid, error_type text, error_message text,
                                          error_context jsonb DEFAULT NULL, worker_id text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    wf text;
BEGIN
    UPDATE automation_workflows.workflow_executions e
       SET status = 'error',
           completed_at = now(),
           lease_expires_at = NULL,
           error_details = jsonb_build_object('error_type', fail_execution.error_type,
                                              'error_message', fail_execution.error_message,
                                              'error_context', fail_execution.error_context)
     WHERE e.id = fail_execution.id
       AND e.status = 'running'
       AND (fail_execution.worker_id IS NULL OR e.claimed_by = fail_execution.worker_id)
    RETURNING e.workflow_name INTO wf;
    IF NOT FOUND THEN
        PERFORM automation.raise_not_running(fail_execution.id, fail_execution.worker_id, 'fail');
    END IF;
    RETURN automation.record_failure(fail_execution.id, wf, fail_execution.error_type,
                                     fail_execution.error_message, fail_execution.error_context);
END
$fn$;

CREATE FUNCTION automation.claim_executions(workflow_name text, worker_id text, batch integer DEFAULT 100,
                                            lease interval DEFAULT '5 minutes')
RETURNS SETOF automation_workflows.workflow_executions
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    claimed integer;
BEGIN
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
    -- first executions whose worker let the lease expire, then pending ones,
    -- oldest first; rows another claimer holds are skipped, never waited for
    RETURN QUERY
    WITH expired AS (
        SELECT e.id FROM automation_workflows.workflow_executions e
         WHERE e.workflow_name = claim_executions.workflow_name
           AND e.status = 'running' AND e.lease_expires_at < now()
         ORDER BY e.lease_expires_at
         LIMIT claim_executions.batch
           FOR UPDATE SKIP LOCKED)
    UPDATE automation_workflows.workflow_executions e
       SET claimed_by = claim_executions.worker_id,
           lease_expires_at = now() + claim_executions.lease,
           started_at = now(),
           attempts = e.attempts + 1
      FROM expired WHERE e.id = expired.id
    RETURNING e.*;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF claimed < batch THEN
        RETURN QUERY
        WITH due AS (
            SELECT e.id FROM automation_workflows.workflow_executions e
             WHERE e.workflow_name = claim_executions.workflow_name
               AND e.status = 'pending' AND e.run_after <= now()
             ORDER BY e.run_after
             LIMIT claim_executions.batch - claimed
               FOR UPDATE SKIP LOCKED)
        UPDATE automation_workflows.workflow_executions e
           SET status = 'running',
               claimed_by = claim_executions.worker_id,
               lease_expires_at = now() + claim_executions.lease,
               started_at = now(),
               attempts = e.attempts + 1
          FROM due WHERE e.id = due.id
        RETURNING e.*;
    END IF;
END
$fn$;

CREATE FUNCTION automation.extend_lease(id uuid, worker_id text, lease interval DEFAULT '5 minutes')
RETURNS timestamptz
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    expires timestamptz;
BEGIN
    UPDATE automation_workflows.workflow_executions e
       SET lease_expires_at = now() + extend_lease.lease
     WHERE e.id = extend_lease.id AND e.status = 'running' AND e.claimed_by = extend_lease.worker_id
    RETURNING e.lease_expires_at INTO expires;
    IF NOT FOUND THEN
        PERFORM automation.raise_not_running(extend_lease.id, extend_lease.worker_id, 'extend the lease of');
    END IF;
    RETURN expires;
END
$fn$;

CREATE FUNCTION automation.timeout_stale_executions(older_than interval DEFAULT '1 hour',
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

CREATE FUNCTION automation.retry_failed_workflow(workflow_name text, max_retries integer DEFAULT 3)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
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
             WHERE d.workflow_name = retry_failed_workflow.workflow_name
               AND d.resolved_at IS NULL AND d.dead_lettered_at IS NULL
               AND d.retry_count >= retry_failed_workflow.max_retries
               AND NOT automation.retry_in_flight(d.retry_execution_id)
               FOR UPDATE SKIP LOCKED);
    -- the oldest open error whose backoff has passed and whose last retry ended
    SELECT r.* INTO err
      FROM automation.errors r
     WHERE r.workflow_name = retry_failed_workflow.workflow_name
       AND r.resolved_at IS NULL AND r.dead_lettered_at IS NULL
       AND r.retry_count < retry_failed_workflow.max_retries
       AND coalesce(r.next_retry_at, '-infinity') <= now()
       AND NOT automation.retry_in_flight(r.retry_execution_id)
     ORDER BY r.error_time
     LIMIT 1
       FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- re-enqueue with the failed execution's own metadata (errors recorded by
    -- hand, with no execution, retry with their error_context)
    SELECT e.metadata INTO original_metadata
      FROM automation_workflows.workflow_executions e WHERE e.id = err.execution_id;
    INSERT INTO automation_workflows.workflow_executions AS e
           (workflow_name, status, started_at, run_after, metadata, retry_of)
    VALUES (err.workflow_name, 'pending', NULL, now(),
            coalesce(original_metadata, err.error_context, '{}'), err.execution_id)
    RETURNING e.id INTO retry_id;
    UPDATE automation.errors r
       SET retry_count = r.retry_count + 1,
           last_retry_at = now(),
           retry_execution_id = retry_id
     WHERE r.id = err.id;
    RETURN true;
END
$fn$;

-- Is the retry `id` still pending or running?
CREATE FUNCTION automation.retry_in_flight(id uuid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT id IS NOT NULL AND EXISTS (
        SELECT FROM automation_workflows.workflow_executions e
         WHERE e.id = retry_in_flight.id AND e.status IN ('pending', 'running', 'retrying'))
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
  LEFT JOIN automation_workflows.workflow_executions we ON we.workflow_name = wf.name
 GROUP BY wf.id, wf.name, wf.version, wf.is_active;

COMMENT ON FUNCTION automation.start_execution(text, jsonb) IS
'Record an execution that starts now (status running). Returns its id.';
COMMENT ON FUNCTION automation.enqueue_execution(text, jsonb, timestamptz) IS
'Queue an execution (status pending) that workers may claim from run_after on. Returns its id.';
COMMENT ON FUNCTION automation.complete_execution(uuid, jsonb, text) IS
'Mark a running execution success, merging metadata_patch into its metadata; with worker_id, only if that worker holds it. Resolves the error it retried, if any.';
COMMENT ON FUNCTION automation.complete_executions(uuid[], jsonb, text) IS
'Mark running executions success in one statement (all or none: one that is not running, or not held by worker_id, fails the call). Returns how many.';
COMMENT ON FUNCTION automation.fail_execution(uuid, text, text, jsonb, text) IS
'Mark a running execution error and record the failure in automation.errors in the same transaction. Returns the error id.';
COMMENT ON FUNCTION automation.claim_executions(text, text, integer, interval) IS
'Claim up to batch due executions of a workflow for worker_id (FOR UPDATE SKIP LOCKED; expired leases first). Returns the claimed rows, now running.';
COMMENT ON FUNCTION automation.extend_lease(uuid, text, interval) IS
'Extend the lease of an execution the worker holds; returns the new expiry.';
COMMENT ON FUNCTION automation.timeout_stale_executions(interval, integer) IS
'Time out up to batch executions running for longer than older_than (status timeout, error recorded). Returns their ids; call again until it returns none.';
COMMENT ON FUNCTION automation.retry_failed_workflow(text, integer) IS
'Re-enqueue the oldest open error of a workflow whose backoff has passed, with the original metadata. Returns whether it did. Errors out of retries are dead-lettered.';
COMMENT ON FUNCTION automation.retry_delay(integer) IS
'Backoff before the next retry: automation.retry_base_delay * 2^retry_count, at most automation.retry_max_delay, with jitter over the upper half.';
COMMENT ON FUNCTION automation.record_failure(uuid, text, text, text, jsonb) IS
'Internal: record the failure of an execution that failed (status error or timeout) in automation.errors (a failed retry updates the error it retried).';
COMMENT ON FUNCTION automation.check_metadata(jsonb) IS 'Internal: refuse execution metadata that is not a JSON object.';
COMMENT ON FUNCTION automation.raise_not_running(uuid, text, text) IS
'Internal: raise the error explaining why an execution cannot be completed or failed.';
COMMENT ON FUNCTION automation.check_workflow_name(text) IS 'Internal: refuse an empty workflow name.';
COMMENT ON FUNCTION automation.retry_in_flight(uuid) IS 'Internal: is this retry execution still pending or running?';

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
-- * claim_executions and complete_executions keep their plans from call to
--   call (plan_cache_mode = force_generic_plan; the claim's UPDATE takes its
--   ids as = ANY (ARRAY(...)) so that the generic plan is an index walk);
--   claim_limited stays on auto.

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
    logged boolean;
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
        PERFORM automation.executions_logged(ARRAY[fail_execution_as.id]);
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
        RETURNING l.id, l.retry_of)
    SELECT array_agg(logged.id), bool_or(logged.retry_of IS NOT NULL) INTO done, retried FROM logged;
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
        PERFORM automation.executions_logged(done);
    END IF;
    RETURN coalesce(cardinality(done), 0) + coalesce(cardinality(legacy), 0);
END
$fn$;

CREATE OR REPLACE FUNCTION automation.claim_executions_as(caller oid, workflow_name text, worker_id text, batch integer,
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

CREATE OR REPLACE FUNCTION automation.claim_limited(caller oid, everyone boolean, workflow_name text, worker_id text,
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

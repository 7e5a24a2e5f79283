-- automation_ext 0.6.0 -> 0.7.0
--
-- Frozen once released, like every upgrade script: it repeats the 0.7.0
-- objects from the install files as they were at 0.7.0. pg_test/sql/upgrade.sql
-- checks that an upgraded database has exactly the catalog of a fresh install.
-- Runs with search_path = pg_catalog; everything is schema-qualified.
--
-- 0.7.0: SQL steps of workflows run (issue 18). A step with "sql" is run by
-- the extension's step workers as the role that started the workflow; its
-- run has no queue. run_workflow() no longer refuses such workflows (it
-- does when the library is not preloaded: no workers). The role a
-- workflow runs as (workflow_runs.started_by), the definition it runs and
-- its step runs' inputs can no longer be written by automation_runner
-- directly (column privileges). The scheduler records a run that succeeded
-- in one call (job_run_succeeded; count_job_run is PL/pgSQL, its plans kept)
-- (issue 17).

ALTER TABLE automation_workflows.step_runs ALTER COLUMN queue DROP NOT NULL;

CREATE OR REPLACE FUNCTION automation.workflow_finish(execution_id uuid, status text, details jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    run automation_workflows.workflow_runs;
BEGIN
    SELECT * INTO run FROM automation_workflows.workflow_runs r WHERE r.execution_id = workflow_finish.execution_id;
    -- a SQL step that is running is stopped (its worker's query is
    -- cancelled once this transaction commits)
    PERFORM automation.stop_sql_step(r.id)
       FROM automation_workflows.step_runs r
      WHERE r.execution_id = workflow_finish.execution_id AND r.status = 'running' AND r.queue IS NULL;
    UPDATE automation_workflows.step_runs r
       SET status = 'cancelled', completed_at = now(), lease_expires_at = NULL
     WHERE r.execution_id = workflow_finish.execution_id AND r.status IN ('pending', 'running');
    UPDATE automation_workflows.workflow_executions e
       SET status = workflow_finish.status,
           completed_at = GREATEST(now(), e.started_at),
           error_details = workflow_finish.details
     WHERE e.id = workflow_finish.execution_id AND e.status IN ('pending', 'running');
    IF workflow_finish.status IN ('error', 'timeout') THEN
        PERFORM automation.record_failure(workflow_finish.execution_id, run.workflow_name,
                                          CASE workflow_finish.status WHEN 'error' THEN 'step_failed' ELSE 'workflow_timeout' END,
                                          workflow_finish.details->>'message', workflow_finish.details);
    END IF;
    IF run.definition ? 'concurrency' THEN
        PERFORM automation.workflow_admit_waiting(run.workflow_name, (run.definition->>'concurrency')::integer);
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.workflow_advance(execution_id uuid, finished_step text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    run automation_workflows.workflow_runs;
    s record;
    deps jsonb;
    items jsonb;
    -- steps whose completion may let others start: the one that finished
    -- (NULL: the execution starts), then mapped steps over empty arrays
    finished text[] := ARRAY[workflow_advance.finished_step];
    one text;
BEGIN
    SELECT * INTO run FROM automation_workflows.workflow_runs r WHERE r.execution_id = workflow_advance.execution_id;
    WHILE cardinality(finished) > 0 LOOP
        one := finished[1];
        finished := finished[2:];
        FOR s IN
            SELECT d.*
              FROM automation.definition_steps(run.definition) d
             WHERE (CASE WHEN one IS NULL THEN cardinality(d.after) = 0 ELSE one = ANY (d.after) END)
               AND NOT run.open_elements ? d.name
               -- every dependency done (its count of open elements is 0)
               AND NOT EXISTS (SELECT FROM unnest(d.after) a(dep)
                                WHERE (run.open_elements->>a.dep) IS DISTINCT FROM '0')
        LOOP
            -- the dependencies' outputs: a mapped one's as the array of its
            -- elements' outputs, in order
            SELECT coalesce(jsonb_object_agg(o.step, o.output), '{}') INTO deps
              FROM (SELECT r.step,
                           CASE WHEN bool_or(r.map_index IS NOT NULL) THEN jsonb_agg(r.output ORDER BY r.map_index)
                                ELSE (array_agg(r.output))[1] END AS output
                      FROM automation_workflows.step_runs r
                     WHERE r.execution_id = run.execution_id AND r.step = ANY (s.after) AND r.status = 'success'
                     GROUP BY r.step) o;
            IF s.map IS NULL THEN
                INSERT INTO automation_workflows.step_runs
                       (execution_id, step, max_attempts, queue, step_timeout, visible_at, input)
                VALUES (run.execution_id, s.name, s.max_attempts, s.queue, s.step_timeout, run.run_after,
                        jsonb_build_object('input', run.input, 'steps', deps));
                run.open_elements := run.open_elements || jsonb_build_object(s.name, 1);
                IF s.sql IS NOT NULL THEN
                    PERFORM automation.wake_step_workers(1);
                END IF;
                CONTINUE;
            END IF;
            items := jsonb_path_query_first(deps, s.map::jsonpath);
            IF items IS NULL OR jsonb_typeof(items) <> 'array' THEN
                INSERT INTO automation_workflows.step_runs
                       (execution_id, step, max_attempts, queue, status, visible_at, started_at, completed_at, input, error)
                VALUES (run.execution_id, s.name, 1, s.queue, 'error', now(), now(), now(),
                        jsonb_build_object('input', run.input, 'steps', deps),
                        jsonb_build_object('message', format('map path %s yields %s, not an array', s.map,
                                                             coalesce(jsonb_typeof(items), 'nothing')),
                                           'sqlstate', '22023'));
                UPDATE automation_workflows.workflow_runs w SET open_elements = run.open_elements
                 WHERE w.execution_id = run.execution_id;
                PERFORM automation.workflow_finish(run.execution_id, 'error',
                    jsonb_build_object('step', s.name, 'attempts', 1,
                                       'message', format('step %s: map path %s yields %s, not an array', s.name, s.map,
                                                         coalesce(jsonb_typeof(items), 'nothing'))));
                RETURN;
            END IF;
            IF jsonb_array_length(items) = 0 THEN
                -- done at once, with []: what waits for it may start
                INSERT INTO automation_workflows.step_runs
                       (execution_id, step, max_attempts, queue, status, visible_at, started_at, completed_at, input, output)
                VALUES (run.execution_id, s.name, 1, s.queue, 'success', now(), now(), now(),
                        jsonb_build_object('input', run.input, 'steps', deps), '[]');
                run.open_elements := run.open_elements || jsonb_build_object(s.name, 0);
                run.steps_left := run.steps_left - 1;
                finished := finished || s.name;
            ELSE
                INSERT INTO automation_workflows.step_runs
                       (execution_id, step, map_index, max_attempts, queue, step_timeout, visible_at, input)
                SELECT run.execution_id, s.name, i.ord::integer - 1, s.max_attempts, s.queue, s.step_timeout,
                       run.run_after,
                       -- an element gets its item, not every dependency's output
                       -- again (10,000 copies of the array it came from)
                       jsonb_build_object('input', run.input, 'item', i.item, 'index', i.ord - 1)
                  FROM jsonb_array_elements(items) WITH ORDINALITY AS i(item, ord);
                run.open_elements := run.open_elements || jsonb_build_object(s.name, jsonb_array_length(items));
                IF s.sql IS NOT NULL THEN
                    PERFORM automation.wake_step_workers(jsonb_array_length(items));
                END IF;
            END IF;
        END LOOP;
    END LOOP;
    UPDATE automation_workflows.workflow_runs w
       SET open_elements = run.open_elements, steps_left = run.steps_left
     WHERE w.execution_id = run.execution_id;
    IF run.steps_left <= 0 THEN
        PERFORM automation.workflow_finish(run.execution_id, 'success', NULL);
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.run_workflow(name text, input jsonb DEFAULT '{}', run_after timestamptz DEFAULT NULL,
                                        idempotency_key text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    def automation_workflows.definitions;
    existing uuid;
    new_id uuid := automation.uuid_v7();
    starts timestamptz := GREATEST(now(), coalesce(run_workflow.run_after, now()));
    slot boolean := true;
BEGIN
    IF run_workflow.input IS NULL OR jsonb_typeof(run_workflow.input) <> 'object' THEN
        RAISE EXCEPTION 'the input of a workflow must be a JSON object, not %', coalesce(jsonb_typeof(run_workflow.input), 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Steps read it as step input''s "input" key; wrap a value in an object.';
    END IF;
    SELECT * INTO def FROM automation_workflows.definitions d WHERE d.name = run_workflow.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow % does not exist', run_workflow.name
              USING ERRCODE = 'undefined_object',
                    HINT = 'Insert its definition into automation_workflows.definitions first.';
    ELSIF NOT def.is_active THEN
        RAISE EXCEPTION 'workflow % is inactive', run_workflow.name
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'UPDATE automation_workflows.definitions SET is_active = true to run it.';
    ELSIF NOT automation.check_definition(def.definition) THEN
        RAISE EXCEPTION 'workflow % has no steps and cannot be started', run_workflow.name
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'A definition is runnable when it has "steps" (see docs/workflows.md, Definitions).';
    END IF;
    IF EXISTS (SELECT FROM automation.definition_steps(def.definition) s WHERE s.sql IS NOT NULL)
       AND NOT automation.step_workers_available() THEN
        RAISE EXCEPTION 'workflow % has SQL steps, and no step worker can run them here', run_workflow.name
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'SQL steps are run by the extension''s background workers: add automation_ext to shared_preload_libraries and restart.';
    END IF;
    IF run_workflow.idempotency_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('automation_ext run_workflow'),
                                      hashtext(run_workflow.name || '/' || run_workflow.idempotency_key));
        SELECT r.execution_id INTO existing FROM automation_workflows.workflow_runs r
         WHERE r.workflow_name = run_workflow.name AND r.idempotency_key = run_workflow.idempotency_key;
        IF FOUND THEN
            RETURN existing;
        END IF;
    END IF;
    IF def.definition ? 'concurrency' THEN
        PERFORM pg_advisory_xact_lock(hashtext('automation_ext workflow concurrency'), hashtext(run_workflow.name));
        slot := automation.workflow_admitted(run_workflow.name) < (def.definition->>'concurrency')::integer;
    END IF;
    INSERT INTO automation_workflows.workflow_executions (id, workflow_name, status, started_at, metadata, run_after)
    VALUES (new_id, run_workflow.name, CASE WHEN slot AND starts <= now() THEN 'running' ELSE 'pending' END, starts,
            jsonb_build_object('workflow_version', def.version), starts);
    INSERT INTO automation_workflows.workflow_runs
           (execution_id, workflow_name, version, definition, input, idempotency_key, admitted, run_after, deadline,
            steps_left)
    VALUES (new_id, run_workflow.name, def.version, def.definition, run_workflow.input, run_workflow.idempotency_key,
            slot, starts, starts + (def.definition->>'timeout')::interval,
            jsonb_array_length(def.definition->'steps'));
    IF slot THEN
        PERFORM automation.workflow_advance(new_id);
    END IF;
    RETURN new_id;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.step_attempt_failed(id bigint, status text, error jsonb, retryable boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r automation_workflows.step_runs;
    s record;
    run automation_workflows.workflow_runs;
BEGIN
    UPDATE automation_workflows.step_runs x
       SET status = step_attempt_failed.status, error = step_attempt_failed.error,
           completed_at = GREATEST(now(), coalesce(x.started_at, now())), lease_expires_at = NULL
     WHERE x.id = step_attempt_failed.id
    RETURNING x.* INTO r;
    SELECT * INTO run FROM automation_workflows.workflow_runs w WHERE w.execution_id = r.execution_id;
    PERFORM automation.step_metric(r, run.workflow_name);
    IF step_attempt_failed.retryable AND r.attempt < r.max_attempts THEN
        SELECT * INTO s FROM automation.definition_steps(run.definition) d WHERE d.name = r.step;
        INSERT INTO automation_workflows.step_runs
               (execution_id, step, map_index, attempt, max_attempts, queue, step_timeout, visible_at, input)
        VALUES (r.execution_id, r.step, r.map_index, r.attempt + 1, r.max_attempts, r.queue, r.step_timeout,
                now() + automation.step_backoff(r.attempt, s.backoff, s.max_backoff), r.input);
        IF r.queue IS NULL THEN
            PERFORM automation.wake_step_workers(0);
        END IF;
        RETURN;
    END IF;
    PERFORM automation.workflow_finish(r.execution_id, 'error',
        jsonb_build_object('step', r.step, 'map_index', r.map_index, 'attempts', r.attempt,
                           'message', format('step %s failed after %s attempt%s: %s', r.step, r.attempt,
                                             CASE WHEN r.attempt = 1 THEN '' ELSE 's' END, step_attempt_failed.error->>'message'),
                           'error', step_attempt_failed.error));
END
$fn$;

CREATE OR REPLACE FUNCTION automation.run_workflows(name text, inputs jsonb[])
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    def automation_workflows.definitions;
    roots jsonb;
    started integer;
BEGIN
    IF run_workflows.inputs IS NULL OR cardinality(run_workflows.inputs) = 0 THEN
        RETURN 0;
    END IF;
    IF EXISTS (SELECT FROM unnest(run_workflows.inputs) i WHERE i IS NULL OR jsonb_typeof(i) <> 'object') THEN
        RAISE EXCEPTION 'the inputs of a workflow must be JSON objects'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO def FROM automation_workflows.definitions d WHERE d.name = run_workflows.name;
    IF NOT FOUND OR NOT def.is_active OR NOT automation.check_definition(def.definition)
       OR def.definition ? 'concurrency'
       OR (EXISTS (SELECT FROM automation.definition_steps(def.definition) s WHERE s.sql IS NOT NULL)
           AND NOT automation.step_workers_available()) THEN
        -- run_workflow says what is wrong, or admits them one by one
        PERFORM automation.run_workflow(run_workflows.name, i) FROM unnest(run_workflows.inputs) i;
        RETURN cardinality(run_workflows.inputs);
    END IF;
    SELECT jsonb_object_agg(s.name, 1) INTO roots
      FROM automation.definition_steps(def.definition) s WHERE cardinality(s.after) = 0;
    -- one statement: the executions, their runs, the runs of their first steps
    WITH n AS MATERIALIZED (
        SELECT automation.uuid_v7() AS id, i AS input FROM unnest(run_workflows.inputs) i),
    e AS (
        INSERT INTO automation_workflows.workflow_executions (id, workflow_name, status, started_at, metadata, run_after)
        SELECT n.id, run_workflows.name, 'running', now(), jsonb_build_object('workflow_version', def.version), now()
          FROM n
        RETURNING 1),
    r AS (
        INSERT INTO automation_workflows.workflow_runs
               (execution_id, workflow_name, version, definition, input, admitted, run_after, deadline, open_elements,
                steps_left)
        SELECT n.id, run_workflows.name, def.version, def.definition, n.input, true, now(),
               now() + (def.definition->>'timeout')::interval, roots, jsonb_array_length(def.definition->'steps')
          FROM n
        RETURNING 1),
    s AS (
        INSERT INTO automation_workflows.step_runs (execution_id, step, max_attempts, queue, step_timeout, visible_at, input)
        SELECT n.id, d.name, d.max_attempts, d.queue, d.step_timeout, now(),
               jsonb_build_object('input', n.input, 'steps', '{}'::jsonb)
          FROM n CROSS JOIN automation.definition_steps(def.definition) d
         WHERE cardinality(d.after) = 0
        RETURNING 1)
    -- (every data-modifying CTE runs to its end, read or not)
    SELECT count(*) INTO started FROM e;
    IF EXISTS (SELECT FROM automation.definition_steps(def.definition) d WHERE cardinality(d.after) = 0 AND d.sql IS NOT NULL) THEN
        PERFORM automation.wake_step_workers(started);
    END IF;
    RETURN started;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.step_succeeded(id bigint, output jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r automation_workflows.step_runs;
    left_open integer;
    wf text;
BEGIN
    UPDATE automation_workflows.step_runs s
       SET status = 'success', output = step_succeeded.output, completed_at = GREATEST(now(), s.started_at),
           lease_expires_at = NULL
     WHERE s.id = step_succeeded.id
    RETURNING s.* INTO r;
    -- the last element of its step to succeed advances the execution (a
    -- step over 10,000 elements does not look at them 10,000 times)
    UPDATE automation_workflows.workflow_runs w
       SET open_elements = jsonb_set(w.open_elements, ARRAY[r.step],
                                     to_jsonb((w.open_elements->>r.step)::integer - 1)),
           steps_left = w.steps_left - CASE WHEN (w.open_elements->>r.step)::integer = 1 THEN 1 ELSE 0 END
     WHERE w.execution_id = r.execution_id
    RETURNING w.workflow_name, (w.open_elements->>r.step)::integer INTO wf, left_open;
    PERFORM automation.step_metric(r, wf);
    IF left_open = 0 THEN
        PERFORM automation.workflow_advance(r.execution_id, r.step);
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.complete_step(id bigint, output jsonb DEFAULT NULL, worker_id text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r automation_workflows.step_runs;
BEGIN
    r := automation.running_step(complete_step.id, complete_step.worker_id, 'complete');
    PERFORM automation.step_succeeded(r.id, complete_step.output);
END
$fn$;

------------------------------------------------------------------------------
-- 0.7.0: SQL steps, run by the extension's step workers (src/engine/steps.rs)
-- as the role that started the workflow (workflow_runs.started_by, which
-- that role cannot choose: see roles.sql). A SQL step's run has no queue.
-- The transaction that makes one wakes the database's scheduler at commit
-- (wake_step_workers); the scheduler asks for step workers per role
-- (sql_steps_waiting); a step worker claims a step (claim_sql_step), runs
-- its SQL at top level with the step's timeout as statement_timeout, and
-- records the outcome (finish_sql_step), then claims the next.

CREATE FUNCTION automation.step_workers_available()
RETURNS boolean
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'step_workers_available_wrapper';
COMMENT ON FUNCTION automation.step_workers_available() IS
'Internal: true when this cluster has step workers for SQL steps (the library is preloaded).';

CREATE FUNCTION automation.wake_step_workers(ready_now integer)
RETURNS void
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wake_step_workers_wrapper';
COMMENT ON FUNCTION automation.wake_step_workers(integer) IS
'Internal: this transaction made runs of SQL steps (ready_now of them ready at once; 0: runs for later, a retry); the scheduler hands them to step workers when it commits (from a step worker: only what it will not take itself).';

CREATE FUNCTION automation.stop_sql_step(id bigint)
RETURNS void
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'stop_sql_step_wrapper';
COMMENT ON FUNCTION automation.stop_sql_step(bigint) IS
'Internal: when this transaction commits, cancel the query of the step worker running SQL step run id (its execution ended).';

-- The input of the SQL step running in this session: {"input": the
-- workflow's input, "steps": {dependency: its output, ...}} (a mapped
-- step's element: {"input", "item", "index"}).
CREATE FUNCTION automation.step_input()
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    run_id bigint := nullif(current_setting('automation.step_run', true), '')::bigint;
    found_input jsonb;
BEGIN
    IF run_id IS NULL THEN
        RAISE EXCEPTION 'automation.step_input() is only available inside a SQL step of a workflow'
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'A queue step gets its input from automation.claim_steps().';
    END IF;
    SELECT r.input INTO found_input FROM automation_workflows.step_runs r WHERE r.id = run_id;
    RETURN found_input;
END
$fn$;
COMMENT ON FUNCTION automation.step_input() IS
'Inside a SQL step: its input, {"input": the workflow input, "steps": {dependency: output}} (a mapped step''s element: {"input", "item", "index"}).';

-- What a SQL step returned, as jsonb: the first column of the first row of
-- its last statement (its text and type, as the step worker read them):
-- json and jsonb as they are, numbers and booleans as JSON numbers and
-- booleans, anything else as a JSON string.
CREATE FUNCTION automation.step_output(value text, type oid)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE
           WHEN value IS NULL THEN NULL
           WHEN type IN ('json'::regtype, 'jsonb'::regtype) THEN value::jsonb
           WHEN type IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'numeric'::regtype,
                         'float4'::regtype, 'float8'::regtype)
                AND value ~ '^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$' THEN to_jsonb(value::numeric)
           WHEN type = 'bool'::regtype THEN to_jsonb(value::boolean)
           ELSE to_jsonb(value) END
$fn$;
COMMENT ON FUNCTION automation.step_output(text, oid) IS
'Internal: a SQL step''s result as jsonb (json/jsonb as is, numbers and booleans as JSON ones, anything else as a string).';

-- A step worker (connected as role R) takes a ready SQL step of an
-- execution R started: of `after_execution` first (the execution whose step
-- it just finished: its next step, found by the execution's index, runs in
-- the same worker at once), else the oldest ready one. Its lease never
-- expires: a SQL step runs while its worker lives (recover_sql_steps
-- handles workers that die).
CREATE FUNCTION automation.claim_sql_step(worker_id text, after_execution uuid DEFAULT NULL)
RETURNS TABLE (id bigint, execution_id uuid, step text, sql text, timeout_ms integer)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r automation_workflows.step_runs;
    def jsonb;
BEGIN
    IF claim_sql_step.after_execution IS NOT NULL THEN
        SELECT c.* INTO r
          FROM automation_workflows.step_runs c
         WHERE c.execution_id = claim_sql_step.after_execution
           AND c.queue IS NULL AND c.status = 'pending' AND c.visible_at <= clock_timestamp()
           AND EXISTS (SELECT FROM automation_workflows.workflow_runs w
                        WHERE w.execution_id = c.execution_id AND w.started_by = current_user)
         ORDER BY c.id
         LIMIT 1
           FOR UPDATE OF c SKIP LOCKED;
    END IF;
    IF r.id IS NULL THEN
        -- in the order of step_runs_claimable (queue first: a walk of the
        -- index that stops at the first row, not a join and a sort of every
        -- pending step); the role of each candidate by its execution's key
        SELECT c.* INTO r
          FROM automation_workflows.step_runs c
         WHERE c.queue IS NULL AND c.status = 'pending' AND c.visible_at <= clock_timestamp()
           AND (SELECT w.started_by FROM automation_workflows.workflow_runs w
                 WHERE w.execution_id = c.execution_id) = current_user
         ORDER BY c.queue, c.visible_at, c.execution_id, c.id
         LIMIT 1
           FOR UPDATE OF c SKIP LOCKED;
    END IF;
    IF r.id IS NULL THEN
        RETURN;
    END IF;
    UPDATE automation_workflows.step_runs s
       SET status = 'running', worker = claim_sql_step.worker_id, started_at = clock_timestamp(),
           lease_expires_at = 'infinity'
     WHERE s.id = r.id;
    UPDATE automation_workflows.workflow_executions e
       SET status = 'running', started_at = now()
     WHERE e.id = r.execution_id AND e.status = 'pending';
    SELECT w.definition INTO def FROM automation_workflows.workflow_runs w WHERE w.execution_id = r.execution_id;
    RETURN QUERY
    SELECT r.id, r.execution_id, r.step,
           (SELECT s->>'sql' FROM jsonb_array_elements(def->'steps') s WHERE s->>'name' = r.step LIMIT 1),
           least(coalesce(extract(epoch FROM r.step_timeout) * 1000, 0), 2147483647)::integer;
END
$fn$;
COMMENT ON FUNCTION automation.claim_sql_step(text, uuid) IS
'Internal (step workers): claim a ready SQL step of an execution the current role started (of after_execution first, else the oldest); its id, execution, step, SQL and timeout in ms.';

-- Record how a SQL step run ended: success with `output`, or `error`
-- ({"message", "sqlstate"}; a statement timeout is status timeout). Retries
-- and the next steps as for queue steps. False when the run is no longer
-- this worker's (its execution ended meanwhile).
CREATE FUNCTION automation.finish_sql_step(id bigint, worker_id text, output jsonb, error jsonb)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r automation_workflows.step_runs;
BEGIN
    SELECT * INTO r FROM automation_workflows.step_runs s WHERE s.id = finish_sql_step.id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM FROM automation_workflows.workflow_runs w WHERE w.execution_id = r.execution_id FOR UPDATE;
    SELECT * INTO r FROM automation_workflows.step_runs s WHERE s.id = finish_sql_step.id FOR UPDATE;
    IF r.status <> 'running' OR r.worker IS DISTINCT FROM finish_sql_step.worker_id THEN
        RETURN false;
    END IF;
    IF finish_sql_step.error IS NULL THEN
        PERFORM automation.step_succeeded(r.id, finish_sql_step.output);
    ELSE
        PERFORM automation.step_attempt_failed(r.id,
            CASE WHEN finish_sql_step.error->>'sqlstate' = '57014' AND r.step_timeout IS NOT NULL THEN 'timeout' ELSE 'error' END,
            finish_sql_step.error, true);
    END IF;
    RETURN true;
END
$fn$;
COMMENT ON FUNCTION automation.finish_sql_step(bigint, text, jsonb, jsonb) IS
'Internal (step workers): record the end of a SQL step run (output, or error with SQLSTATE); false when it is no longer this worker''s.';

-- Per role that started executions with SQL steps ready: how many are
-- ready (counted among the 256 oldest ready ones, FIFO across roles: a
-- scheduler woken at every commit must not count a backlog of 100,000 each
-- time), and when the next one waiting out a retry backoff is (a row with
-- no role). For the scheduler.
CREATE FUNCTION automation.sql_steps_waiting()
RETURNS TABLE (role_name name, role_oid oid, can_login boolean, ready bigint, next_visible timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT w.started_by, a.oid, a.rolcanlogin, count(*), NULL::timestamptz
      FROM (SELECT c.execution_id
              FROM automation_workflows.step_runs c
             WHERE c.queue IS NULL AND c.status = 'pending' AND c.visible_at <= clock_timestamp()
             ORDER BY c.queue, c.visible_at, c.execution_id, c.id
             LIMIT 256) r
      JOIN automation_workflows.workflow_runs w ON w.execution_id = r.execution_id
      LEFT JOIN pg_roles a ON a.rolname = w.started_by
     GROUP BY w.started_by, a.oid, a.rolcanlogin
    UNION ALL
    SELECT NULL, NULL, NULL, 0, l.visible_at
      FROM (SELECT c.visible_at
              FROM automation_workflows.step_runs c
             WHERE c.queue IS NULL AND c.status = 'pending' AND c.visible_at > clock_timestamp()
             ORDER BY c.queue, c.visible_at
             LIMIT 1) l
$fn$;
REVOKE EXECUTE ON FUNCTION automation.sql_steps_waiting() FROM PUBLIC;
COMMENT ON FUNCTION automation.sql_steps_waiting() IS
'Internal (scheduler): per starting role, SQL steps ready now (among the 256 oldest), and when the next one waiting out a backoff is.';

-- Ready SQL steps of executions started by `role_name`, which cannot run
-- them (dropped, or not allowed to log in), fail without retry.
CREATE FUNCTION automation.refuse_sql_steps(role_name name, reason text)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    x record;
    handled integer := 0;
BEGIN
    FOR x IN
        SELECT r.id, r.execution_id FROM automation_workflows.step_runs r
          JOIN automation_workflows.workflow_runs w ON w.execution_id = r.execution_id
         WHERE r.queue IS NULL AND r.status = 'pending' AND r.visible_at <= clock_timestamp()
           AND w.started_by = refuse_sql_steps.role_name
         LIMIT 1000
    LOOP
        PERFORM FROM automation_workflows.workflow_runs w WHERE w.execution_id = x.execution_id FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        PERFORM FROM automation_workflows.step_runs r WHERE r.id = x.id AND r.status = 'pending' FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        PERFORM automation.step_attempt_failed(x.id, 'error',
            jsonb_build_object('message', refuse_sql_steps.reason, 'sqlstate', '28000'), false);
        handled := handled + 1;
    END LOOP;
    RETURN handled;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.refuse_sql_steps(name, text) FROM PUBLIC;
COMMENT ON FUNCTION automation.refuse_sql_steps(name, text) IS
'Internal (scheduler): fail the ready SQL steps of executions started by a role that cannot run them (dropped, NOLOGIN).';

-- SQL steps running in a worker that is gone (its process ended: a crash
-- and restart, SIGKILL, pg_terminate_backend) fail that attempt, retried
-- while attempts remain. A worker is its pid and the time its process
-- started (before the claim: a pid reused later is another process).
CREATE FUNCTION automation.recover_sql_steps()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    x record;
    handled integer := 0;
BEGIN
    FOR x IN
        SELECT r.id, r.execution_id FROM automation_workflows.step_runs r
         WHERE r.queue IS NULL AND r.status = 'running'
           AND NOT EXISTS (SELECT FROM pg_stat_activity a
                            WHERE a.pid = (regexp_match(r.worker, '([0-9]+)$'))[1]::integer
                              AND a.backend_start <= r.started_at)
    LOOP
        PERFORM FROM automation_workflows.workflow_runs w WHERE w.execution_id = x.execution_id FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        PERFORM FROM automation_workflows.step_runs r WHERE r.id = x.id AND r.status = 'running' FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        PERFORM automation.step_attempt_failed(x.id, 'error',
            jsonb_build_object('message', 'the worker running this SQL step ended before it did (a crash, a restart or a terminated worker)',
                               'sqlstate', '57P01'),
            true);
        handled := handled + 1;
    END LOOP;
    RETURN handled;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.recover_sql_steps() FROM PUBLIC;
COMMENT ON FUNCTION automation.recover_sql_steps() IS
'Internal (scheduler): fail (and retry while attempts remain) the SQL steps whose worker process is gone.';

-- (issue 17) the scheduler records a run that succeeded in one call
CREATE OR REPLACE FUNCTION automation.count_job_run(job bigint, status text, duration double precision,
                                         lateness double precision)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
-- (0.7.0: PL/pgSQL, whose plans the scheduler keeps, instead of SQL, which
-- planned both statements again at every run)
BEGIN
    INSERT INTO automation.job_run_stats (jobid, duration_buckets, lateness_buckets)
    SELECT job, z.a, z.a
      FROM (SELECT pg_catalog.array_fill(0::bigint,
                       ARRAY[pg_catalog.array_length(automation.job_run_histogram_bounds(), 1) + 1]) AS a) z
    ON CONFLICT (jobid) DO NOTHING;
    UPDATE automation.job_run_stats s
       SET succeeded = s.succeeded + (count_job_run.status = 'succeeded')::int,
           failed = s.failed + (count_job_run.status = 'failed')::int,
           skipped = s.skipped + (count_job_run.status = 'skipped')::int,
           duration_buckets = ARRAY(
               SELECT u.n + ((u.i = pg_catalog.width_bucket(duration, automation.job_run_histogram_bounds()) + 1) IS TRUE)::int
                 FROM pg_catalog.unnest(s.duration_buckets) WITH ORDINALITY u(n, i) ORDER BY u.i),
           duration_sum = s.duration_sum + COALESCE(duration, 0),
           lateness_buckets = ARRAY(
               SELECT u.n + ((u.i = pg_catalog.width_bucket(CASE WHEN lateness < 0 THEN 0 ELSE lateness END, automation.job_run_histogram_bounds()) + 1) IS TRUE)::int
                 FROM pg_catalog.unnest(s.lateness_buckets) WITH ORDINALITY u(n, i) ORDER BY u.i),
           lateness_sum = s.lateness_sum + GREATEST(COALESCE(lateness, 0), 0)
     WHERE s.jobid = job;
END
$fn$;

-- (0.7.0) A run that succeeded, recorded in one call (the scheduler's
-- busiest path: a burst of 1,000 runs): its row ended (or deleted, when its
-- job's history keeps only failures or nothing), the job's last run, the
-- counters. `ended_from` are the statuses a run may succeed from.
CREATE FUNCTION automation.job_run_succeeded(runid bigint, jobid bigint, message text, pid integer,
                                             started timestamptz, ended timestamptz, lateness double precision,
                                             keep boolean, ended_from text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF job_run_succeeded.keep THEN
        UPDATE automation.job_run_details d
           SET status = 'succeeded', return_message = job_run_succeeded.message,
               job_pid = COALESCE(job_run_succeeded.pid, d.job_pid),
               start_time = job_run_succeeded.started, end_time = job_run_succeeded.ended
         WHERE d.runid = job_run_succeeded.runid AND d.status = ANY (job_run_succeeded.ended_from);
    ELSE
        DELETE FROM automation.job_run_details d WHERE d.runid = job_run_succeeded.runid;
    END IF;
    -- SKIP LOCKED: a user holding the job's row never stalls the scheduler
    UPDATE automation.job j
       SET last_run_at = job_run_succeeded.started, last_status = 'succeeded', consecutive_failures = 0
     WHERE j.jobid = (SELECT x.jobid FROM automation.job x WHERE x.jobid = job_run_succeeded.jobid FOR UPDATE SKIP LOCKED);
    PERFORM automation.count_job_run(job_run_succeeded.jobid, 'succeeded',
                                     extract(epoch FROM job_run_succeeded.ended - job_run_succeeded.started)::double precision,
                                     job_run_succeeded.lateness);
END
$fn$;
COMMENT ON FUNCTION automation.job_run_succeeded(bigint, bigint, text, integer, timestamptz, timestamptz, double precision, boolean, text[]) IS
'Internal (the scheduler): record a run that succeeded (its row, its job''s last run, the counters) in one call.';
REVOKE EXECUTE ON FUNCTION automation.job_run_succeeded(bigint, bigint, text, integer, timestamptz, timestamptz, double precision, boolean, text[]) FROM PUBLIC;


REVOKE INSERT, UPDATE ON automation_workflows.workflow_runs, automation_workflows.step_runs FROM automation_runner;
-- 0.7.0: not every column. started_by (the role a workflow's SQL steps run
-- as) is always the role that inserts the row, and neither it nor the
-- definition an execution runs, nor a step run's input, SQL-step-ness or
-- execution can be changed afterwards: a runner cannot have SQL run as
-- another role.
GRANT SELECT ON automation_workflows.workflow_runs, automation_workflows.step_runs TO automation_runner;
GRANT INSERT (execution_id, workflow_name, version, definition, input, idempotency_key, admitted, run_after,
              deadline, open_elements, steps_left, created_at)
   ON automation_workflows.workflow_runs TO automation_runner;
GRANT UPDATE (admitted, open_elements, steps_left) ON automation_workflows.workflow_runs TO automation_runner;
GRANT INSERT ON automation_workflows.step_runs TO automation_runner;
GRANT UPDATE (status, worker, started_at, completed_at, lease_expires_at, output, error)
   ON automation_workflows.step_runs TO automation_runner;
GRANT SELECT ON automation.workflow_progress TO automation_runner, automation_monitor;

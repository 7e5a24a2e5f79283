-- The workflow engine (issue 18). 0.5.0: the definition format, checked when
-- a definition is written (src/engine/definition.rs), and its version bumped
-- when it changes.

-- (0.8.0) the definition goes to the native check as text: a value nested
-- deeper than the JSON parser allows is refused with 22023, not XX000
CREATE FUNCTION automation.check_definition_text(definition text)
RETURNS boolean
LANGUAGE c STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'check_definition_text_wrapper';
COMMENT ON FUNCTION automation.check_definition_text(text) IS
'Internal: check_definition of a definition''s text.';

CREATE FUNCTION automation.map_is_sequence(path text)
RETURNS boolean
LANGUAGE c IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'map_is_sequence_wrapper';
REVOKE EXECUTE ON FUNCTION automation.map_is_sequence(text) FROM PUBLIC;
COMMENT ON FUNCTION automation.map_is_sequence(text) IS
'Internal: does a map path yield a sequence of matches (a wildcard, a filter, a slice: the matches are the list) rather than one array?';

CREATE FUNCTION automation.check_definition(definition jsonb)
RETURNS boolean
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT automation.check_definition_text(definition::text) $fn$;

COMMENT ON FUNCTION automation.check_definition(jsonb) IS
'Raise 22023 naming the step and field if definition is not a valid workflow (see docs/workflows.md, Definitions); true if it has steps (it can be started), false if it is data without steps.';

-- BEFORE INSERT OR UPDATE of a definition: it belongs to a role the writer
-- may act as (0.8.0), and its name is not in use by executions of roles its
-- owner may not act as (a definition would make its owner the manager of
-- every execution of the name); a definition with steps must be valid; a
-- changed definition gets the next version (or the higher one the writer
-- set); a version never goes back.
--
-- The format is not checked while check_function_bodies is off, as
-- PostgreSQL does not check function bodies then: pg_dump's output turns it
-- off, and a dump must restore even if it holds a definition written before
-- 0.5.0 that the format refuses (starting it will say why). Who may write
-- it is checked whatever the settings.
CREATE FUNCTION automation_workflows.definitions_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_RELID IS DISTINCT FROM 'automation_workflows.definitions'::regclass
       OR TG_LEVEL IS DISTINCT FROM 'ROW' OR TG_WHEN IS DISTINCT FROM 'BEFORE' THEN
        RAISE EXCEPTION 'automation_workflows.definitions_check() only runs as a BEFORE ... FOR EACH ROW trigger of automation_workflows.definitions'
              USING ERRCODE = 'wrong_object_type';
    END IF;
    IF NEW.owner IS NULL THEN
        NEW.owner := automation.invoker();
    END IF;
    IF TG_OP = 'UPDATE' AND NOT automation.may_act_as(OLD.owner) THEN
        RAISE EXCEPTION 'permission denied for workflow definition %', OLD.name
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'Only its owner (and roles that may SET ROLE to it) change a definition.';
    END IF;
    IF (TG_OP = 'INSERT' OR NEW.owner IS DISTINCT FROM OLD.owner) AND NOT automation.may_act_as(NEW.owner) THEN
        RAISE EXCEPTION 'permission denied to give workflow definition % to role %', NEW.name, NEW.owner
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'A definition belongs to the role that writes it, or to a role it may SET ROLE to; leave owner out to own it yourself.';
    END IF;
    IF (TG_OP = 'INSERT' OR NEW.name IS DISTINCT FROM OLD.name OR NEW.owner IS DISTINCT FROM OLD.owner)
       AND automation.workflow_in_use_by_others(NEW.name, NEW.owner) THEN
        RAISE EXCEPTION 'workflow % has executions of roles that % may not act as', NEW.name, NEW.owner
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'The owner of a definition manages every execution of its name: choose another name, or have a role that may act as those roles define it.';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.version < OLD.version THEN
            RAISE EXCEPTION 'the version of workflow definition % cannot go back from % to %', OLD.name, OLD.version, NEW.version
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Versions only grow; changing the definition bumps it by itself.';
        END IF;
        IF NEW.definition IS NOT DISTINCT FROM OLD.definition THEN
            RETURN NEW;
        END IF;
        IF NEW.version = OLD.version THEN
            NEW.version := OLD.version + 1;
        END IF;
    END IF;
    IF current_setting('check_function_bodies')::boolean THEN
        PERFORM automation.check_definition(NEW.definition);
    END IF;
    RETURN NEW;
END
$fn$;

-- Are there executions of workflow `name` that `owner` may not act as
-- (pending, running or in the history)? SECURITY DEFINER: the writer of a
-- definition cannot see other roles' executions; it learns only whether
-- the name is in use.
CREATE FUNCTION automation.workflow_in_use_by_others(name text, owner oid)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT EXISTS (SELECT FROM automation_workflows.execution_queue q
                    WHERE q.workflow_name = workflow_in_use_by_others.name
                      AND NOT automation.role_may_act_as(workflow_in_use_by_others.owner, q.owner))
        OR EXISTS (SELECT FROM automation_workflows.execution_log l
                    WHERE l.workflow_name = workflow_in_use_by_others.name
                      AND NOT automation.role_may_act_as(workflow_in_use_by_others.owner, l.owner))
        OR EXISTS (SELECT FROM automation_workflows.workflow_executions e
                    WHERE e.workflow_name = workflow_in_use_by_others.name
                      AND NOT automation.role_may_act_as(workflow_in_use_by_others.owner, e.owner))
$fn$;
REVOKE EXECUTE ON FUNCTION automation.workflow_in_use_by_others(text, oid) FROM PUBLIC;
COMMENT ON FUNCTION automation.workflow_in_use_by_others(text, oid) IS
'Internal: does workflow name have executions of roles that owner may not act as? (Checked when a definition takes a name.)';

REVOKE EXECUTE ON FUNCTION automation_workflows.definitions_check() FROM PUBLIC;
COMMENT ON FUNCTION automation_workflows.definitions_check() IS
'Internal: BEFORE trigger of automation_workflows.definitions that checks a definition with steps and bumps the version of a changed one (refuses to run for any other table).';

CREATE TRIGGER trg_definitions_check
    BEFORE INSERT OR UPDATE ON automation_workflows.definitions
    FOR EACH ROW EXECUTE FUNCTION automation_workflows.definitions_check();

------------------------------------------------------------------------------
-- 0.5.0, part 2: running workflows of queue steps.
--
--   run_workflow ─► workflow_executions (running, or pending while delayed or
--                   waiting for a slot) + workflow_runs (the definition it runs,
--                   its input) + a step run per step without dependencies
--   claim_steps ─► a step run is running, leased to a worker
--   complete_step ─► success; the steps whose dependencies are all done get
--                   their runs (one per element for a mapped step); when every
--                   step is done the execution is success
--   fail_step ─► error; retried after a backoff while attempts remain, else
--                the execution is error, its other steps are cancelled, and
--                the failure is recorded in automation.errors
-- One row per attempt. Every finished attempt writes a pipeline_metrics row
-- (pipeline = workflow, stage = step). Changes to one execution are
-- serialized by a lock on its workflow_runs row.

CREATE TABLE automation_workflows.workflow_runs (
    -- workflow_executions.id (no foreign key, so that the history can be
    -- truncated as before: the triggers below forget the runs of deleted
    -- or truncated executions)
    execution_id    uuid        PRIMARY KEY,
    workflow_name   text        NOT NULL,
    -- the definition it runs, as it was when it started
    version         integer     NOT NULL,
    definition      jsonb       NOT NULL,
    input           jsonb       NOT NULL,
    idempotency_key text,
    -- the role it runs as (0.8.0: by oid; was started_by, a name): the
    -- role that started it, or the owner of the trigger that did
    owner           regrole     NOT NULL,
    -- false while it waits for a slot (the workflow's concurrency)
    admitted        boolean     NOT NULL,
    run_after       timestamptz NOT NULL,
    -- run_after + the workflow's timeout
    deadline        timestamptz,
    -- per started step, how many of its elements have not succeeded yet (1
    -- for a step that is not mapped): the completion that brings a step to
    -- 0 advances the execution, the others do not look at it
    open_elements   jsonb       NOT NULL DEFAULT '{}',
    -- steps not done yet: 0 is success
    steps_left      integer     NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- (0.8.0) the execution this one re-runs (rerun_workflow)
    rerun_of        uuid,
    -- (0.8.0) an idempotency key holds against pending, running and
    -- succeeded executions: one that failed, timed out or was cancelled
    -- releases it, so the same key starts (or re-runs) it again
    key_released    boolean     NOT NULL DEFAULT false,
    -- (0.8.0) the trigger that started it (automation_triggers.registry.id)
    trigger_id      integer
);
-- (0.8.0: a key is its owner's: two roles starting the same workflow with
-- the same key start two executions)
CREATE UNIQUE INDEX workflow_runs_idempotency
    ON automation_workflows.workflow_runs (workflow_name, owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL AND NOT key_released;
CREATE INDEX workflow_runs_rerun_of
    ON automation_workflows.workflow_runs (rerun_of) WHERE rerun_of IS NOT NULL;
CREATE INDEX workflow_runs_trigger
    ON automation_workflows.workflow_runs (trigger_id, created_at) WHERE trigger_id IS NOT NULL;
CREATE INDEX workflow_runs_waiting
    ON automation_workflows.workflow_runs (workflow_name, run_after) WHERE NOT admitted;
CREATE INDEX workflow_runs_deadline
    ON automation_workflows.workflow_runs (deadline) WHERE deadline IS NOT NULL;
COMMENT ON TABLE automation_workflows.workflow_runs IS
    'Executions of workflow definitions (run_workflow): the definition version each runs, its input, its idempotency key.';
SELECT pg_catalog.pg_extension_config_dump('automation_workflows.workflow_runs', '');

CREATE TABLE automation_workflows.step_runs (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id     uuid        NOT NULL
                     REFERENCES automation_workflows.workflow_runs (execution_id) ON DELETE CASCADE,
    step             text        NOT NULL,
    -- the element of a mapped step's array (NULL: not mapped)
    map_index        integer,
    attempt          integer     NOT NULL DEFAULT 1,
    max_attempts     integer     NOT NULL DEFAULT 1,
    status           text        NOT NULL DEFAULT 'pending',
    -- the queue outside workers claim it from; NULL: a SQL step, run by the
    -- extension's step workers (0.7.0)
    queue            text,
    step_timeout     interval,
    worker           text,
    visible_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    lease_expires_at timestamptz,
    started_at       timestamptz,
    completed_at     timestamptz,
    input            jsonb       NOT NULL,
    output           jsonb,
    -- {"message": ..., "sqlstate": ...}
    error            jsonb,
    CONSTRAINT step_runs_status_check CHECK (status OPERATOR(pg_catalog.=) ANY
        ('{pending,running,success,error,timeout,cancelled}'::text[])),
    CONSTRAINT step_runs_attempt_check CHECK (attempt >= 1 AND attempt <= max_attempts)
);
-- what claim_steps scans, what the sweep scans, and per execution
CREATE INDEX step_runs_claimable ON automation_workflows.step_runs (queue, visible_at, execution_id, id) WHERE status = 'pending';
CREATE INDEX step_runs_leased ON automation_workflows.step_runs (lease_expires_at) WHERE status = 'running';
CREATE INDEX step_runs_execution ON automation_workflows.step_runs (execution_id, step, map_index, attempt);
COMMENT ON TABLE automation_workflows.step_runs IS
    'One row per attempt of a step of a workflow execution: its queue, worker, lease, input, output and error.';
SELECT pg_catalog.pg_extension_config_dump('automation_workflows.step_runs', '');
SELECT pg_catalog.pg_extension_config_dump('automation_workflows.step_runs_id_seq', '');

-- 0.8.0: a role reads the runs (and their steps) it may act on; nobody but
-- the engine's functions writes them.
ALTER TABLE automation_workflows.workflow_runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY workflow_runs_read ON automation_workflows.workflow_runs FOR SELECT
    USING (automation.may_read(owner, workflow_name));
ALTER TABLE automation_workflows.step_runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY step_runs_read ON automation_workflows.step_runs FOR SELECT
    USING (EXISTS (SELECT FROM automation_workflows.workflow_runs w
                    WHERE w.execution_id OPERATOR(pg_catalog.=) step_runs.execution_id));

CREATE FUNCTION automation.step_backoff(attempt integer, base interval, cap interval)
RETURNS interval
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'step_backoff_wrapper';
COMMENT ON FUNCTION automation.step_backoff(integer, interval, interval) IS
'How long a step waits after failed attempt number attempt: base * 2^(attempt - 1), at most cap, with equal jitter (half fixed, half random).';

-- Executions deleted from the history (purge_executions, a DBA's DELETE or
-- TRUNCATE) take their workflow runs and step runs with them. SECURITY
-- DEFINER: whoever may delete history may not delete runs directly (the
-- runner role may do neither); it runs for these statement triggers of
-- workflow_executions and nothing else (no EXECUTE for PUBLIC).
CREATE FUNCTION automation_workflows.workflow_runs_forget()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_RELID IS DISTINCT FROM 'automation_workflows.workflow_executions'::regclass
       OR TG_LEVEL IS DISTINCT FROM 'STATEMENT' OR TG_WHEN IS DISTINCT FROM 'AFTER' THEN
        RAISE EXCEPTION 'automation_workflows.workflow_runs_forget() only runs as an AFTER ... FOR EACH STATEMENT trigger of automation_workflows.workflow_executions'
              USING ERRCODE = 'wrong_object_type';
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM automation_workflows.workflow_runs;
    ELSIF TG_OP = 'DELETE' THEN
        DELETE FROM automation_workflows.workflow_runs w USING gone g WHERE w.execution_id = g.id;
    END IF;
    RETURN NULL;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation_workflows.workflow_runs_forget() FROM PUBLIC;
COMMENT ON FUNCTION automation_workflows.workflow_runs_forget() IS
'Internal: statement trigger of automation_workflows.workflow_executions that deletes the workflow runs (and step runs) of deleted or truncated executions (refuses to run for any other table).';
CREATE TRIGGER workflow_executions_forget_runs
    AFTER DELETE ON automation_workflows.workflow_executions REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION automation_workflows.workflow_runs_forget();
CREATE TRIGGER workflow_executions_forget_runs_truncate
    AFTER TRUNCATE ON automation_workflows.workflow_executions
    FOR EACH STATEMENT EXECUTE FUNCTION automation_workflows.workflow_runs_forget();

-- The steps of a definition: name, dependencies, queue, attempts, backoff,
-- timeout, map path.
CREATE FUNCTION automation.definition_steps(definition jsonb)
RETURNS TABLE (name text, after text[], queue text, max_attempts integer, backoff interval,
               max_backoff interval, step_timeout interval, map text, sql text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT s->>'name',
           CASE jsonb_typeof(s->'after')
                WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text(s->'after'))
                WHEN 'string' THEN ARRAY[s->>'after']
                ELSE '{}'::text[] END,
           s->>'queue',
           coalesce((s->'retry'->>'max_attempts')::integer, 1),
           coalesce((s->'retry'->>'backoff')::interval, interval '1 second'),
           coalesce((s->'retry'->>'max_backoff')::interval, interval '1 hour'),
           (s->>'timeout')::interval,
           s->>'map',
           s->>'sql'
      FROM jsonb_array_elements(definition->'steps') AS s
$fn$;

-- End an execution: its status, completion time and details; its steps that
-- have not finished are cancelled; a failure is recorded in
-- automation.errors; the next execution waiting for a slot is admitted.
-- The caller holds the lock on the execution's workflow_runs row.
CREATE FUNCTION automation.workflow_finish(execution_id uuid, status text, details jsonb)
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
    PERFORM automation.stop_sql_step(r.id, run.owner)
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
    -- (0.8.0) no deadline any more: the scheduler watches those of running
    -- executions only; a failure releases the idempotency key
    UPDATE automation_workflows.workflow_runs w
       SET deadline = NULL,
           key_released = w.idempotency_key IS NOT NULL AND workflow_finish.status <> 'success'
     WHERE w.execution_id = workflow_finish.execution_id;
    -- (0.8.0) a re-run that succeeds resolves the errors of the executions
    -- it re-ran (a re-run of a re-run: the whole chain)
    IF workflow_finish.status = 'success' AND run.rerun_of IS NOT NULL THEN
        WITH RECURSIVE chain(id) AS (
            SELECT run.rerun_of
            UNION
            SELECT w.rerun_of FROM automation_workflows.workflow_runs w JOIN chain c ON w.execution_id = c.id
             WHERE w.rerun_of IS NOT NULL)
        UPDATE automation.errors r SET resolved_at = now()
         WHERE r.execution_id IN (SELECT c.id FROM chain c) AND r.resolved_at IS NULL;
    END IF;
    IF run.definition->>'concurrency' ~ '^[0-9]{1,9}$' THEN
        PERFORM automation.workflow_admit_waiting(run.workflow_name, (run.definition->>'concurrency')::integer);
    END IF;
END
$fn$;

-- Create the runs of the steps that can start now that `finished_step` is
-- done (NULL: the execution starts): every dependency done (its count of
-- open elements is 0), no run yet. They are visible from the execution's
-- run_after, so that claims take the steps of older executions first (a
-- workflow that started runs to its end before later ones take over). A
-- mapped step gets one run per element of the array its path yields (none:
-- it is done at once, with [], and what waits for it may start). When no
-- step is left, the execution is success. The caller holds the lock on the
-- execution's workflow_runs row.
CREATE FUNCTION automation.workflow_advance(execution_id uuid, finished_step text DEFAULT NULL)
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
    fails jsonb;
    started integer;
BEGIN
    SELECT * INTO run FROM automation_workflows.workflow_runs r WHERE r.execution_id = workflow_advance.execution_id;
    WHILE cardinality(finished) > 0 LOOP
        one := finished[1];
        finished := finished[2:];
        FOR s IN
            SELECT d.*
              FROM automation.definition_steps(run.definition) d
             -- (the start: every step whose dependencies are done; a new
             -- execution has none done, a re-run those it carried over)
             WHERE (one IS NULL OR one = ANY (d.after))
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
            -- (0.8.0) a mapped dependency that tolerated failed elements
            -- (max_failures): which, and why, beside its successes
            SELECT jsonb_object_agg(f.step, f.failed) INTO fails
              FROM (SELECT r.step, jsonb_agg(jsonb_build_object('index', r.map_index, 'item', r.input->'item', 'error', r.error)
                                             ORDER BY r.map_index) AS failed
                      FROM automation_workflows.step_runs r
                     WHERE r.execution_id = run.execution_id AND r.step = ANY (s.after) AND r.map_index IS NOT NULL
                       AND r.status IN ('error', 'timeout')
                       AND NOT EXISTS (SELECT FROM automation_workflows.step_runs n
                                        WHERE n.execution_id = r.execution_id AND n.step = r.step
                                          AND n.map_index = r.map_index AND n.attempt > r.attempt)
                     GROUP BY r.step) f;
            IF s.map IS NULL THEN
                INSERT INTO automation_workflows.step_runs
                       (execution_id, step, max_attempts, queue, step_timeout, visible_at, input)
                VALUES (run.execution_id, s.name, s.max_attempts, s.queue, s.step_timeout, run.run_after,
                        jsonb_build_object('input', run.input, 'steps', deps)
                        || CASE WHEN fails IS NOT NULL THEN jsonb_build_object('failures', fails) ELSE '{}' END);
                run.open_elements := run.open_elements || jsonb_build_object(s.name, 1);
                IF s.sql IS NOT NULL THEN
                    PERFORM automation.wake_step_workers(1);
                ELSE
                    PERFORM automation.executions_enqueued(automation.step_queue_key(s.queue));
                END IF;
                CONTINUE;
            END IF;
            -- (0.8.0) a path with a wildcard or filter maps over its matches
            IF automation.map_is_sequence(s.map) THEN
                items := jsonb_path_query_array(deps, s.map::jsonpath);
            ELSE
                items := jsonb_path_query_first(deps, s.map::jsonpath);
            END IF;
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
                  FROM jsonb_array_elements(items) WITH ORDINALITY AS i(item, ord)
                 -- (0.8.0) a re-run carried over the elements that succeeded
                 WHERE NOT EXISTS (SELECT FROM automation_workflows.step_runs c
                                    WHERE c.execution_id = run.execution_id AND c.step = s.name
                                      AND c.map_index = i.ord::integer - 1 AND c.status = 'success');
                GET DIAGNOSTICS started = ROW_COUNT;
                run.open_elements := run.open_elements || jsonb_build_object(s.name, started);
                IF started = 0 THEN
                    run.steps_left := run.steps_left - 1;
                    finished := finished || s.name;
                ELSIF s.sql IS NOT NULL THEN
                    PERFORM automation.wake_step_workers(started);
                ELSE
                    PERFORM automation.executions_enqueued(automation.step_queue_key(s.queue));
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

-- How many executions of `workflow_name` are admitted and not finished (what
-- its concurrency limits).
CREATE FUNCTION automation.workflow_admitted(workflow_name text)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT count(*)
      FROM automation_workflows.workflow_runs r
      JOIN automation_workflows.workflow_executions e ON e.id = r.execution_id
     WHERE r.workflow_name = workflow_admitted.workflow_name AND r.admitted AND e.status IN ('pending', 'running')
$fn$;

-- Admit executions of `workflow_name` waiting for a slot while fewer than
-- `concurrency` are admitted and unfinished (oldest due first).
CREATE FUNCTION automation.workflow_admit_waiting(workflow_name text, concurrency integer)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    next_id uuid;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('automation_ext workflow concurrency'), hashtext(workflow_admit_waiting.workflow_name));
    LOOP
        EXIT WHEN automation.workflow_admitted(workflow_admit_waiting.workflow_name) >= workflow_admit_waiting.concurrency;
        SELECT r.execution_id INTO next_id
          FROM automation_workflows.workflow_runs r
          JOIN automation_workflows.workflow_executions e ON e.id = r.execution_id AND e.status = 'pending'
         WHERE r.workflow_name = workflow_admit_waiting.workflow_name AND NOT r.admitted
         ORDER BY r.run_after, r.created_at
         LIMIT 1
           FOR UPDATE OF r SKIP LOCKED;
        EXIT WHEN next_id IS NULL;
        UPDATE automation_workflows.workflow_runs r SET admitted = true WHERE r.execution_id = next_id;
        PERFORM automation.workflow_advance(next_id);
    END LOOP;
END
$fn$;

CREATE FUNCTION automation.run_workflow(name text, input jsonb DEFAULT '{}', run_after timestamptz DEFAULT NULL,
                                        idempotency_key text DEFAULT NULL)
RETURNS uuid
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

-- (0.8.0) run_workflow as `caller`: it may start the workflow (owns it, may
-- act as its owner, or was granted run); the execution is caller's, and its
-- SQL steps run as caller. Every public function that changes the engine's
-- state is such a pair: the C function act_as (src/tenancy.rs) calls its
-- _as function, SECURITY DEFINER, with the role in effect; nobody may
-- execute an _as function directly.
CREATE FUNCTION automation.run_workflow_as(caller oid, name text, input jsonb, run_after timestamptz,
                                           idempotency_key text)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    def automation_workflows.definitions;
    existing uuid;
    new_id uuid := automation.uuid_v7();
    starts timestamptz := GREATEST(now(), coalesce(run_workflow_as.run_after, now()));
    slot boolean := true;
BEGIN
    IF run_workflow_as.run_after = 'infinity' THEN
        RAISE EXCEPTION 'run_after must be a time, not infinity: the execution could never start'
              USING ERRCODE = 'datetime_field_overflow',
                    HINT = 'Leave run_after NULL to start now, or give the time to start at.';
    END IF;
    IF run_workflow_as.input IS NULL OR jsonb_typeof(run_workflow_as.input) <> 'object' THEN
        RAISE EXCEPTION 'the input of a workflow must be a JSON object, not %', coalesce(jsonb_typeof(run_workflow_as.input), 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Steps read it as step input''s "input" key; wrap a value in an object.';
    END IF;
    SELECT * INTO def FROM automation_workflows.definitions d WHERE d.name = run_workflow_as.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow % does not exist', run_workflow_as.name
              USING ERRCODE = 'undefined_object',
                    HINT = 'Insert its definition into automation_workflows.definitions first.';
    ELSIF NOT automation.may_start_workflow(run_workflow_as.caller, def.name) THEN
        RAISE EXCEPTION 'permission denied to start workflow %', run_workflow_as.name
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'A workflow is started by its owner, roles that may SET ROLE to it, and roles it was granted to (automation.grant_workflow(name, role)).';
    ELSIF NOT def.is_active THEN
        RAISE EXCEPTION 'workflow % is inactive', run_workflow_as.name
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'UPDATE automation_workflows.definitions SET is_active = true to run it.';
    ELSIF NOT automation.check_definition(def.definition) THEN
        RAISE EXCEPTION 'workflow % has no steps and cannot be started', run_workflow_as.name
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'A definition is runnable when it has "steps" (see docs/workflows.md, Definitions).';
    END IF;
    IF EXISTS (SELECT FROM automation.definition_steps(def.definition) s WHERE s.sql IS NOT NULL)
       AND NOT automation.step_workers_available() THEN
        RAISE EXCEPTION 'workflow % has SQL steps, and no step worker can run them here', run_workflow_as.name
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'SQL steps are run by the extension''s background workers: add automation_ext to shared_preload_libraries and restart.';
    END IF;
    IF run_workflow_as.idempotency_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('automation_ext run_workflow'),
                                      hashtext(run_workflow_as.name || '/' || run_workflow_as.caller || '/' || run_workflow_as.idempotency_key));
        SELECT r.execution_id INTO existing FROM automation_workflows.workflow_runs r
         WHERE r.workflow_name = run_workflow_as.name AND r.owner = run_workflow_as.caller
           AND r.idempotency_key = run_workflow_as.idempotency_key
           -- (0.8.0) a key holds against pending, running and succeeded
           -- executions; one that failed released it
           AND NOT r.key_released;
        IF FOUND THEN
            RETURN existing;
        END IF;
    END IF;
    IF def.definition ? 'concurrency' THEN
        PERFORM pg_advisory_xact_lock(hashtext('automation_ext workflow concurrency'), hashtext(run_workflow_as.name));
        slot := automation.workflow_admitted(run_workflow_as.name) < (def.definition->>'concurrency')::integer;
    END IF;
    INSERT INTO automation_workflows.workflow_executions (id, workflow_name, status, started_at, metadata, run_after, owner)
    VALUES (new_id, run_workflow_as.name, CASE WHEN slot AND starts <= now() THEN 'running' ELSE 'pending' END, starts,
            jsonb_build_object('workflow_version', def.version), starts, run_workflow_as.caller);
    INSERT INTO automation_workflows.workflow_runs
           (execution_id, workflow_name, version, definition, input, idempotency_key, owner, admitted, run_after, deadline,
            steps_left)
    VALUES (new_id, run_workflow_as.name, def.version, def.definition, run_workflow_as.input, run_workflow_as.idempotency_key,
            run_workflow_as.caller, slot, starts, starts + (def.definition->>'timeout')::interval,
            jsonb_array_length(def.definition->'steps'));
    IF slot THEN
        PERFORM automation.workflow_advance(new_id);
    END IF;
    -- (0.8.0) a deadline: the scheduler looks at it then
    IF def.definition ? 'timeout' THEN
        PERFORM automation.note_deadline();
    END IF;
    RETURN new_id;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.run_workflow_as(oid, text, jsonb, timestamptz, text) FROM PUBLIC;

CREATE FUNCTION automation.claim_steps(queue text, worker_id text, max_steps integer DEFAULT 1,
                                       lease interval DEFAULT '5 minutes', wait interval DEFAULT NULL)
RETURNS TABLE (id bigint, execution_id uuid, workflow_name text, step text, map_index integer, attempt integer,
               input jsonb, lease_expires_at timestamptz)
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

-- (0.8.0) only steps of executions caller may work: its own (or of a role
-- it may act as), and those of workflows it owns or was granted work on.
-- (0.8.0) wait: until a step of the queue can be claimed (woken when one
-- is made, not polled), at most that long.
CREATE FUNCTION automation.claim_steps_as(caller oid, queue text, worker_id text, max_steps integer, lease interval,
                                          wait interval)
RETURNS TABLE (id bigint, execution_id uuid, workflow_name text, step text, map_index integer, attempt integer,
               input jsonb, lease_expires_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    claimed integer;
    deadline timestamptz;
    next_visible timestamptz;
BEGIN
    IF coalesce(claim_steps_as.queue, '') = '' THEN
        RAISE EXCEPTION 'queue must not be empty'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Claim the steps of one queue: the "queue" of a step in its workflow''s definition.';
    END IF;
    IF coalesce(claim_steps_as.worker_id, '') = '' THEN
        RAISE EXCEPTION 'worker_id must not be empty'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Identify the worker, for example host:pid; complete_step() and fail_step() can check it.';
    END IF;
    IF claim_steps_as.max_steps IS NULL OR claim_steps_as.max_steps < 1 OR claim_steps_as.max_steps > 10000 THEN
        RAISE EXCEPTION 'max_steps must be between 1 and 10000, not %', claim_steps_as.max_steps
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF claim_steps_as.lease IS NULL OR claim_steps_as.lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', claim_steps_as.lease
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF claim_steps_as.wait < interval '0' OR claim_steps_as.wait > interval '1 hour' THEN
        RAISE EXCEPTION 'wait must be between 0 and 1 hour, not %', claim_steps_as.wait
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'NULL or 0 returns at once; a wait returns as soon as a step of the queue can be claimed.';
    END IF;
    deadline := clock_timestamp() + claim_steps_as.wait;
    LOOP
    -- expired leases of this queue first: retried (or failed) now
    IF EXISTS (SELECT FROM automation_workflows.step_runs x
                WHERE x.status = 'running' AND x.lease_expires_at < clock_timestamp() AND x.queue = claim_steps_as.queue) THEN
        PERFORM automation.expire_steps(claim_steps_as.queue);
    END IF;
    RETURN QUERY
    WITH taken AS (
        UPDATE automation_workflows.step_runs r
           SET status = 'running',
               worker = claim_steps_as.worker_id,
               started_at = clock_timestamp(),
               lease_expires_at = clock_timestamp()
                   + CASE WHEN r.step_timeout < claim_steps_as.lease THEN r.step_timeout ELSE claim_steps_as.lease END
         WHERE r.id IN (SELECT c.id FROM automation_workflows.step_runs c
                         WHERE c.queue = claim_steps_as.queue AND c.status = 'pending' AND c.visible_at <= clock_timestamp()
                           AND EXISTS (SELECT FROM automation_workflows.workflow_runs w
                                        WHERE w.execution_id = c.execution_id
                                          AND (automation.role_may_act_as(claim_steps_as.caller, w.owner)
                                               OR automation.may_work_workflow(claim_steps_as.caller, w.workflow_name)))
                         ORDER BY c.visible_at, c.execution_id, c.id
                         LIMIT claim_steps_as.max_steps
                           FOR UPDATE SKIP LOCKED)
        RETURNING r.*),
    started AS (
        UPDATE automation_workflows.workflow_executions e
           SET status = 'running', started_at = now()
         WHERE e.id IN (SELECT t.execution_id FROM taken t) AND e.status = 'pending')
    SELECT t.id, t.execution_id, w.workflow_name, t.step, t.map_index, t.attempt, t.input, t.lease_expires_at
      FROM taken t JOIN automation_workflows.workflow_runs w ON w.execution_id = t.execution_id
     -- (0.8.0) a step with a timeout: the scheduler expires it then
     WHERE t.step_timeout IS NULL OR automation.note_deadline()
     ORDER BY t.visible_at, t.execution_id, t.id;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    EXIT WHEN claimed > 0 OR deadline IS NULL OR clock_timestamp() >= deadline;
    -- until a step of the queue is made (the commit wakes a waiter), the
    -- deadline, or the moment a step waiting out its backoff (or a lease)
    -- comes due
    SELECT least(min(x.visible_at) FILTER (WHERE x.status = 'pending'),
                 min(x.lease_expires_at) FILTER (WHERE x.status = 'running'))
      INTO next_visible
      FROM automation_workflows.step_runs x
     WHERE x.queue = claim_steps_as.queue AND x.status IN ('pending', 'running');
    PERFORM automation.wait_for_executions(automation.step_queue_key(claim_steps_as.queue),
                                           least(deadline, next_visible + interval '1 millisecond'));
    END LOOP;
END
$fn$;

-- (0.8.0) The key waiting claims of a step queue are woken by (shared with
-- the queue's waiters, in another name space than workflow names).
CREATE FUNCTION automation.step_queue_key(queue text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT 'automation_ext step queue ' || queue $fn$;
REVOKE EXECUTE ON FUNCTION automation.step_queue_key(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION automation.claim_steps_as(oid, text, text, integer, interval, interval) FROM PUBLIC;

-- The step run `id`, running and held by `worker_id` (any worker if NULL),
-- with its execution's workflow_runs row locked; or the error that says why
-- not. (0.8.0) caller must be able to work it: act as the execution's owner,
-- or work its workflow.
CREATE FUNCTION automation.running_step(caller oid, id bigint, worker_id text, verb text)
RETURNS automation_workflows.step_runs
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r automation_workflows.step_runs;
BEGIN
    IF running_step.id IS NULL THEN
        RAISE EXCEPTION 'the step run id must not be NULL'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Use an id returned by automation.claim_steps().';
    END IF;
    SELECT * INTO r FROM automation_workflows.step_runs s WHERE s.id = running_step.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'step run % does not exist', running_step.id
              USING ERRCODE = 'no_data_found', HINT = 'Use an id returned by automation.claim_steps().';
    END IF;
    IF NOT EXISTS (SELECT FROM automation_workflows.workflow_runs w
                    WHERE w.execution_id = r.execution_id
                      AND (automation.role_may_act_as(running_step.caller, w.owner)
                           OR automation.may_work_workflow(running_step.caller, w.workflow_name))) THEN
        RAISE EXCEPTION 'permission denied for step run %', running_step.id
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'A step is worked by the role that started its execution (or a role that may SET ROLE to it), and by roles its workflow''s owner granted work.';
    END IF;
    PERFORM FROM automation_workflows.workflow_runs w WHERE w.execution_id = r.execution_id FOR UPDATE;
    SELECT * INTO r FROM automation_workflows.step_runs s WHERE s.id = running_step.id FOR UPDATE;
    IF r.status <> 'running' THEN
        RAISE EXCEPTION 'cannot % step run %: it is %, not running', running_step.verb, running_step.id, r.status
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = CASE r.status
                           WHEN 'cancelled' THEN 'Its workflow execution ended (failed, timed out or was cancelled); discard this result.'
                           WHEN 'pending' THEN 'Claim it first, with automation.claim_steps().'
                           -- (0.8.0) each state its own hint (0.7.0 said the lease
                           -- expired for a step that had succeeded)
                           WHEN 'success' THEN format('It succeeded already (completed by %s). The same complete_step again is ignored; a different result is refused.', coalesce(r.worker, 'a worker'))
                           WHEN 'error' THEN 'It failed already (fail_step, or its retries ran out); its outcome stays. Run the execution again with automation.rerun_workflow().'
                           ELSE 'Its lease or timeout expired and it was retried or failed; discard this result. Use automation.extend_step_lease() for long work.' END;
    ELSIF running_step.worker_id IS NOT NULL AND r.worker IS DISTINCT FROM running_step.worker_id THEN
        RAISE EXCEPTION 'cannot % step run %: it is claimed by %, not by %', running_step.verb, running_step.id,
                        r.worker, running_step.worker_id
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Its lease expired and another worker claimed it; discard this result.';
    END IF;
    RETURN r;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.running_step(oid, bigint, text, text) FROM PUBLIC;

-- A finished attempt, in automation.pipeline_metrics (pipeline = its
-- workflow, which the callers know already).
CREATE FUNCTION automation.step_metric(r automation_workflows.step_runs, workflow_name text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, duration_ms, records_processed, status, error_message)
    VALUES (coalesce(r.completed_at, now()), workflow_name, left(r.step, 100),
            least(GREATEST(0, extract(epoch FROM coalesce(r.completed_at, now()) - coalesce(r.started_at, now())) * 1000),
                  2147483647)::integer,
            CASE WHEN jsonb_typeof(r.output->'records_processed') = 'number'
                  AND (r.output->>'records_processed')::numeric BETWEEN 0 AND 2147483647
                 THEN (r.output->>'records_processed')::numeric::integer END,
            r.status, r.error->>'message')
$fn$;

-- One element of a step is done (it succeeded, or failed within its
-- step's max_failures): the step's count of open elements goes down, and
-- the last one advances the execution. The caller holds the lock on the
-- execution's workflow_runs row.
CREATE FUNCTION automation.element_done(execution_id uuid, step text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    left_open integer;
BEGIN
    -- the last element of its step advances the execution (a step over
    -- 10,000 elements does not look at them 10,000 times)
    UPDATE automation_workflows.workflow_runs w
       SET open_elements = jsonb_set(w.open_elements, ARRAY[element_done.step],
                                     to_jsonb((w.open_elements->>element_done.step)::integer - 1)),
           steps_left = w.steps_left - CASE WHEN (w.open_elements->>element_done.step)::integer = 1 THEN 1 ELSE 0 END
     WHERE w.execution_id = element_done.execution_id
    RETURNING (w.open_elements->>element_done.step)::integer INTO left_open;
    IF left_open = 0 THEN
        PERFORM automation.workflow_advance(element_done.execution_id, element_done.step);
    END IF;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.element_done(uuid, text) FROM PUBLIC;

-- An attempt that succeeded with `output`: recorded, counted in
-- pipeline_metrics, and the execution advanced when it was the last open
-- element of its step. The caller holds the lock on the execution's
-- workflow_runs row and has checked the run is running.
CREATE FUNCTION automation.step_succeeded(id bigint, output jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r automation_workflows.step_runs;
BEGIN
    UPDATE automation_workflows.step_runs s
       SET status = 'success', output = step_succeeded.output, completed_at = GREATEST(now(), s.started_at),
           lease_expires_at = NULL
     WHERE s.id = step_succeeded.id
    RETURNING s.* INTO r;
    PERFORM automation.step_metric(r, (SELECT w.workflow_name FROM automation_workflows.workflow_runs w
                                        WHERE w.execution_id = r.execution_id));
    PERFORM automation.element_done(r.execution_id, r.step);
END
$fn$;

CREATE FUNCTION automation.complete_step(id bigint, output jsonb DEFAULT NULL, worker_id text DEFAULT NULL)
RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.complete_step_as(caller oid, id bigint, output jsonb, worker_id text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r automation_workflows.step_runs;
BEGIN
    -- (0.8.0) the same completion again (its acknowledgement was lost): a
    -- no-op, as the first one was
    SELECT * INTO r FROM automation_workflows.step_runs s WHERE s.id = complete_step_as.id;
    IF FOUND AND r.status = 'success' AND r.output IS NOT DISTINCT FROM complete_step_as.output
       AND r.worker IS NOT DISTINCT FROM coalesce(complete_step_as.worker_id, r.worker)
       AND EXISTS (SELECT FROM automation_workflows.workflow_runs w
                    WHERE w.execution_id = r.execution_id
                      AND (automation.role_may_act_as(complete_step_as.caller, w.owner)
                           OR automation.may_work_workflow(complete_step_as.caller, w.workflow_name))) THEN
        RETURN;
    END IF;
    r := automation.running_step(complete_step_as.caller, complete_step_as.id, complete_step_as.worker_id, 'complete');
    PERFORM automation.step_succeeded(r.id, complete_step_as.output);
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.complete_step_as(oid, bigint, jsonb, text) FROM PUBLIC;

-- An attempt that ended badly (status error or timeout): retried after its
-- backoff while attempts remain (and retryable), else the execution fails.
-- The caller holds the lock on the execution's workflow_runs row.
CREATE FUNCTION automation.step_attempt_failed(id bigint, status text, error jsonb, retryable boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r automation_workflows.step_runs;
    s record;
    run automation_workflows.workflow_runs;
    tolerated jsonb;
    elements bigint;
    failed bigint;
    allowed numeric;
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
        ELSE
            PERFORM automation.executions_enqueued(automation.step_queue_key(r.queue));
        END IF;
        RETURN;
    END IF;
    -- (0.8.0) a mapped step may tolerate failed elements (max_failures: a
    -- count, or a share of its elements rounded down): within it, the
    -- element is done and the step goes on; what waits for the step gets
    -- the successes, and the failures under "failures"
    IF r.map_index IS NOT NULL THEN
        SELECT d->'max_failures' INTO tolerated
          FROM jsonb_array_elements(run.definition->'steps') d WHERE d->>'name' = r.step;
        IF jsonb_typeof(tolerated) = 'number' THEN
            SELECT count(DISTINCT x.map_index),
                   count(DISTINCT x.map_index) FILTER (
                       WHERE x.status IN ('error', 'timeout')
                         AND NOT EXISTS (SELECT FROM automation_workflows.step_runs n
                                          WHERE n.execution_id = x.execution_id AND n.step = x.step
                                            AND n.map_index = x.map_index AND n.attempt > x.attempt))
              INTO elements, failed
              FROM automation_workflows.step_runs x
             WHERE x.execution_id = r.execution_id AND x.step = r.step;
            allowed := CASE WHEN tolerated::numeric > 0 AND tolerated::numeric < 1
                            THEN floor(tolerated::numeric * elements) ELSE tolerated::numeric END;
            IF failed <= allowed THEN
                PERFORM automation.element_done(r.execution_id, r.step);
                RETURN;
            END IF;
        END IF;
    END IF;
    PERFORM automation.workflow_finish(r.execution_id, 'error',
        jsonb_build_object('step', r.step, 'map_index', r.map_index, 'attempts', r.attempt,
                           'message', format('step %s failed after %s attempt%s: %s', r.step, r.attempt,
                                             CASE WHEN r.attempt = 1 THEN '' ELSE 's' END, step_attempt_failed.error->>'message'),
                           'error', step_attempt_failed.error));
END
$fn$;

CREATE FUNCTION automation.fail_step(id bigint, error text, retryable boolean DEFAULT true, worker_id text DEFAULT NULL,
                                     sqlstate text DEFAULT NULL)
RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.fail_step_as(caller oid, id bigint, error text, retryable boolean, worker_id text, sqlstate text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r automation_workflows.step_runs;
BEGIN
    IF fail_step_as.retryable IS NULL THEN
        RAISE EXCEPTION 'retryable must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    r := automation.running_step(fail_step_as.caller, fail_step_as.id, fail_step_as.worker_id, 'fail');
    PERFORM automation.step_attempt_failed(r.id, 'error',
        jsonb_strip_nulls(jsonb_build_object('message', coalesce(fail_step_as.error, 'failed'), 'sqlstate', fail_step_as.sqlstate)),
        fail_step_as.retryable);
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.fail_step_as(oid, bigint, text, boolean, text, text) FROM PUBLIC;

CREATE FUNCTION automation.extend_step_lease(id bigint, worker_id text, lease interval DEFAULT '5 minutes')
RETURNS timestamptz
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.extend_step_lease_as(caller oid, id bigint, worker_id text, lease interval)
RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r automation_workflows.step_runs;
    until timestamptz;
BEGIN
    IF extend_step_lease_as.lease IS NULL OR extend_step_lease_as.lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', extend_step_lease_as.lease
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(extend_step_lease_as.worker_id, '') = '' THEN
        RAISE EXCEPTION 'worker_id must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    r := automation.running_step(extend_step_lease_as.caller, extend_step_lease_as.id, extend_step_lease_as.worker_id, 'extend the lease of');
    -- never past the step's timeout
    until := clock_timestamp() + extend_step_lease_as.lease;
    IF r.step_timeout IS NOT NULL AND until > r.started_at + r.step_timeout THEN
        until := r.started_at + r.step_timeout;
    END IF;
    UPDATE automation_workflows.step_runs s SET lease_expires_at = until WHERE s.id = r.id;
    RETURN until;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.extend_step_lease_as(oid, bigint, text, interval) FROM PUBLIC;

CREATE FUNCTION automation.cancel_workflow(id uuid, reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.cancel_workflow_as(caller oid, id uuid, reason text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cur text;
    run record;
BEGIN
    SELECT w.owner, w.workflow_name INTO run FROM automation_workflows.workflow_runs w
     WHERE w.execution_id = cancel_workflow_as.id FOR UPDATE;
    IF NOT FOUND THEN
        -- (0.8.0) an execution of the queue, pending or claimed: it leaves
        -- the queue as cancelled (a worker that holds it learns so when it
        -- completes or fails it)
        RETURN automation.cancel_queued(cancel_workflow_as.caller, cancel_workflow_as.id, cancel_workflow_as.reason);
    ELSIF NOT (automation.role_may_act_as(cancel_workflow_as.caller, run.owner)
               OR automation.may_manage_workflow(cancel_workflow_as.caller, run.workflow_name)) THEN
        RAISE EXCEPTION 'permission denied for workflow execution %', cancel_workflow_as.id
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'An execution is cancelled by the role that started it (or a role that may SET ROLE to it) and by its workflow''s owner.';
    END IF;
    SELECT e.status INTO cur FROM automation_workflows.workflow_executions e WHERE e.id = cancel_workflow_as.id;
    IF cur NOT IN ('pending', 'running') THEN
        RETURN false;
    END IF;
    PERFORM automation.workflow_finish(cancel_workflow_as.id, 'cancelled',
        jsonb_build_object('message', coalesce(cancel_workflow_as.reason, 'cancelled'), 'cancelled_by', cancel_workflow_as.caller::regrole::text));
    RETURN true;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.cancel_workflow_as(oid, uuid, text) FROM PUBLIC;

-- (0.8.0) The steps of `definition` in `seeds` and every step downstream
-- of them (that depends on one of them, directly or not).
CREATE FUNCTION automation.downstream(definition jsonb, seeds text[])
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH RECURSIVE d AS (SELECT * FROM automation.definition_steps(definition)),
    reach(name) AS (
        SELECT d.name FROM d WHERE d.name = ANY (seeds)
        UNION
        SELECT d.name FROM d JOIN reach r ON r.name = ANY (d.after))
    SELECT coalesce(array_agg(name), '{}') FROM reach
$fn$;
REVOKE EXECUTE ON FUNCTION automation.downstream(jsonb, text[]) FROM PUBLIC;

-- (0.8.0) cancel_workflow of an execution of the queue (enqueue_execution):
-- pending or claimed, it moves to the log as cancelled. False when it has
-- finished already.
CREATE FUNCTION automation.cancel_queued(caller oid, id uuid, reason text)
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
REVOKE EXECUTE ON FUNCTION automation.cancel_queued(oid, uuid, text) FROM PUBLIC;

-- (0.8.0) Run a failed, timed-out or cancelled execution again, as a new
-- execution linked to it (rerun_of): the same input and definition version
-- (latest_version: the definition as it is now). Resume (from_step NULL):
-- the steps that succeeded are carried over with their outputs, and the
-- others run, with what depends on them; of a mapped step, only the
-- elements that did not succeed. from_step: that step and everything
-- downstream of it run again (a succeeded execution too). The re-run is
-- the caller's (its SQL steps run as the caller), who must be able to
-- start the workflow or act as the execution's owner. When it succeeds,
-- the errors of the executions it re-ran are resolved.
CREATE FUNCTION automation.rerun_workflow(execution_id uuid, from_step text DEFAULT NULL, latest_version boolean DEFAULT false)
RETURNS uuid
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.rerun_workflow_as(caller oid, execution_id uuid, from_step text, latest_version boolean)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    old automation_workflows.workflow_runs;
    old_status text;
    def automation_workflows.definitions;
    definition jsonb;
    version integer;
    steps text[];
    seeds text[];
    rerun text[];
    fresh text[];
    carried text[];
    partial text[];
    new_id uuid := automation.uuid_v7();
    open jsonb := '{}';
    slot boolean := true;
    key text;
BEGIN
    IF rerun_workflow_as.execution_id IS NULL THEN
        RAISE EXCEPTION 'the execution id must not be NULL'
              USING ERRCODE = 'null_value_not_allowed', HINT = 'Use an id that automation.executions shows.';
    END IF;
    SELECT * INTO old FROM automation_workflows.workflow_runs w WHERE w.execution_id = rerun_workflow_as.execution_id FOR SHARE;
    IF NOT FOUND THEN
        IF EXISTS (SELECT FROM automation.executions e WHERE e.id = rerun_workflow_as.execution_id) THEN
            RAISE EXCEPTION 'execution % is not an execution of a workflow definition (it has no steps to run again)',
                            rerun_workflow_as.execution_id
                  USING ERRCODE = 'wrong_object_type',
                        HINT = 'An execution of the queue (enqueue_execution) is run again with enqueue_execution, or by retry_failed_workflow from its error.';
        END IF;
        RAISE EXCEPTION 'workflow execution % does not exist', rerun_workflow_as.execution_id
              USING ERRCODE = 'no_data_found', HINT = 'Use an id returned by automation.run_workflow().';
    ELSIF NOT (automation.role_may_act_as(rerun_workflow_as.caller, old.owner)
               OR automation.may_start_workflow(rerun_workflow_as.caller, old.workflow_name)) THEN
        RAISE EXCEPTION 'permission denied to run workflow execution % again', rerun_workflow_as.execution_id
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'An execution is run again by its owner (or a role that may SET ROLE to it) and by roles that may start its workflow.';
    END IF;
    SELECT e.status INTO old_status FROM automation_workflows.workflow_executions e WHERE e.id = old.execution_id;
    IF old_status IN ('pending', 'running') THEN
        RAISE EXCEPTION 'workflow execution % is %: only a finished execution is run again', old.execution_id, old_status
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Wait for it to end, or cancel it first: SELECT automation.cancel_workflow(id).';
    ELSIF old_status = 'success' AND rerun_workflow_as.from_step IS NULL THEN
        RAISE EXCEPTION 'workflow execution % succeeded: there is nothing to resume', old.execution_id
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Name the step to run again from: automation.rerun_workflow(id, from_step => ''load'').';
    END IF;
    IF rerun_workflow_as.latest_version THEN
        SELECT * INTO def FROM automation_workflows.definitions d WHERE d.name = old.workflow_name;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'workflow % no longer has a definition', old.workflow_name
                  USING ERRCODE = 'undefined_object',
                        HINT = 'Leave latest_version false to run the version the execution ran.';
        ELSIF NOT def.is_active THEN
            RAISE EXCEPTION 'workflow % is inactive', old.workflow_name
                  USING ERRCODE = 'object_not_in_prerequisite_state',
                        HINT = 'UPDATE automation_workflows.definitions SET is_active = true to run it.';
        ELSIF NOT automation.check_definition(def.definition) THEN
            RAISE EXCEPTION 'workflow % has no steps and cannot be started', old.workflow_name
                  USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        definition := def.definition;
        version := def.version;
    ELSE
        definition := old.definition;
        version := old.version;
    END IF;
    steps := ARRAY(SELECT d.name FROM automation.definition_steps(definition) d);
    IF rerun_workflow_as.from_step IS NOT NULL AND NOT rerun_workflow_as.from_step = ANY (steps) THEN
        RAISE EXCEPTION 'workflow % has no step %', old.workflow_name, rerun_workflow_as.from_step
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = format('Its steps: %s.', array_to_string(steps, ', '));
    END IF;
    IF EXISTS (SELECT FROM automation.definition_steps(definition) s WHERE s.sql IS NOT NULL)
       AND NOT automation.step_workers_available() THEN
        RAISE EXCEPTION 'workflow % has SQL steps, and no step worker can run them here', old.workflow_name
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'SQL steps are run by the extension''s background workers: add automation_ext to shared_preload_libraries and restart.';
    END IF;
    -- what runs: the steps not done (and from_step), and everything
    -- downstream of them; the rest is carried over
    seeds := ARRAY(SELECT n FROM unnest(steps) n WHERE (old.open_elements->>n) IS DISTINCT FROM '0')
             || CASE WHEN rerun_workflow_as.from_step IS NOT NULL THEN ARRAY[rerun_workflow_as.from_step] ELSE '{}' END;
    rerun := automation.downstream(definition, seeds);
    fresh := automation.downstream(definition, ARRAY[rerun_workflow_as.from_step]);
    carried := ARRAY(SELECT n FROM unnest(steps) n WHERE NOT n = ANY (rerun));
    -- a mapped step that did not finish, whose dependencies are carried
    -- over: its elements that succeeded are carried over too
    partial := ARRAY(SELECT d.name FROM automation.definition_steps(definition) d
                      WHERE d.map IS NOT NULL AND d.name = ANY (rerun) AND NOT d.name = ANY (fresh)
                        AND d.after <@ carried);
    -- the re-run: like run_workflow's start, as the caller
    IF definition ? 'concurrency' THEN
        PERFORM pg_advisory_xact_lock(hashtext('automation_ext workflow concurrency'), hashtext(old.workflow_name));
        slot := automation.workflow_admitted(old.workflow_name) < (definition->>'concurrency')::integer;
    END IF;
    -- the idempotency key goes with the re-run (a failed execution released it)
    IF old.key_released THEN
        PERFORM pg_advisory_xact_lock(hashtext('automation_ext run_workflow'),
                                      hashtext(old.workflow_name || '/' || rerun_workflow_as.caller || '/' || old.idempotency_key));
    END IF;
    IF old.key_released AND NOT EXISTS (
           SELECT FROM automation_workflows.workflow_runs w
            WHERE w.workflow_name = old.workflow_name AND w.owner = rerun_workflow_as.caller
              AND w.idempotency_key = old.idempotency_key AND NOT w.key_released) THEN
        key := old.idempotency_key;
    END IF;
    INSERT INTO automation_workflows.workflow_executions (id, workflow_name, status, started_at, metadata, run_after, owner)
    VALUES (new_id, old.workflow_name, CASE WHEN slot THEN 'running' ELSE 'pending' END, now(),
            jsonb_build_object('workflow_version', version, 'rerun_of', old.execution_id,
                               'from_step', rerun_workflow_as.from_step),
            now(), rerun_workflow_as.caller);
    SELECT coalesce(jsonb_object_agg(c, 0), '{}') INTO open FROM unnest(carried) c;
    INSERT INTO automation_workflows.workflow_runs
           (execution_id, workflow_name, version, definition, input, idempotency_key, owner, admitted, run_after, deadline,
            steps_left, rerun_of, trigger_id, open_elements)
    VALUES (new_id, old.workflow_name, version, definition, old.input, key, rerun_workflow_as.caller, slot, now(),
            now() + (definition->>'timeout')::interval, cardinality(steps) - cardinality(carried), old.execution_id,
            old.trigger_id, open);
    -- carried steps keep their outputs; of a mapped step that runs again
    -- because it did not finish (not because something upstream runs
    -- again), the elements that succeeded
    INSERT INTO automation_workflows.step_runs
           (execution_id, step, map_index, attempt, max_attempts, status, queue, step_timeout, worker, visible_at,
            started_at, completed_at, input, output)
    SELECT new_id, r.step, r.map_index, 1, 1, 'success', r.queue, r.step_timeout, r.worker, r.visible_at,
           r.started_at, r.completed_at, r.input, r.output
      FROM automation_workflows.step_runs r
     WHERE r.execution_id = old.execution_id AND r.status = 'success'
       AND (r.step = ANY (carried) OR (r.step = ANY (partial) AND r.map_index IS NOT NULL));
    -- the error of the execution it re-runs points at it
    UPDATE automation.errors e
       SET retry_execution_id = new_id, retry_count = e.retry_count + 1, last_retry_at = now()
     WHERE e.execution_id = old.execution_id AND e.resolved_at IS NULL;
    IF slot THEN
        PERFORM automation.workflow_advance(new_id);
    END IF;
    IF definition ? 'timeout' THEN
        PERFORM automation.note_deadline();
    END IF;
    RETURN new_id;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.rerun_workflow_as(oid, uuid, text, boolean) FROM PUBLIC;

-- (0.8.0, issue 28) An execution the engine could not handle (a row it
-- cannot read: a definition snapshot that no longer parses, say) ends as
-- error without the engine's bookkeeping, its running and pending step runs
-- cancelled, and the problem goes to automation.errors with the row: the
-- sweep that met it goes on, and never meets it again.
CREATE FUNCTION automation.set_aside(execution_id uuid, doing text, problem text, sqlstate text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    run automation_workflows.workflow_runs;
BEGIN
    SELECT * INTO run FROM automation_workflows.workflow_runs w WHERE w.execution_id = set_aside.execution_id;
    PERFORM automation.stop_sql_step(r.id, run.owner)
       FROM automation_workflows.step_runs r
      WHERE r.execution_id = set_aside.execution_id AND r.status = 'running' AND r.queue IS NULL;
    UPDATE automation_workflows.step_runs r
       SET status = 'cancelled', completed_at = now(), lease_expires_at = NULL
     WHERE r.execution_id = set_aside.execution_id AND r.status IN ('pending', 'running');
    UPDATE automation_workflows.workflow_runs w SET deadline = NULL WHERE w.execution_id = set_aside.execution_id;
    UPDATE automation_workflows.workflow_executions e
       SET status = 'error', completed_at = GREATEST(now(), e.started_at),
           error_details = jsonb_build_object('message', format('could not %s: %s', set_aside.doing, set_aside.problem),
                                              'sqlstate', set_aside.sqlstate, 'reason', 'set_aside')
     WHERE e.id = set_aside.execution_id AND e.status IN ('pending', 'running');
    INSERT INTO automation.errors (workflow_name, error_type, error_message, error_context, execution_id, owner)
    VALUES (run.workflow_name, 'EngineFailed',
            format('execution %s was set aside: could not %s: %s', set_aside.execution_id, set_aside.doing, set_aside.problem),
            jsonb_build_object('sqlstate', set_aside.sqlstate, 'run', to_jsonb(run)),
            set_aside.execution_id, coalesce(run.owner, automation.invoker()));
    RAISE WARNING 'automation_ext: workflow execution % was set aside: could not %: %', set_aside.execution_id,
                  set_aside.doing, set_aside.problem;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.set_aside(uuid, text, text, text) FROM PUBLIC;
COMMENT ON FUNCTION automation.set_aside(uuid, text, text, text) IS
'Internal: end an execution the engine could not handle as error (steps cancelled), with the problem and its row in automation.errors.';

-- Step runs whose lease or timeout expired (of one queue, or all) are
-- retried or failed; executions past their workflow's timeout end as
-- timeout. Run by claim_steps (its queue) and by the minutely
-- timeout_stale_executions. Returns how many it handled.
CREATE FUNCTION automation.expire_steps(queue text DEFAULT NULL, batch integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    x record;
    handled integer := 0;
    problem text;
    state text;
BEGIN
    FOR x IN
        SELECT r.id, r.execution_id, r.queue IS NULL AS sql_step, r.step_timeout FROM automation_workflows.step_runs r
         WHERE r.status = 'running' AND r.lease_expires_at < clock_timestamp()
           AND (expire_steps.queue IS NULL OR r.queue = expire_steps.queue)
         ORDER BY r.lease_expires_at
         LIMIT expire_steps.batch
    LOOP
        -- (0.8.0) one execution at a time: a row the engine cannot handle
        -- is moved aside, never stops the sweep for everyone
        BEGIN
            -- skip what another transaction is finishing
            PERFORM FROM automation_workflows.workflow_runs w WHERE w.execution_id = x.execution_id FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;
            PERFORM FROM automation_workflows.step_runs r
             WHERE r.id = x.id AND r.status = 'running' AND r.lease_expires_at < clock_timestamp() FOR UPDATE;
            CONTINUE WHEN NOT FOUND;
            IF x.sql_step THEN
                -- (0.8.0) a SQL step past its timeout that did not end: its
                -- statement_timeout was caught (or it holds no query); the
                -- attempt times out, and its worker is stopped
                PERFORM automation.stop_sql_step(x.id, w.owner)
                   FROM automation_workflows.workflow_runs w WHERE w.execution_id = x.execution_id;
                PERFORM automation.step_attempt_failed(x.id, 'timeout',
                    jsonb_build_object('message', format('the step ran past its timeout (%s) and did not stop; its worker is stopped', x.step_timeout),
                                       'sqlstate', '57014'),
                    true);
            ELSE
                PERFORM automation.step_attempt_failed(x.id, 'timeout',
                    jsonb_build_object('message', 'the lease expired (the worker did not complete, fail or extend it in time)',
                                       'sqlstate', '57014'),
                    true);
            END IF;
            handled := handled + 1;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
            PERFORM automation.set_aside(x.execution_id, 'expire a step', problem, state);
        END;
    END LOOP;
    IF expire_steps.queue IS NOT NULL THEN
        RETURN handled;
    END IF;
    FOR x IN
        SELECT w.execution_id FROM automation_workflows.workflow_runs w
          JOIN automation_workflows.workflow_executions e ON e.id = w.execution_id AND e.status IN ('pending', 'running')
         WHERE w.deadline < clock_timestamp()
         ORDER BY w.deadline
         LIMIT expire_steps.batch
           FOR UPDATE OF w SKIP LOCKED
    LOOP
        BEGIN
            PERFORM automation.workflow_finish(x.execution_id, 'timeout',
                jsonb_build_object('message', 'the workflow ran past its timeout', 'reason', 'workflow_timeout'));
            handled := handled + 1;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
            PERFORM automation.set_aside(x.execution_id, 'time out the workflow', problem, state);
        END;
    END LOOP;
    RETURN handled;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.expire_steps(text, integer) FROM PUBLIC;

-- Per execution of a workflow definition: where each of its steps is.
-- (0.8.0: security_invoker, so each role sees the executions it may read;
-- started_by is the execution's owner, a regrole.)
CREATE VIEW automation.workflow_progress WITH (security_invoker = true) AS
SELECT w.execution_id, w.workflow_name, w.version, e.status, w.owner AS started_by, e.started_at, e.completed_at,
       -- a step is done when none of its elements is open any more
       ARRAY(SELECT o.key FROM jsonb_each_text(w.open_elements) o WHERE o.value = '0' ORDER BY o.key) AS done,
       ARRAY(SELECT DISTINCT r.step FROM automation_workflows.step_runs r
              WHERE r.execution_id = w.execution_id AND r.status = 'running' ORDER BY r.step) AS running,
       ARRAY(SELECT DISTINCT r.step FROM automation_workflows.step_runs r
              WHERE r.execution_id = w.execution_id AND r.status = 'pending' ORDER BY r.step) AS pending,
       ARRAY(SELECT d.name FROM automation.definition_steps(w.definition) d
              WHERE NOT EXISTS (SELECT FROM automation_workflows.step_runs r
                                 WHERE r.execution_id = w.execution_id AND r.step = d.name) ORDER BY d.name) AS waiting,
       ARRAY(SELECT DISTINCT r.step FROM automation_workflows.step_runs r
              WHERE r.execution_id = w.execution_id AND r.status IN ('error', 'timeout')
                AND NOT EXISTS (SELECT FROM automation_workflows.step_runs n
                                 WHERE n.execution_id = r.execution_id AND n.step = r.step
                                   AND n.map_index IS NOT DISTINCT FROM r.map_index AND n.attempt > r.attempt)
              ORDER BY r.step) AS failed
  FROM automation_workflows.workflow_runs w
  JOIN automation_workflows.workflow_executions e ON e.id = w.execution_id;
COMMENT ON VIEW automation.workflow_progress IS
    'Per execution of a workflow definition: its status and which steps are done, running, pending (claimable or waiting out a retry backoff), waiting (for dependencies) and failed (attempts used up).';

------------------------------------------------------------------------------
-- 0.5.0, part 3: the trigger registry is live. A row of
-- automation_triggers.registry whose trigger_type is
--   'schedule' {"cron": "...", "input": {...}}   a job of the scheduler
--              (named 'workflow trigger <id>', owned by the row's owner)
--              calls fire_trigger(id) at every fire
--   'table'    {"table": "schema.name", "events": ["INSERT", ...]}  statement
--              triggers with transition tables on that table start one
--              execution per changed row, in bulk (run_workflows)
--   'manual'   {"input": {...}}                   fire_trigger(id, input)
-- starts its workflow. Other trigger types are kept as data (a NOTICE says
-- so). Writing a row checks it and attaches what it needs; deleting it
-- detaches. Like definitions, nothing is attached or format-checked while
-- check_function_bodies is off (a restore: the jobs and the tables'
-- triggers come back from the dump themselves); who may write the row is
-- checked whatever the settings.
--
-- 0.8.0 (issue 27): a trigger belongs to its owner (registry.owner), starts
-- only a definition its owner may act as the owner of (never another role's
-- code), and its executions belong to (and their SQL steps run as) its
-- owner — whoever writes to a watched table.

-- Start one execution of `name` per element of `inputs` (objects), in a few
-- statements, as `caller`. A workflow with a concurrency limit is started
-- one by one (run_workflow). Returns how many were started.
CREATE FUNCTION automation.run_workflows(name text, inputs jsonb[])
RETURNS integer
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.run_workflows_as(caller oid, name text, inputs jsonb[])
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    def automation_workflows.definitions;
    roots jsonb;
    started integer;
BEGIN
    IF run_workflows_as.inputs IS NULL OR cardinality(run_workflows_as.inputs) = 0 THEN
        RETURN 0;
    END IF;
    IF EXISTS (SELECT FROM unnest(run_workflows_as.inputs) i WHERE i IS NULL OR jsonb_typeof(i) <> 'object') THEN
        RAISE EXCEPTION 'the inputs of a workflow must be JSON objects'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO def FROM automation_workflows.definitions d WHERE d.name = run_workflows_as.name;
    IF NOT FOUND OR NOT automation.may_start_workflow(run_workflows_as.caller, def.name) OR NOT def.is_active OR NOT automation.check_definition(def.definition)
       OR def.definition ? 'concurrency'
       OR (EXISTS (SELECT FROM automation.definition_steps(def.definition) s WHERE s.sql IS NOT NULL)
           AND NOT automation.step_workers_available()) THEN
        -- run_workflow says what is wrong, or admits them one by one
        PERFORM automation.run_workflow_as(run_workflows_as.caller, run_workflows_as.name, i, NULL, NULL)
           FROM unnest(run_workflows_as.inputs) i;
        RETURN cardinality(run_workflows_as.inputs);
    END IF;
    SELECT jsonb_object_agg(s.name, 1) INTO roots
      FROM automation.definition_steps(def.definition) s WHERE cardinality(s.after) = 0;
    -- one statement: the executions, their runs, the runs of their first steps
    WITH n AS MATERIALIZED (
        SELECT automation.uuid_v7() AS id, i AS input FROM unnest(run_workflows_as.inputs) i),
    e AS (
        INSERT INTO automation_workflows.workflow_executions (id, workflow_name, status, started_at, metadata, run_after, owner)
        SELECT n.id, run_workflows_as.name, 'running', now(), jsonb_build_object('workflow_version', def.version), now(),
               run_workflows_as.caller
          FROM n
        RETURNING 1),
    r AS (
        INSERT INTO automation_workflows.workflow_runs
               (execution_id, workflow_name, version, definition, input, owner, admitted, run_after, deadline,
                open_elements, steps_left)
        SELECT n.id, run_workflows_as.name, def.version, def.definition, n.input, run_workflows_as.caller, true, now(),
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
    ELSIF def.definition ? 'timeout' THEN
        PERFORM automation.note_deadline();
    END IF;
    RETURN started;
END
$fn$;

REVOKE EXECUTE ON FUNCTION automation.run_workflows_as(oid, text, jsonb[]) FROM PUBLIC;

-- Fire a 'schedule' or 'manual' trigger: start its workflow, as the
-- trigger's owner, with the trigger's configured input merged with `input`.
-- Returns the execution (NULL when the trigger may no longer start its
-- workflow: it is paused, with the reason, and a WARNING says so).
CREATE FUNCTION automation.fire_trigger(id integer, input jsonb DEFAULT NULL)
RETURNS uuid
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.fire_trigger_as(caller oid, id integer, input jsonb)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    reg automation_triggers.registry;
    def automation_workflows.definitions;
    started uuid;
    why text;
    due timestamptz;
    overlap text;
    busy bigint;
    waiting bigint;
BEGIN
    SELECT * INTO reg FROM automation_triggers.registry r WHERE r.id = fire_trigger_as.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'trigger % does not exist', fire_trigger_as.id
              USING ERRCODE = 'undefined_object', HINT = 'automation_triggers.registry lists the triggers you own.';
    ELSIF NOT automation.role_may_act_as(fire_trigger_as.caller, reg.owner) THEN
        RAISE EXCEPTION 'permission denied for trigger %', fire_trigger_as.id
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'A trigger is fired by its owner (or a role that may SET ROLE to it).';
    ELSIF reg.trigger_type NOT IN ('schedule', 'manual') THEN
        RAISE EXCEPTION 'trigger % is a % trigger; only schedule and manual triggers are fired by hand', fire_trigger_as.id,
                        reg.trigger_type
              USING ERRCODE = 'wrong_object_type';
    ELSIF NOT reg.enabled THEN
        RAISE EXCEPTION 'trigger % is paused%', fire_trigger_as.id, coalesce(': ' || reg.inactive_reason, '')
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'UPDATE automation_triggers.registry SET enabled = true WHERE id = ... resumes it.';
    END IF;
    IF fire_trigger_as.input IS NOT NULL AND jsonb_typeof(fire_trigger_as.input) <> 'object' THEN
        RAISE EXCEPTION 'the input of a trigger must be a JSON object, not %', jsonb_typeof(fire_trigger_as.input)
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO def FROM automation_workflows.definitions d WHERE d.id = reg.workflow_id;
    IF NOT FOUND THEN
        why := 'its workflow no longer exists';
    ELSIF NOT automation.role_may_act_as(reg.owner, def.owner) THEN
        why := format('its owner %s may no longer act as %s, the owner of workflow %s', reg.owner, def.owner, def.name);
    ELSIF NOT automation.role_may_act_as(reg.owner, reg.owner) THEN
        why := format('its owner (role %s) no longer exists', reg.owner::oid);
    END IF;
    IF why IS NOT NULL THEN
        UPDATE automation_triggers.registry r SET enabled = false, inactive_reason = why WHERE r.id = reg.id;
        RAISE WARNING 'trigger % is paused: %', reg.id, why
              USING HINT = 'A trigger starts only a workflow its owner owns (or whose owner it may SET ROLE to).';
        RETURN NULL;
    END IF;
    -- (0.8.0) when the fire was due: a schedule trigger's job run says so
    -- (automation.scheduled_for, set by its worker); a fire by hand is due now
    IF reg.trigger_type = 'schedule' THEN
        due := nullif(current_setting('automation.scheduled_for', true), '')::timestamptz;
    END IF;
    -- (0.8.0) overlap: skip (the default of schedule triggers: no new
    -- execution while one of this trigger's is pending or running), queue
    -- (at most max_queued of them waiting to start), parallel (no limit)
    overlap := coalesce(reg.config->>'overlap', CASE WHEN reg.trigger_type = 'schedule' THEN 'skip' ELSE 'parallel' END);
    IF overlap <> 'parallel' THEN
        SELECT count(*), count(*) FILTER (WHERE e.status = 'pending') INTO busy, waiting
          FROM automation_workflows.workflow_runs w
          JOIN automation_workflows.workflow_executions e ON e.id = w.execution_id AND e.status IN ('pending', 'running')
         WHERE w.trigger_id = reg.id;
        IF (overlap = 'skip' AND busy > 0)
           OR (overlap = 'queue' AND waiting >= coalesce((reg.config->>'max_queued')::integer, 10)) THEN
            UPDATE automation_triggers.registry r
               SET skipped_fires = r.skipped_fires + 1, last_skipped_at = now(),
                   next_fire_at = CASE WHEN r.trigger_type = 'schedule' AND r.enabled
                                       THEN automation.next_fire(r.config->>'cron', coalesce(due, now()), now(), r.config->>'timezone') END
             WHERE r.id = reg.id;
            RAISE NOTICE 'trigger % skipped this fire: % of its executions % (overlap %)', reg.id,
                         CASE WHEN overlap = 'skip' THEN busy ELSE waiting END,
                         CASE WHEN overlap = 'skip' THEN 'are pending or running' ELSE 'wait to start' END, overlap;
            RETURN NULL;
        END IF;
    END IF;
    started := automation.run_workflow_as(reg.owner, def.name,
                                          coalesce(reg.config->'input', '{}') || coalesce(fire_trigger_as.input, '{}')
                                          || jsonb_build_object('trigger', jsonb_build_object(
                                                 'id', reg.id, 'type', reg.trigger_type,
                                                 'scheduled_for', coalesce(due, clock_timestamp()),
                                                 'fired_at', clock_timestamp())),
                                          NULL,
                                          -- a repeated or caught-up fire never starts the same
                                          -- scheduled time twice (while its execution holds the key)
                                          CASE WHEN due IS NOT NULL
                                               THEN format('trigger %s at %s', reg.id,
                                                           to_char(due AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')) END);
    UPDATE automation_workflows.workflow_runs w SET trigger_id = reg.id
     WHERE w.execution_id = started AND w.trigger_id IS NULL;
    UPDATE automation_triggers.registry r
       SET last_fired_at = now(),
           next_fire_at = CASE WHEN r.trigger_type = 'schedule' AND r.enabled
                               THEN automation.next_fire(r.config->>'cron', coalesce(due, now()), now(), r.config->>'timezone') END
     WHERE r.id = reg.id;
    RETURN started;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.fire_trigger_as(oid, integer, jsonb) FROM PUBLIC;

-- 0.6.0: the changes that table triggers saw, waiting for the scheduler to
-- start their executions. The changing statement only appends here (the
-- rows as text, one entry per statement up to a million rows; no index): a
-- 100k-row INSERT costs about half as much again, instead of starting 100k
-- executions inside it.
-- The scheduler drains it within milliseconds of the commit
-- (drain_trigger_inbox). Dumped: a change not yet drained is not lost by a
-- dump and restore.
-- 0.8.0: owner is the trigger's owner (its executions start as that role,
-- which the drain becomes before it reads the rows), changed_by the role
-- that changed the table; old_rows the rows before an UPDATE. Nobody but
-- the extension writes or reads it: the table trigger appends as the
-- extension's owner.
CREATE TABLE automation_workflows.trigger_inbox (
    trigger_id    integer     NOT NULL,
    workflow_name text        NOT NULL,
    op            text        NOT NULL,
    table_name    text        NOT NULL,
    owner         regrole     NOT NULL,
    rows          text[]      NOT NULL,
    -- how many of them have been started (the scheduler goes 2,500 at a time)
    rows_done     integer     NOT NULL DEFAULT 0,
    queued_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    changed_by    regrole,
    old_rows      text[],
    CONSTRAINT trigger_inbox_op_check CHECK (op IN ('INSERT', 'UPDATE', 'DELETE'))
);

COMMENT ON TABLE automation_workflows.trigger_inbox IS
    'Changes seen by table triggers of automation_triggers.registry (rows as text, one entry per statement up to a million rows), waiting for the scheduler to start one execution per row as the trigger''s owner (automation.drain_trigger_inbox).';

ALTER TABLE automation_workflows.trigger_inbox ENABLE ROW LEVEL SECURITY;
-- (nobody but the owner: also said explicitly, as an upgraded database has it)
REVOKE ALL ON automation_workflows.trigger_inbox FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('automation_workflows.trigger_inbox', '');

CREATE FUNCTION automation.wake_recorder()
RETURNS boolean
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wake_recorder_wrapper';
REVOKE EXECUTE ON FUNCTION automation.wake_recorder() FROM PUBLIC;

COMMENT ON FUNCTION automation.wake_recorder() IS
'Internal: true if a scheduler will pick up what this transaction leaves in the trigger inbox (it is woken at commit); false if the caller must do the work itself (the library is not preloaded, the scheduler is off).';

-- Start the executions of the oldest inbox entries, 2,500 rows at a time,
-- up to `batch` such slices (so the scheduler is never busy for long: an
-- entry may hold a million rows). 0.8.0: native (src/triggers/inbox.rs). Each
-- slice's rows are cast to the table's row type and turned into inputs as
-- the trigger's owner, in a security-restricted operation (a domain's CHECK
-- or a cast function reached from there runs as that role, and cannot SET
-- ROLE back); the executions are then started as that owner, which must
-- still own the workflow (or may act as its owner). A slice that cannot be
-- started (its table was dropped or changed shape, the owner was dropped or
-- may no longer start the workflow) goes to automation.errors with its
-- rows, and the rest go on.
CREATE FUNCTION automation.drain_trigger_inbox(batch integer DEFAULT 40)
RETURNS bigint
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'drain_trigger_inbox_wrapper';

COMMENT ON FUNCTION automation.drain_trigger_inbox(integer) IS
'Start the executions that table triggers queued, oldest first, 2,500 rows at a time, up to batch such slices, each as the trigger''s owner; a slice that cannot be started goes to automation.errors with its rows. The scheduler calls it within milliseconds of a commit; returns the executions started.';
REVOKE EXECUTE ON FUNCTION automation.drain_trigger_inbox(integer) FROM PUBLIC;

-- Statement trigger of the tables that 'table' triggers watch: one execution
-- per changed row, its input {"op", "table", "new" and/or "old", "changed_by"}.
-- 0.6.0: the rows go to the trigger inbox, and the scheduler starts the
-- executions after the commit (when no scheduler will: here, at once).
-- 0.8.0: native (src/triggers/inbox.rs), and it asks nothing of the writer: a
-- role with only INSERT, UPDATE or DELETE on the table writes as before (the
-- rows are appended as the extension's owner; the executions start as the
-- trigger's owner). It refuses to run for a table its registry row does not
-- name, and does nothing while its trigger is paused.
CREATE FUNCTION automation.workflow_table_trigger()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'workflow_table_trigger_wrapper';
-- (EXECUTE for automation_runner: roles.sql, so that registering a table
-- trigger may attach it)
REVOKE EXECUTE ON FUNCTION automation.workflow_table_trigger() FROM PUBLIC;
COMMENT ON FUNCTION automation.workflow_table_trigger() IS
'Internal: the statement trigger that a table trigger of automation_triggers.registry attaches to its table (refuses to run for any other).';

-- BEFORE INSERT, UPDATE or DELETE of a registry row: who may write it (its
-- owner, and roles that may act as it: checked whatever the settings), what
-- it may start (a workflow its owner may act as the owner of), then its
-- format, and attach or detach what it needs (a schedule trigger's job, owned
-- by the trigger's owner; a table trigger's statement triggers). A paused
-- trigger (enabled = false) keeps what it attached: its job is inactive, its
-- table triggers do nothing, it cannot be fired; no edit resumes it but
-- enabled = true.
-- (0.8.0) A schedule trigger's job changed by hand: alter_job(active =>)
-- pauses or resumes the trigger, unschedule pauses it (0.7.0: the next
-- edit of the trigger undid the first, and the second left a next_fire_at
-- that never came). Not when the trigger itself changes its job.
CREATE FUNCTION automation.trigger_job_changed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    trigger_id integer;
BEGIN
    IF TG_RELID IS DISTINCT FROM 'automation.job'::regclass OR TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'automation.trigger_job_changed() only runs as an AFTER ROW trigger of automation.job'
              USING ERRCODE = 'wrong_object_type';
    END IF;
    IF current_setting('automation.trigger_sync', true) = 'on' OR OLD.jobname NOT LIKE 'workflow trigger %' THEN
        RETURN NULL;
    END IF;
    trigger_id := substr(OLD.jobname, length('workflow trigger ') + 1)::integer;
    PERFORM set_config('automation.trigger_sync', 'on', true);
    IF TG_OP = 'DELETE' THEN
        UPDATE automation_triggers.registry r
           SET enabled = false, inactive_reason = format('its job (%s) was unscheduled', OLD.jobid), next_fire_at = NULL
         WHERE r.id = trigger_id AND r.owner = OLD.owner AND r.trigger_type = 'schedule' AND r.enabled;
    ELSIF NEW.active IS DISTINCT FROM OLD.active THEN
        UPDATE automation_triggers.registry r
           SET enabled = NEW.active,
               inactive_reason = CASE WHEN NOT NEW.active THEN coalesce(NEW.inactive_reason, format('its job (%s) was paused', OLD.jobid)) END
         WHERE r.id = trigger_id AND r.owner = OLD.owner AND r.trigger_type = 'schedule';
    END IF;
    PERFORM set_config('automation.trigger_sync', 'off', true);
    RETURN NULL;
EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
    RETURN NULL; -- a job merely named like one
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.trigger_job_changed() FROM PUBLIC;
COMMENT ON FUNCTION automation.trigger_job_changed() IS
'Internal: AFTER trigger of automation.job that pauses or resumes a schedule trigger whose job was paused, resumed or unscheduled by hand.';

CREATE TRIGGER job_trigger_sync
    AFTER UPDATE OF active OR DELETE ON automation.job
    FOR EACH ROW EXECUTE FUNCTION automation.trigger_job_changed();

CREATE FUNCTION automation_triggers.registry_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    def_name text;
    def_owner regrole;
    def_active boolean;
    def_runnable boolean;
    tbl regclass;
    ev text;
    attached name;
    events text[];
    job text;
    known text[];
    bad text;
    restoring boolean := NOT current_setting('check_function_bodies')::boolean;
BEGIN
    IF TG_RELID IS DISTINCT FROM 'automation_triggers.registry'::regclass
       OR TG_LEVEL IS DISTINCT FROM 'ROW' OR TG_WHEN IS DISTINCT FROM 'BEFORE' THEN
        RAISE EXCEPTION 'automation_triggers.registry_check() only runs as a BEFORE ... FOR EACH ROW trigger of automation_triggers.registry'
              USING ERRCODE = 'wrong_object_type';
    END IF;
    -- who may write it
    IF TG_OP IN ('UPDATE', 'DELETE') AND NOT automation.may_act_as(OLD.owner) THEN
        RAISE EXCEPTION 'permission denied for trigger %', OLD.id
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'Only its owner (and roles that may SET ROLE to it) change or delete a trigger.';
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        IF NEW.owner IS NULL THEN
            NEW.owner := automation.invoker();
        END IF;
        IF (TG_OP = 'INSERT' OR NEW.owner IS DISTINCT FROM OLD.owner) AND NOT automation.may_act_as(NEW.owner) THEN
            RAISE EXCEPTION 'permission denied to give a trigger to role %', NEW.owner
                  USING ERRCODE = 'insufficient_privilege',
                        HINT = 'A trigger belongs to the role that writes it, or to a role it may SET ROLE to; leave owner out to own it yourself.';
        END IF;
        IF NEW.enabled AND (TG_OP = 'INSERT' OR NOT OLD.enabled) THEN
            NEW.inactive_reason := NULL;
        END IF;
        -- what it starts: a definition its owner may act as the owner of (a
        -- grant lets a role start another role's workflow by hand, never
        -- through a trigger)
        IF NEW.workflow_id IS NOT NULL
           AND (TG_OP = 'INSERT' OR (NEW.workflow_id, NEW.owner) IS DISTINCT FROM (OLD.workflow_id, OLD.owner)) THEN
            SELECT d.name, d.owner, d.is_active, automation.check_definition(d.definition)
              INTO def_name, def_owner, def_active, def_runnable
              FROM automation_workflows.definitions d WHERE d.id = NEW.workflow_id;
            IF def_owner IS NOT NULL AND NOT automation.role_may_act_as(NEW.owner, def_owner) THEN
                IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = automation.invoker()) THEN
                    -- a superuser's restore into a cluster whose roles differ:
                    -- kept, paused, rather than lose every trigger of the dump
                    NEW.enabled := false;
                    NEW.inactive_reason := format('its owner %s may not act as %s, the owner of workflow %s',
                                                  NEW.owner, def_owner, def_name);
                    RAISE WARNING 'trigger % is paused: %', NEW.id, NEW.inactive_reason;
                ELSE
                    RAISE EXCEPTION 'a trigger of % may not start workflow %, which belongs to %', NEW.owner, def_name, def_owner
                          USING ERRCODE = 'insufficient_privilege',
                                HINT = 'A trigger starts only a workflow its owner owns (or whose owner it may SET ROLE to); grant_workflow lets a role start another''s workflow by hand, not by a trigger.';
                END IF;
            END IF;
        END IF;
    END IF;
    IF restoring THEN
        -- a restore: the jobs and the tables' triggers come from the dump
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    -- (0.6.0) firing writes last_fired_at / next_fire_at: what is attached
    -- stays (re-attaching it dropped the trigger being fired, and needs the
    -- table's owner); pausing or resuming only switches the job
    IF TG_OP = 'UPDATE' AND (NEW.id, NEW.trigger_type, NEW.config, NEW.workflow_id, NEW.owner)
                            IS NOT DISTINCT FROM (OLD.id, OLD.trigger_type, OLD.config, OLD.workflow_id, OLD.owner) THEN
        IF NEW.enabled IS DISTINCT FROM OLD.enabled AND NEW.trigger_type = 'schedule' THEN
            -- (0.8.0) the job made again if it was unscheduled meanwhile;
            -- not when the job's own change is what paused the trigger
            IF current_setting('automation.trigger_sync', true) IS DISTINCT FROM 'on' THEN
                PERFORM set_config('automation.trigger_sync', 'on', true);
                -- the trigger's job, its owner's, made or brought up to date
                INSERT INTO automation.job AS j (jobname, schedule, command, username, active, timezone)
                VALUES ('workflow trigger ' || NEW.id, NEW.config->>'cron', format('SELECT automation.fire_trigger(%s)', NEW.id),
                        pg_get_userbyid(NEW.owner), NEW.enabled, NEW.config->>'timezone')
                ON CONFLICT ON CONSTRAINT job_jobname_owner_key DO UPDATE
                   SET schedule = EXCLUDED.schedule, command = EXCLUDED.command, active = EXCLUDED.active,
                       timezone = EXCLUDED.timezone;
                PERFORM set_config('automation.trigger_sync', 'off', true);
            END IF;
            NEW.next_fire_at := CASE WHEN NEW.enabled THEN automation.next_run(NEW.config->>'cron', now(), NEW.config->>'timezone') END;
        END IF;
        RETURN NEW;
    END IF;
    -- detach what the old row attached
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.trigger_type IN ('schedule', 'table') THEN
        IF OLD.trigger_type = 'schedule' THEN
            job := 'workflow trigger ' || OLD.id;
            -- (row-level security: a role that may act as its owner, or a
            -- superuser; the job's removal does not pause this trigger)
            PERFORM set_config('automation.trigger_sync', 'on', true);
            DELETE FROM automation.job j WHERE j.jobname = job AND j.owner = OLD.owner;
            PERFORM set_config('automation.trigger_sync', 'off', true);
        ELSE
            -- the triggers it attached (none if the table is gone)
            FOR attached, tbl IN
                SELECT t.tgname, t.tgrelid::regclass FROM pg_trigger t
                 WHERE t.tgrelid = to_regclass(OLD.config->>'table')
                   AND t.tgname IN ('automation_workflow_' || OLD.id || '_insert', 'automation_workflow_' || OLD.id || '_update',
                                    'automation_workflow_' || OLD.id || '_delete')
            LOOP
                EXECUTE format('DROP TRIGGER %I ON %s', attached, tbl);
            END LOOP;
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    NEW.next_fire_at := NULL;
    IF NEW.trigger_type NOT IN ('schedule', 'table', 'manual') THEN
        RAISE NOTICE 'trigger type % is kept as data: only schedule, table and manual triggers start workflows', NEW.trigger_type;
        RETURN NEW;
    END IF;
    IF jsonb_typeof(NEW.config) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'the config of a % trigger must be a JSON object', NEW.trigger_type
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF def_owner IS NULL AND NEW.workflow_id IS NOT NULL THEN
        SELECT d.name, d.owner, d.is_active, automation.check_definition(d.definition)
          INTO def_name, def_owner, def_active, def_runnable
          FROM automation_workflows.definitions d WHERE d.id = NEW.workflow_id;
    END IF;
    IF def_owner IS NULL THEN
        RAISE EXCEPTION 'a % trigger needs the workflow it starts (workflow_id)', NEW.trigger_type
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Set workflow_id to the id of a row of automation_workflows.definitions that you own.';
    ELSIF NOT def_active THEN
        RAISE EXCEPTION 'workflow % is inactive', def_name USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF NOT def_runnable THEN
        RAISE EXCEPTION 'workflow % has no steps and cannot be started', def_name
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- (0.8.0) the config is checked like a definition: an unknown key (a
    -- typo, or a setting that belongs elsewhere) is refused, not ignored
    known := CASE NEW.trigger_type
                  WHEN 'schedule' THEN ARRAY['cron', 'timezone', 'input', 'overlap', 'max_queued', 'description']
                  WHEN 'table' THEN ARRAY['table', 'events', 'description']
                  ELSE ARRAY['input', 'overlap', 'max_queued', 'description'] END;
    SELECT k INTO bad FROM jsonb_object_keys(NEW.config) k WHERE NOT k = ANY (known) ORDER BY k LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'the config of a % trigger has an unknown key "%" (known keys: %)', NEW.trigger_type, bad,
                        array_to_string(known, ', ')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = CASE WHEN bad IN ('retries', 'retry', 'max_attempts')
                                THEN 'Retries belong to the workflow''s steps: "retry": {"max_attempts": 3} in its definition.'
                                WHEN bad IN ('timeout', 'concurrency')
                                THEN format('%s belongs to the workflow''s definition.', bad)
                                ELSE 'See docs/workflows.md, "Triggers".' END;
    END IF;
    IF NEW.config ? 'timezone' THEN
        IF jsonb_typeof(NEW.config->'timezone') <> 'string' OR NOT EXISTS (
               SELECT FROM pg_timezone_names z WHERE z.name = NEW.config->>'timezone'
               UNION ALL SELECT FROM pg_timezone_abbrevs a WHERE a.abbrev = NEW.config->>'timezone') THEN
            RAISE EXCEPTION 'the timezone of a schedule trigger must be a time zone name, not %', NEW.config->'timezone'
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Use a name from pg_timezone_names, such as "Europe/Berlin" or "UTC".';
        END IF;
    END IF;
    IF NEW.config ? 'overlap' AND (jsonb_typeof(NEW.config->'overlap') <> 'string'
                                   OR NOT NEW.config->>'overlap' IN ('skip', 'queue', 'parallel')) THEN
        RAISE EXCEPTION 'the overlap of a trigger is "skip", "queue" or "parallel", not %', NEW.config->'overlap'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'skip: no new execution while one of the trigger''s runs; queue: at most max_queued waiting; parallel: no limit.';
    END IF;
    IF NEW.config ? 'max_queued' THEN
        IF NEW.config->>'overlap' IS DISTINCT FROM 'queue' THEN
            RAISE EXCEPTION 'max_queued applies to "overlap": "queue" only'
                  USING ERRCODE = 'invalid_parameter_value';
        ELSIF jsonb_typeof(NEW.config->'max_queued') <> 'number' OR NOT (NEW.config->>'max_queued') ~ '^[0-9]{1,9}$'
              OR (NEW.config->>'max_queued')::integer < 1 THEN
            RAISE EXCEPTION 'max_queued must be a positive integer, not %', NEW.config->'max_queued'
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF NEW.config ? 'input' AND jsonb_typeof(NEW.config->'input') <> 'object' THEN
        RAISE EXCEPTION 'the input in a trigger''s config must be a JSON object, not %', jsonb_typeof(NEW.config->'input')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.trigger_type = 'schedule' THEN
        IF jsonb_typeof(NEW.config->'cron') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'a schedule trigger needs "cron" in its config, such as {"cron": "0 2 * * *"}'
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
        -- the trigger's job, its owner's (the scheduler's own checks: cron
        -- syntax, @reboot, '30 seconds'...), active while the trigger is
        PERFORM set_config('automation.trigger_sync', 'on', true);
        -- the trigger's job, its owner's, made or brought up to date
        INSERT INTO automation.job AS j (jobname, schedule, command, username, active, timezone)
        VALUES ('workflow trigger ' || NEW.id, NEW.config->>'cron', format('SELECT automation.fire_trigger(%s)', NEW.id),
                pg_get_userbyid(NEW.owner), NEW.enabled, NEW.config->>'timezone')
        ON CONFLICT ON CONSTRAINT job_jobname_owner_key DO UPDATE
           SET schedule = EXCLUDED.schedule, command = EXCLUDED.command, active = EXCLUDED.active,
               timezone = EXCLUDED.timezone;
        PERFORM set_config('automation.trigger_sync', 'off', true);
        NEW.next_fire_at := CASE WHEN NEW.enabled THEN automation.next_run(NEW.config->>'cron', now(), NEW.config->>'timezone') END;
    ELSIF NEW.trigger_type = 'table' THEN
        IF jsonb_typeof(NEW.config->'table') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'a table trigger needs "table" in its config, such as {"table": "public.orders", "events": ["INSERT"]}'
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
        tbl := to_regclass(NEW.config->>'table');
        IF tbl IS NULL THEN
            RAISE EXCEPTION 'table % does not exist', NEW.config->>'table' USING ERRCODE = 'undefined_table';
        END IF;
        -- (0.8.0) kept as its qualified name: the table trigger checks, in
        -- whatever session fires it, that it runs on this table
        NEW.config := jsonb_set(NEW.config, '{table}',
                                to_jsonb((SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
                                            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl)));
        IF NOT has_table_privilege(NEW.owner, tbl, 'TRIGGER') THEN
            RAISE EXCEPTION 'role % may not create triggers on table %', NEW.owner, tbl
                  USING ERRCODE = 'insufficient_privilege',
                        HINT = 'The table''s owner (or a role granted TRIGGER on it) registers its table triggers.';
        END IF;
        IF jsonb_typeof(NEW.config->'events') IS DISTINCT FROM 'array' OR jsonb_array_length(NEW.config->'events') = 0 THEN
            RAISE EXCEPTION 'a table trigger needs "events": a non-empty array of INSERT, UPDATE, DELETE'
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
        events := ARRAY(SELECT upper(e) FROM jsonb_array_elements_text(NEW.config->'events') e);
        IF NOT events <@ ARRAY['INSERT', 'UPDATE', 'DELETE'] THEN
            RAISE EXCEPTION 'a table trigger''s events are INSERT, UPDATE and DELETE, not %', array_to_string(events, ', ')
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOREACH ev IN ARRAY events LOOP
            EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT EXECUTE FUNCTION automation.workflow_table_trigger(%L)',
                           'automation_workflow_' || NEW.id || '_' || lower(ev), ev, tbl,
                           CASE ev WHEN 'DELETE' THEN 'OLD TABLE AS old_rows'
                                   WHEN 'UPDATE' THEN 'OLD TABLE AS old_rows NEW TABLE AS new_rows'
                                   ELSE 'NEW TABLE AS new_rows' END,
                           NEW.id);
        END LOOP;
    END IF;
    RETURN NEW;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation_triggers.registry_check() FROM PUBLIC;
COMMENT ON FUNCTION automation_triggers.registry_check() IS
'Internal: BEFORE trigger of automation_triggers.registry that checks who writes a row and what it starts, checks its format, and attaches (or detaches) its schedule job or table triggers (refuses to run for any other table).';

CREATE TRIGGER trg_registry_check
    BEFORE INSERT OR UPDATE OR DELETE ON automation_triggers.registry
    FOR EACH ROW EXECUTE FUNCTION automation_triggers.registry_check();

------------------------------------------------------------------------------
-- 0.7.0: SQL steps, run by the extension's step workers (src/engine/steps.rs)
-- as the role that owns the execution (workflow_runs.owner, by oid since
-- 0.8.0: the role that started it, or the trigger's owner, which nobody can
-- choose for another role). A SQL step's run has no queue.
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

CREATE FUNCTION automation.note_deadline()
RETURNS boolean
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'note_deadline_wrapper';
REVOKE EXECUTE ON FUNCTION automation.note_deadline() FROM PUBLIC;
COMMENT ON FUNCTION automation.note_deadline() IS
'Internal: this transaction set a deadline (a workflow timeout, a step lease with a timeout): the scheduler looks again when it commits. Returns true.';

CREATE FUNCTION automation.in_step_worker()
RETURNS boolean
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'in_step_worker_wrapper';
COMMENT ON FUNCTION automation.in_step_worker() IS
'Internal: is this session one of the extension''s step workers (serving SQL steps)? Only they claim and record SQL steps.';

CREATE FUNCTION automation.wake_step_workers(ready_now integer)
RETURNS void
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wake_step_workers_wrapper';
COMMENT ON FUNCTION automation.wake_step_workers(integer) IS
'Internal: this transaction made runs of SQL steps (ready_now of them ready at once; 0: runs for later, a retry); the scheduler hands them to step workers when it commits (from a step worker: only what it will not take itself).';

CREATE FUNCTION automation.stop_sql_step(id bigint, role oid)
RETURNS void
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'stop_sql_step_wrapper';
REVOKE EXECUTE ON FUNCTION automation.stop_sql_step(bigint, oid) FROM PUBLIC;
COMMENT ON FUNCTION automation.stop_sql_step(bigint, oid) IS
'Internal: when this transaction commits, cancel the query of the step worker of this database running SQL step run id as role (its execution ended).';

-- The input of the SQL step running in this session: {"input": the
-- workflow's input, "steps": {dependency: its output, ...}} (a mapped
-- step's element: {"input", "item", "index"}).
CREATE FUNCTION automation.step_input()
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    run_id bigint := CASE WHEN current_setting('automation.step_run', true) ~ '^[0-9]{1,18}$'
                          THEN current_setting('automation.step_run', true)::bigint END;
    found_input jsonb;
BEGIN
    IF run_id IS NULL THEN
        RAISE EXCEPTION 'automation.step_input() is only available inside a SQL step of a workflow'
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'A queue step gets its input from automation.claim_steps().';
    END IF;
    -- (row-level security: only a step run of an execution this role may
    -- read; a step worker runs as the execution's owner)
    SELECT r.input INTO found_input FROM automation_workflows.step_runs r WHERE r.id = run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'step run % does not exist', run_id
              USING ERRCODE = 'no_data_found',
                    HINT = 'automation.step_input() is only available inside a SQL step of a workflow.';
    END IF;
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
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

-- (0.8.0) only a step worker claims (a session cannot pose as one), and only
-- steps of executions its role owns.
CREATE FUNCTION automation.claim_sql_step_as(caller oid, worker_id text, after_execution uuid)
RETURNS TABLE (id bigint, execution_id uuid, step text, sql text, timeout_ms integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r automation_workflows.step_runs;
    def jsonb;
BEGIN
    IF NOT automation.in_step_worker() THEN
        RAISE EXCEPTION 'only the extension''s step workers claim SQL steps'
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'SQL steps run in background workers as the role that owns their execution.';
    END IF;
    IF claim_sql_step_as.after_execution IS NOT NULL THEN
        SELECT c.* INTO r
          FROM automation_workflows.step_runs c
         WHERE c.execution_id = claim_sql_step_as.after_execution
           AND c.queue IS NULL AND c.status = 'pending' AND c.visible_at <= clock_timestamp()
           AND EXISTS (SELECT FROM automation_workflows.workflow_runs w
                        WHERE w.execution_id = c.execution_id AND w.owner = claim_sql_step_as.caller)
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
           AND (SELECT w.owner FROM automation_workflows.workflow_runs w
                 WHERE w.execution_id = c.execution_id) = claim_sql_step_as.caller
         ORDER BY c.queue, c.visible_at, c.execution_id, c.id
         LIMIT 1
           FOR UPDATE OF c SKIP LOCKED;
    END IF;
    IF r.id IS NULL THEN
        RETURN;
    END IF;
    -- (0.8.0) a step with a timeout is expired then (a moment after its
    -- statement_timeout, which normally ends it first); the scheduler is
    -- told when to look (wake_step_workers), as for a workflow's deadline
    UPDATE automation_workflows.step_runs s
       SET status = 'running', worker = claim_sql_step_as.worker_id, started_at = clock_timestamp(),
           lease_expires_at = CASE WHEN r.step_timeout IS NULL THEN 'infinity'
                                   ELSE clock_timestamp() + r.step_timeout + interval '200 milliseconds' END
     WHERE s.id = r.id;
    IF r.step_timeout IS NOT NULL THEN
        PERFORM automation.note_deadline();
    END IF;
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
REVOKE EXECUTE ON FUNCTION automation.claim_sql_step_as(oid, text, uuid) FROM PUBLIC;
COMMENT ON FUNCTION automation.claim_sql_step(text, uuid) IS
'Internal (step workers): claim a ready SQL step of an execution the current role started (of after_execution first, else the oldest); its id, execution, step, SQL and timeout in ms.';

-- Record how a SQL step run ended: success with `output`, or `error`
-- ({"message", "sqlstate"}; a statement timeout is status timeout). Retries
-- and the next steps as for queue steps. False when the run is no longer
-- this worker's (its execution ended meanwhile).
CREATE FUNCTION automation.finish_sql_step(id bigint, worker_id text, output jsonb, error jsonb)
RETURNS boolean
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.finish_sql_step_as(caller oid, id bigint, worker_id text, output jsonb, error jsonb)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r automation_workflows.step_runs;
BEGIN
    IF NOT automation.in_step_worker() THEN
        RAISE EXCEPTION 'only the extension''s step workers record SQL steps'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO r FROM automation_workflows.step_runs s WHERE s.id = finish_sql_step_as.id;
    IF NOT FOUND OR NOT EXISTS (SELECT FROM automation_workflows.workflow_runs w
                                 WHERE w.execution_id = r.execution_id AND w.owner = finish_sql_step_as.caller) THEN
        RETURN false;
    END IF;
    PERFORM FROM automation_workflows.workflow_runs w WHERE w.execution_id = r.execution_id FOR UPDATE;
    SELECT * INTO r FROM automation_workflows.step_runs s WHERE s.id = finish_sql_step_as.id FOR UPDATE;
    IF r.status <> 'running' OR r.worker IS DISTINCT FROM finish_sql_step_as.worker_id THEN
        RETURN false;
    END IF;
    IF finish_sql_step_as.error IS NULL THEN
        PERFORM automation.step_succeeded(r.id, finish_sql_step_as.output);
    ELSE
        PERFORM automation.step_attempt_failed(r.id,
            CASE WHEN finish_sql_step_as.error->>'sqlstate' = '57014' AND r.step_timeout IS NOT NULL THEN 'timeout' ELSE 'error' END,
            finish_sql_step_as.error, true);
    END IF;
    RETURN true;
END
$fn$;
REVOKE EXECUTE ON FUNCTION automation.finish_sql_step_as(oid, bigint, text, jsonb, jsonb) FROM PUBLIC;
COMMENT ON FUNCTION automation.finish_sql_step(bigint, text, jsonb, jsonb) IS
'Internal (step workers): record the end of a SQL step run (output, or error with SQLSTATE); false when it is no longer this worker''s.';

-- Per role that owns executions with SQL steps ready: how many are ready
-- (counted among the 256 oldest ready ones, FIFO across roles: a scheduler
-- woken at every commit must not count a backlog of 100,000 each time),
-- why that role cannot run them (NULL: it can: it exists, may log in,
-- connect to this database, and use the extension's schema), and when the
-- next one waiting out a retry backoff is (a row with no role). For the
-- scheduler. (0.8.0: by oid; a dropped role is never confused with a new
-- role of the same name.)
CREATE FUNCTION automation.sql_steps_waiting()
RETURNS TABLE (role_name text, role_oid oid, refusal text, ready bigint, next_visible timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(a.rolname::text, w.owner::oid::text), w.owner::oid,
           CASE WHEN a.oid IS NULL
                THEN format('the role (oid %s) that owns this execution no longer exists; SQL steps run as the role that started the workflow', w.owner::oid)
                WHEN NOT a.rolcanlogin
                THEN format('role "%s" is not permitted to log in; SQL steps run as the role that started the workflow, which needs LOGIN', a.rolname)
                WHEN NOT has_database_privilege(a.oid, current_database(), 'CONNECT')
                THEN format('role "%s" may not connect to database "%s"', a.rolname, current_database())
                WHEN NOT has_schema_privilege(a.oid, 'automation', 'USAGE')
                THEN format('role "%s" may no longer use automation_ext (it is not a member of automation_runner)', a.rolname)
           END,
           count(*), NULL::timestamptz
      FROM (SELECT c.execution_id
              FROM automation_workflows.step_runs c
             WHERE c.queue IS NULL AND c.status = 'pending' AND c.visible_at <= clock_timestamp()
             ORDER BY c.queue, c.visible_at, c.execution_id, c.id
             LIMIT 256) r
      JOIN automation_workflows.workflow_runs w ON w.execution_id = r.execution_id
      LEFT JOIN pg_roles a ON a.oid = w.owner
     GROUP BY w.owner, a.oid, a.rolname, a.rolcanlogin
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
'Internal (scheduler): per owning role, SQL steps ready now (among the 256 oldest) and why the role cannot run them, if it cannot; and when the next one waiting out a backoff is.';

-- (0.8.0, issue 28) When the engine must next look at its executions: the
-- earliest deadline of a running workflow, or lease (timeout) of a running
-- step. The scheduler wakes then and calls expire_steps(), so that a
-- timeout ends its execution within a second, not at the minutely sweep.
-- (Finished executions have no deadline: workflow_finish clears it.)
CREATE FUNCTION automation.next_deadline()
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT min(t) FROM (
        (SELECT w.deadline FROM automation_workflows.workflow_runs w
          WHERE w.deadline IS NOT NULL ORDER BY w.deadline LIMIT 1)
        UNION ALL
        (SELECT r.lease_expires_at FROM automation_workflows.step_runs r
          WHERE r.status = 'running' AND r.lease_expires_at < 'infinity' ORDER BY r.lease_expires_at LIMIT 1)) d(t)
$fn$;
REVOKE EXECUTE ON FUNCTION automation.next_deadline() FROM PUBLIC;
COMMENT ON FUNCTION automation.next_deadline() IS
'Internal (scheduler): the earliest deadline of a running workflow or lease of a running step.';

-- Ready SQL steps of executions owned by `role`, which cannot run them
-- (dropped, not allowed to log in or connect, no longer a runner), fail
-- without retry, once, with the reason.
CREATE FUNCTION automation.refuse_sql_steps(role oid, reason text)
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
           AND w.owner = refuse_sql_steps.role
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
REVOKE EXECUTE ON FUNCTION automation.refuse_sql_steps(oid, text) FROM PUBLIC;
COMMENT ON FUNCTION automation.refuse_sql_steps(oid, text) IS
'Internal (scheduler): fail the ready SQL steps of executions owned by a role that cannot run them (dropped, NOLOGIN, no CONNECT, no longer a runner).';

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

-- Internal helpers of the engine: nobody but its own functions calls them.
REVOKE EXECUTE ON FUNCTION automation.workflow_finish(uuid, text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION automation.workflow_advance(uuid, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION automation.workflow_admitted(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION automation.workflow_admit_waiting(text, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION automation.step_metric(automation_workflows.step_runs, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION automation.step_succeeded(bigint, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION automation.step_attempt_failed(bigint, text, jsonb, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION automation.wake_step_workers(integer) FROM PUBLIC;

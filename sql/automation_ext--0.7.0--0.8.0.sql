-- automation_ext 0.7.0 -> 0.8.0
--
-- Frozen once released, like every upgrade script: it repeats the 0.8.0
-- objects from the install files as they are at 0.8.0. pg_test/sql/upgrade.sql
-- checks that an upgraded database has exactly the catalog of a fresh install.
-- Runs with search_path = pg_catalog; everything is schema-qualified.
--
-- 0.8.0, issue 27 (tenancy): what a role writes belongs to it, by oid (a
-- regrole column: dumped by name); row-level security lets a runner read
-- and write only what it may act on; the engine's and the queue's state
-- change only through functions that know who calls them; workflows are
-- shared with automation.grant_workflow. Existing rows get owners: an
-- engine execution its starter (workflow_runs.started_by), a schedule
-- trigger the owner of its job, a definition the one role its triggers and
-- executions agree on, other triggers their definition's owner, an error
-- its execution's owner; what nobody can tell belongs to the extension's
-- owner (a WARNING lists the definitions, with how to give them away).

-- What depends on columns that change is made again below.
DROP VIEW automation.workflow_progress;
DROP POLICY trigger_inbox_own_changes ON automation_workflows.trigger_inbox;

-- Owners. Columns that nobody could set before are added with a constant
-- default (no table rewrite), then the owners that can be told are
-- written, and the default becomes the writer. Definitions and triggers
-- nobody can tell the owner of go to the extension's owner (they hold code:
-- nobody else may change them until it hands them over); queued and past
-- executions and their errors to automation_runner, so that every runner
-- keeps working them as before (a group's rows are its members'; they run
-- no SQL).
DO $owners$
DECLARE
    ext_owner oid := (SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'automation_ext');
    runners oid := COALESCE((SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) 'automation_runner'),
                            (SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'automation_ext'));
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('automation_workflows.definitions', ext_owner), ('automation_triggers.registry', ext_owner),
                                   ('automation_workflows.workflow_executions', runners),
                                   ('automation_workflows.execution_queue', runners),
                                   ('automation_workflows.execution_log', runners), ('automation.errors', runners)) v(tbl, owner)
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD COLUMN owner pg_catalog.regrole NOT NULL DEFAULT %s::pg_catalog.regrole',
                                  t.tbl, t.owner);
    END LOOP;
END
$owners$;
ALTER TABLE automation_triggers.registry
    ADD COLUMN enabled boolean NOT NULL DEFAULT true,
    ADD COLUMN inactive_reason text,
    ADD COLUMN skipped_fires bigint NOT NULL DEFAULT 0,
    ADD COLUMN last_skipped_at timestamptz;

-- workflow_runs.started_by (a name) becomes owner (the role, by oid); a
-- name that no longer exists becomes oid 0: its waiting steps fail, never
-- run as whoever takes the name
ALTER TABLE automation_workflows.workflow_runs RENAME COLUMN started_by TO owner;
ALTER TABLE automation_workflows.workflow_runs ALTER COLUMN owner DROP DEFAULT;
ALTER TABLE automation_workflows.workflow_runs ALTER COLUMN owner TYPE pg_catalog.regrole
    USING COALESCE(pg_catalog.to_regrole(pg_catalog.quote_ident(owner))::pg_catalog.oid, 0)::pg_catalog.regrole;
-- (issue 29) re-runs (rerun_of), the trigger that started a run, and
-- idempotency keys that a failed execution releases
ALTER TABLE automation_workflows.workflow_runs
    ADD COLUMN rerun_of uuid,
    ADD COLUMN key_released boolean NOT NULL DEFAULT false,
    ADD COLUMN trigger_id integer;
UPDATE automation_workflows.workflow_runs w SET key_released = true
  FROM automation_workflows.workflow_executions e
 WHERE e.id = w.execution_id AND w.idempotency_key IS NOT NULL AND e.status IN ('error', 'timeout', 'cancelled');
DROP INDEX automation_workflows.workflow_runs_idempotency;
CREATE UNIQUE INDEX workflow_runs_idempotency
    ON automation_workflows.workflow_runs (workflow_name, owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL AND NOT key_released;
CREATE INDEX workflow_runs_rerun_of
    ON automation_workflows.workflow_runs (rerun_of) WHERE rerun_of IS NOT NULL;
CREATE INDEX workflow_runs_trigger
    ON automation_workflows.workflow_runs (trigger_id, created_at) WHERE trigger_id IS NOT NULL;

-- the trigger inbox: who changed the table, and the trigger's owner (whose
-- executions they become)
ALTER TABLE automation_workflows.trigger_inbox ADD COLUMN changed_by pg_catalog.regrole, ADD COLUMN old_rows text[];
UPDATE automation_workflows.trigger_inbox SET changed_by = started_by::pg_catalog.regrole;
ALTER TABLE automation_workflows.trigger_inbox RENAME COLUMN started_by TO owner;
ALTER TABLE automation_workflows.trigger_inbox ALTER COLUMN owner TYPE pg_catalog.regrole;

DROP INDEX automation_workflows.execution_queue_unique_key;
CREATE UNIQUE INDEX execution_queue_unique_key
    ON automation_workflows.execution_queue (workflow_name, owner, unique_key)
    WHERE unique_key IS NOT NULL;

-- the owners that can be told (the tables' own triggers stay out of it:
-- nothing is re-checked, re-attached or touched)
SET LOCAL session_replication_role = replica;
-- a schedule trigger: the owner of its job
UPDATE automation_triggers.registry r SET owner = j.owner::pg_catalog.regrole
  FROM automation.job j
 WHERE r.trigger_type OPERATOR(pg_catalog.=) 'schedule'
   AND j.jobname OPERATOR(pg_catalog.=) ('workflow trigger ' OPERATOR(pg_catalog.||) r.id)
   AND j.owner OPERATOR(pg_catalog.<>) 0;
-- a definition: the one role its schedule triggers and its executions agree on
UPDATE automation_workflows.definitions d SET owner = o.owner
  FROM (SELECT k.name, (pg_catalog.array_agg(DISTINCT k.owner))[1] AS owner
          FROM (SELECT x.name, r.owner FROM automation_workflows.definitions x
                  JOIN automation_triggers.registry r ON r.workflow_id OPERATOR(pg_catalog.=) x.id
                 WHERE r.trigger_type OPERATOR(pg_catalog.=) 'schedule'
                   AND r.owner OPERATOR(pg_catalog.<>) (SELECT e.extowner FROM pg_catalog.pg_extension e
                                                         WHERE e.extname OPERATOR(pg_catalog.=) 'automation_ext')
                UNION ALL
                SELECT w.workflow_name, w.owner FROM automation_workflows.workflow_runs w
                 WHERE w.owner::pg_catalog.oid OPERATOR(pg_catalog.<>) 0) k
         GROUP BY k.name
        HAVING pg_catalog.count(DISTINCT k.owner) OPERATOR(pg_catalog.=) 1) o
 WHERE o.name OPERATOR(pg_catalog.=) d.name;
-- other triggers: their definition's owner
UPDATE automation_triggers.registry r SET owner = d.owner
  FROM automation_workflows.definitions d
 WHERE d.id OPERATOR(pg_catalog.=) r.workflow_id AND r.trigger_type OPERATOR(pg_catalog.<>) 'schedule';
-- engine executions: their starter; changes waiting in the inbox: their trigger's owner
UPDATE automation_workflows.workflow_executions e SET owner = w.owner
  FROM automation_workflows.workflow_runs w
 WHERE w.execution_id OPERATOR(pg_catalog.=) e.id AND w.owner::pg_catalog.oid OPERATOR(pg_catalog.<>) 0;
UPDATE automation_workflows.trigger_inbox i SET owner = r.owner
  FROM automation_triggers.registry r WHERE r.id OPERATOR(pg_catalog.=) i.trigger_id;
-- errors: their execution's owner
UPDATE automation.errors x SET owner = e.owner
  FROM automation_workflows.workflow_executions e
 WHERE e.id OPERATOR(pg_catalog.=) x.execution_id;
-- table triggers check, in whatever session fires them, that they run on
-- the table their row names: kept as its qualified name
UPDATE automation_triggers.registry r
   SET config = pg_catalog.jsonb_set(r.config, '{table}',
                                     pg_catalog.to_jsonb(pg_catalog.format('%I.%I', n.nspname, c.relname)))
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
 WHERE r.trigger_type OPERATOR(pg_catalog.=) 'table'
   AND c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(r.config OPERATOR(pg_catalog.->>) 'table');
RESET session_replication_role;

DO $said$
DECLARE
    ext_owner regrole := (SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'automation_ext');
    unowned text;
BEGIN
    SELECT pg_catalog.string_agg(d.name, ', ' ORDER BY d.name) INTO unowned
      FROM automation_workflows.definitions d WHERE d.owner OPERATOR(pg_catalog.=) ext_owner;
    IF unowned IS NOT NULL THEN
        RAISE WARNING 'automation_ext 0.8.0: these workflow definitions now belong to %, whose they were could not be told: %', ext_owner, unowned
              USING HINT = 'Give one to the role that runs it: UPDATE automation_workflows.definitions SET owner = ''etl'' WHERE name = ''...''; or let every runner start it: SELECT automation.grant_workflow(''...'', ''automation_runner'').';
    END IF;
    IF EXISTS (SELECT FROM automation_workflows.execution_queue q WHERE q.owner OPERATOR(pg_catalog.=) 'automation_runner'::pg_catalog.regrole) THEN
        RAISE WARNING 'automation_ext 0.8.0: queued executions from before the update belong to automation_runner: every runner may work them, as before';
    END IF;
END
$said$;

-- workflow grants
CREATE TABLE automation_workflows.workflow_grants (
    workflow_name varchar(255) NOT NULL
                  REFERENCES automation_workflows.definitions (name) ON UPDATE CASCADE ON DELETE CASCADE,
    grantee       regrole      NOT NULL,
    privilege     text         NOT NULL,
    granted_by    regrole      NOT NULL,
    granted_at    timestamptz  NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT workflow_grants_pkey PRIMARY KEY (workflow_name, grantee, privilege),
    CONSTRAINT workflow_grants_privilege_check CHECK (privilege IN ('run', 'work'))
);
COMMENT ON TABLE automation_workflows.workflow_grants IS
    'Workflows shared by their owners (automation.grant_workflow): run lets the grantee start it, work lets it work its queue and read its executions.';
SELECT pg_catalog.pg_extension_config_dump('automation_workflows.workflow_grants', '');

-- functions whose signature changes
DROP FUNCTION automation.claim_limited(text, text, integer, interval, timestamptz);
DROP FUNCTION automation.raise_not_running(uuid, text, text);
DROP FUNCTION automation.running_step(bigint, text, text);
DROP FUNCTION automation.refuse_sql_steps(name, text);
DROP FUNCTION automation.stop_sql_step(bigint);
DROP FUNCTION automation.sql_steps_waiting();
-- (issue 29) claim_steps waits (wait => interval)
DROP FUNCTION automation.claim_steps(text, text, integer, interval);

-- (issue 28) finished runs keep no deadline: the scheduler wakes for the
-- next deadline (automation.next_deadline), not for those already past
UPDATE automation_workflows.workflow_runs w SET deadline = NULL
  FROM automation_workflows.workflow_executions e
 WHERE e.id = w.execution_id AND w.deadline IS NOT NULL
   AND e.status NOT IN ('pending', 'running', 'retrying');

-- (issue 28) a metric at +/-infinity stopped partition maintenance for
-- everyone: such rows move to automation.errors (with the row) and a CHECK
-- keeps new ones out
WITH moved AS (
    DELETE FROM automation.pipeline_metrics m WHERE NOT pg_catalog.isfinite(m.time) RETURNING m.*
)
INSERT INTO automation.errors (workflow_name, error_type, error_message, error_context, owner)
SELECT m.pipeline_name, 'RecordingFailed',
       pg_catalog.format('a pipeline metric at time %s was moved aside by the 0.8.0 update: partitions hold finite times only', m.time),
       pg_catalog.jsonb_build_object('row', pg_catalog.to_jsonb(m)), 'automation_runner'::pg_catalog.regrole
  FROM moved m;
ALTER TABLE automation.pipeline_metrics
    ADD CONSTRAINT pipeline_metrics_time_finite CHECK (pg_catalog.isfinite(time));

-- (issue 28) the staging check names a non-finite time
CREATE OR REPLACE VIEW automation.metrics_staging_checked WITH (security_invoker = true) AS
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

-- (issue 28) a job runs as its owner, who needs automation_runner: the
-- scheduler deactivates jobs of other owners at their next fire (0.7.0 ran
-- them, and their owners could not see or unschedule them)
DO $warn$
DECLARE
    names text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.format('%s (%s)', COALESCE(j.jobname, j.jobid::text), j.username), ', ')
      INTO names
      FROM automation.job j JOIN pg_catalog.pg_roles r ON r.oid = j.owner
     WHERE j.active AND NOT r.rolsuper AND NOT pg_catalog.pg_has_role(r.oid, 'automation_runner', 'USAGE');
    IF names IS NOT NULL THEN
        RAISE WARNING 'automation_ext 0.8.0: these jobs belong to roles outside automation_runner and will be deactivated at their next fire: %', names
              USING HINT = 'GRANT automation_runner TO each of those roles to keep them running.';
    END IF;
END
$warn$;

-- (issue 29) counters of finished executions (not dumped; start at 0)
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

-- (issue 30) newest first, keyset-paginated: the console's lists
CREATE INDEX workflow_executions_recent
    ON automation_workflows.workflow_executions (started_at DESC, id DESC);
CREATE INDEX workflow_executions_failed_recent
    ON automation_workflows.workflow_executions (started_at DESC, id DESC)
    WHERE status IN ('error', 'timeout', 'cancelled');
CREATE INDEX workflow_executions_workflow_recent
    ON automation_workflows.workflow_executions (workflow_name, started_at DESC, id DESC);
CREATE INDEX errors_recent ON automation.errors (error_time DESC, id DESC);

-- functions new or changed in 0.8.0 (as in the install files)

CREATE FUNCTION automation.invoker()
RETURNS regrole
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'invoker_wrapper';

COMMENT ON FUNCTION automation.invoker() IS
'The role in effect (current_user as an oid): the default owner of what a role writes.';

CREATE FUNCTION automation.may_act_as(role oid)
RETURNS boolean
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'may_act_as_wrapper';

COMMENT ON FUNCTION automation.may_act_as(oid) IS
'May the role in effect act as role (SET ROLE to it: PostgreSQL 15 membership, 16 and later membership WITH SET)? False for NULL and for a role that no longer exists; true for superusers.';

CREATE FUNCTION automation.role_may_act_as(member oid, role oid)
RETURNS boolean
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'role_may_act_as_wrapper';

COMMENT ON FUNCTION automation.role_may_act_as(oid, oid) IS
'May member act as role (SET ROLE to it)? False for NULLs and for a role that no longer exists; true for superusers.';

CREATE FUNCTION automation.role_has_privileges_of(member oid, role oid)
RETURNS boolean
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'role_has_privileges_of_wrapper';

COMMENT ON FUNCTION automation.role_has_privileges_of(oid, oid) IS
'Does member have the privileges of role (itself, or a member that inherits them)? What a workflow grant to a group needs.';

CREATE FUNCTION automation.may_start_workflow(caller oid, workflow_name text)
RETURNS boolean
LANGUAGE c STABLE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'may_start_workflow_wrapper';

COMMENT ON FUNCTION automation.may_start_workflow(oid, text) IS
'May caller start workflow_name: it has no definition, caller may act as its owner, or the owner granted it run.';

CREATE FUNCTION automation.may_work_workflow(caller oid, workflow_name text)
RETURNS boolean
LANGUAGE c STABLE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'may_work_workflow_wrapper';

COMMENT ON FUNCTION automation.may_work_workflow(oid, text) IS
'May caller work every execution of workflow_name (claim, complete, fail its queue items): caller may act as the owner of its definition, or was granted work.';

CREATE FUNCTION automation.may_manage_workflow(caller oid, workflow_name text)
RETURNS boolean
LANGUAGE c STABLE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'may_manage_workflow_wrapper';

COMMENT ON FUNCTION automation.may_manage_workflow(oid, text) IS
'May caller manage workflow_name (its definition, grants, and every execution): caller may act as the owner of its definition.';

REVOKE EXECUTE ON FUNCTION automation.may_start_workflow(oid, text) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION automation.may_work_workflow(oid, text) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION automation.may_manage_workflow(oid, text) FROM PUBLIC;

CREATE FUNCTION automation.may_read(owner oid, workflow_name text)
RETURNS boolean
LANGUAGE c STABLE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'may_read_wrapper';

COMMENT ON FUNCTION automation.may_read(oid, text) IS
'Row-level security of executions, runs and errors: may the role in effect read a row owned by owner of workflow workflow_name (act as owner, work or manage the workflow, or automation_monitor)?';

CREATE FUNCTION automation.may_read_workflow(workflow_name text)
RETURNS boolean
LANGUAGE c STABLE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'may_read_workflow_wrapper';

COMMENT ON FUNCTION automation.may_read_workflow(text) IS
'Row-level security of definitions and grants: may the role in effect read workflow_name (its owner, a grantee, or automation_monitor)?';

CREATE FUNCTION automation.workflow_rights_changed()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'workflow_rights_changed_wrapper';

COMMENT ON FUNCTION automation.workflow_rights_changed() IS
'Internal: statement trigger of definitions and workflow_grants; this backend forgets the rights it looked up.';

REVOKE EXECUTE ON FUNCTION automation.workflow_rights_changed() FROM PUBLIC;

CREATE FUNCTION automation.grant_workflow(workflow_name text, grantee regrole, privilege text DEFAULT 'run')
RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.grant_workflow_as(caller oid, workflow_name text, grantee regrole, privilege text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    def automation_workflows.definitions;
BEGIN
    IF grant_workflow_as.privilege IS NULL OR grant_workflow_as.privilege NOT IN ('run', 'work', 'all') THEN
        RAISE EXCEPTION 'privilege must be run, work or all, not %', coalesce(grant_workflow_as.privilege, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'run: start the workflow (its SQL steps run as the grantee); work: claim, complete and fail its queue executions and steps; all: both.';
    ELSIF grant_workflow_as.grantee IS NULL THEN
        RAISE EXCEPTION 'grantee must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO def FROM automation_workflows.definitions d WHERE d.name = grant_workflow_as.workflow_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow % has no definition', grant_workflow_as.workflow_name
              USING ERRCODE = 'undefined_object',
                    HINT = 'A workflow is shared by the owner of its definition; a queue-only workflow may have a definition without steps: INSERT INTO automation_workflows.definitions (name, definition) VALUES (''...'', ''{}'').';
    ELSIF NOT automation.role_may_act_as(grant_workflow_as.caller, def.owner) THEN
        RAISE EXCEPTION 'permission denied for workflow %', grant_workflow_as.workflow_name
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'Only its owner (and roles that may SET ROLE to it) share a workflow.';
    END IF;
    INSERT INTO automation_workflows.workflow_grants (workflow_name, grantee, privilege, granted_by)
    SELECT def.name, grant_workflow_as.grantee, p, grant_workflow_as.caller::regrole
      FROM unnest(CASE grant_workflow_as.privilege WHEN 'all' THEN ARRAY['run', 'work'] ELSE ARRAY[grant_workflow_as.privilege] END) p
    ON CONFLICT DO NOTHING;
END
$fn$;

REVOKE EXECUTE ON FUNCTION automation.grant_workflow_as(oid, text, regrole, text) FROM PUBLIC;

COMMENT ON FUNCTION automation.grant_workflow(text, regrole, text) IS
'Share a workflow you own: run lets grantee (and the roles that have its privileges) start it, its SQL steps running as the role that starts it; work lets them claim, complete and fail its queue executions and steps and read its executions; all: both.';

COMMENT ON FUNCTION automation.grant_workflow_as(oid, text, regrole, text) IS
'Internal: grant_workflow as caller (SECURITY DEFINER; nobody may execute it directly).';

CREATE FUNCTION automation.revoke_workflow(workflow_name text, grantee regrole, privilege text DEFAULT 'all')
RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.revoke_workflow_as(caller oid, workflow_name text, grantee regrole, privilege text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    def automation_workflows.definitions;
BEGIN
    IF revoke_workflow_as.privilege IS NULL OR revoke_workflow_as.privilege NOT IN ('run', 'work', 'all') THEN
        RAISE EXCEPTION 'privilege must be run, work or all, not %', coalesce(revoke_workflow_as.privilege, 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO def FROM automation_workflows.definitions d WHERE d.name = revoke_workflow_as.workflow_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow % has no definition', revoke_workflow_as.workflow_name USING ERRCODE = 'undefined_object';
    ELSIF NOT automation.role_may_act_as(revoke_workflow_as.caller, def.owner) THEN
        RAISE EXCEPTION 'permission denied for workflow %', revoke_workflow_as.workflow_name
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'Only its owner (and roles that may SET ROLE to it) share a workflow.';
    END IF;
    DELETE FROM automation_workflows.workflow_grants g
     WHERE g.workflow_name = def.name AND g.grantee = revoke_workflow_as.grantee
       AND (revoke_workflow_as.privilege = 'all' OR g.privilege = revoke_workflow_as.privilege);
END
$fn$;

REVOKE EXECUTE ON FUNCTION automation.revoke_workflow_as(oid, text, regrole, text) FROM PUBLIC;

COMMENT ON FUNCTION automation.revoke_workflow(text, regrole, text) IS
'Take back what grant_workflow gave (run, work, or all). Executions already started stay their starters''.';

COMMENT ON FUNCTION automation.revoke_workflow_as(oid, text, regrole, text) IS
'Internal: revoke_workflow as caller (SECURITY DEFINER; nobody may execute it directly).';

CREATE OR REPLACE FUNCTION automation.executions_logged(ids uuid[])
RETURNS void
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'executions_logged_wrapper';

CREATE OR REPLACE FUNCTION automation.executions_enqueued(workflow_name text)
RETURNS void
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'executions_enqueued_wrapper';

CREATE OR REPLACE FUNCTION automation.wait_for_executions(workflow_name text, deadline timestamptz)
RETURNS void
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wait_for_executions_wrapper';

CREATE OR REPLACE FUNCTION automation.start_execution(workflow_name text, metadata jsonb DEFAULT '{}')
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

CREATE OR REPLACE FUNCTION automation.enqueue_execution(workflow_name text, metadata jsonb DEFAULT '{}',
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

CREATE FUNCTION automation.may_work(caller oid, owner oid, workflow_name text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT automation.role_may_act_as(caller, owner) OR automation.may_work_workflow(caller, workflow_name)
$fn$;

REVOKE EXECUTE ON FUNCTION automation.may_work(oid, oid, text) FROM PUBLIC;

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

CREATE OR REPLACE FUNCTION automation.complete_executions(ids uuid[], metadata_patch jsonb DEFAULT NULL,
                                               worker_id text DEFAULT NULL)
RETURNS integer
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.complete_executions_as(caller oid, ids uuid[], metadata_patch jsonb, worker_id text)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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

REVOKE EXECUTE ON FUNCTION automation.complete_executions_as(oid, uuid[], jsonb, text) FROM PUBLIC;

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
    SELECT e.workflow_name, e.status, e.owner INTO failed
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
           next_retry_at = now() + automation.retry_delay(r.retry_count)
     WHERE r.retry_execution_id = record_failure.execution_id AND r.resolved_at IS NULL
    RETURNING r.id INTO error_id;
    IF NOT FOUND THEN
        INSERT INTO automation.errors AS r
               (workflow_name, error_type, error_message, error_context, execution_id, next_retry_at, owner)
        VALUES (record_failure.workflow_name, record_failure.error_type, record_failure.error_message,
                record_failure.error_context, record_failure.execution_id, now() + automation.retry_delay(0),
                failed.owner)
        RETURNING r.id INTO error_id;
    END IF;
    RETURN error_id;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.fail_execution(id uuid, error_type text, error_message text,
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
        PERFORM automation.executions_logged(ARRAY[fail_execution_as.id]);
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

REVOKE EXECUTE ON FUNCTION automation.fail_execution_as(oid, uuid, text, text, jsonb, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION automation.claim_executions(workflow_name text, worker_id text, batch integer DEFAULT 100,
                                            lease interval DEFAULT '5 minutes', wait interval DEFAULT NULL)
RETURNS SETOF automation_workflows.workflow_executions
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

CREATE FUNCTION automation.claim_executions_as(caller oid, workflow_name text, worker_id text, batch integer,
                                               lease interval, wait interval)
RETURNS SETOF automation_workflows.workflow_executions
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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
                 WHERE q.id IN (SELECT c.id FROM automation_workflows.execution_queue c
                                 WHERE c.workflow_name = claim_executions_as.workflow_name AND c.visible_at <= cutoff
                                   AND (everyone OR automation.role_may_act_as(claim_executions_as.caller, c.owner))
                                 ORDER BY c.priority DESC, c.run_after, c.id
                                 LIMIT claim_executions_as.batch
                                   FOR UPDATE SKIP LOCKED)
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

CREATE FUNCTION automation.claim_limited(caller oid, everyone boolean, workflow_name text, worker_id text,
                                         batch integer, lease interval, cutoff timestamptz)
RETURNS SETOF automation_workflows.workflow_executions
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
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

CREATE OR REPLACE FUNCTION automation.extend_lease(id uuid, worker_id text, lease interval DEFAULT '5 minutes')
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

CREATE OR REPLACE FUNCTION automation.timeout_stale_executions(older_than interval DEFAULT '1 hour',
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
    IF logged IS NOT NULL THEN
        PERFORM automation.executions_logged(logged);
    END IF;
    FOR stale IN
        SELECT u.execution_id, u.workflow_name FROM unnest(logged, logged_names) AS u(execution_id, workflow_name)
    LOOP
        PERFORM automation.record_failure(stale.execution_id, stale.workflow_name, 'execution_timeout',
                                          format('running for longer than %s', older_than), NULL);
        id := stale.execution_id;
        RETURN NEXT;
    END LOOP;
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

CREATE OR REPLACE FUNCTION automation.retry_failed_workflow(workflow_name text, max_retries integer DEFAULT 3)
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
    -- re-enqueue with the failed execution's own metadata (errors recorded by
    -- hand, with no execution, retry with their error_context)
    SELECT e.metadata INTO original_metadata
      FROM automation.executions e WHERE e.id = err.execution_id;
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

REVOKE EXECUTE ON FUNCTION automation.retry_failed_workflow_as(oid, text, integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION automation.retry_in_flight(id uuid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT id IS NOT NULL AND (
        EXISTS (SELECT FROM automation_workflows.execution_queue q WHERE q.id = retry_in_flight.id)
        OR EXISTS (SELECT FROM automation_workflows.workflow_executions e
                    WHERE e.id = retry_in_flight.id AND e.status IN ('pending', 'running', 'retrying')))
$fn$;

CREATE OR REPLACE PROCEDURE automation.purge_executions(batch integer DEFAULT 10000)
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

REVOKE EXECUTE ON FUNCTION automation.record_failure(uuid, text, text, text, jsonb) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION automation.retry_in_flight(uuid) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION automation.executions_logged(uuid[]) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION automation.executions_enqueued(text) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION automation.wait_for_executions(text, timestamptz) FROM PUBLIC;

COMMENT ON FUNCTION automation.record_failure(uuid, text, text, text, jsonb) IS
'Internal: record the failure of an execution that failed (status error or timeout) in automation.errors (a failed retry updates the error it retried).';

REVOKE EXECUTE ON FUNCTION automation.raise_not_running(oid, uuid, text, text) FROM PUBLIC;

COMMENT ON FUNCTION automation.raise_not_running(oid, uuid, text, text) IS
'Internal: raise the error explaining why an execution cannot be completed or failed.';

COMMENT ON FUNCTION automation.retry_in_flight(uuid) IS 'Internal: is this retry execution still pending or running?';

COMMENT ON FUNCTION automation.executions_logged(uuid[]) IS
'Internal: the runtime functions logged these finished executions; the scheduler records them after commit (or, with none running, this records them now).';

COMMENT ON FUNCTION automation.executions_enqueued(text) IS
'Internal: executions of this workflow were enqueued; its waiting claimers are woken when the transaction commits.';

COMMENT ON FUNCTION automation.wait_for_executions(text, timestamptz) IS
'Internal: one step of a waiting claim_executions (sleeps on the latch until an enqueue of the workflow commits, the deadline, or a second).';

COMMENT ON PROCEDURE automation.purge_executions(integer) IS
'Delete finished executions older than automation.execution_retention (those an open error refers to: once older than automation.error_retention) and errors resolved, dead-lettered or raised more than automation.error_retention ago, batch rows per transaction (0 keeps them; CALL it at top level).';

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

CREATE OR REPLACE FUNCTION automation.check_definition(definition jsonb)
RETURNS boolean
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT automation.check_definition_text(definition::text) $fn$;

COMMENT ON FUNCTION automation.check_definition(jsonb) IS
'Raise 22023 naming the step and field if definition is not a valid workflow (see docs/workflows.md, Definitions); true if it has steps (it can be started), false if it is data without steps.';

CREATE OR REPLACE FUNCTION automation_workflows.definitions_check()
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

CREATE OR REPLACE FUNCTION automation.workflow_admitted(workflow_name text)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT count(*)
      FROM automation_workflows.workflow_runs r
      JOIN automation_workflows.workflow_executions e ON e.id = r.execution_id
     WHERE r.workflow_name = workflow_admitted.workflow_name AND r.admitted AND e.status IN ('pending', 'running')
$fn$;

CREATE OR REPLACE FUNCTION automation.workflow_admit_waiting(workflow_name text, concurrency integer)
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

CREATE OR REPLACE FUNCTION automation.run_workflow(name text, input jsonb DEFAULT '{}', run_after timestamptz DEFAULT NULL,
                                        idempotency_key text DEFAULT NULL)
RETURNS uuid
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

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

CREATE FUNCTION automation.step_queue_key(queue text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT 'automation_ext step queue ' || queue $fn$;

REVOKE EXECUTE ON FUNCTION automation.step_queue_key(text) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION automation.claim_steps_as(oid, text, text, integer, interval, interval) FROM PUBLIC;

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

CREATE OR REPLACE FUNCTION automation.step_metric(r automation_workflows.step_runs, workflow_name text)
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

CREATE OR REPLACE FUNCTION automation.step_succeeded(id bigint, output jsonb)
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

CREATE OR REPLACE FUNCTION automation.complete_step(id bigint, output jsonb DEFAULT NULL, worker_id text DEFAULT NULL)
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

CREATE OR REPLACE FUNCTION automation.step_attempt_failed(id bigint, status text, error jsonb, retryable boolean)
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

CREATE OR REPLACE FUNCTION automation.fail_step(id bigint, error text, retryable boolean DEFAULT true, worker_id text DEFAULT NULL,
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

CREATE OR REPLACE FUNCTION automation.extend_step_lease(id bigint, worker_id text, lease interval DEFAULT '5 minutes')
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

CREATE OR REPLACE FUNCTION automation.cancel_workflow(id uuid, reason text DEFAULT NULL)
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

CREATE FUNCTION automation.cancel_queued(caller oid, id uuid, reason text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    q automation_workflows.execution_queue;
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
            q.run_after, q.claimed_by, q.attempts, q.retry_of, q.owner);
    PERFORM automation.executions_logged(ARRAY[q.id]);
    RETURN true;
END
$fn$;

REVOKE EXECUTE ON FUNCTION automation.cancel_queued(oid, uuid, text) FROM PUBLIC;

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

CREATE OR REPLACE FUNCTION automation.expire_steps(queue text DEFAULT NULL, batch integer DEFAULT 1000)
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

CREATE OR REPLACE FUNCTION automation.run_workflows(name text, inputs jsonb[])
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

CREATE OR REPLACE FUNCTION automation.fire_trigger(id integer, input jsonb DEFAULT NULL)
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
                                       THEN automation.next_run(r.config->>'cron', now(), r.config->>'timezone') END
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
                               THEN automation.next_run(r.config->>'cron', now(), r.config->>'timezone') END
     WHERE r.id = reg.id;
    RETURN started;
END
$fn$;

REVOKE EXECUTE ON FUNCTION automation.fire_trigger_as(oid, integer, jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION automation.wake_recorder()
RETURNS boolean
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wake_recorder_wrapper';

REVOKE EXECUTE ON FUNCTION automation.wake_recorder() FROM PUBLIC;

COMMENT ON FUNCTION automation.wake_recorder() IS
'Internal: true if a scheduler will pick up what this transaction leaves in the trigger inbox (it is woken at commit); false if the caller must do the work itself (the library is not preloaded, the scheduler is off).';

CREATE OR REPLACE FUNCTION automation.drain_trigger_inbox(batch integer DEFAULT 40)
RETURNS bigint
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'drain_trigger_inbox_wrapper';

COMMENT ON FUNCTION automation.drain_trigger_inbox(integer) IS
'Start the executions that table triggers queued, oldest first, 2,500 rows at a time, up to batch such slices, each as the trigger''s owner; a slice that cannot be started goes to automation.errors with its rows. The scheduler calls it within milliseconds of a commit; returns the executions started.';

REVOKE EXECUTE ON FUNCTION automation.drain_trigger_inbox(integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION automation.workflow_table_trigger()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'workflow_table_trigger_wrapper';

REVOKE EXECUTE ON FUNCTION automation.workflow_table_trigger() FROM PUBLIC;

COMMENT ON FUNCTION automation.workflow_table_trigger() IS
'Internal: the statement trigger that a table trigger of automation_triggers.registry attaches to its table (refuses to run for any other).';

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

CREATE OR REPLACE FUNCTION automation_triggers.registry_check()
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

CREATE OR REPLACE FUNCTION automation.wake_step_workers(ready_now integer)
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

CREATE OR REPLACE FUNCTION automation.step_input()
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

CREATE OR REPLACE FUNCTION automation.claim_sql_step(worker_id text, after_execution uuid DEFAULT NULL)
RETURNS TABLE (id bigint, execution_id uuid, step text, sql text, timeout_ms integer)
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'act_as';

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

CREATE OR REPLACE FUNCTION automation.finish_sql_step(id bigint, worker_id text, output jsonb, error jsonb)
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

CREATE OR REPLACE FUNCTION automation.sql_steps_waiting()
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

REVOKE EXECUTE ON FUNCTION automation.workflow_finish(uuid, text, jsonb) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION automation.workflow_advance(uuid, text) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION automation.workflow_admitted(text) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION automation.workflow_admit_waiting(text, integer) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION automation.step_metric(automation_workflows.step_runs, text) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION automation.step_succeeded(bigint, jsonb) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION automation.step_attempt_failed(bigint, text, jsonb, boolean) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION automation.wake_step_workers(integer) FROM PUBLIC;

CREATE FUNCTION automation.job_histograms()
RETURNS TABLE (metric text, bounds double precision[], buckets bigint[], sum double precision, count bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH per_job AS (
        SELECT k.metric, k.buckets, k.total
          FROM automation.job_run_stats s JOIN automation.job j ON j.jobid OPERATOR(pg_catalog.=) s.jobid
         CROSS JOIN LATERAL (VALUES ('automation_job_run_duration_seconds', s.duration_buckets, s.duration_sum),
                                    ('automation_job_start_lateness_seconds', s.lateness_buckets, s.lateness_sum))
                             k(metric, buckets, total)
    ), per_bucket AS (
        SELECT p.metric, u.i, sum(u.n)::bigint AS n
          FROM per_job p CROSS JOIN LATERAL unnest(p.buckets) WITH ORDINALITY u(n, i)
         GROUP BY p.metric, u.i
    ), cumulative AS (
        SELECT b.metric, b.i, (sum(b.n) OVER (PARTITION BY b.metric ORDER BY b.i))::bigint AS c FROM per_bucket b
    ), names(metric) AS (
        VALUES ('automation_job_run_duration_seconds'), ('automation_job_start_lateness_seconds')
    )
    SELECT n.metric, automation.job_run_histogram_bounds(),
           coalesce((SELECT array_agg(c.c ORDER BY c.i) FROM cumulative c
                      WHERE c.metric OPERATOR(pg_catalog.=) n.metric
                        AND c.i OPERATOR(pg_catalog.<=) pg_catalog.array_length(automation.job_run_histogram_bounds(), 1)),
                    pg_catalog.array_fill(0::bigint, ARRAY[pg_catalog.array_length(automation.job_run_histogram_bounds(), 1)])),
           coalesce((SELECT sum(p.total) FROM per_job p WHERE p.metric OPERATOR(pg_catalog.=) n.metric), 0)::float8,
           coalesce((SELECT sum(b.n) FROM per_bucket b WHERE b.metric OPERATOR(pg_catalog.=) n.metric), 0)::bigint
      FROM names n
$fn$;

COMMENT ON FUNCTION automation.job_histograms() IS
'The run-duration and start-lateness histograms of the jobs the caller sees, summed: finite bounds, cumulative counts at them, sum and count (for Prometheus).';

CREATE OR REPLACE FUNCTION automation.job_check_target()
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
        -- (0.8.0) or a role it may SET ROLE to, as for every object of the extension
        IF NEW.username IS DISTINCT FROM CURRENT_USER::text AND NOT superuser
           AND NOT automation.may_act_as((SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.username)) THEN
            RAISE EXCEPTION 'permission denied to create or move a job for role %', NEW.username
                  USING ERRCODE = 'insufficient_privilege',
                        HINT = pg_catalog.format('A job belongs to the role that schedules it, or to a role it may SET ROLE to; schedule it as %s itself, or leave username NULL.', NEW.username);
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
        -- (0.8.0) jobs run as their owner, who needs automation_runner (the
        -- scheduler deactivates a job whose owner loses it)
        IF NOT (SELECT r.rolsuper OR pg_catalog.pg_has_role(r.oid, 'automation_runner', 'USAGE')
                  FROM pg_catalog.pg_roles r WHERE r.oid = NEW.owner) THEN
            IF NOT superuser THEN
                RAISE EXCEPTION 'role "%" is not a member of automation_runner: a job runs as its owner, who needs it', NEW.username
                      USING ERRCODE = 'insufficient_privilege',
                            HINT = pg_catalog.format('GRANT automation_runner TO %I;', NEW.username);
            END IF;
            problem := pg_catalog.format('role "%s" is not a member of automation_runner (GRANT automation_runner TO %I)',
                                         NEW.username, NEW.username);
        END IF;
        -- (0.8.0) a database that takes no connections (template0) never runs a job
        IF problem IS NULL AND NOT (SELECT d.datallowconn FROM pg_catalog.pg_database d WHERE d.datname = NEW.database) THEN
            IF NOT superuser THEN
                RAISE EXCEPTION 'database "%" does not allow connections: a job there would never run', NEW.database
                      USING ERRCODE = 'object_not_in_prerequisite_state',
                            HINT = 'Schedule it in a database that allows connections (ALTER DATABASE ... WITH ALLOW_CONNECTIONS true).';
            END IF;
            problem := pg_catalog.format('database "%s" does not allow connections', NEW.database);
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

CREATE OR REPLACE FUNCTION automation.schedule(job_name text, schedule text, command text,
                                    timezone text DEFAULT NULL, retries integer DEFAULT NULL,
                                    retry_backoff interval DEFAULT NULL, overlap text DEFAULT NULL,
                                    priority integer DEFAULT NULL, log_runs text DEFAULT NULL,
                                    keep_runs integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    state text;
    msg text;
    detail text;
    hint text;
    id bigint;
BEGIN
    PERFORM automation.check_job_privilege('INSERT');
    -- the same name for the same role replaces the job (pg_cron's upsert),
    -- options included: one left out is back to its default
    BEGIN
        INSERT INTO automation.job AS j (jobname, schedule, command, timezone, retries, retry_backoff, overlap,
                                         priority, log_runs, keep_runs)
        VALUES (job_name, schedule.schedule, command, schedule.timezone, COALESCE(schedule.retries, 0),
                COALESCE(schedule.retry_backoff, interval '10 seconds'), COALESCE(schedule.overlap, 'skip'),
                COALESCE(schedule.priority, 0), schedule.log_runs, schedule.keep_runs)
        ON CONFLICT ON CONSTRAINT job_jobname_owner_key DO UPDATE
           SET schedule = EXCLUDED.schedule, command = EXCLUDED.command, timezone = EXCLUDED.timezone,
               retries = EXCLUDED.retries, retry_backoff = EXCLUDED.retry_backoff, overlap = EXCLUDED.overlap,
               priority = EXCLUDED.priority, log_runs = EXCLUDED.log_runs, keep_runs = EXCLUDED.keep_runs
        RETURNING j.jobid INTO id;
    EXCEPTION WHEN OTHERS THEN
        -- (0.8.0) the refusal (a bad schedule, a role or database the job
        -- may not have) without the internal statement in its CONTEXT
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT;
        IF detail <> '' AND hint <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, DETAIL = detail, HINT = hint;
        ELSIF detail <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, DETAIL = detail;
        ELSIF hint <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, HINT = hint;
        END IF;
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg;
    END;
    RETURN id;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.schedule(schedule text, command text)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT automation.check_job_privilege('INSERT');
    INSERT INTO automation.job (schedule, command) VALUES (schedule, command) RETURNING jobid
$fn$;

CREATE OR REPLACE FUNCTION automation.schedule_in_database(job_name text, schedule text, command text, database text,
                                                username text DEFAULT NULL, active boolean DEFAULT true,
                                                timeout interval DEFAULT NULL,
                                                timezone text DEFAULT NULL, retries integer DEFAULT NULL,
                                                retry_backoff interval DEFAULT NULL, overlap text DEFAULT NULL,
                                                priority integer DEFAULT NULL, log_runs text DEFAULT NULL,
                                                keep_runs integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    state text;
    msg text;
    detail text;
    hint text;
    id bigint;
    who text := COALESCE(username, CURRENT_USER::text);
BEGIN
    PERFORM automation.check_job_privilege('INSERT');
    PERFORM automation.check_job_target(database, who);
    BEGIN
        INSERT INTO automation.job AS j (jobname, schedule, command, database, username, active, timeout,
                                         timezone, retries, retry_backoff, overlap, priority, log_runs, keep_runs)
        VALUES (job_name, schedule_in_database.schedule, command, database, who, COALESCE(active, true), timeout,
                schedule_in_database.timezone, COALESCE(schedule_in_database.retries, 0),
                COALESCE(schedule_in_database.retry_backoff, interval '10 seconds'),
                COALESCE(schedule_in_database.overlap, 'skip'), COALESCE(schedule_in_database.priority, 0),
                schedule_in_database.log_runs, schedule_in_database.keep_runs)
        ON CONFLICT ON CONSTRAINT job_jobname_owner_key DO UPDATE
           SET schedule = EXCLUDED.schedule, command = EXCLUDED.command, database = EXCLUDED.database,
               active = EXCLUDED.active, timeout = EXCLUDED.timeout, timezone = EXCLUDED.timezone,
               retries = EXCLUDED.retries, retry_backoff = EXCLUDED.retry_backoff, overlap = EXCLUDED.overlap,
               priority = EXCLUDED.priority, log_runs = EXCLUDED.log_runs, keep_runs = EXCLUDED.keep_runs
        RETURNING j.jobid INTO id;
    EXCEPTION WHEN OTHERS THEN
        -- (0.8.0) the refusal (a bad schedule, a role or database the job
        -- may not have) without the internal statement in its CONTEXT
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT;
        IF detail <> '' AND hint <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, DETAIL = detail, HINT = hint;
        ELSIF detail <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, DETAIL = detail;
        ELSIF hint <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, HINT = hint;
        END IF;
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg;
    END;
    RETURN id;
END
$fn$;

CREATE OR REPLACE FUNCTION automation.alter_job(job_id bigint, schedule text DEFAULT NULL, command text DEFAULT NULL,
                                     database text DEFAULT NULL, username text DEFAULT NULL,
                                     active boolean DEFAULT NULL, timeout interval DEFAULT NULL,
                                     timezone text DEFAULT NULL, retries integer DEFAULT NULL,
                                     retry_backoff interval DEFAULT NULL, overlap text DEFAULT NULL,
                                     priority integer DEFAULT NULL, log_runs text DEFAULT NULL,
                                     keep_runs integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    state text;
    msg text;
    detail text;
    hint text;
    current automation.job;
BEGIN
    PERFORM automation.check_job_privilege('UPDATE');
    SELECT * INTO current FROM automation.job j WHERE j.jobid = job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'could not find valid entry for job %', job_id
              USING ERRCODE = 'undefined_object',
                    HINT = 'automation.job lists the jobs you own.';
    END IF;
    PERFORM automation.check_job_target(alter_job.database, COALESCE(alter_job.username, current.username));
    BEGIN
        UPDATE automation.job j
           SET schedule = COALESCE(alter_job.schedule, j.schedule),
               command  = COALESCE(alter_job.command, j.command),
               database = COALESCE(alter_job.database, j.database),
               username = COALESCE(alter_job.username, j.username),
               active   = COALESCE(alter_job.active, j.active),
               -- a zero timeout removes it
               timeout  = CASE WHEN alter_job.timeout IS NULL THEN j.timeout
                               WHEN alter_job.timeout = interval '0' THEN NULL
                               ELSE alter_job.timeout END,
               -- '' returns to automation.timezone / automation.log_runs; 0 removes the cap
               timezone = CASE WHEN alter_job.timezone IS NULL THEN j.timezone
                               ELSE NULLIF(alter_job.timezone, '') END,
               retries = COALESCE(alter_job.retries, j.retries),
               retry_backoff = COALESCE(alter_job.retry_backoff, j.retry_backoff),
               overlap = COALESCE(alter_job.overlap, j.overlap),
               priority = COALESCE(alter_job.priority, j.priority),
               log_runs = CASE WHEN alter_job.log_runs IS NULL THEN j.log_runs
                               ELSE NULLIF(alter_job.log_runs, '') END,
               keep_runs = CASE WHEN alter_job.keep_runs IS NULL THEN j.keep_runs
                                ELSE NULLIF(alter_job.keep_runs, 0) END
         WHERE j.jobid = job_id;
    EXCEPTION WHEN OTHERS THEN
        -- (0.8.0) the refusal (a bad schedule, a role or database the job
        -- may not have) without the internal statement in its CONTEXT
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT;
        IF detail <> '' AND hint <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, DETAIL = detail, HINT = hint;
        ELSIF detail <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, DETAIL = detail;
        ELSIF hint <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, HINT = hint;
        END IF;
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg;
    END;
END
$fn$;

COMMENT ON FUNCTION automation.schedule(text, text, text, text, integer, interval, text, integer, text, integer) IS
'pg_cron''s cron.schedule(job_name, schedule, command): schedule a command in this database as the current role; the same job_name again replaces that job. Optional: timezone (NULL: automation.timezone), retries and retry_backoff, overlap (skip, queue, parallel N), priority, log_runs (all, failures, none; NULL: automation.log_runs), keep_runs. Returns the jobid.';

COMMENT ON FUNCTION automation.schedule(text, text) IS
'pg_cron''s cron.schedule(schedule, command): an unnamed job. Returns the jobid.';

COMMENT ON FUNCTION automation.schedule_in_database(text, text, text, text, text, boolean, interval, text, integer, interval, text, integer, text, integer) IS
'pg_cron''s cron.schedule_in_database: run the command in another database (and, for superusers, as another role); timeout becomes the run''s statement_timeout; the other options as for schedule().';

COMMENT ON FUNCTION automation.alter_job(bigint, text, text, text, text, boolean, interval, text, integer, interval, text, integer, text, integer) IS
'pg_cron''s cron.alter_job: change what is not NULL; timeout => ''0'' removes the timeout, timezone => '''' and log_runs => '''' return to the settings, keep_runs => 0 removes the cap. Moving a job to another role needs superuser.';

COMMENT ON FUNCTION automation.job_check_target() IS
'Internal: trigger on automation.job checking, however a job is written, that the current role may schedule it as its role in its database; binds the job to the role''s oid and, for this database''s jobs, to this database.';

REVOKE EXECUTE ON FUNCTION automation.job_check_target(), automation.job_check_schedule(),
                           automation.job_default_removed(), automation.job_cache_invalidate() FROM PUBLIC;

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
        -- (0.8.0) asked of the library, not of shared_preload_libraries,
        -- which only superusers and pg_read_all_settings may read
        SELECT automation.step_workers_available() AS yes
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
    SELECT 'database', NULL, d.datname, 'fires waiting for a slot', NULL,
           pg_catalog.format('%s due fire(s) wait for a slot (automation.max_running_jobs = %s in this database; highest priority first, then oldest due)',
                             s.fires_waiting, pg_catalog.current_setting('automation.max_running_jobs'))
      FROM automation.scheduler_state() s JOIN pg_catalog.pg_database d ON d.oid = s.database_oid
     WHERE s.fires_waiting > 0
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

CREATE OR REPLACE FUNCTION automation.table_growth(schema_name text DEFAULT NULL)
RETURNS TABLE (schemaname name, tablename name, total_size text, table_size text,
               live_rows bigint, dead_rows bigint, total_bytes bigint, table_bytes bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- (0.8.0) a schema that does not exist is an error, as for describe_tables
    IF table_growth.schema_name IS NOT NULL
       AND NOT EXISTS (SELECT FROM pg_namespace n WHERE n.nspname = table_growth.schema_name) THEN
        RAISE EXCEPTION 'schema "%" does not exist', table_growth.schema_name
              USING ERRCODE = 'invalid_schema_name';
    END IF;
    RETURN QUERY
    SELECT u.schemaname, u.relname,
           pg_size_pretty(pg_total_relation_size(u.relid)), pg_size_pretty(pg_relation_size(u.relid)),
           u.n_live_tup, u.n_dead_tup,
           pg_total_relation_size(u.relid), pg_relation_size(u.relid)
      FROM pg_stat_user_tables u
     WHERE table_growth.schema_name IS NULL OR u.schemaname = table_growth.schema_name
     ORDER BY pg_total_relation_size(u.relid) DESC, u.schemaname, u.relname;
END
$fn$;

COMMENT ON FUNCTION automation.table_growth(text) IS
'User tables by total size (all schemas, or one), with live and dead row counts.';

CREATE OR REPLACE FUNCTION automation.live_metrics()
RETURNS TABLE (metric text, labels jsonb, value double precision)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF has_table_privilege('automation_workflows.execution_queue', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_queue_executions', jsonb_build_object('workflow', q.workflow_name, 'state', s.state),
               count(*)::float8
          FROM automation_workflows.execution_queue q
         CROSS JOIN LATERAL (SELECT CASE WHEN q.claimed_by IS NULL THEN 'pending' ELSE 'running' END AS state) s
         GROUP BY q.workflow_name, s.state;
        RETURN QUERY
        SELECT 'automation_queue_oldest_pending_seconds', jsonb_build_object('workflow', q.workflow_name),
               GREATEST(0, extract(epoch FROM now() - min(q.run_after)))::float8
          FROM automation_workflows.execution_queue q
         WHERE q.claimed_by IS NULL AND q.run_after <= now()
         GROUP BY q.workflow_name;
    END IF;
    IF has_table_privilege('automation_workflows.workflow_executions', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_workflow_executions_active', jsonb_build_object('workflow', e.workflow_name, 'status', e.status),
               count(*)::float8
          FROM automation_workflows.workflow_executions e
         WHERE e.status IN ('pending', 'running')
         GROUP BY e.workflow_name, e.status;
    END IF;
    IF has_table_privilege('automation_workflows.step_runs', 'SELECT') THEN
        RETURN QUERY
        -- (0.8.0) SQL steps have no queue: "(sql)", not "null"
        SELECT 'automation_workflow_steps', jsonb_build_object('queue', coalesce(r.queue, '(sql)'), 'status', r.status), count(*)::float8
          FROM automation_workflows.step_runs r
         WHERE r.status IN ('pending', 'running')
         GROUP BY r.queue, r.status;
    END IF;
    -- (0.8.0) what to alert on: executions finished by workflow and status
    -- (counters), the share of executions of the last hour that succeeded,
    -- open errors and dead letters
    IF has_table_privilege('automation.execution_stats', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_executions_finished_total', jsonb_build_object('workflow', x.workflow_name, 'status', x.status),
               sum(x.finished)::float8
          FROM automation.execution_stats x
         GROUP BY x.workflow_name, x.status;
    END IF;
    IF has_table_privilege('automation_workflows.workflow_executions', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_workflow_success_ratio', jsonb_build_object('workflow', e.workflow_name::text),
               (count(*) FILTER (WHERE e.status = 'success'))::float8 / count(*)
          FROM automation_workflows.workflow_executions e
         WHERE e.completed_at > now() - interval '1 hour' AND e.status IN ('success', 'error', 'timeout')
         GROUP BY e.workflow_name;
    END IF;
    IF has_table_privilege('automation.errors', 'SELECT') THEN
        RETURN QUERY
        SELECT c.metric, jsonb_build_object('workflow', coalesce(r.workflow_name::text, '')), c.n::float8
          FROM (SELECT r.workflow_name,
                       count(*) FILTER (WHERE r.dead_lettered_at IS NULL) AS open,
                       count(*) FILTER (WHERE r.dead_lettered_at IS NOT NULL) AS dead
                  FROM automation.errors r WHERE r.resolved_at IS NULL
                 GROUP BY r.workflow_name) r
         CROSS JOIN LATERAL (VALUES ('automation_errors_open', r.open), ('automation_dead_letters', r.dead)) c(metric, n)
         WHERE c.n > 0;
    END IF;
    IF has_table_privilege('automation.pipeline_metrics', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_pipeline_success_ratio', jsonb_build_object('pipeline', m.pipeline_name::text),
               (count(*) FILTER (WHERE m.status = 'success'))::float8 / count(*)
          FROM automation.pipeline_metrics m
         WHERE m.time > now() - interval '1 hour' AND m.time <= now()
         GROUP BY m.pipeline_name;
    END IF;
    -- 0.6.0: runs counted by the scheduler (job_run_stats), whatever the
    -- history keeps; histograms over every job of the database (0.8.0:
    -- through job_histograms(), which the exporter file reads too)
    IF has_table_privilege('automation.job_run_stats', 'SELECT') AND has_table_privilege('automation.job', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_job_runs_total', jsonb_build_object('job', coalesce(j.jobname, s.jobid::text), 'status', c.status),
               c.n::float8
          FROM automation.job_run_stats s JOIN automation.job j ON j.jobid = s.jobid
         CROSS JOIN LATERAL (VALUES ('succeeded', s.succeeded), ('failed', s.failed), ('skipped', s.skipped)) c(status, n);
        RETURN QUERY
        SELECT x.metric, x.labels, x.value FROM (
            SELECT h.metric || '_bucket' AS metric,
                   jsonb_build_object('__name__', h.metric || '_bucket', 'le', b.bound::text) AS labels,
                   b.n::float8 AS value, h.metric AS family, b.i AS ord
              FROM automation.job_histograms() h
             CROSS JOIN LATERAL unnest(h.bounds, h.buckets) WITH ORDINALITY b(bound, n, i)
            UNION ALL
            SELECT h.metric || '_bucket', jsonb_build_object('__name__', h.metric || '_bucket', 'le', '+Inf'), h.count::float8,
                   h.metric, 1000000
              FROM automation.job_histograms() h
            UNION ALL
            SELECT h.metric || '_sum', jsonb_build_object('__name__', h.metric || '_sum'), h.sum, h.metric, 1000001
              FROM automation.job_histograms() h
            UNION ALL
            SELECT h.metric || '_count', jsonb_build_object('__name__', h.metric || '_count'), h.count::float8, h.metric, 1000002
              FROM automation.job_histograms() h
        ) x ORDER BY x.family, x.ord;
    END IF;
    IF has_table_privilege('automation.job_run_details', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_job_runs_active', '{}'::jsonb, count(*)::float8
          FROM automation.job_run_details d WHERE d.status IN ('starting', 'running');
    END IF;
    -- (0.8.0) is the launcher running (1) or not (0): what an alert watches
    -- (pg_stat_activity shows background workers to every role)
    RETURN QUERY
    SELECT 'automation_launcher_running', '{}'::jsonb,
           (EXISTS (SELECT FROM pg_catalog.pg_stat_activity a WHERE a.backend_type = 'automation_ext launcher'))::integer::float8;
    -- (0 while the launcher does not know this database: nothing waits then)
    RETURN QUERY
    SELECT 'automation_jobs_waiting_for_slot', '{}'::jsonb,
           COALESCE((SELECT (s.runs_waiting + s.fires_waiting)::float8
                       FROM automation.scheduler_state() s
                      WHERE s.database_oid = (SELECT d.oid FROM pg_catalog.pg_database d
                                               WHERE d.datname = current_database())), 0);
END
$fn$;

COMMENT ON FUNCTION automation.live_metrics() IS
'The live state that metrics_exposition() adds to the latest sample: queue depth and oldest pending age per workflow, active executions, pending and running steps, last-hour pipeline success ratio, job runs by job and status (counted by the scheduler), run-duration and start-lateness histograms, runs active, fires waiting for a slot (each part if the caller may read its table).';

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

GRANT EXECUTE ON FUNCTION automation.workflow_table_trigger() TO automation_runner;

GRANT EXECUTE ON FUNCTION automation.workflow_in_use_by_others(text, oid) TO automation_runner;

-- owners default to the role that writes the row
ALTER TABLE automation_workflows.definitions ALTER COLUMN owner SET DEFAULT automation.invoker();
ALTER TABLE automation_workflows.workflow_executions ALTER COLUMN owner SET DEFAULT automation.invoker();
ALTER TABLE automation_triggers.registry ALTER COLUMN owner SET DEFAULT automation.invoker();
ALTER TABLE automation_workflows.execution_queue ALTER COLUMN owner SET DEFAULT automation.invoker();
ALTER TABLE automation_workflows.execution_log ALTER COLUMN owner SET DEFAULT automation.invoker();
ALTER TABLE automation.errors ALTER COLUMN owner SET DEFAULT automation.invoker();


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

-- the executions view shows each execution's owner
CREATE OR REPLACE VIEW automation.executions WITH (security_invoker = true) AS
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

-- row-level security (see the install files for why each)
CREATE TRIGGER definitions_rights_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON automation_workflows.definitions
    FOR EACH STATEMENT EXECUTE FUNCTION automation.workflow_rights_changed();
CREATE TRIGGER workflow_grants_rights_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON automation_workflows.workflow_grants
    FOR EACH STATEMENT EXECUTE FUNCTION automation.workflow_rights_changed();

ALTER TABLE automation_workflows.definitions ENABLE ROW LEVEL SECURITY;
CREATE POLICY definitions_read ON automation_workflows.definitions FOR SELECT
    USING (automation.may_act_as(owner) OR automation.may_read_workflow(name::text));
CREATE POLICY definitions_insert ON automation_workflows.definitions FOR INSERT
    WITH CHECK (automation.may_act_as(owner));
CREATE POLICY definitions_update ON automation_workflows.definitions FOR UPDATE
    USING (automation.may_act_as(owner)) WITH CHECK (automation.may_act_as(owner));
CREATE POLICY definitions_delete ON automation_workflows.definitions FOR DELETE
    USING (automation.may_act_as(owner));

ALTER TABLE automation_workflows.workflow_grants ENABLE ROW LEVEL SECURITY;
CREATE POLICY workflow_grants_read ON automation_workflows.workflow_grants FOR SELECT
    USING (automation.may_read_workflow(workflow_name::text));

ALTER TABLE automation_workflows.workflow_executions ENABLE ROW LEVEL SECURITY;
CREATE POLICY workflow_executions_read ON automation_workflows.workflow_executions FOR SELECT
    USING (automation.may_read(owner, workflow_name::text));
CREATE POLICY workflow_executions_insert ON automation_workflows.workflow_executions FOR INSERT
    WITH CHECK (automation.may_act_as(owner));
CREATE POLICY workflow_executions_update ON automation_workflows.workflow_executions FOR UPDATE
    USING (automation.may_act_as(owner)) WITH CHECK (automation.may_act_as(owner));

ALTER TABLE automation_triggers.registry ENABLE ROW LEVEL SECURITY;
CREATE POLICY registry_read ON automation_triggers.registry FOR SELECT
    USING (automation.may_read(owner, NULL));
CREATE POLICY registry_insert ON automation_triggers.registry FOR INSERT
    WITH CHECK (automation.may_act_as(owner));
CREATE POLICY registry_update ON automation_triggers.registry FOR UPDATE
    USING (automation.may_act_as(owner)) WITH CHECK (automation.may_act_as(owner));
CREATE POLICY registry_delete ON automation_triggers.registry FOR DELETE
    USING (automation.may_act_as(owner));

ALTER TABLE automation_workflows.workflow_runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY workflow_runs_read ON automation_workflows.workflow_runs FOR SELECT
    USING (automation.may_read(owner, workflow_name));
ALTER TABLE automation_workflows.step_runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY step_runs_read ON automation_workflows.step_runs FOR SELECT
    USING (EXISTS (SELECT FROM automation_workflows.workflow_runs w
                    WHERE w.execution_id OPERATOR(pg_catalog.=) step_runs.execution_id));

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

-- jobs: also the jobs of roles one may SET ROLE to
DROP POLICY job_owner_policy ON automation.job;
CREATE POLICY job_owner_policy ON automation.job
    USING (automation.may_act_as(owner))
    WITH CHECK (automation.may_act_as(owner));

-- what automation_runner may do with each table (roles.sql): the queue, the
-- runs, the inbox and the grants only through the functions
REVOKE ALL ON automation_workflows.execution_queue, automation_workflows.execution_log,
              automation_workflows.workflow_runs, automation_workflows.step_runs,
              automation_workflows.trigger_inbox
  FROM automation_runner, automation_monitor;
GRANT SELECT ON automation_workflows.execution_queue, automation_workflows.execution_log,
                automation_workflows.workflow_runs, automation_workflows.step_runs,
                automation_workflows.workflow_grants
   TO automation_runner;
GRANT SELECT ON automation_workflows.execution_queue, automation_workflows.execution_log,
                automation_workflows.workflow_runs, automation_workflows.step_runs
   TO automation_monitor;
COMMENT ON TABLE automation_workflows.trigger_inbox IS
    'Changes seen by table triggers of automation_triggers.registry (rows as text, one entry per statement up to a million rows), waiting for the scheduler to start one execution per row as the trigger''s owner (automation.drain_trigger_inbox).';
GRANT DELETE ON automation_workflows.definitions, automation_triggers.registry TO automation_runner;
GRANT SELECT ON automation.workflow_progress TO automation_runner, automation_monitor;
GRANT EXECUTE ON FUNCTION automation.workflow_table_trigger() TO automation_runner;
GRANT EXECUTE ON FUNCTION automation.workflow_in_use_by_others(text, oid) TO automation_runner;
GRANT SELECT ON automation_workflows.workflow_grants TO automation_monitor;

-- (issue 29) a schedule trigger's job paused, resumed or unscheduled by
-- hand pauses or resumes the trigger
CREATE TRIGGER job_trigger_sync
    AFTER UPDATE OF active OR DELETE ON automation.job
    FOR EACH ROW EXECUTE FUNCTION automation.trigger_job_changed();

-- (issue 29) finished executions counted; the monitor reads jobs and counters
CREATE TRIGGER workflow_executions_count_inserted
    AFTER INSERT ON automation_workflows.workflow_executions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION automation.count_finished_executions();
CREATE TRIGGER workflow_executions_count_finished
    AFTER UPDATE ON automation_workflows.workflow_executions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION automation.count_finished_executions();
CREATE POLICY job_monitor_read ON automation.job FOR SELECT TO automation_monitor
    USING (true);
GRANT SELECT ON automation.job, automation.job_run_details, automation.job_run_stats, automation.execution_stats
   TO automation_monitor;

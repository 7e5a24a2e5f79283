-- automation_workflows: workflow definitions and their executions.

CREATE SCHEMA automation_workflows;
COMMENT ON SCHEMA automation_workflows IS 'automation_ext: workflow definitions and executions';

CREATE TABLE automation_workflows.definitions (
    id         serial       PRIMARY KEY,
    name       varchar(255) NOT NULL UNIQUE,
    version    integer      NOT NULL DEFAULT 1,
    definition jsonb        NOT NULL,
    created_at timestamptz  NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz  NOT NULL DEFAULT pg_catalog.now(),
    is_active  boolean      NOT NULL DEFAULT true,
    -- 0.8.0: the role the definition belongs to (the role that wrote it, or
    -- one it may SET ROLE to): it alone (and roles that may act as it)
    -- changes it, and only its triggers start it; others run it only when
    -- granted (automation.grant_workflow)
    owner      regrole      NOT NULL DEFAULT automation.invoker(),
    CONSTRAINT definitions_name_check CHECK (name <> ''),
    CONSTRAINT definitions_version_check CHECK (version >= 1)
);

-- The seed's partial index on active definitions.
CREATE INDEX idx_active_workflows
    ON automation_workflows.definitions (id)
    WHERE is_active;

COMMENT ON TABLE automation_workflows.definitions IS
    'Workflow definitions; updated_at is maintained by a trigger.';

-- Keep updated_at honest: the seed declares it but nothing ever set it.
CREATE FUNCTION automation_workflows.touch_updated_at()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
    NEW.updated_at := pg_catalog.now();
    RETURN NEW;
END
$body$;

CREATE TRIGGER trg_definitions_touch_updated_at
    BEFORE UPDATE ON automation_workflows.definitions
    FOR EACH ROW EXECUTE FUNCTION automation_workflows.touch_updated_at();

-- One row per run of a workflow. Status values:
--   pending   queued, not started       running   in progress
--   success   finished well             error     finished with a failure
--   timeout   given up on by a sweep    cancelled stopped on purpose
--   retrying  an error being retried (the seed's own word)
CREATE TABLE automation_workflows.workflow_executions (
    id            uuid         NOT NULL DEFAULT pg_catalog.gen_random_uuid() PRIMARY KEY,
    workflow_name varchar(255) NOT NULL,
    status        varchar(50)  NOT NULL,
    started_at    timestamptz  DEFAULT pg_catalog.now(),
    completed_at  timestamptz,
    metadata      jsonb,
    error_details jsonb,
    -- the workflow runtime (sql/runtime.sql): a pending execution is not
    -- claimable before run_after; a claimed one belongs to claimed_by until
    -- lease_expires_at; attempts counts claims; retry_of links a retry to the
    -- execution whose failure it retries
    run_after        timestamptz,
    claimed_by       text,
    lease_expires_at timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    -- (0.4.0: no foreign key; history is recorded asynchronously and purged
    -- by age, so the execution retried may be recorded later or be gone)
    retry_of         uuid,
    -- 0.8.0: the role that started it (run_workflow, start_execution,
    -- enqueue_execution, or a trigger's owner)
    owner            regrole NOT NULL DEFAULT automation.invoker(),
    CONSTRAINT workflow_executions_attempts_check CHECK (attempts >= 0),
    CONSTRAINT workflow_executions_status_check
        CHECK (status IN ('pending', 'running', 'success', 'error', 'timeout', 'cancelled', 'retrying')),
    CONSTRAINT workflow_executions_completed_after_started_check
        CHECK (completed_at >= started_at)
);

-- The seed's indexes, under the seed's names.
CREATE INDEX idx_workflow_metadata
    ON automation_workflows.workflow_executions USING gin (metadata);
CREATE INDEX idx_workflow_time_brin
    ON automation_workflows.workflow_executions USING brin (started_at);
CREATE INDEX idx_workflow_status_time
    ON automation_workflows.workflow_executions (workflow_name, status, started_at DESC);
CREATE INDEX idx_workflow_name_lower
    ON automation_workflows.workflow_executions (pg_catalog.lower(workflow_name));

-- What claim_executions and timeout_stale_executions scan.
CREATE INDEX workflow_executions_claimable
    ON automation_workflows.workflow_executions (workflow_name, run_after)
    WHERE status = 'pending';
CREATE INDEX workflow_executions_leased
    ON automation_workflows.workflow_executions (workflow_name, lease_expires_at)
    WHERE status = 'running';
CREATE INDEX workflow_executions_running_since
    ON automation_workflows.workflow_executions (started_at)
    WHERE status = 'running';
CREATE INDEX workflow_executions_retry_of
    ON automation_workflows.workflow_executions (retry_of)
    WHERE retry_of IS NOT NULL;

-- (0.8.0) newest first, keyset-paginated (the console's lists): every
-- execution, the failed ones, and one workflow's. (0.14.0) In ascending
-- order, read backwards: newest first all the same, but a new execution's
-- entry goes to the index's right end, where a full page splits 90/10 and
-- the pages left behind stay full; in descending order it went to the left
-- end, where pages split in halves that were never filled again (the
-- newest-first index of every execution was 1.7 times the size).
CREATE INDEX workflow_executions_recent
    ON automation_workflows.workflow_executions (started_at, id);
CREATE INDEX workflow_executions_failed_recent
    ON automation_workflows.workflow_executions (started_at, id)
    WHERE status IN ('error', 'timeout', 'cancelled');
CREATE INDEX workflow_executions_workflow_recent
    ON automation_workflows.workflow_executions (workflow_name, started_at, id);

COMMENT ON TABLE automation_workflows.workflow_executions IS
    'One row per workflow run; status is one of pending, running, success, error, timeout, cancelled, retrying.';

SELECT pg_catalog.pg_extension_config_dump('automation_workflows.definitions', '');
SELECT pg_catalog.pg_extension_config_dump('automation_workflows.definitions_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('automation_workflows.workflow_executions', '');

-- 0.3.0: a trigger function of the extension's own tables; nobody else
-- attaches it to anything.
REVOKE EXECUTE ON FUNCTION automation_workflows.touch_updated_at() FROM PUBLIC;

------------------------------------------------------------------------------
-- 0.8.0 (issue 27): who may do what with a workflow and its executions.
--
-- A workflow name belongs to the owner of its definition. The owner (and the
-- roles that may SET ROLE to it) change the definition, grant it, and manage
-- every execution of it; a role granted 'run' may start it (its SQL steps
-- then run as that role, which chose to start it); a role granted 'work'
-- may claim, complete and fail its queue executions and queue steps, and
-- read its executions. The owner of an execution (the role that started
-- it, or a trigger's owner) manages that execution. automation_monitor reads
-- everything. A name without a definition belongs to nobody: its executions
-- are each their owner's alone.

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

-- The rights a role has on a workflow name (src/tenancy.rs; looked up once
-- per transaction and name, as the extension's owner so that row-level
-- security does not recurse).
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
CREATE TRIGGER definitions_rights_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON automation_workflows.definitions
    FOR EACH STATEMENT EXECUTE FUNCTION automation.workflow_rights_changed();
CREATE TRIGGER workflow_grants_rights_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON automation_workflows.workflow_grants
    FOR EACH STATEMENT EXECUTE FUNCTION automation.workflow_rights_changed();

-- Definitions: each role reads what it owns, runs or works (monitors read
-- all), and writes only its own.
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

-- Executions: a role reads what it may act on; writes its own rows (the
-- seed's direct INSERT and UPDATE); the queue and the engine change theirs
-- only through their functions.
ALTER TABLE automation_workflows.workflow_executions ENABLE ROW LEVEL SECURITY;
CREATE POLICY workflow_executions_read ON automation_workflows.workflow_executions FOR SELECT
    USING (automation.may_read(owner, workflow_name::text));
CREATE POLICY workflow_executions_insert ON automation_workflows.workflow_executions FOR INSERT
    WITH CHECK (automation.may_act_as(owner));
CREATE POLICY workflow_executions_update ON automation_workflows.workflow_executions FOR UPDATE
    USING (automation.may_act_as(owner)) WITH CHECK (automation.may_act_as(owner));

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

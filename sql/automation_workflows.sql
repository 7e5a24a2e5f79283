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

COMMENT ON TABLE automation_workflows.workflow_executions IS
    'One row per workflow run; status is one of pending, running, success, error, timeout, cancelled, retrying.';

SELECT pg_catalog.pg_extension_config_dump('automation_workflows.definitions', '');
SELECT pg_catalog.pg_extension_config_dump('automation_workflows.definitions_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('automation_workflows.workflow_executions', '');

-- 0.3.0: a trigger function of the extension's own tables; nobody else
-- attaches it to anything.
REVOKE EXECUTE ON FUNCTION automation_workflows.touch_updated_at() FROM PUBLIC;

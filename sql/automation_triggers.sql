-- automation_triggers: what starts a workflow (schedules, webhooks, events).

CREATE SCHEMA automation_triggers;
COMMENT ON SCHEMA automation_triggers IS 'automation_ext: registry of workflow triggers';

CREATE TABLE automation_triggers.registry (
    id            serial       PRIMARY KEY,
    trigger_type  varchar(100) NOT NULL,
    source_system varchar(100),
    config        jsonb        NOT NULL,
    -- No ON DELETE action: deleting a definition that still has triggers is
    -- an error rather than a silent loss of the triggers.
    workflow_id   integer      REFERENCES automation_workflows.definitions (id),
    last_fired_at timestamptz,
    next_fire_at  timestamptz,
    -- 0.8.0: the role the trigger belongs to; its executions start as it
    owner         regrole      NOT NULL DEFAULT automation.invoker(),
    -- 0.8.0: false pauses the trigger (its job, its table triggers, its
    -- manual fires); inactive_reason says why when the extension paused it
    enabled       boolean      NOT NULL DEFAULT true,
    inactive_reason text,
    -- 0.8.0: fires skipped by the trigger's overlap (skip, queue)
    skipped_fires   bigint       NOT NULL DEFAULT 0,
    last_skipped_at timestamptz,
    CONSTRAINT registry_trigger_type_check CHECK (trigger_type <> '')
);

-- Foreign keys are not indexed by PostgreSQL; deletes on definitions need it.
CREATE INDEX registry_workflow_id
    ON automation_triggers.registry (workflow_id);
-- "Which triggers are due?"
CREATE INDEX registry_next_fire_at
    ON automation_triggers.registry (next_fire_at)
    WHERE next_fire_at IS NOT NULL;

COMMENT ON TABLE automation_triggers.registry IS
    'Registered workflow triggers and when they fired / fire next.';

SELECT pg_catalog.pg_extension_config_dump('automation_triggers.registry', '');
SELECT pg_catalog.pg_extension_config_dump('automation_triggers.registry_id_seq', '');

-- 0.8.0 (issue 27): each role reads and writes the triggers of the roles it
-- may act as (monitors read all); registry_check says why a write is refused.
ALTER TABLE automation_triggers.registry ENABLE ROW LEVEL SECURITY;
CREATE POLICY registry_read ON automation_triggers.registry FOR SELECT
    USING (automation.may_read(owner, NULL));
CREATE POLICY registry_insert ON automation_triggers.registry FOR INSERT
    WITH CHECK (automation.may_act_as(owner));
CREATE POLICY registry_update ON automation_triggers.registry FOR UPDATE
    USING (automation.may_act_as(owner)) WITH CHECK (automation.may_act_as(owner));
CREATE POLICY registry_delete ON automation_triggers.registry FOR DELETE
    USING (automation.may_act_as(owner));

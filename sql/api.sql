-- The seed's API-facing workflow table, with row-level security: every role
-- sees and changes only the rows it created. (0.2.0)

CREATE TABLE automation_workflows.api_workflows (
    id         uuid         NOT NULL DEFAULT pg_catalog.gen_random_uuid() PRIMARY KEY,
    name       varchar(255) NOT NULL,
    definition jsonb        NOT NULL,
    -- the owner of the row: defaults to the role inserting it, and the
    -- policy below refuses any other value (no forging on INSERT or UPDATE)
    created_by varchar(100) NOT NULL DEFAULT CURRENT_USER,
    created_at timestamptz  NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz  NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT api_workflows_name_check CHECK (name <> ''),
    -- names are unique per owner; another role may use the same name
    CONSTRAINT api_workflows_created_by_name_key UNIQUE (created_by, name)
);

CREATE TRIGGER trg_api_workflows_touch_updated_at
    BEFORE UPDATE ON automation_workflows.api_workflows
    FOR EACH ROW EXECUTE FUNCTION automation_workflows.touch_updated_at();

ALTER TABLE automation_workflows.api_workflows ENABLE ROW LEVEL SECURITY;
-- FORCE: the owning role is subject to the policy too (superusers and
-- BYPASSRLS roles still see everything, as PostgreSQL always allows).
ALTER TABLE automation_workflows.api_workflows FORCE ROW LEVEL SECURITY;

-- USING filters what a role can see, update and delete; WITH CHECK refuses a
-- new or updated row whose created_by is not the current role.
CREATE POLICY api_access_policy ON automation_workflows.api_workflows
    USING (created_by OPERATOR(pg_catalog.=) CURRENT_USER::text)
    WITH CHECK (created_by OPERATOR(pg_catalog.=) CURRENT_USER::text);

COMMENT ON TABLE automation_workflows.api_workflows IS
    'Workflows registered through an API; row-level security: a role sees and changes only the rows whose created_by is that role.';

-- The seed's v_workflow_status, over api_workflows. security_invoker: the
-- policy above is applied as the querying role, so the view shows each role
-- its own workflows only. (automation.v_workflow_status is the same summary
-- over automation_workflows.definitions.)
CREATE VIEW automation_workflows.v_api_workflow_status WITH (security_invoker = true) AS
SELECT wf.id,
       wf.name,
       wf.created_by,
       count(we.id) AS total_executions,
       count(we.id) FILTER (WHERE we.status = 'success') AS successes,
       count(we.id) FILTER (WHERE we.status = 'error') AS errors,
       avg(extract(epoch FROM we.completed_at - we.started_at)) AS avg_duration_seconds
  FROM automation_workflows.api_workflows wf
  LEFT JOIN automation_workflows.workflow_executions we ON we.workflow_name = wf.name
 GROUP BY wf.id, wf.name, wf.created_by;

COMMENT ON VIEW automation_workflows.v_api_workflow_status IS
    'Execution summary of the calling role''s api_workflows (row-level security applies through the view).';

SELECT pg_catalog.pg_extension_config_dump('automation_workflows.api_workflows', '');

-- The completion NOTIFY trigger (src/notify.rs).

CREATE FUNCTION automation.attach_completion_notify(target regclass, channel text DEFAULT NULL)
RETURNS text
LANGUAGE c VOLATILE CALLED ON NULL INPUT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'attach_completion_notify_wrapper';

COMMENT ON FUNCTION automation.attach_completion_notify(regclass, text) IS
'Install (or replace) trg_notify_workflow_completion on a table with columns id and status: after an UPDATE moves status into success, error or timeout, NOTIFY channel (automation.notify_channel when NULL) with {workflow_id, workflow_name, status, duration}. Returns the trigger definition.';

CREATE FUNCTION automation.detach_completion_notify(target regclass)
RETURNS boolean
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'detach_completion_notify_wrapper';

COMMENT ON FUNCTION automation.detach_completion_notify(regclass) IS
'Remove trg_notify_workflow_completion from a table. Returns whether it was there.';

COMMENT ON FUNCTION automation.notify_workflow_completion() IS
'Trigger function behind trg_notify_workflow_completion; install it with automation.attach_completion_notify().';

-- The seed's trigger on workflow_executions, channel from automation.notify_channel.
SELECT automation.attach_completion_notify('automation_workflows.workflow_executions');

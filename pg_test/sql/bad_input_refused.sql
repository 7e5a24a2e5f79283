-- Issue 15 (6): values that make no sense were accepted silently.
CREATE EXTENSION IF NOT EXISTS automation_ext;
\set VERBOSITY terse
SELECT automation.start_execution('ok') AS running_id \gset
-- a negative or zero age would time out executions that just started
SELECT * FROM automation.timeout_stale_executions('-1 hour');
SELECT * FROM automation.timeout_stale_executions('0');
SELECT * FROM automation.timeout_stale_executions(NULL);
SELECT status FROM automation_workflows.workflow_executions WHERE id = :'running_id';
-- NULL ids are an error, as an unknown id is
SELECT automation.complete_execution(NULL);
SELECT automation.complete_executions(NULL);
SELECT automation.complete_executions(ARRAY[NULL]::uuid[]);
SELECT automation.complete_executions(ARRAY[:'running_id', NULL]::uuid[]);
SELECT automation.fail_execution(NULL, 'x', 'y');
SELECT automation.extend_lease(NULL, 'w');
SELECT automation.complete_execution('00000000-0000-0000-0000-000000000000');
SELECT automation.complete_executions('{}') AS nothing_to_do;
-- metadata is an object
SELECT automation.start_execution('ok', '[1,2]');
SELECT automation.start_execution('ok', '"str"');
SELECT automation.enqueue_execution('ok', '42');
SELECT automation.complete_execution(:'running_id', '[1]');
SELECT automation.start_execution('ok', NULL) IS NOT NULL AS null_metadata_is_empty;
SELECT automation.complete_execution(:'running_id', '{"rows": 1}');
SELECT status, metadata FROM automation_workflows.workflow_executions WHERE id = :'running_id';
\set VERBOSITY default
DELETE FROM automation_workflows.workflow_executions WHERE workflow_name = 'ok';

-- automation_ext 0.13.0 -> 0.14.0
--
-- Frozen once released, like every upgrade script. Runs with search_path =
-- pg_catalog; everything is schema-qualified. pg_test/sql/upgrade.sql checks
-- that an upgraded database has exactly the catalog of a fresh install.
--
-- 0.14.0, issue 33 (the history's size under a busy queue): the console's
-- newest-first indexes of workflow_executions are built in ascending order
-- and read backwards: a new execution's entry goes to an index's right
-- end, where pages split 90/10 and stay full, instead of its left end,
-- where they split in halves never filled again.
--
-- The three indexes are built again here: ALTER EXTENSION holds
-- workflow_executions (its readers included) until they are built, about
-- a second per million executions each (docs/upgrades.md). Completions go
-- on meanwhile: they wait in the execution log, and the scheduler, which
-- never waits for the history's lock, records them afterwards.

DROP INDEX automation_workflows.workflow_executions_recent;
CREATE INDEX workflow_executions_recent
    ON automation_workflows.workflow_executions (started_at, id);
DROP INDEX automation_workflows.workflow_executions_failed_recent;
CREATE INDEX workflow_executions_failed_recent
    ON automation_workflows.workflow_executions (started_at, id)
    WHERE status IN ('error', 'timeout', 'cancelled');
DROP INDEX automation_workflows.workflow_executions_workflow_recent;
CREATE INDEX workflow_executions_workflow_recent
    ON automation_workflows.workflow_executions (workflow_name, started_at, id);

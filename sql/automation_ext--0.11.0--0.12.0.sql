-- automation_ext 0.11.0 -> 0.12.0
--
-- Frozen once released, like every upgrade script. Runs with search_path =
-- pg_catalog; everything is schema-qualified. pg_test/sql/upgrade.sql checks
-- that an upgraded database has exactly the catalog of a fresh install.
--
-- 0.12.0, issue 33 (the queue's hot path, bench/claim.sh):
-- * execution_queue's fillfactor goes from 80 to 50, so that a claim's new
--   row version stays on its page (a HOT update: no insert into the primary
--   key and the claim index). Pages written before the upgrade keep what
--   they hold; rows enqueued from now on leave half of each page free.
-- * automation.may_work loses its SET clause, so that the planner inlines it
--   into complete_executions, fail_execution and extend_lease, which ask it
--   for every row; it qualifies every name.

ALTER TABLE automation_workflows.execution_queue SET (fillfactor = 50);

ALTER FUNCTION automation.may_work(oid, oid, text) RESET search_path;

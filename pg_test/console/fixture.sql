-- The console's browser test: a database with succeeded, failed, running
-- and waiting executions, a schedule trigger, a job, errors, a queue, and
-- values that would be markup if they were not escaped.
CREATE EXTENSION automation_ext;
CREATE TABLE console_flag (ok boolean);
INSERT INTO console_flag VALUES (false);
CREATE TABLE console_items (n int);
INSERT INTO console_items SELECT generate_series(1, 3);

INSERT INTO automation_workflows.definitions (name, definition) VALUES
 ('ok-flow', '{"steps": [
    {"name": "extract", "sql": "SELECT jsonb_build_object(''items'', (SELECT jsonb_agg(n) FROM console_items))"},
    {"name": "each", "after": ["extract"], "map": "$.extract.items", "sql": "SELECT automation.step_input()->''item''"},
    {"name": "load", "after": ["each"], "sql": "SELECT 42"}]}'),
 ('fail-flow', '{"steps": [
    {"name": "prepare", "sql": "SELECT 1"},
    {"name": "flaky", "after": ["prepare"], "sql": "SELECT 1 / (SELECT CASE WHEN ok THEN 1 ELSE 0 END FROM console_flag)"},
    {"name": "finish", "after": ["flaky"], "sql": "SELECT 2"}]}'),
 ('wait-flow', '{"steps": [{"name": "outside", "queue": "console-outside"}]}'),
 ('slow-flow', '{"steps": [{"name": "sleep", "sql": "SELECT pg_sleep(600)"}]}'),
 ('<script>alert("name")</script>', '{"steps": [{"name": "x", "sql": "SELECT ''<img src=x onerror=alert(1)>''::text AS markup"}]}');

SELECT automation.run_workflow('ok-flow') FROM generate_series(1, 3);
SELECT automation.run_workflow('fail-flow');
SELECT automation.run_workflow('wait-flow');
SELECT automation.run_workflow('slow-flow');
SELECT automation.run_workflow('<script>alert("name")</script>');
SELECT automation.enqueue_execution('console-queue', '{"k": 1}');

-- a schedule trigger that fires every 2 seconds (the test pauses it)
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'schedule', '{"cron": "2 seconds", "overlap": "parallel", "input": {"by": "trigger"}}', id
  FROM automation_workflows.definitions WHERE name = 'wait-flow';
-- a job
SELECT automation.schedule('console-job', '1 seconds', 'SELECT 1');
-- a job that fails: the jobs page shows why at a glance
SELECT automation.schedule('console-failing-job', '1 seconds', 'SELECT 1/0');

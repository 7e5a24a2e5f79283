-- Issue 28: no row stops a worker, and nonsense input is refused with a
-- clean SQLSTATE (22023 nonsense, 22008 infinity, 3F000 missing schema),
-- never accepted silently and never XX000. Each case is a reproduction
-- measured on 0.7.0.
CREATE EXTENSION IF NOT EXISTS automation_ext;
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_rb_alice;
RESET client_min_messages;
CREATE ROLE regress_rb_alice LOGIN IN ROLE automation_runner;
-- try(sql): the SQLSTATE and message of the error sql raises (or 'ok')
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE state text; msg text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    RETURN state || ': ' || msg;
END $$;

------------------------------------------------------------------------------
-- 7. a metric at infinity (0.7.0: partition maintenance failed every run,
-- 22004) is refused; maintenance runs
SET ROLE regress_rb_alice;
SELECT pg_temp.try($$INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage) VALUES ('infinity', 'p', 's')$$);
SELECT pg_temp.try($$INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage) VALUES ('-infinity', 'p', 's')$$);
RESET ROLE;
SELECT count(*) > 0 AS maintained FROM automation.maintain_metrics_partitions();
-- staged, it is rejected with its reason, not flushed
INSERT INTO automation.metrics_staging (payload) VALUES ('{"time": "infinity", "pipeline_name": "p", "stage": "s"}');
INSERT INTO automation.metrics_staging (time, pipeline_name, stage) VALUES ('infinity', 'p', 's');
SELECT reason FROM automation.metrics_staging_checked ORDER BY 1;
DELETE FROM automation.metrics_staging;

------------------------------------------------------------------------------
-- 8. a definition nested deeper than the JSON parser allows (0.7.0: XX000
-- "recursion limit exceeded" at ~127 levels)
CREATE FUNCTION pg_temp.nested(depth integer) RETURNS jsonb LANGUAGE sql AS $$
    SELECT (repeat('{"a": ', depth - 1) || '1' || repeat('}', depth - 1))::jsonb $$;
-- data (no steps) 60 deep is data; 127 and 300 deep are refused
SELECT automation.check_definition(pg_temp.nested(60)) AS runnable;
SELECT pg_temp.try($$SELECT automation.check_definition(pg_temp.nested(127))$$);
SELECT pg_temp.try($$SELECT automation.check_definition(jsonb_build_object('steps', pg_temp.nested(300)))$$);
SELECT pg_temp.try($$INSERT INTO automation_workflows.definitions (name, definition) VALUES ('deep', pg_temp.nested(200))$$);

------------------------------------------------------------------------------
-- 11. accepted silently on 0.7.0
SELECT pg_temp.try($$SELECT * FROM automation.claim_executions(NULL, 'w')$$);
SELECT pg_temp.try($$SELECT * FROM automation.claim_executions('', 'w')$$);
SELECT pg_temp.try($$SELECT * FROM automation.claim_steps(NULL, 'w')$$);
SELECT pg_temp.try($$SELECT * FROM automation.claim_steps('', 'w')$$);
SELECT pg_temp.try($$SELECT automation.retry_delay(-1)$$);
SELECT automation.retry_delay(0) > interval '0' AS first_retry_waits;
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('later', '{"steps": [{"name": "a", "queue": "later"}]}');
SELECT pg_temp.try($$SELECT automation.run_workflow('later', run_after => 'infinity')$$);
SELECT pg_temp.try($$SELECT automation.enqueue_execution('later', '{}', 'infinity')$$);
SELECT automation.enqueue_execution('later', '{}', '-infinity') IS NOT NULL AS minus_infinity_is_now;
SET automation.step_run = '-1';
SELECT pg_temp.try($$SELECT automation.step_input()$$);
SET automation.step_run = 'abc';
SELECT pg_temp.try($$SELECT automation.step_input()$$);
RESET automation.step_run;
SELECT pg_temp.try($$SELECT * FROM automation.table_growth('regress_rb_no_such_schema')$$);
SELECT count(*) >= 0 AS public_ok FROM automation.table_growth('public');

------------------------------------------------------------------------------
-- 10. a job in a database that takes no connections: refused for a runner
-- (0.7.0: accepted as active, never ran); a superuser's is kept inactive
SET ROLE regress_rb_alice;
SELECT pg_temp.try($$SELECT automation.schedule_in_database('rb-t0', '* * * * *', 'SELECT 1', 'template0')$$);
RESET ROLE;
SET client_min_messages = error;
SELECT automation.schedule_in_database('rb-t0', '* * * * *', 'SELECT 1', 'template0') > 0 AS scheduled;
RESET client_min_messages;
SELECT active, inactive_reason FROM automation.job WHERE jobname = 'rb-t0';
SELECT automation.unschedule('rb-t0');

------------------------------------------------------------------------------
-- 2. a finished execution the history refuses (0.7.0: the scheduler
-- crash-looped on it, and nothing else was recorded): set aside in
-- automation.errors with its row; the others are recorded. (Runners may not
-- write the log any more; a superuser's hand or a bug can.)
BEGIN;
INSERT INTO automation_workflows.execution_log (id, workflow_name, status, completed_at, attempts, owner) VALUES
    ('00000000-0000-0000-0000-0000000000b1', 'rb-poison', 'bogus-status', now(), 1, 'regress_rb_alice'),
    ('00000000-0000-0000-0000-0000000000b2', 'rb-good', 'success', now(), 1, 'regress_rb_alice');
SELECT automation.record_executions() AS left_the_log;
COMMIT;
SELECT id, workflow_name, status FROM automation_workflows.workflow_executions WHERE workflow_name LIKE 'rb-%';
SELECT workflow_name, error_type, error_context->'logged'->>'status' AS logged_status, error_context->>'sqlstate' AS sqlstate, owner
  FROM automation.errors WHERE workflow_name LIKE 'rb-%';
SELECT count(*) AS still_logged FROM automation_workflows.execution_log WHERE workflow_name LIKE 'rb-%';

-- 2b. a finished execution whose id the history already has (a data-only
-- restore of both tables, a hand): the logged copy is dropped with a
-- WARNING, the history's row stays as it was, the other is recorded, and
-- nothing is set aside. (A batch is no longer checked id by id against the
-- history as it is inserted: a duplicate fails the batch, which is then
-- recorded row by row, skipping the ids the history has.)
BEGIN;
INSERT INTO automation_workflows.workflow_executions (id, workflow_name, status, started_at, completed_at, owner) VALUES
    ('00000000-0000-0000-0000-0000000000c1', 'rb-known', 'error', now() - interval '1 minute', now(), 'regress_rb_alice');
INSERT INTO automation_workflows.execution_log (id, workflow_name, status, completed_at, attempts, owner) VALUES
    ('00000000-0000-0000-0000-0000000000c1', 'rb-known', 'success', now(), 1, 'regress_rb_alice'),
    ('00000000-0000-0000-0000-0000000000c2', 'rb-fresh', 'success', now(), 1, 'regress_rb_alice');
SELECT automation.record_executions() AS left_the_log;
COMMIT;
SELECT id, workflow_name, status FROM automation_workflows.workflow_executions
 WHERE workflow_name IN ('rb-known', 'rb-fresh') ORDER BY id;
SELECT count(*) AS set_aside FROM automation.errors WHERE workflow_name IN ('rb-known', 'rb-fresh');
SELECT count(*) AS still_logged FROM automation_workflows.execution_log WHERE workflow_name IN ('rb-known', 'rb-fresh');

------------------------------------------------------------------------------
-- 3. a run the timeout sweep cannot finish (0.7.0: a snapshot with
-- "concurrency": "abc" made the sweep fail every minute, for everyone):
-- set aside; the other execution past its deadline times out
INSERT INTO automation_workflows.definitions (name, definition) VALUES
    ('rb-slow', '{"timeout": "1 hour", "steps": [{"name": "a", "queue": "rb-slow"}]}'),
    ('rb-odd', '{"timeout": "1 hour", "steps": [{"name": "a", "queue": "rb-odd"}]}'),
    ('rb-refused', '{"timeout": "1 hour", "steps": [{"name": "a", "queue": "rb-refused"}]}');
SELECT automation.run_workflow('rb-slow') AS slow_id \gset
SELECT automation.run_workflow('rb-odd') AS odd_id \gset
SELECT automation.run_workflow('rb-refused') AS refused_id \gset
UPDATE automation_workflows.workflow_runs
   SET definition = jsonb_set(definition, '{concurrency}', '"abc"') WHERE execution_id = :'odd_id';
-- a run the engine cannot time out, whatever the reason (here: a trigger)
CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.workflow_name = 'rb-refused' AND NEW.status = 'timeout' THEN
        RAISE EXCEPTION 'refused by a trigger' USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER rb_refuse BEFORE UPDATE ON automation_workflows.workflow_executions
    FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse();
SET client_min_messages = error;
BEGIN;
UPDATE automation_workflows.workflow_runs SET deadline = clock_timestamp() - interval '1 second'
 WHERE execution_id IN (:'slow_id', :'odd_id', :'refused_id');
SELECT automation.expire_steps() >= 0 AS swept;
COMMIT;
RESET client_min_messages;
DROP TRIGGER rb_refuse ON automation_workflows.workflow_executions;
SELECT workflow_name, status, error_details->>'reason' AS reason, error_details->>'sqlstate' AS sqlstate
  FROM automation_workflows.workflow_executions WHERE workflow_name IN ('rb-slow', 'rb-odd', 'rb-refused') ORDER BY 1;
SELECT workflow_name, error_type, regexp_replace(error_message, '[0-9a-f-]{36}', '<id>') AS error_message FROM automation.errors
 WHERE workflow_name IN ('rb-slow', 'rb-odd', 'rb-refused') ORDER BY 1, 2;
SELECT count(*) AS deadlines_left FROM automation_workflows.workflow_runs
 WHERE workflow_name IN ('rb-slow', 'rb-odd', 'rb-refused') AND deadline IS NOT NULL;

-- clean up
DELETE FROM automation.errors WHERE workflow_name LIKE 'rb-%';
DELETE FROM automation_workflows.workflow_executions WHERE workflow_name LIKE 'rb-%' OR workflow_name = 'later';
DELETE FROM automation_workflows.execution_queue WHERE workflow_name = 'later';
DELETE FROM automation_workflows.definitions WHERE name LIKE 'rb-%' OR name = 'later';
DROP ROLE regress_rb_alice;

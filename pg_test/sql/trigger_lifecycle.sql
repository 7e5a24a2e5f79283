-- Issue 29, item 3: triggers their owners control. Owners pause, resume and
-- delete their triggers (others see nothing of them); no edit resumes a
-- paused trigger; pausing or unscheduling the hidden job pauses the
-- trigger; the config is checked when written (unknown keys refused,
-- timezone used, overlap); every fire says which trigger and which
-- scheduled time it serves, and one scheduled time starts one execution.
CREATE EXTENSION IF NOT EXISTS automation_ext;
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_tl_alice;
DROP ROLE IF EXISTS regress_tl_bob;
RESET client_min_messages;
CREATE ROLE regress_tl_alice LOGIN IN ROLE automation_runner;
CREATE ROLE regress_tl_bob LOGIN IN ROLE automation_runner;
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE state text; msg text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    RETURN state || ': ' || msg;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.try(text) TO PUBLIC;

SET ROLE regress_tl_alice;
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('tl-hourly', '{"steps": [{"name": "a", "queue": "tl-q"}]}');
-- the config is checked: 0.7.0 ignored all three keys and fired in UTC
SELECT pg_temp.try($$INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
    SELECT 'schedule', '{"cron": "0 * * * *", "timezone": "Europe/Berlin", "retries": 3}', id FROM automation_workflows.definitions WHERE name = 'tl-hourly'$$);
SELECT pg_temp.try($$INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
    SELECT 'schedule', '{"cron": "0 * * * *", "imput": {"a": 1}}', id FROM automation_workflows.definitions WHERE name = 'tl-hourly'$$);
SELECT pg_temp.try($$INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
    SELECT 'schedule', '{"cron": "0 * * * *", "timezone": "Mars/Olympus"}', id FROM automation_workflows.definitions WHERE name = 'tl-hourly'$$);
SELECT pg_temp.try($$INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
    SELECT 'schedule', '{"cron": "0 * * * *", "overlap": "sometimes"}', id FROM automation_workflows.definitions WHERE name = 'tl-hourly'$$);
SELECT pg_temp.try($$INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
    SELECT 'schedule', '{"cron": "0 * * * *", "max_queued": 3}', id FROM automation_workflows.definitions WHERE name = 'tl-hourly'$$);
SELECT pg_temp.try($$INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
    SELECT 'table', '{"table": "pg_class", "events": ["INSERT"], "input": {}}', id FROM automation_workflows.definitions WHERE name = 'tl-hourly'$$);
-- a time zone: the job reads its schedule there, and next_fire_at agrees
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'schedule', '{"cron": "30 2 * * *", "timezone": "Asia/Kolkata", "input": {"region": "in"}}', id
  FROM automation_workflows.definitions WHERE name = 'tl-hourly'
RETURNING id AS tz_id \gset
SELECT j.timezone, j.next_run_at = r.next_fire_at AS agrees,
       to_char(r.next_fire_at AT TIME ZONE 'Asia/Kolkata', 'HH24:MI') AS local_time
  FROM automation_triggers.registry r JOIN automation.job j ON j.jobname = 'workflow trigger ' || r.id
 WHERE r.id = :tz_id;

-- pause and resume by the owner; an edit keeps it paused
UPDATE automation_triggers.registry SET enabled = false WHERE id = :tz_id;
SELECT r.enabled, r.next_fire_at, j.active FROM automation_triggers.registry r
  JOIN automation.job j ON j.jobname = 'workflow trigger ' || r.id WHERE r.id = :tz_id;
UPDATE automation_triggers.registry SET config = config || '{"cron": "45 2 * * *"}' WHERE id = :tz_id;
SELECT r.enabled, r.next_fire_at, j.active, j.schedule FROM automation_triggers.registry r
  JOIN automation.job j ON j.jobname = 'workflow trigger ' || r.id WHERE r.id = :tz_id;
UPDATE automation_triggers.registry SET enabled = true WHERE id = :tz_id;
SELECT r.enabled, r.next_fire_at IS NOT NULL AS has_next, j.active FROM automation_triggers.registry r
  JOIN automation.job j ON j.jobname = 'workflow trigger ' || r.id WHERE r.id = :tz_id;
-- pausing the hidden job pauses the trigger (0.7.0: the next edit undid it)
SELECT count(*) AS altered FROM (SELECT automation.alter_job(jobid, active => false) FROM automation.job
                                   WHERE jobname = 'workflow trigger ' || :tz_id) x;
SELECT enabled, inactive_reason LIKE 'its job (%) was paused' AS why, next_fire_at FROM automation_triggers.registry WHERE id = :tz_id;
UPDATE automation_triggers.registry SET config = config || '{"cron": "50 2 * * *"}' WHERE id = :tz_id;
SELECT r.enabled, j.active FROM automation_triggers.registry r
  JOIN automation.job j ON j.jobname = 'workflow trigger ' || r.id WHERE r.id = :tz_id;
UPDATE automation_triggers.registry SET enabled = true WHERE id = :tz_id;
-- unscheduling the job pauses the trigger, with no next fire (0.7.0: a
-- next_fire_at that never came); resuming it makes the job again
SELECT automation.unschedule('workflow trigger ' || :tz_id);
SELECT enabled, inactive_reason LIKE 'its job (%) was unscheduled' AS why, next_fire_at FROM automation_triggers.registry WHERE id = :tz_id;
UPDATE automation_triggers.registry SET enabled = true WHERE id = :tz_id;
SELECT count(*) AS jobs, bool_and(active) AS active FROM automation.job WHERE jobname = 'workflow trigger ' || :tz_id;
RESET ROLE;

-- bob sees nothing of alice's triggers, and cannot change or delete them
SET ROLE regress_tl_bob;
SELECT count(*) AS bob_sees FROM automation_triggers.registry WHERE id = :tz_id;
UPDATE automation_triggers.registry SET enabled = false WHERE id = :tz_id;
DELETE FROM automation_triggers.registry WHERE id = :tz_id;
RESET ROLE;
SELECT enabled FROM automation_triggers.registry WHERE id = :tz_id;

-- every fire says which trigger and scheduled time it serves; one
-- scheduled time starts one execution (a repeated or caught-up fire);
-- overlap skip (the default of schedule triggers) starts none while one runs
SET ROLE regress_tl_alice;
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'schedule', '{"cron": "0 0 1 1 *", "input": {"k": 1}, "overlap": "parallel"}', id
  FROM automation_workflows.definitions WHERE name = 'tl-hourly'
RETURNING id AS fast_id \gset
BEGIN;
SET LOCAL automation.scheduled_for = '2026-11-26 03:00:00+00';
SELECT automation.fire_trigger(:fast_id) AS f1 \gset
SELECT automation.fire_trigger(:fast_id) = :'f1' AS same_interval_same_execution;
SET LOCAL automation.scheduled_for = '2026-11-26 03:00:20+00';
SELECT automation.fire_trigger(:fast_id) <> :'f1' AS next_interval_new_execution;
COMMIT;
SELECT input->'k' AS k, input->'trigger'->>'type' AS type, (input->'trigger'->>'id')::int = :fast_id AS its_id,
       input->'trigger'->>'scheduled_for' AS scheduled_for, (input->'trigger'->>'fired_at') IS NOT NULL AS fired_at
  FROM automation_workflows.workflow_runs WHERE trigger_id = :fast_id ORDER BY input->'trigger'->>'scheduled_for';
-- overlap skip
UPDATE automation_triggers.registry SET config = config - 'overlap' WHERE id = :fast_id;
SET client_min_messages = warning;
SELECT automation.fire_trigger(:fast_id) IS NULL AS skipped;
SELECT skipped_fires, last_skipped_at IS NOT NULL AS when_skipped FROM automation_triggers.registry WHERE id = :fast_id;
-- overlap queue with a cap: waiting executions (a concurrency-1 workflow)
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('tl-one', '{"concurrency": 1, "steps": [{"name": "a", "queue": "tl-one"}]}');
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'manual', '{"overlap": "queue", "max_queued": 2}', id FROM automation_workflows.definitions WHERE name = 'tl-one'
RETURNING id AS q_id \gset
SELECT automation.fire_trigger(:q_id) IS NOT NULL AS runs, automation.fire_trigger(:q_id) IS NOT NULL AS waits1,
       automation.fire_trigger(:q_id) IS NOT NULL AS waits2, automation.fire_trigger(:q_id) IS NULL AS capped;
RESET client_min_messages;
SELECT e.status, count(*) FROM automation_workflows.workflow_runs w JOIN automation_workflows.workflow_executions e ON e.id = w.execution_id
 WHERE w.trigger_id = :q_id GROUP BY 1 ORDER BY 1;
-- the owner deletes its triggers (0.7.0: 42501 for a runner); the job goes with it
DELETE FROM automation_triggers.registry WHERE id IN (:tz_id, :fast_id, :q_id);
SELECT count(*) AS jobs_left FROM automation.job WHERE jobname LIKE 'workflow trigger %';
RESET ROLE;

-- clean up
DELETE FROM automation_workflows.workflow_executions WHERE workflow_name LIKE 'tl-%';
DELETE FROM automation_workflows.definitions WHERE name LIKE 'tl-%';
DROP ROLE regress_tl_alice;
DROP ROLE regress_tl_bob;

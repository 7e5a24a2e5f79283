-- The scheduler's SQL API (pg_cron 1.6's, in schema automation): jobs,
-- validation, ownership. What the workers do is in pg_test/integration.
CREATE EXTENSION IF NOT EXISTS automation_ext;
SET timezone = 'UTC';

SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_sched_alice;
DROP ROLE IF EXISTS regress_sched_bob;
RESET client_min_messages;

-- the default jobs
SELECT jobid, jobname, schedule, command, username = current_user AS mine, active
  FROM automation.job ORDER BY jobid;

-- next_run: 5 fields, ranges, steps, names, macros, $, seconds, time zones
SELECT s, automation.next_run(s, '2026-11-25 10:07:30+00', 'UTC') AS next
  FROM unnest(ARRAY['* * * * *', '*/5 * * * *', '0 9-17/4 * * mon-fri', '0 0 1 jan,jul *',
                    '0 23 $ * *', '0 0 13 * 5', '@hourly', '@daily', '@weekly', '@monthly', '@yearly',
                    '1 second', '15 seconds', '@reboot', '@restart']) s;
SELECT automation.next_run('30 2 * * *', '2026-03-28 12:00+00', 'Europe/Berlin') AS berlin_dst_day,
       automation.next_run('0 9 * * *', '2026-07-01 00:00+00', 'America/New_York') AS new_york_nine;

-- invalid schedules name the field
SELECT automation.next_run('61 * * * *');
SELECT automation.next_run('0 0 30 2 *');
SELECT automation.next_run('0 0 * * 8');
SELECT automation.next_run('5-3 * * * *');
SELECT automation.next_run('* * * *');
SELECT automation.next_run('61 seconds');
SELECT automation.next_run('@often');
SELECT automation.next_run('* * * * *', now(), 'Mars/Olympus_Mons');
SELECT automation.schedule('bad', '0 0 31 4,6 *', 'SELECT 1');

-- schedule: named jobs are upserted per role; unnamed ones are new each time
SELECT automation.schedule('nightly', '0 3 * * *', 'VACUUM') AS nightly_id \gset
SELECT automation.schedule('nightly', '30 3 * * *', 'VACUUM ANALYZE') = :nightly_id AS same_job;
SELECT jobname, schedule, command, nodename, nodeport > 0 AS has_port, database = current_database() AS here,
       next_run_at > now() AS next_known, timeout, consecutive_failures
  FROM automation.job WHERE jobid = :nightly_id;
SELECT automation.schedule('0 0 1 1 *', 'SELECT 1') <> automation.schedule('0 0 1 1 *', 'SELECT 1') AS two_unnamed;

-- (0.11.0) 'N seconds' counts from when the schedule is set, not from
-- multiples of N: the job's grid starts now (to the millisecond); jobs set in
-- one transaction share it; an alter_job leaving the schedule keeps the next
-- run to come, a new schedule starts afresh
SELECT automation.next_run('10 seconds', '2026-11-25 10:07:33.25+00', 'UTC') AS ten_seconds_after,
       automation.next_run('5 minutes', '2026-11-25 10:07:33.25+00', 'UTC') AS five_minutes_after;
SELECT automation.next_run('60 minutes');
-- next_fire: the scheduler's rule (on the grid of the fire due; fires missed
-- by now coalesced into the next one; cron schedules on the clock)
SELECT automation.next_fire('10 seconds', '2026-11-25 10:07:33.25+00', '2026-11-25 10:07:33.9+00', 'UTC') AS on_time,
       automation.next_fire('10 seconds', '2026-11-25 10:07:33.25+00', '2026-11-25 10:08:10+00', 'UTC') AS coalesced,
       automation.next_fire('*/5 * * * *', '2026-11-25 10:05:00+00', '2026-11-25 10:17:30+00', 'UTC') AS cron_coalesced,
       automation.next_fire('@reboot', '2026-11-25 10:05:00+00', '2026-11-25 10:17:30+00', 'UTC') AS reboot;
SELECT automation.next_fire('10 hours', now(), now());
BEGIN;
SELECT automation.schedule('every-10-a', '10 seconds', 'SELECT 1') AS ten_a \gset
SELECT automation.schedule('every-10-b', '10 seconds', 'SELECT 2') AS ten_b \gset
SELECT count(DISTINCT next_run_at) AS one_grid,
       bool_and(next_run_at = date_trunc('milliseconds', now()) + interval '10 seconds') AS from_now
  FROM automation.job WHERE jobid IN (:ten_a, :ten_b);
-- (a next run set in the transaction that schedules the job: a scheduler
-- that loaded the job already keeps the next fire it computed)
UPDATE automation.job SET next_run_at = '2100-01-01 00:00:03.25+00' WHERE jobid = :ten_a;
COMMIT;
SELECT automation.alter_job(:ten_a, priority => 2, command => 'SELECT 3');
SELECT next_run_at AT TIME ZONE 'UTC' AS grid_kept FROM automation.job WHERE jobid = :ten_a;
-- a next run already past (the job was paused, say): the grid's next point
UPDATE automation.job SET next_run_at = '2026-11-25 10:07:33.25+00' WHERE jobid = :ten_a;
BEGIN;
SELECT automation.alter_job(:ten_a, active => true);
SELECT next_run_at > now() AND next_run_at <= now() + interval '10 seconds' AS next_point,
       extract(epoch FROM next_run_at - '2026-11-25 10:07:33.25+00')::numeric % 10 = 0 AS on_the_grid
  FROM automation.job WHERE jobid = :ten_a;
COMMIT;
BEGIN;
SELECT automation.alter_job(:ten_a, schedule => '15 seconds');
SELECT next_run_at = date_trunc('milliseconds', now()) + interval '15 seconds' AS new_grid
  FROM automation.job WHERE jobid = :ten_a;
COMMIT;
SELECT automation.unschedule(:ten_a) AND automation.unschedule(:ten_b) AS removed;

-- alter_job: only what is given; timeout '0' removes a timeout
SELECT automation.alter_job(:nightly_id, schedule => '@daily', timeout => '5 minutes');
SELECT schedule, command, timeout, active FROM automation.job WHERE jobid = :nightly_id;
SELECT automation.alter_job(:nightly_id, active => false, timeout => '0');
SELECT schedule, timeout, active FROM automation.job WHERE jobid = :nightly_id;
SELECT automation.alter_job(:nightly_id, schedule => 'nope');
SELECT automation.alter_job(999999, active => true);

-- a schedule written directly is checked too
INSERT INTO automation.job (schedule, command) VALUES ('0 25 * * *', 'SELECT 1');
UPDATE automation.job SET schedule = '*/0 * * * *' WHERE jobid = :nightly_id;

-- schedule_in_database: the database must exist; other roles need superuser
SELECT automation.schedule_in_database('elsewhere', '@hourly', 'SELECT 1', 'no_such_db');
SELECT automation.schedule_in_database('as-nobody', '@hourly', 'SELECT 1', current_database(), 'no_such_role');

-- ownership: a role sees and changes only its own jobs
CREATE ROLE regress_sched_alice LOGIN IN ROLE automation_runner;
CREATE ROLE regress_sched_bob LOGIN IN ROLE automation_runner;
SET ROLE regress_sched_alice;
SELECT automation.schedule('alice-job', '@hourly', 'SELECT 1') AS alice_job \gset
SELECT jobname, username FROM automation.job;
SELECT automation.schedule_in_database('for-bob', '@hourly', 'SELECT 1', current_database(), 'regress_sched_bob');
INSERT INTO automation.job (schedule, command, username) VALUES ('@hourly', 'SELECT 1', 'regress_sched_bob');
SELECT automation.alter_job(:alice_job, username => 'regress_sched_bob');
SELECT automation.unschedule(:nightly_id);
SELECT count(*) AS history_visible FROM automation.job_run_details WHERE username <> current_user;
RESET ROLE;
SET ROLE regress_sched_bob;
SELECT count(*) AS alices_jobs_bob_sees FROM automation.job;
UPDATE automation.job SET command = 'DROP TABLE x' WHERE jobname = 'alice-job';
SELECT automation.unschedule('alice-job');
RESET ROLE;
-- a superuser may schedule for another role
SELECT automation.schedule_in_database('for-bob', '@hourly', 'SELECT 1', current_database(), 'regress_sched_bob') > 0 AS scheduled;
SELECT jobname, username FROM automation.job WHERE username LIKE 'regress_sched_%' ORDER BY jobname;

-- unschedule by id and by name
SELECT automation.unschedule(:nightly_id);
SELECT automation.unschedule('nightly');
SELECT automation.unschedule('for-bob');   -- bob's, not ours
DELETE FROM automation.job WHERE username LIKE 'regress_sched_%' OR jobname IS NULL;

-- history retention
SELECT automation.job_run_retention();
INSERT INTO automation.job_run_details (jobid, status, start_time, end_time)
SELECT 0, 'succeeded', now() - interval '30 days', now() - interval '30 days' + interval '1 second'
  FROM generate_series(1, 25);
INSERT INTO automation.job_run_details (jobid, status, start_time, end_time)
VALUES (0, 'succeeded', now(), now());
CALL automation.purge_job_run_details(batch => 10);
SELECT count(*) AS kept FROM automation.job_run_details WHERE jobid = 0;
DELETE FROM automation.job_run_details WHERE jobid = 0;

-- the scheduler is running here (the regression cluster preloads the library)
SELECT component, state FROM automation.scheduler_status() WHERE component IN ('launcher', 'next run') ORDER BY 1;
SELECT automation.wake_scheduler();

DROP ROLE regress_sched_alice;
DROP ROLE regress_sched_bob;

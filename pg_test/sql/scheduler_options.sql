-- 0.6.0 (issue 17): per-job time zone, retries, overlap policy, priority and
-- history mode — how they are written, checked and shown; and the run
-- counters and histograms the scheduler keeps. What the workers do with
-- them is in pg_test/integration/tests/scheduler_options.rs.
CREATE EXTENSION IF NOT EXISTS automation_ext;
SET timezone = 'UTC';
DELETE FROM automation.job WHERE jobname NOT LIKE 'automation: %';

-- the options, by name, on the pg_cron call
SELECT automation.schedule('tokyo-nine', '0 9 * * *', 'SELECT 1', timezone => 'Asia/Tokyo',
                           retries => 3, retry_backoff => '30 seconds', overlap => 'queue',
                           priority => 10, log_runs => 'failures', keep_runs => 100) AS tokyo \gset
SELECT jobname, timezone, retries, retry_backoff, overlap, priority, log_runs, keep_runs, next_attempt
  FROM automation.job WHERE jobid = :tokyo;
-- the next run is 09:00 in Tokyo (00:00 UTC), whatever automation.timezone says
SELECT next_run_at = automation.next_run('0 9 * * *', now(), 'Asia/Tokyo') AS tokyo_time,
       pg_catalog.to_char(next_run_at AT TIME ZONE 'Asia/Tokyo', 'HH24:MI') AS local_time
  FROM automation.job WHERE jobid = :tokyo;
-- the same schedule in two zones with DST: two different instants
SELECT automation.schedule('ny-nine', '0 9 * * *', 'SELECT 1', timezone => 'America/New_York') AS ny \gset
SELECT automation.schedule('berlin-nine', '0 9 * * *', 'SELECT 1', timezone => 'Europe/Berlin') AS berlin \gset
SELECT jobname, pg_catalog.to_char(next_run_at AT TIME ZONE timezone, 'HH24:MI') AS local_time
  FROM automation.job WHERE jobid IN (:ny, :berlin) ORDER BY jobname;
-- a changed time zone moves the next run
UPDATE automation.job SET timezone = 'Pacific/Auckland' WHERE jobid = :ny;
SELECT pg_catalog.to_char(next_run_at AT TIME ZONE 'Pacific/Auckland', 'HH24:MI') AS auckland_time
  FROM automation.job WHERE jobid = :ny;

-- the same name again replaces the job, options included
SELECT automation.schedule('tokyo-nine', '0 9 * * *', 'SELECT 2') = :tokyo AS same_job;
SELECT timezone, retries, overlap, priority, log_runs, keep_runs FROM automation.job WHERE jobid = :tokyo;

-- alter_job: NULL keeps; '' returns to the settings; keep_runs => 0 removes the cap
SELECT automation.alter_job(:tokyo, timezone => 'Asia/Tokyo', overlap => 'parallel 3', retries => 1,
                            log_runs => 'none', keep_runs => 5, priority => -1);
SELECT timezone, retries, overlap, priority, log_runs, keep_runs FROM automation.job WHERE jobid = :tokyo;
SELECT automation.alter_job(:tokyo, command => 'SELECT 3');
SELECT timezone, retries, overlap, priority, log_runs, keep_runs FROM automation.job WHERE jobid = :tokyo;
SELECT automation.alter_job(:tokyo, timezone => '', log_runs => '', keep_runs => 0);
SELECT timezone, log_runs, keep_runs FROM automation.job WHERE jobid = :tokyo;

-- refused, with the field named (a bad time zone: 22023 with a hint; the
-- rest: the CHECK constraint of the column, 23514)
\set VERBOSITY terse
SELECT automation.schedule('bad', '0 9 * * *', 'SELECT 1', timezone => 'Mars/Olympus_Mons');
SELECT automation.schedule('bad', '0 9 * * *', 'SELECT 1', overlap => 'sometimes');
SELECT automation.schedule('bad', '0 9 * * *', 'SELECT 1', overlap => 'parallel 0');
SELECT automation.schedule('bad', '0 9 * * *', 'SELECT 1', retries => 101);
SELECT automation.schedule('bad', '0 9 * * *', 'SELECT 1', retries => -1);
SELECT automation.schedule('bad', '0 9 * * *', 'SELECT 1', retry_backoff => '0');
SELECT automation.schedule('bad', '0 9 * * *', 'SELECT 1', log_runs => 'some');
SELECT automation.schedule('bad', '0 9 * * *', 'SELECT 1', keep_runs => 0);
SELECT automation.alter_job(:tokyo, timezone => 'Nowhere/Land');
SELECT count(*) AS none_made FROM automation.job WHERE jobname = 'bad';
\set VERBOSITY default

-- the setting automation.log_runs: all (default), failures, none
SHOW automation.log_runs;

-- run counters and histograms: counted by the scheduler (only it may)
SET ROLE automation_runner;
SELECT automation.count_job_run(:tokyo, 'succeeded', 0.2, 0.003);
RESET ROLE;
SELECT automation.job_run_histogram_bounds();
SELECT automation.count_job_run(:tokyo, 'succeeded', 0.2, 0.003);
SELECT automation.count_job_run(:tokyo, 'failed', 7, 0.0004);
SELECT automation.count_job_run(:tokyo, 'skipped', NULL, NULL);
SELECT automation.count_job_run(:tokyo, 'succeeded', 7200, 0);
SELECT succeeded, failed, skipped, duration_buckets, duration_sum, lateness_buckets, round(lateness_sum::numeric, 4) AS lateness_sum
  FROM automation.job_run_stats WHERE jobid = :tokyo;
-- as the exposition shows them: a counter by job and status; histograms
-- over every job of the database (the scheduler's own runs of the default
-- jobs may be in them too): cumulative buckets, +Inf = count, ours in the sum
SELECT metric, labels, value FROM automation.live_metrics()
 WHERE metric = 'automation_job_runs_total' AND labels->>'job' = 'tokyo-nine'
 ORDER BY labels->>'status';
WITH h AS (
    SELECT metric, labels->>'le' AS le, value, row_number() OVER () AS n
      FROM automation.live_metrics() WHERE metric LIKE 'automation_job_%_seconds_%')
SELECT b.metric, count(*) AS buckets,
       bool_and(b.value >= coalesce(b.before, 0)) AS cumulative,
       max(b.value) FILTER (WHERE b.le = '+Inf') = (SELECT value FROM h WHERE h.metric = replace(b.metric, '_bucket', '_count')) AS inf_is_count,
       (SELECT value FROM h WHERE h.metric = replace(b.metric, '_bucket', '_sum')) >= CASE WHEN b.metric LIKE '%duration%' THEN 7207.19 ELSE 0.0033 END AS ours_in_sum
  FROM (SELECT h.*, lag(h.value) OVER (PARTITION BY h.metric ORDER BY h.n) AS before FROM h WHERE h.metric LIKE '%_bucket') b
 GROUP BY b.metric ORDER BY b.metric;
SELECT line FROM regexp_split_to_table(automation.metrics_exposition(), E'\n') line
 WHERE line ~ '^# TYPE automation_job' OR line ~ '^automation_job_runs_total\{job="tokyo-nine"';
-- the counters of a job that is gone go with the next purge
SELECT automation.unschedule(:tokyo);
CALL automation.purge_job_run_details();
SELECT count(*) AS stats_left FROM automation.job_run_stats WHERE jobid = :tokyo;

SELECT automation.unschedule(jobid) FROM automation.job WHERE jobid IN (:ny, :berlin);

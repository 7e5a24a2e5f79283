-- PostgreSQL 18 writes the bounds of an out-of-range setting with their unit ("0 s .. 2147483647 s"): expected/retention_never_drops_current_data_1.out
-- Issue 15 (1): a negative retention dropped every partition, today's too;
-- '0' meant "keep nothing" for metrics but "keep all" for monitoring.
-- One rule now: 0 keeps everything, a negative retention is refused (22023).
CREATE EXTENSION IF NOT EXISTS automation_ext;
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- the scheduler's partition job (every 10 minutes, default settings) would
-- race this test: off, and a run launched just before it is waited out
UPDATE automation.job SET active = false WHERE jobname = 'automation: maintain pipeline_metrics partitions';
DO $$ BEGIN
    FOR i IN 1..300 LOOP
        EXIT WHEN NOT EXISTS (SELECT FROM automation.job_run_details d JOIN automation.job j USING (jobid)
                               WHERE j.jobname = 'automation: maintain pipeline_metrics partitions'
                                 AND d.status IN ('starting', 'running'));
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
TRUNCATE automation.pipeline_metrics;
SELECT count(*) > 0 AS made_partitions FROM automation.maintain_metrics_partitions();
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status)
SELECT now() - i * interval '1 minute', 'p', 's', 'success' FROM generate_series(1, 48) i;
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status)
VALUES (now() - interval '400 days', 'p', 's', 'success');

-- refused, and nothing is dropped
SET automation.metrics_retention = '-1 day';
SELECT pg_temp.try('SELECT * FROM automation.maintain_metrics_partitions()');
SET automation.metrics_retention = '1 month -40 days';
SELECT pg_temp.try('SELECT * FROM automation.maintain_metrics_partitions()');
SELECT count(*) AS rows_kept FROM automation.pipeline_metrics;

-- 0 keeps everything, even the 400-day-old row
SET automation.metrics_retention = '0';
SELECT action, count(*) FROM automation.maintain_metrics_partitions()
 WHERE action IN ('dropped', 'expired from default') GROUP BY 1;
SELECT count(*) AS rows_kept FROM automation.pipeline_metrics;

-- a real retention expires the old row only
SET automation.metrics_retention = '90 days';
SELECT action, row_count FROM automation.maintain_metrics_partitions()
 WHERE action IN ('dropped', 'expired from default');
SELECT count(*) AS rows_kept FROM automation.pipeline_metrics;
RESET automation.metrics_retention;

-- a partition width that is not positive is refused too
SET automation.metrics_partition_interval = '-1 month';
SELECT pg_temp.try('SELECT * FROM automation.maintain_metrics_partitions()');
RESET automation.metrics_partition_interval;

-- the other retention settings follow the same rule
SELECT pg_temp.try('SET automation.monitoring_retention = -1');
SELECT pg_temp.try('SET automation.monitoring_retention = 0');
\set VERBOSITY terse
ALTER SYSTEM SET automation.job_run_retention = -1;
\set VERBOSITY default
SELECT name, min_val, short_desc, extra_desc FROM pg_settings
 WHERE name IN ('automation.job_run_retention', 'automation.monitoring_retention', 'automation.metrics_retention')
 ORDER BY 1;

-- job_run_retention = 0: the purge keeps every run (a reload setting)
INSERT INTO automation.job_run_details (jobid, status, end_time) VALUES (0, 'succeeded', now() - interval '30 days');
ALTER SYSTEM SET automation.job_run_retention = 0;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT automation.job_run_retention();
CALL automation.purge_job_run_details();
SELECT count(*) AS old_run_kept FROM automation.job_run_details WHERE jobid = 0;
ALTER SYSTEM RESET automation.job_run_retention;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
CALL automation.purge_job_run_details();
SELECT count(*) AS old_run_purged FROM automation.job_run_details WHERE jobid = 0;
TRUNCATE automation.pipeline_metrics;
UPDATE automation.job SET active = true WHERE jobname = 'automation: maintain pipeline_metrics partitions';

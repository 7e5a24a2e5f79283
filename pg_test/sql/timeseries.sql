-- Pipeline metrics as time series: time_bucket, partitions and retention,
-- the incremental hourly rollup (checked against a full GROUP BY on random
-- data, late rows included), the live view, staging with bad rows.
CREATE EXTENSION IF NOT EXISTS automation_ext;
SET timezone = 'UTC';
-- the scheduler's own maintenance jobs would race this test
UPDATE automation.job SET active = false WHERE jobname LIKE 'automation: %';
-- ... and a run of them launched just before (the hourly refresh fires every
-- minute) would still change the rollup under the test: wait until none is
-- starting or running, three looks in a row 0.1 s apart
DO $$ DECLARE quiet int := 0; BEGIN
    FOR i IN 1..300 LOOP
        IF EXISTS (SELECT FROM automation.job_run_details d JOIN automation.job j USING (jobid)
                    WHERE j.jobname LIKE 'automation: %' AND d.status IN ('starting', 'running')) THEN
            quiet := 0;
        ELSE
            quiet := quiet + 1;
            EXIT WHEN quiet >= 3;
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    IF quiet < 3 THEN RAISE EXCEPTION 'a maintenance job is still running after 30 s'; END IF;
END $$;
-- hours and days below are counted from now(), each statement's own: a test
-- running across the top of an hour (or midnight) would see them change
-- between statements, so it starts after the top of the hour when that is
-- less than 15 s away
SELECT pg_sleep(extract(epoch FROM date_trunc('hour', clock_timestamp()) + interval '1 hour' - clock_timestamp()) + 0.1)
 WHERE clock_timestamp() > date_trunc('hour', clock_timestamp()) + interval '59 minutes 45 seconds';
TRUNCATE automation.pipeline_metrics;
SELECT automation.refresh_pipeline_metrics_hourly(true) IS NOT NULL AS reset;

-- time_bucket, TimescaleDB's signature
SELECT w, automation.time_bucket(w::interval, '2026-11-25 13:47:12+00') AS bucket
  FROM unnest(ARRAY['15 minutes', '1 hour', '1 day', '7 days', '1 month', '3 months']) w;
SELECT automation.time_bucket('1 day', '2026-11-25 05:00+00'::timestamptz, '2000-01-01 06:00+00') AS six_am_days,
       automation.time_bucket('1 hour', '2026-11-25 13:47:12'::timestamp) AS without_zone;
SELECT automation.time_bucket('1 month 2 days', now());
SELECT automation.time_bucket('0', now());

-- try_timestamptz never raises
SELECT v, automation.try_timestamptz(v)
  FROM unnest(ARRAY['2026-11-25T13:45:07Z', '2026-11-25 13:45:07+02:00', '2026-11-25', '2026-02-30', 'soon', '']) v;

-- partitions: made ahead, rows in the default partition split out, old ones dropped
SET automation.metrics_partition_interval = '1 day';
SET automation.metrics_partitions_ahead = 2;
SET automation.metrics_retention = '30 days';
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status)
-- (from the start of that day: rows near midnight would span two days' partitions)
SELECT automation.time_bucket('1 day', now() - interval '10 days') + n * interval '1 minute', 'p', 's', 'success'
  FROM generate_series(1, 50) n;
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status)
VALUES (now() - interval '60 days', 'p', 's', 'success');
SELECT count(*) AS in_default FROM automation.pipeline_metrics_default;
SELECT action, row_count,
       range_start = automation.time_bucket('1 day', now() - interval '10 days') AS ten_days_ago,
       range_end - range_start AS width, partition_name ~ '^pipeline_metrics_p\d{8}$' AS named
  FROM automation.maintain_metrics_partitions()
 ORDER BY range_start NULLS LAST;
SELECT count(*) AS still_in_default FROM automation.pipeline_metrics_default;
SELECT count(*) AS partitions FROM pg_inherits WHERE inhparent = 'automation.pipeline_metrics'::regclass;
-- a second call has nothing to do
SELECT count(*) AS nothing FROM automation.maintain_metrics_partitions();
-- rows now land in their partitions, never in the default one
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status) VALUES (now(), 'p', 's', 'success');
SELECT tableoid::regclass::text ~ '^automation.pipeline_metrics_p' AS in_a_partition
  FROM automation.pipeline_metrics WHERE time > now() - interval '1 minute';
-- retention shortened: the 10-day-old partition goes
SET automation.metrics_retention = '5 days';
SELECT action, row_count FROM automation.maintain_metrics_partitions();
SELECT count(*) AS left_after_retention FROM automation.pipeline_metrics WHERE time < now() - interval '5 days';
RESET automation.metrics_retention;
SET automation.metrics_partition_interval = '1 fortnight';
SELECT * FROM automation.maintain_metrics_partitions();
SET automation.metrics_partition_interval = '10 minutes';
SELECT * FROM automation.maintain_metrics_partitions();
RESET automation.metrics_partition_interval;

-- the rollup equals a full GROUP BY on random data
CREATE TEMP VIEW truth AS
SELECT date_trunc('hour', time, 'UTC') AS bucket, pipeline_name, stage, count(*) AS executions,
       avg(duration_ms) AS avg_duration, sum(records_processed) AS total_records,
       count(*) FILTER (WHERE status = 'success') AS successes, count(*) FILTER (WHERE status = 'error') AS errors
  FROM automation.pipeline_metrics GROUP BY 1, 2, 3;
SELECT setseed(0.42);
TRUNCATE automation.pipeline_metrics;
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, duration_ms, records_processed, status)
SELECT date_trunc('hour', now()) - random() * interval '48 hours', 'pipe-' || (random() * 3)::int, 'stage-' || (random() * 2)::int,
       (random() * 1000)::int, (random() * 500)::int, (ARRAY['success', 'error', 'warning', NULL])[1 + (random() * 3)::int]
  FROM generate_series(1, 5000);
SELECT buckets > 40 AS many_hours, was_full FROM automation.refresh_pipeline_metrics_hourly();
SELECT count(*) AS differences FROM (
    (SELECT * FROM truth WHERE bucket < date_trunc('hour', now()) EXCEPT SELECT * FROM automation.pipeline_metrics_hourly)
    UNION ALL
    (SELECT * FROM automation.pipeline_metrics_hourly EXCEPT SELECT * FROM truth)) d;
-- late rows for old hours, new rows, an update and a delete
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, duration_ms, records_processed, status)
VALUES (date_trunc('hour', now()) - interval '30 hours 10 minutes', 'pipe-1', 'stage-1', 7, 7, 'success'),
       (date_trunc('hour', now()) - interval '40 hours 10 minutes', 'pipe-late', 'stage-0', 9, 9, 'error'),
       (now(), 'pipe-1', 'stage-1', 1, 1, 'success');
UPDATE automation.pipeline_metrics SET status = 'error'
 WHERE time >= date_trunc('hour', now()) - interval '20 hours' AND time < date_trunc('hour', now()) - interval '19 hours';
DELETE FROM automation.pipeline_metrics
 WHERE time >= date_trunc('hour', now()) - interval '10 hours' AND time < date_trunc('hour', now()) - interval '9 hours';
-- before the refresh, the live view is already right (current hour included)
SELECT count(*) AS live_differences FROM (
    (SELECT * FROM truth EXCEPT SELECT * FROM automation.pipeline_metrics_hourly_live)
    UNION ALL
    (SELECT * FROM automation.pipeline_metrics_hourly_live EXCEPT SELECT * FROM truth)) d;
SELECT buckets, was_full FROM automation.refresh_pipeline_metrics_hourly();
SELECT count(*) AS differences FROM (
    (SELECT * FROM truth WHERE bucket < date_trunc('hour', now()) EXCEPT SELECT * FROM automation.pipeline_metrics_hourly)
    UNION ALL
    (SELECT * FROM automation.pipeline_metrics_hourly EXCEPT SELECT * FROM truth)) d;
SELECT count(*) AS live_differences FROM (
    (SELECT * FROM truth EXCEPT SELECT * FROM automation.pipeline_metrics_hourly_live)
    UNION ALL
    (SELECT * FROM automation.pipeline_metrics_hourly_live EXCEPT SELECT * FROM truth)) d;
SELECT buckets, was_full FROM automation.refresh_pipeline_metrics_hourly();

-- staging: COPY-friendly, typed or jsonb rows; bad rows go to automation.errors
TRUNCATE automation.pipeline_metrics;
DELETE FROM automation.errors WHERE error_type = 'invalid_metric_row';
COPY automation.metrics_staging (time, pipeline_name, stage, duration_ms, records_processed, status) FROM stdin;
2020-06-01 10:00:00+00	orders	load	1200	500	success
2020-06-01 10:01:00+00	orders	load	-5	500	success
2020-06-01 10:02:00+00	orders	load	10	99999999999	success
2020-06-01 10:03:00+00	orders	load	10	5	exploded
\N	orders	load	10	5	success
2020-06-01 10:04:00+00	\N	load	10	5	success
\.
INSERT INTO automation.metrics_staging (payload) VALUES
    ('{"time": "2020-06-01T10:05:00Z", "pipeline_name": "orders", "stage": "transform", "duration_ms": 30, "records_processed": 12, "status": "success"}'),
    ('{"time": "2020-06-01T10:06:00+01:00", "pipeline_name": "orders", "stage": "transform"}'),
    ('{"time": "yesterday", "pipeline_name": "orders", "stage": "transform"}'),
    ('{"time": "2020-06-01T10:07:00Z", "pipeline_name": "orders", "stage": "transform", "duration_ms": 1.5}'),
    ('{"time": "2020-06-01T10:08:00Z", "stage": "transform"}');
INSERT INTO automation.metrics_staging (time, pipeline_name, stage) VALUES ('2020-06-01 11:00+00', repeat('x', 300), 's');
SELECT automation.flush_metrics_staging() AS moved;
SELECT count(*) AS staging_left FROM automation.metrics_staging;
SELECT pipeline_name, stage, duration_ms, records_processed, status, time
  FROM automation.pipeline_metrics ORDER BY time;
SELECT error_message, error_context->'row'->>'time' AS row_time, left(workflow_name, 10) AS workflow
  FROM automation.errors WHERE error_type = 'invalid_metric_row' ORDER BY error_message;
SELECT automation.flush_metrics_staging() AS nothing_to_flush;

-- clean up
DELETE FROM automation.errors WHERE error_type = 'invalid_metric_row';
TRUNCATE automation.pipeline_metrics;
DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT inhrelid::regclass AS p FROM pg_inherits
              WHERE inhparent = 'automation.pipeline_metrics'::regclass AND inhrelid <> 'automation.pipeline_metrics_default'::regclass
    LOOP EXECUTE format('DROP TABLE %s', r.p); END LOOP; END $$;
UPDATE automation.job SET active = true WHERE jobname LIKE 'automation: %';

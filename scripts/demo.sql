-- The demo run by scripts/setup.sh. It removes its own rows first, so running
-- it again gives the same output.
\set QUIET on
\pset footer off
SET client_min_messages = warning;

\echo
\echo '-- installed: extension version and where its library is loaded from'
SELECT extname, extversion,
       current_setting('shared_preload_libraries') AS shared_preload_libraries
  FROM pg_extension WHERE extname = 'automation_ext';

\echo '-- the schemas it created, with their tables'
SELECT n.nspname AS schema, string_agg(c.relname, ', ' ORDER BY c.relname) AS tables
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('automation', 'automation_workflows', 'automation_triggers', 'automation_audit')
   AND c.relkind IN ('r', 'p') AND NOT c.relispartition
 GROUP BY n.nspname ORDER BY 1;

BEGIN;
DELETE FROM automation.errors WHERE workflow_name LIKE 'demo-%';
DELETE FROM automation.pipeline_metrics WHERE pipeline_name LIKE 'demo-%';
DELETE FROM automation_workflows.workflow_executions WHERE workflow_name LIKE 'demo-%';
DELETE FROM automation_triggers.registry
 WHERE workflow_id IN (SELECT id FROM automation_workflows.definitions WHERE name LIKE 'demo-%');
DELETE FROM automation_workflows.definitions WHERE name LIKE 'demo-%';

\echo '-- two workflow definitions'
INSERT INTO automation_workflows.definitions (name, definition)
VALUES ('demo-nightly-etl', '{"steps": [{"name": "extract", "queue": "demo-etl"},
                                        {"name": "transform", "after": ["extract"], "queue": "demo-etl"},
                                        {"name": "load", "after": ["transform"], "queue": "demo-etl"}]}'),
       ('demo-invoice-sync', '{"steps": [{"name": "fetch", "queue": "demo-invoices"},
                                         {"name": "post", "after": ["fetch"], "queue": "demo-invoices",
                                          "map": "$.fetch.invoices", "retry": {"max_attempts": 3, "backoff": "10 seconds"}}]}')
RETURNING id, name, version, is_active, jsonb_array_length(definition->'steps') AS steps;

\echo '-- a schedule trigger for one of them'
INSERT INTO automation_triggers.registry (trigger_type, source_system, config, workflow_id, next_fire_at)
SELECT 'cron', 'demo', '{"schedule": "0 2 * * *"}', id, date_trunc('day', now()) + interval '1 day 2 hours'
  FROM automation_workflows.definitions WHERE name = 'demo-nightly-etl'
RETURNING trigger_type, config->>'schedule' AS schedule, workflow_id;

\echo '-- forty executions with mixed outcomes'
INSERT INTO automation_workflows.workflow_executions
       (workflow_name, status, started_at, completed_at, metadata, error_details)
SELECT CASE WHEN i % 2 = 0 THEN 'demo-nightly-etl' ELSE 'demo-invoice-sync' END,
       CASE WHEN i % 10 = 0 THEN 'error' WHEN i % 13 = 0 THEN 'running' ELSE 'success' END,
       now() - make_interval(mins => i * 10),
       CASE WHEN i % 13 = 0 THEN NULL ELSE now() - make_interval(mins => i * 10) + make_interval(secs => 30 + i) END,
       jsonb_build_object('run', i, 'source', 'demo'),
       CASE WHEN i % 10 = 0 THEN jsonb_build_object('reason', 'upstream unavailable') END
  FROM generate_series(1, 40) AS i;
COMMIT;

\echo '-- per workflow: runs, outcomes, mean duration'
SELECT workflow_name,
       count(*) AS runs,
       count(*) FILTER (WHERE status = 'success') AS successes,
       count(*) FILTER (WHERE status = 'error') AS errors,
       count(*) FILTER (WHERE status = 'running') AS running,
       round(avg(extract(epoch FROM completed_at - started_at)), 1) AS avg_seconds
  FROM automation_workflows.workflow_executions
 WHERE workflow_name LIKE 'demo-%'
 GROUP BY workflow_name ORDER BY workflow_name;

\echo '-- a JSONB lookup served by the GIN index idx_workflow_metadata'
SET enable_seqscan = off;
EXPLAIN (COSTS off)
SELECT id FROM automation_workflows.workflow_executions WHERE metadata @> '{"run": 7}';
RESET enable_seqscan;

\echo '-- the engine: run demo-invoice-sync; a worker fetches two invoices, then posts each (one step run per invoice)'
SELECT automation.run_workflow('demo-invoice-sync', '{"day": "today"}') AS demo_run \gset
SELECT step, input FROM automation.claim_steps('demo-invoices', 'demo-worker') \gset claimed_
SELECT :'claimed_step' AS claimed_step, :'claimed_input' AS its_input;
SELECT r.step, '{"invoices": [101, 102]}' AS output
  FROM automation_workflows.step_runs r,
       automation.complete_step(r.id, '{"invoices": [101, 102]}', 'demo-worker')
 WHERE r.execution_id = :'demo_run' AND r.step = 'fetch';
SELECT c.step, c.map_index, c.input->'item' AS invoice, 'posted' AS outcome
  FROM automation.claim_steps('demo-invoices', 'demo-worker', 10) c,
       automation.complete_step(c.id, jsonb_build_object('posted', c.input->'item'), 'demo-worker')
 ORDER BY c.map_index;
SELECT workflow_name, status, done, waiting, failed FROM automation.workflow_progress WHERE execution_id = :'demo_run';

\echo '-- the runtime: enqueue three jobs, a worker claims two, completes one, fails one'
SELECT count(automation.enqueue_execution('demo-invoice-sync', jsonb_build_object('invoice', n)))
       AS enqueued FROM generate_series(101, 103) n;
CREATE TEMP TABLE demo_claimed AS
SELECT id, metadata->>'invoice' AS invoice FROM automation.claim_executions('demo-invoice-sync', 'demo-worker', 2);
SELECT invoice, 'claimed by demo-worker' AS state FROM demo_claimed ORDER BY invoice;
SELECT count(*) AS completed
  FROM demo_claimed d, automation.complete_execution(d.id, '{"posted": true}', 'demo-worker')
 WHERE d.invoice = '101';
SELECT automation.fail_execution(id, 'HttpError', '503 from the accounting API', '{"retryable": true}', 'demo-worker') IS NOT NULL
       AS failure_recorded
  FROM demo_claimed WHERE invoice = '102';
SELECT workflow_name, error_type, error_message, retry_count,
       next_retry_at > now() AS waiting_for_backoff
  FROM automation.errors WHERE workflow_name = 'demo-invoice-sync';

\echo '-- a LISTENing session gets a notification when an execution completes (at commit)'
LISTEN workflow_completed;
UPDATE automation_workflows.workflow_executions SET status = 'success', completed_at = now()
 WHERE workflow_name = 'demo-nightly-etl' AND status = 'running';
UNLISTEN workflow_completed;

\echo '-- the native aggregate over pipeline metrics'
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, duration_ms, records_processed, status)
SELECT now() - make_interval(mins => n), 'demo-' || (ARRAY['orders', 'refunds'])[1 + n % 2], 'load',
       200 + n, 1000, CASE WHEN n % 7 = 0 THEN 'error' ELSE 'success' END
  FROM generate_series(1, 500) n;
SELECT pipeline_name, count(*) AS runs, automation.pipeline_success_rate(status) AS success_rate_percent
  FROM automation.pipeline_metrics WHERE pipeline_name LIKE 'demo-%'
 GROUP BY pipeline_name ORDER BY pipeline_name;

\echo '-- per workflow, from the view automation.v_workflow_status'
SELECT name, total_executions, successes, errors, in_progress, round(avg_duration_seconds, 1) AS avg_seconds
  FROM automation.v_workflow_status WHERE name LIKE 'demo-%' ORDER BY name;

\echo '-- monitoring: a health check, and one stored sample'
SELECT * FROM automation.health_check();
SELECT active_connections, cache_hit_ratio, xid_wraparound_age, idle_in_transaction,
       jsonb_object_keys(table_sizes) AS one_of_the_largest_tables
  FROM automation.collect_database_metrics() LIMIT 3;

\echo '-- a typo in a status is refused, not stored'
\set ON_ERROR_STOP off
INSERT INTO automation_workflows.workflow_executions (workflow_name, status) VALUES ('demo-nightly-etl', 'sucess');
\set ON_ERROR_STOP on

\echo '-- the built-in scheduler: a job every second, run by a background worker'
SELECT automation.schedule('demo-every-second', '1 second', 'SELECT count(*) FROM automation_workflows.workflow_executions') AS jobid \gset
SELECT pg_sleep(3.5);
SELECT runid, status, return_message, start_time - scheduled_for AS late
  FROM automation.job_run_details WHERE jobid = :jobid ORDER BY runid;
SELECT automation.unschedule(:jobid);
SELECT component, database, state, detail FROM automation.scheduler_status();

\echo '-- hourly rollup of pipeline metrics, with the not-yet-rolled-up hours live'
SELECT * FROM automation.refresh_pipeline_metrics_hourly();
SELECT bucket, pipeline_name, stage, executions, successes, errors
  FROM automation.pipeline_metrics_hourly_live WHERE pipeline_name LIKE 'demo-%' ORDER BY 1, 2, 3 LIMIT 5;

\echo '-- index maintenance, as a dry run'
SELECT * FROM automation.maintain_indexes(dry_run => true, min_size_bytes => 0, bloat_threshold => 0) LIMIT 5;

-- Monitoring: samples into automation.database_monitoring, health checks,
-- long-running queries, table growth. Thresholds are GUCs, read through
-- automation.monitoring_settings() (src/monitoring.rs), so their defaults live
-- in one place.

-- Group role for monitoring; global, so it outlives DROP EXTENSION.
DO $role$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'automation_monitor') THEN
        -- (0.6.0) a first install in another database at the same moment
        -- may create it first: then it exists, which is all we need
        BEGIN
            CREATE ROLE automation_monitor NOLOGIN;
        EXCEPTION WHEN unique_violation OR duplicate_object THEN
            NULL;
        END;
    END IF;
END
$role$;
-- pg_monitor: read every session's activity and all statistics, without superuser
GRANT pg_monitor TO automation_monitor;
GRANT USAGE ON SCHEMA automation TO automation_monitor;
GRANT SELECT, INSERT, DELETE ON automation.database_monitoring TO automation_monitor;

-- A live sample, not stored: every column but the deltas since the previous
-- sample (deadlocks, temp_bytes), which only collect_database_metrics knows.
CREATE FUNCTION automation.sample_database_metrics()
RETURNS automation.database_monitoring
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s automation.database_monitoring;
    settings record;
BEGIN
    SELECT * INTO settings FROM automation.monitoring_settings();
    s.check_time := clock_timestamp();

    SELECT count(*) FILTER (WHERE a.state = 'active'),
           count(*) FILTER (WHERE a.state = 'active' AND a.pid <> pg_backend_pid()
                              AND a.query_start < s.check_time - settings.long_query_threshold),
           count(*) FILTER (WHERE a.state IN ('idle in transaction', 'idle in transaction (aborted)'))
      INTO s.active_connections, s.long_running_queries, s.idle_in_transaction
      FROM pg_stat_activity a;

    SELECT round(sum(t.heap_blks_hit) * 100 / nullif(sum(t.heap_blks_hit) + sum(t.heap_blks_read), 0), 2)
      INTO s.cache_hit_ratio FROM pg_statio_user_tables t;
    SELECT round(sum(i.idx_blks_hit) * 100 / nullif(sum(i.idx_blks_hit) + sum(i.idx_blks_read), 0), 2)
      INTO s.index_hit_ratio FROM pg_statio_user_indexes i;

    -- the 10 largest user tables (leaf tables and matviews; a partitioned
    -- parent has no storage of its own)
    SELECT coalesce(jsonb_object_agg(t.name, jsonb_build_object('bytes', t.bytes, 'pretty', pg_size_pretty(t.bytes))), '{}')
      INTO s.table_sizes
      FROM (SELECT n.nspname || '.' || c.relname AS name, pg_total_relation_size(c.oid) AS bytes
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'm')
               AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
             ORDER BY bytes DESC
             LIMIT 10) t;

    -- on a standby: how far replay is behind; on a primary: its slowest
    -- standby; NULL without replication
    IF pg_is_in_recovery() THEN
        s.replication_lag := s.check_time - pg_last_xact_replay_timestamp();
    ELSE
        SELECT max(r.replay_lag) INTO s.replication_lag FROM pg_stat_replication r;
    END IF;

    SELECT max(age(d.datfrozenxid)) INTO s.xid_wraparound_age FROM pg_database d;
    SELECT d.deadlocks, d.temp_bytes INTO s.deadlocks_total, s.temp_bytes_total
      FROM pg_stat_database d WHERE d.datname = current_database();

    -- the 5 tables (of at least 1000 rows) with the largest share of dead tuples
    SELECT coalesce(jsonb_object_agg(t.name, jsonb_build_object('dead_percent', t.pct, 'dead_rows', t.dead,
                                                                'live_rows', t.live)), '{}')
      INTO s.dead_tuple_ratios
      FROM (SELECT u.schemaname || '.' || u.relname AS name, u.n_dead_tup AS dead, u.n_live_tup AS live,
                   round(100.0 * u.n_dead_tup / (u.n_live_tup + u.n_dead_tup), 2) AS pct
              FROM pg_stat_user_tables u
             WHERE u.n_live_tup + u.n_dead_tup >= 1000 AND u.n_dead_tup > 0
             ORDER BY u.n_dead_tup::float8 / (u.n_live_tup + u.n_dead_tup) DESC
             LIMIT 5) t;
    RETURN s;
END
$fn$;

-- How much a cumulative counter grew: NULL with no previous value, the
-- counter itself when it went backwards (statistics were reset).
CREATE FUNCTION automation.counter_delta(current bigint, previous bigint)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE WHEN previous IS NULL THEN NULL
                WHEN current < previous THEN current
                ELSE current - previous END
$fn$;

CREATE FUNCTION automation.collect_database_metrics()
RETURNS automation.database_monitoring
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s automation.database_monitoring := automation.sample_database_metrics();
    previous automation.database_monitoring;
    retention interval;
BEGIN
    SELECT * INTO previous FROM automation.database_monitoring m ORDER BY m.check_time DESC LIMIT 1;
    s.deadlocks := automation.counter_delta(s.deadlocks_total, previous.deadlocks_total);
    s.temp_bytes := automation.counter_delta(s.temp_bytes_total, previous.temp_bytes_total);
    INSERT INTO automation.database_monitoring SELECT s.*;
    -- retention, in a bounded batch per call
    SELECT ms.monitoring_retention INTO retention FROM automation.monitoring_settings() ms;
    IF retention > interval '0' THEN
        DELETE FROM automation.database_monitoring m
         WHERE m.check_time IN (SELECT o.check_time FROM automation.database_monitoring o
                                 WHERE o.check_time < s.check_time - retention
                                 ORDER BY o.check_time LIMIT 10000);
    END IF;
    RETURN s;
END
$fn$;

CREATE FUNCTION automation.health_check()
RETURNS TABLE (check_name text, value numeric, status text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s automation.database_monitoring := automation.sample_database_metrics();
    t record;
    invalid bigint;
BEGIN
    SELECT * INTO t FROM automation.monitoring_settings();
    SELECT count(*) INTO invalid FROM pg_index i WHERE NOT i.indisvalid;
    RETURN QUERY
    SELECT c.check_name, c.value, c.status FROM (VALUES
        ('Connection count', s.active_connections::numeric,
         CASE WHEN s.active_connections > t.max_connections THEN 'WARNING: High connection count' ELSE 'OK' END),
        ('Cache hit ratio', s.cache_hit_ratio,
         CASE WHEN s.cache_hit_ratio < t.min_cache_hit_ratio THEN 'WARNING: Low cache hit ratio' ELSE 'OK' END),
        ('Index hit ratio', s.index_hit_ratio,
         CASE WHEN s.index_hit_ratio < t.min_index_hit_ratio THEN 'WARNING: Low index hit ratio' ELSE 'OK' END),
        ('Long-running queries', s.long_running_queries::numeric,
         CASE WHEN s.long_running_queries > 0
              THEN 'WARNING: ' || s.long_running_queries || ' long-running queries' ELSE 'OK' END),
        ('Transaction ID age', s.xid_wraparound_age::numeric,
         CASE WHEN s.xid_wraparound_age > t.max_xid_age
              THEN 'WARNING: oldest unfrozen transaction ID is ' || s.xid_wraparound_age || ' transactions old'
              ELSE 'OK' END),
        ('Invalid indexes', invalid::numeric,
         CASE WHEN invalid > 0 THEN 'WARNING: ' || invalid || ' invalid indexes' ELSE 'OK' END)
    ) AS c(check_name, value, status)
    ORDER BY c.status DESC, c.check_name;
END
$fn$;

CREATE FUNCTION automation.long_running_queries(older_than interval DEFAULT '5 minutes',
                                                application_name_like text DEFAULT NULL)
RETURNS TABLE (pid integer, usename name, application_name text, client_addr inet,
               query_start timestamptz, state text, query text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT a.pid, a.usename, a.application_name, a.client_addr, a.query_start, a.state, a.query
      FROM pg_stat_activity a
     WHERE a.state = 'active'
       AND a.pid <> pg_backend_pid()
       AND a.query_start < clock_timestamp() - long_running_queries.older_than
       AND (long_running_queries.application_name_like IS NULL
            OR a.application_name LIKE long_running_queries.application_name_like)
     ORDER BY a.query_start
$fn$;

CREATE FUNCTION automation.table_growth(schema_name text DEFAULT NULL)
RETURNS TABLE (schemaname name, tablename name, total_size text, table_size text,
               live_rows bigint, dead_rows bigint, total_bytes bigint, table_bytes bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- (0.8.0) a schema that does not exist is an error, as for describe_tables
    IF table_growth.schema_name IS NOT NULL
       AND NOT EXISTS (SELECT FROM pg_namespace n WHERE n.nspname = table_growth.schema_name) THEN
        RAISE EXCEPTION 'schema "%" does not exist', table_growth.schema_name
              USING ERRCODE = 'invalid_schema_name';
    END IF;
    RETURN QUERY
    SELECT u.schemaname, u.relname,
           pg_size_pretty(pg_total_relation_size(u.relid)), pg_size_pretty(pg_relation_size(u.relid)),
           u.n_live_tup, u.n_dead_tup,
           pg_total_relation_size(u.relid), pg_relation_size(u.relid)
      FROM pg_stat_user_tables u
     WHERE table_growth.schema_name IS NULL OR u.schemaname = table_growth.schema_name
     ORDER BY pg_total_relation_size(u.relid) DESC, u.schemaname, u.relname;
END
$fn$;

COMMENT ON FUNCTION automation.sample_database_metrics() IS
'A database health sample computed now, not stored (deadlock and temp-byte deltas are NULL).';
COMMENT ON FUNCTION automation.collect_database_metrics() IS
'Store a health sample in automation.database_monitoring and return it; deletes samples older than automation.monitoring_retention, 10000 per call.';
COMMENT ON FUNCTION automation.health_check() IS
'The seed''s quick audit: connection count, cache and index hit ratios, long-running queries, transaction ID age, invalid indexes; status OK or WARNING: ...; thresholds are automation.health_* settings.';
COMMENT ON FUNCTION automation.long_running_queries(interval, text) IS
'Active queries that started more than older_than ago, optionally only for application names LIKE a pattern.';
COMMENT ON FUNCTION automation.table_growth(text) IS
'User tables by total size (all schemas, or one), with live and dead row counts.';
COMMENT ON FUNCTION automation.counter_delta(bigint, bigint) IS
'Internal: growth of a cumulative counter between two samples.';

-- The live state for the exposition (0.5.0, issue 17): counted now, not
-- sampled; each part only if the caller may read its table (a monitor
-- without the scheduler's tables still gets the rest).
CREATE FUNCTION automation.live_metrics()
RETURNS TABLE (metric text, labels jsonb, value double precision)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF has_table_privilege('automation_workflows.execution_queue', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_queue_executions', jsonb_build_object('workflow', q.workflow_name, 'state', s.state),
               count(*)::float8
          FROM automation_workflows.execution_queue q
         CROSS JOIN LATERAL (SELECT CASE WHEN q.claimed_by IS NULL THEN 'pending' ELSE 'running' END AS state) s
         GROUP BY q.workflow_name, s.state;
        RETURN QUERY
        SELECT 'automation_queue_oldest_pending_seconds', jsonb_build_object('workflow', q.workflow_name),
               GREATEST(0, extract(epoch FROM now() - min(q.run_after)))::float8
          FROM automation_workflows.execution_queue q
         WHERE q.claimed_by IS NULL AND q.run_after <= now()
         GROUP BY q.workflow_name;
    END IF;
    IF has_table_privilege('automation_workflows.workflow_executions', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_workflow_executions_active', jsonb_build_object('workflow', e.workflow_name, 'status', e.status),
               count(*)::float8
          FROM automation_workflows.workflow_executions e
         WHERE e.status IN ('pending', 'running')
         GROUP BY e.workflow_name, e.status;
    END IF;
    IF has_table_privilege('automation_workflows.step_runs', 'SELECT') THEN
        RETURN QUERY
        -- (0.8.0) SQL steps have no queue: "(sql)", not "null"
        SELECT 'automation_workflow_steps', jsonb_build_object('queue', coalesce(r.queue, '(sql)'), 'status', r.status), count(*)::float8
          FROM automation_workflows.step_runs r
         WHERE r.status IN ('pending', 'running')
         GROUP BY r.queue, r.status;
    END IF;
    -- (0.8.0) what to alert on: executions finished by workflow and status
    -- (counters), the share of executions of the last hour that succeeded,
    -- open errors and dead letters
    IF has_table_privilege('automation.execution_stats', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_executions_finished_total', jsonb_build_object('workflow', x.workflow_name, 'status', x.status),
               sum(x.finished)::float8
          FROM automation.execution_stats x
         GROUP BY x.workflow_name, x.status;
    END IF;
    IF has_table_privilege('automation_workflows.workflow_executions', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_workflow_success_ratio', jsonb_build_object('workflow', e.workflow_name::text),
               (count(*) FILTER (WHERE e.status = 'success'))::float8 / count(*)
          FROM automation_workflows.workflow_executions e
         WHERE e.completed_at > now() - interval '1 hour' AND e.status IN ('success', 'error', 'timeout')
         GROUP BY e.workflow_name;
    END IF;
    IF has_table_privilege('automation.errors', 'SELECT') THEN
        RETURN QUERY
        SELECT c.metric, jsonb_build_object('workflow', coalesce(r.workflow_name::text, '')), c.n::float8
          FROM (SELECT r.workflow_name,
                       count(*) FILTER (WHERE r.dead_lettered_at IS NULL) AS open,
                       count(*) FILTER (WHERE r.dead_lettered_at IS NOT NULL) AS dead
                  FROM automation.errors r WHERE r.resolved_at IS NULL
                 GROUP BY r.workflow_name) r
         CROSS JOIN LATERAL (VALUES ('automation_errors_open', r.open), ('automation_dead_letters', r.dead)) c(metric, n)
         WHERE c.n > 0;
    END IF;
    IF has_table_privilege('automation.pipeline_metrics', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_pipeline_success_ratio', jsonb_build_object('pipeline', m.pipeline_name::text),
               (count(*) FILTER (WHERE m.status = 'success'))::float8 / count(*)
          FROM automation.pipeline_metrics m
         WHERE m.time > now() - interval '1 hour' AND m.time <= now()
         GROUP BY m.pipeline_name;
    END IF;
    -- 0.6.0: runs counted by the scheduler (job_run_stats), whatever the
    -- history keeps; histograms over every job of the database (0.8.0:
    -- through job_histograms(), which the exporter file reads too)
    IF has_table_privilege('automation.job_run_stats', 'SELECT') AND has_table_privilege('automation.job', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_job_runs_total', jsonb_build_object('job', coalesce(j.jobname, s.jobid::text), 'status', c.status),
               c.n::float8
          FROM automation.job_run_stats s JOIN automation.job j ON j.jobid = s.jobid
         CROSS JOIN LATERAL (VALUES ('succeeded', s.succeeded), ('failed', s.failed), ('skipped', s.skipped)) c(status, n);
        RETURN QUERY
        SELECT x.metric, x.labels, x.value FROM (
            SELECT h.metric || '_bucket' AS metric,
                   jsonb_build_object('__name__', h.metric || '_bucket', 'le', b.bound::text) AS labels,
                   b.n::float8 AS value, h.metric AS family, b.i AS ord
              FROM automation.job_histograms() h
             CROSS JOIN LATERAL unnest(h.bounds, h.buckets) WITH ORDINALITY b(bound, n, i)
            UNION ALL
            SELECT h.metric || '_bucket', jsonb_build_object('__name__', h.metric || '_bucket', 'le', '+Inf'), h.count::float8,
                   h.metric, 1000000
              FROM automation.job_histograms() h
            UNION ALL
            SELECT h.metric || '_sum', jsonb_build_object('__name__', h.metric || '_sum'), h.sum, h.metric, 1000001
              FROM automation.job_histograms() h
            UNION ALL
            SELECT h.metric || '_count', jsonb_build_object('__name__', h.metric || '_count'), h.count::float8, h.metric, 1000002
              FROM automation.job_histograms() h
        ) x ORDER BY x.family, x.ord;
    END IF;
    IF has_table_privilege('automation.job_run_details', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_job_runs_active', '{}'::jsonb, count(*)::float8
          FROM automation.job_run_details d WHERE d.status IN ('starting', 'running');
    END IF;
    -- (0.8.0) is the launcher running (1) or not (0): what an alert watches
    -- (pg_stat_activity shows background workers to every role)
    RETURN QUERY
    SELECT 'automation_launcher_running', '{}'::jsonb,
           (EXISTS (SELECT FROM pg_catalog.pg_stat_activity a WHERE a.backend_type = 'automation_ext launcher'))::integer::float8;
    -- (0 while the launcher does not know this database: nothing waits then)
    RETURN QUERY
    SELECT 'automation_jobs_waiting_for_slot', '{}'::jsonb,
           COALESCE((SELECT (s.runs_waiting + s.fires_waiting)::float8
                       FROM automation.scheduler_state() s
                      WHERE s.database_oid = (SELECT d.oid FROM pg_catalog.pg_database d
                                               WHERE d.datname = current_database())), 0);
END
$fn$;
COMMENT ON FUNCTION automation.live_metrics() IS
'The live state that metrics_exposition() adds to the latest sample: queue depth and oldest pending age per workflow, active executions, pending and running steps, last-hour pipeline success ratio, job runs by job and status (counted by the scheduler), run-duration and start-lateness histograms, runs active, fires waiting for a slot (each part if the caller may read its table).';

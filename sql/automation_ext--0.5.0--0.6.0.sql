-- automation_ext 0.5.0 -> 0.6.0
--
-- Frozen once released, like every upgrade script: it repeats the 0.6.0
-- objects from the install files as they were at 0.6.0. pg_test/sql/upgrade.sql
-- checks that an upgraded database has exactly the catalog of a fresh install.
-- Runs with search_path = pg_catalog; everything is schema-qualified.
--
-- 0.6.0: the scheduler (issue 17). Per job: a time zone, retries with
-- backoff, an overlap policy (skip, queue, parallel N), a priority among
-- runs waiting for a slot, a history mode (log_runs, with the setting
-- automation.log_runs) and a cap on kept runs (keep_runs); each attempt is
-- its own run (job_run_details.attempt). Existing jobs keep today's
-- behaviour (no retries, skip, priority 0, every run logged). The scheduler
-- counts runs in job_run_stats (counters and histograms for the
-- exposition); scheduler_state() adds fires_waiting. schedule(),
-- schedule_in_database() and alter_job() take the new options as optional
-- arguments (their old signatures are replaced; calls keep working).
-- Table triggers of the registry append the changed rows to
-- automation_workflows.trigger_inbox; the scheduler starts the executions
-- after the commit (drain_trigger_inbox) (issue 18).

ALTER TABLE automation.job
    ADD COLUMN timezone        text,
    ADD COLUMN retries         integer  NOT NULL DEFAULT 0,
    ADD COLUMN retry_backoff   interval NOT NULL DEFAULT interval '10 seconds',
    ADD COLUMN overlap         text     NOT NULL DEFAULT 'skip',
    ADD COLUMN priority        integer  NOT NULL DEFAULT 0,
    ADD COLUMN log_runs        text,
    ADD COLUMN keep_runs       integer,
    ADD COLUMN next_attempt    integer  NOT NULL DEFAULT 1,
    ADD CONSTRAINT job_timezone_check CHECK (timezone <> ''),
    ADD CONSTRAINT job_retries_check CHECK (retries BETWEEN 0 AND 100),
    ADD CONSTRAINT job_retry_backoff_check CHECK (retry_backoff > interval '0' AND retry_backoff <= interval '1 day'),
    ADD CONSTRAINT job_overlap_check CHECK (overlap ~ '^(skip|queue|parallel ([1-9][0-9]{0,2}|1000))$'),
    ADD CONSTRAINT job_log_runs_check CHECK (log_runs IN ('all', 'failures', 'none')),
    ADD CONSTRAINT job_keep_runs_check CHECK (keep_runs > 0),
    ADD CONSTRAINT job_next_attempt_check CHECK (next_attempt >= 1);
COMMENT ON TABLE automation.job IS
    'Scheduled jobs (pg_cron''s cron.job columns, plus timeout, time zone, retries, overlap policy, priority, history mode, last/next run and consecutive failures). Each role sees its own.';
ALTER TABLE automation.job_run_details ADD COLUMN attempt integer NOT NULL DEFAULT 1;
COMMENT ON TABLE automation.job_run_details IS
    'One row per run of a job (pg_cron''s cron.job_run_details, plus scheduled_for and attempt). Purged after automation.job_run_retention, capped per job by keep_runs; automation.log_runs and the job''s log_runs choose which runs stay.';
-- 0.6.0 (issue 17): what the scheduler counts of each job's runs, whatever
-- job_run_details keeps (log_runs, keep_runs, the purge): runs by status
-- since the row was made, and histograms of run duration and of start
-- lateness (start_time - scheduled_for) over job_run_histogram_bounds().
-- Counters, for metrics_exposition(); not dumped (a restore starts them at 0).
CREATE TABLE automation.job_run_stats (
    jobid            bigint PRIMARY KEY,
    succeeded        bigint NOT NULL DEFAULT 0,
    failed           bigint NOT NULL DEFAULT 0,
    skipped          bigint NOT NULL DEFAULT 0,
    -- runs per bucket (not cumulative): bucket i holds values below bound i
    -- and at least bound i-1; the last one what is above every bound
    duration_buckets bigint[] NOT NULL,
    duration_sum     double precision NOT NULL DEFAULT 0,
    lateness_buckets bigint[] NOT NULL,
    lateness_sum     double precision NOT NULL DEFAULT 0,
    since            timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE automation.job_run_stats IS
    'Per job, what the scheduler counted of its runs since "since": runs by status, and run-duration and start-lateness histograms (seconds, buckets of automation.job_run_histogram_bounds()). Counts every run, whatever job_run_details keeps.';

ALTER TABLE automation.job_run_stats ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_run_stats_owner_policy ON automation.job_run_stats
    USING (jobid IN (SELECT j.jobid FROM automation.job j));

CREATE FUNCTION automation.job_run_histogram_bounds()
RETURNS double precision[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT '{0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,300,900,3600}'::double precision[]
$fn$;

COMMENT ON FUNCTION automation.job_run_histogram_bounds() IS
'The upper bounds (seconds) of the buckets of automation.job_run_stats''s histograms; a last bucket holds what is above them.';

-- Called by the scheduler for each run it records (duration and lateness
-- NULL when the run did not run: skipped, refused).
CREATE FUNCTION automation.count_job_run(job bigint, status text, duration double precision,
                                         lateness double precision)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    INSERT INTO automation.job_run_stats (jobid, duration_buckets, lateness_buckets)
    SELECT job, z.a, z.a
      FROM (SELECT pg_catalog.array_fill(0::bigint,
                       ARRAY[pg_catalog.array_length(automation.job_run_histogram_bounds(), 1) + 1]) AS a) z
    ON CONFLICT (jobid) DO NOTHING;
    UPDATE automation.job_run_stats s
       SET succeeded = s.succeeded + (count_job_run.status = 'succeeded')::int,
           failed = s.failed + (count_job_run.status = 'failed')::int,
           skipped = s.skipped + (count_job_run.status = 'skipped')::int,
           duration_buckets = ARRAY(
               SELECT u.n + ((u.i = pg_catalog.width_bucket(duration, automation.job_run_histogram_bounds()) + 1) IS TRUE)::int
                 FROM pg_catalog.unnest(s.duration_buckets) WITH ORDINALITY u(n, i) ORDER BY u.i),
           duration_sum = s.duration_sum + COALESCE(duration, 0),
           lateness_buckets = ARRAY(
               SELECT u.n + ((u.i = pg_catalog.width_bucket(CASE WHEN lateness < 0 THEN 0 ELSE lateness END, automation.job_run_histogram_bounds()) + 1) IS TRUE)::int
                 FROM pg_catalog.unnest(s.lateness_buckets) WITH ORDINALITY u(n, i) ORDER BY u.i),
           lateness_sum = s.lateness_sum + GREATEST(COALESCE(lateness, 0), 0)
     WHERE s.jobid = job;
$fn$;

COMMENT ON FUNCTION automation.count_job_run(bigint, text, double precision, double precision) IS
'Internal (the scheduler): count a run of a job in automation.job_run_stats.';
REVOKE EXECUTE ON FUNCTION automation.count_job_run(bigint, text, double precision, double precision) FROM PUBLIC;

GRANT SELECT ON automation.job_run_stats TO automation_runner;

CREATE OR REPLACE FUNCTION automation.job_check_schedule()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    NEW.next_run_at := automation.next_run(NEW.schedule, pg_catalog.now(), NEW.timezone);
    NEW.next_attempt := 1;
    RETURN NEW;
END
$fn$;

DROP TRIGGER job_check_schedule ON automation.job;
CREATE TRIGGER job_check_schedule
    BEFORE INSERT OR UPDATE OF schedule, timezone ON automation.job
    FOR EACH ROW EXECUTE FUNCTION automation.job_check_schedule();
DROP TRIGGER job_cache_invalidate ON automation.job;
CREATE TRIGGER job_cache_invalidate
    AFTER INSERT OR DELETE OR TRUNCATE
       OR UPDATE OF schedule, command, database, username, active, jobname, timeout,
                    timezone, retries, retry_backoff, overlap, priority, log_runs, keep_runs
    ON automation.job
    FOR EACH STATEMENT EXECUTE FUNCTION automation.job_cache_invalidate();
DROP FUNCTION automation.schedule(text, text, text);
DROP FUNCTION automation.schedule_in_database(text, text, text, text, text, boolean, interval);
DROP FUNCTION automation.alter_job(bigint, text, text, text, text, boolean, interval);

CREATE FUNCTION automation.schedule(job_name text, schedule text, command text,
                                    timezone text DEFAULT NULL, retries integer DEFAULT NULL,
                                    retry_backoff interval DEFAULT NULL, overlap text DEFAULT NULL,
                                    priority integer DEFAULT NULL, log_runs text DEFAULT NULL,
                                    keep_runs integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    id bigint;
BEGIN
    PERFORM automation.check_job_privilege('INSERT');
    -- the same name for the same role replaces the job (pg_cron's upsert),
    -- options included: one left out is back to its default
    INSERT INTO automation.job AS j (jobname, schedule, command, timezone, retries, retry_backoff, overlap,
                                     priority, log_runs, keep_runs)
    VALUES (job_name, schedule.schedule, command, schedule.timezone, COALESCE(schedule.retries, 0),
            COALESCE(schedule.retry_backoff, interval '10 seconds'), COALESCE(schedule.overlap, 'skip'),
            COALESCE(schedule.priority, 0), schedule.log_runs, schedule.keep_runs)
    ON CONFLICT ON CONSTRAINT job_jobname_owner_key DO UPDATE
       SET schedule = EXCLUDED.schedule, command = EXCLUDED.command, timezone = EXCLUDED.timezone,
           retries = EXCLUDED.retries, retry_backoff = EXCLUDED.retry_backoff, overlap = EXCLUDED.overlap,
           priority = EXCLUDED.priority, log_runs = EXCLUDED.log_runs, keep_runs = EXCLUDED.keep_runs
    RETURNING j.jobid INTO id;
    RETURN id;
END
$fn$;

CREATE FUNCTION automation.schedule_in_database(job_name text, schedule text, command text, database text,
                                                username text DEFAULT NULL, active boolean DEFAULT true,
                                                timeout interval DEFAULT NULL,
                                                timezone text DEFAULT NULL, retries integer DEFAULT NULL,
                                                retry_backoff interval DEFAULT NULL, overlap text DEFAULT NULL,
                                                priority integer DEFAULT NULL, log_runs text DEFAULT NULL,
                                                keep_runs integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    id bigint;
    who text := COALESCE(username, CURRENT_USER::text);
BEGIN
    PERFORM automation.check_job_privilege('INSERT');
    PERFORM automation.check_job_target(database, who);
    INSERT INTO automation.job AS j (jobname, schedule, command, database, username, active, timeout,
                                     timezone, retries, retry_backoff, overlap, priority, log_runs, keep_runs)
    VALUES (job_name, schedule_in_database.schedule, command, database, who, COALESCE(active, true), timeout,
            schedule_in_database.timezone, COALESCE(schedule_in_database.retries, 0),
            COALESCE(schedule_in_database.retry_backoff, interval '10 seconds'),
            COALESCE(schedule_in_database.overlap, 'skip'), COALESCE(schedule_in_database.priority, 0),
            schedule_in_database.log_runs, schedule_in_database.keep_runs)
    ON CONFLICT ON CONSTRAINT job_jobname_owner_key DO UPDATE
       SET schedule = EXCLUDED.schedule, command = EXCLUDED.command, database = EXCLUDED.database,
           active = EXCLUDED.active, timeout = EXCLUDED.timeout, timezone = EXCLUDED.timezone,
           retries = EXCLUDED.retries, retry_backoff = EXCLUDED.retry_backoff, overlap = EXCLUDED.overlap,
           priority = EXCLUDED.priority, log_runs = EXCLUDED.log_runs, keep_runs = EXCLUDED.keep_runs
    RETURNING j.jobid INTO id;
    RETURN id;
END
$fn$;

CREATE FUNCTION automation.alter_job(job_id bigint, schedule text DEFAULT NULL, command text DEFAULT NULL,
                                     database text DEFAULT NULL, username text DEFAULT NULL,
                                     active boolean DEFAULT NULL, timeout interval DEFAULT NULL,
                                     timezone text DEFAULT NULL, retries integer DEFAULT NULL,
                                     retry_backoff interval DEFAULT NULL, overlap text DEFAULT NULL,
                                     priority integer DEFAULT NULL, log_runs text DEFAULT NULL,
                                     keep_runs integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    current automation.job;
BEGIN
    PERFORM automation.check_job_privilege('UPDATE');
    SELECT * INTO current FROM automation.job j WHERE j.jobid = job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'could not find valid entry for job %', job_id
              USING ERRCODE = 'undefined_object',
                    HINT = 'automation.job lists the jobs you own.';
    END IF;
    PERFORM automation.check_job_target(alter_job.database, COALESCE(alter_job.username, current.username));
    UPDATE automation.job j
       SET schedule = COALESCE(alter_job.schedule, j.schedule),
           command  = COALESCE(alter_job.command, j.command),
           database = COALESCE(alter_job.database, j.database),
           username = COALESCE(alter_job.username, j.username),
           active   = COALESCE(alter_job.active, j.active),
           -- a zero timeout removes it
           timeout  = CASE WHEN alter_job.timeout IS NULL THEN j.timeout
                           WHEN alter_job.timeout = interval '0' THEN NULL
                           ELSE alter_job.timeout END,
           -- '' returns to automation.timezone / automation.log_runs; 0 removes the cap
           timezone = CASE WHEN alter_job.timezone IS NULL THEN j.timezone
                           ELSE NULLIF(alter_job.timezone, '') END,
           retries = COALESCE(alter_job.retries, j.retries),
           retry_backoff = COALESCE(alter_job.retry_backoff, j.retry_backoff),
           overlap = COALESCE(alter_job.overlap, j.overlap),
           priority = COALESCE(alter_job.priority, j.priority),
           log_runs = CASE WHEN alter_job.log_runs IS NULL THEN j.log_runs
                           ELSE NULLIF(alter_job.log_runs, '') END,
           keep_runs = CASE WHEN alter_job.keep_runs IS NULL THEN j.keep_runs
                            ELSE NULLIF(alter_job.keep_runs, 0) END
     WHERE j.jobid = job_id;
END
$fn$;

COMMENT ON FUNCTION automation.schedule(text, text, text, text, integer, interval, text, integer, text, integer) IS
'pg_cron''s cron.schedule(job_name, schedule, command): schedule a command in this database as the current role; the same job_name again replaces that job. Optional: timezone (NULL: automation.timezone), retries and retry_backoff, overlap (skip, queue, parallel N), priority, log_runs (all, failures, none; NULL: automation.log_runs), keep_runs. Returns the jobid.';

COMMENT ON FUNCTION automation.schedule_in_database(text, text, text, text, text, boolean, interval, text, integer, interval, text, integer, text, integer) IS
'pg_cron''s cron.schedule_in_database: run the command in another database (and, for superusers, as another role); timeout becomes the run''s statement_timeout; the other options as for schedule().';

COMMENT ON FUNCTION automation.alter_job(bigint, text, text, text, text, boolean, interval, text, integer, interval, text, integer, text, integer) IS
'pg_cron''s cron.alter_job: change what is not NULL; timeout => ''0'' removes the timeout, timezone => '''' and log_runs => '''' return to the settings, keep_runs => 0 removes the cap. Moving a job to another role needs superuser.';


CREATE OR REPLACE PROCEDURE automation.purge_job_run_details(batch integer DEFAULT 10000)
LANGUAGE plpgsql
AS $fn$
DECLARE
    cutoff timestamptz := pg_catalog.now() OPERATOR(pg_catalog.-) automation.job_run_retention();
    n bigint;
BEGIN
    -- the counters of jobs that are gone
    DELETE FROM automation.job_run_stats s
     WHERE NOT EXISTS (SELECT FROM automation.job j WHERE j.jobid OPERATOR(pg_catalog.=) s.jobid);
    -- automation.job_run_retention = 0 keeps every run (as every retention setting)
    IF automation.job_run_retention() OPERATOR(pg_catalog.=) interval '0' THEN
        RETURN;
    END IF;
    LOOP
        DELETE FROM automation.job_run_details
         WHERE runid IN (SELECT d.runid FROM automation.job_run_details d
                          WHERE d.end_time OPERATOR(pg_catalog.<) cutoff
                          LIMIT batch);
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n OPERATOR(pg_catalog.<) batch;
        COMMIT;
    END LOOP;
END
$fn$;

DROP FUNCTION automation.scheduler_state();
CREATE FUNCTION automation.scheduler_state()
RETURNS TABLE (database_oid oid, extension text, scheduler_pid integer, next_due timestamptz,
               waiting_since timestamptz, runs_waiting integer, runs_running integer,
               fires_waiting integer, max_workers integer, scheduler_workers integer)
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'scheduler_state_wrapper';

COMMENT ON FUNCTION automation.scheduler_state() IS
'Per database the launcher knows: whether it has the extension, its scheduler''s pid (schedulers run only while jobs are due), when it needs one next, since when it has waited for one, its runs waiting for a worker and running, its due fires waiting for a slot (automation.max_running_jobs, or no free run slot); and the cluster-wide budgets in force (automation.max_workers, automation.scheduler_workers, clamped to max_worker_processes).';

CREATE OR REPLACE FUNCTION automation.scheduler_status()
RETURNS TABLE (component text, pid integer, database name, state text, since timestamptz, detail text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH workers AS (
        SELECT a.backend_type, a.pid, a.datname, a.backend_start, a.query, a.application_name, a.query_start, a.state
          FROM pg_catalog.pg_stat_activity a
         WHERE a.backend_type IN ('automation_ext launcher', 'automation_ext scheduler', 'automation_ext job')
    ), preloaded AS (
        SELECT 'automation_ext' = ANY (pg_catalog.string_to_array(
                   pg_catalog.replace(pg_catalog.current_setting('shared_preload_libraries'), ' ', ''), ',')) AS yes
    )
    SELECT 'launcher', w.pid, NULL::name, 'running', w.backend_start, NULL::text
      FROM workers w WHERE w.backend_type = 'automation_ext launcher'
    UNION ALL
    SELECT 'launcher', NULL, NULL,
           CASE WHEN pg_catalog.pg_is_in_recovery() THEN 'waiting: this server is a standby; scheduling starts after promotion'
                WHEN NOT p.yes THEN 'not running: automation_ext is not in shared_preload_libraries'
                WHEN pg_catalog.current_setting('automation.enabled') = 'off' THEN 'stopped: automation.enabled is off'
                ELSE 'not running (restarting?)' END,
           NULL, NULL
      FROM preloaded p WHERE NOT EXISTS (SELECT FROM workers WHERE backend_type = 'automation_ext launcher')
    UNION ALL
    SELECT 'scheduler', w.pid, w.datname, 'running', w.backend_start, w.query
      FROM workers w WHERE w.backend_type = 'automation_ext scheduler'
    UNION ALL
    SELECT 'database', NULL, d.datname,
           CASE WHEN s.waiting_since IS NOT NULL THEN 'waiting for a scheduler'
                WHEN s.runs_waiting > 0 THEN 'runs waiting for a worker'
                ELSE 'idle' END,
           COALESCE(s.waiting_since, s.next_due),
           pg_catalog.format('next fire %s; %s run(s) waiting for a worker, %s running; up to %s runs and %s schedulers at once in the cluster (automation.max_workers, automation.scheduler_workers, within max_worker_processes)',
                             COALESCE(s.next_due::text, 'not known'), s.runs_waiting, s.runs_running,
                             s.max_workers, s.scheduler_workers)
      FROM automation.scheduler_state() s JOIN pg_catalog.pg_database d ON d.oid = s.database_oid
     WHERE s.extension = 'installed' AND s.scheduler_pid IS NULL
    UNION ALL
    SELECT 'database', NULL, d.datname, 'fires waiting for a slot', NULL,
           pg_catalog.format('%s due fire(s) wait for a slot (automation.max_running_jobs = %s in this database; highest priority first, then oldest due)',
                             s.fires_waiting, pg_catalog.current_setting('automation.max_running_jobs'))
      FROM automation.scheduler_state() s JOIN pg_catalog.pg_database d ON d.oid = s.database_oid
     WHERE s.fires_waiting > 0
    UNION ALL
    SELECT 'job', w.pid, w.datname, COALESCE(w.state, 'starting'), w.query_start,
           w.application_name || ': ' || COALESCE(w.query, '')
      FROM workers w WHERE w.backend_type = 'automation_ext job'
    UNION ALL
    SELECT 'next run', NULL, pg_catalog.current_database(), 'scheduled', j.next_run_at,
           pg_catalog.format('job %s%s: %s', j.jobid, COALESCE(' (' || j.jobname || ')', ''), j.schedule)
      FROM (SELECT * FROM automation.job WHERE active AND next_run_at IS NOT NULL
             ORDER BY next_run_at, jobid LIMIT 1) j
$fn$;

CREATE OR REPLACE FUNCTION automation.live_metrics()
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
        SELECT 'automation_workflow_steps', jsonb_build_object('queue', r.queue, 'status', r.status), count(*)::float8
          FROM automation_workflows.step_runs r
         WHERE r.status IN ('pending', 'running')
         GROUP BY r.queue, r.status;
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
    -- history keeps; histograms over every job of the database
    IF has_table_privilege('automation.job_run_stats', 'SELECT') AND has_table_privilege('automation.job', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_job_runs_total', jsonb_build_object('job', coalesce(j.jobname, s.jobid::text), 'status', c.status),
               c.n::float8
          FROM automation.job_run_stats s JOIN automation.job j ON j.jobid = s.jobid
         CROSS JOIN LATERAL (VALUES ('succeeded', s.succeeded), ('failed', s.failed), ('skipped', s.skipped)) c(status, n);
        RETURN QUERY
        WITH per_job AS (
            SELECT k.metric, k.buckets, k.total
              FROM automation.job_run_stats s JOIN automation.job j ON j.jobid = s.jobid
             CROSS JOIN LATERAL (VALUES ('automation_job_run_duration_seconds', s.duration_buckets, s.duration_sum),
                                        ('automation_job_start_lateness_seconds', s.lateness_buckets, s.lateness_sum))
                                 k(metric, buckets, total)
        ), per_bucket AS (
            SELECT p.metric, u.i, sum(u.n) AS n
              FROM per_job p CROSS JOIN LATERAL unnest(p.buckets) WITH ORDINALITY u(n, i)
             GROUP BY p.metric, u.i
        ), bounds AS (SELECT automation.job_run_histogram_bounds() AS b)
        SELECT x.metric, x.labels, x.value FROM (
            SELECT p.metric || '_bucket' AS metric,
                   jsonb_build_object('__name__', p.metric || '_bucket',
                                      'le', CASE WHEN p.i > array_length(bounds.b, 1) THEN '+Inf' ELSE bounds.b[p.i]::text END) AS labels,
                   (sum(p.n) OVER (PARTITION BY p.metric ORDER BY p.i))::float8 AS value, p.i AS ord
              FROM per_bucket p, bounds
            UNION ALL
            SELECT p.metric || '_sum', jsonb_build_object('__name__', p.metric || '_sum'), sum(p.total)::float8, 1000001
              FROM per_job p GROUP BY p.metric
            UNION ALL
            SELECT p.metric || '_count', jsonb_build_object('__name__', p.metric || '_count'), sum(p.n)::float8, 1000002
              FROM per_bucket p GROUP BY p.metric
        ) x ORDER BY x.metric, x.ord;
    END IF;
    IF has_table_privilege('automation.job_run_details', 'SELECT') THEN
        RETURN QUERY
        SELECT 'automation_job_runs_active', '{}'::jsonb, count(*)::float8
          FROM automation.job_run_details d WHERE d.status IN ('starting', 'running');
    END IF;
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

-- (issue 18) table triggers append to an inbox that the scheduler drains
-- 0.6.0: the changes that table triggers saw, waiting for the scheduler to
-- start their executions. The changing statement only appends here (the
-- rows as text, one entry per statement up to a million rows; no index): a
-- 100k-row INSERT costs about half as much again, instead of starting 100k
-- executions inside it.
-- The scheduler drains it within milliseconds of the commit
-- (drain_trigger_inbox, as the role that made the change). Dumped: a
-- change not yet drained is not lost by a dump and restore.
CREATE TABLE automation_workflows.trigger_inbox (
    trigger_id    integer     NOT NULL,
    workflow_name text        NOT NULL,
    op            text        NOT NULL,
    table_name    text        NOT NULL,
    started_by    oid         NOT NULL,
    rows          text[]      NOT NULL,
    -- how many of them have been started (the scheduler goes 2,500 at a time)
    rows_done     integer     NOT NULL DEFAULT 0,
    queued_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT trigger_inbox_op_check CHECK (op IN ('INSERT', 'UPDATE', 'DELETE'))
);

COMMENT ON TABLE automation_workflows.trigger_inbox IS
    'Changes seen by table triggers of automation_triggers.registry (rows as text, one entry per statement up to a million rows), waiting for the scheduler to start one execution per row (automation.drain_trigger_inbox).';

-- the role a change was made by is the role its executions start as: a
-- role appends only changes of its own
ALTER TABLE automation_workflows.trigger_inbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY trigger_inbox_own_changes ON automation_workflows.trigger_inbox FOR INSERT
    WITH CHECK (started_by OPERATOR(pg_catalog.=) (SELECT r.oid FROM pg_catalog.pg_roles r
                                                    WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER));
SELECT pg_catalog.pg_extension_config_dump('automation_workflows.trigger_inbox', '');

CREATE FUNCTION automation.wake_recorder()
RETURNS boolean
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wake_recorder_wrapper';

COMMENT ON FUNCTION automation.wake_recorder() IS
'Internal: true if a scheduler will pick up what this transaction leaves in the trigger inbox (it is woken at commit); false if the caller must do the work itself (the library is not preloaded, the scheduler is off).';

-- Start the executions of the oldest inbox entries, 2,500 rows at a time,
-- up to `batch` such slices, each as the role that made the change (so the
-- scheduler is never busy for long: an entry may hold a million rows). A
-- slice that cannot be started (its table was dropped or changed shape, the
-- role may no longer start the workflow) goes to automation.errors with its
-- rows, and the rest go on.
CREATE FUNCTION automation.drain_trigger_inbox(batch integer DEFAULT 40)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    at tid;
    item automation_workflows.trigger_inbox;
    inputs jsonb[];
    done integer;
    slices integer := 0;
    who name;
    started bigint := 0;
    problem text;
    state text;
BEGIN
    FOR at IN
        SELECT i.ctid FROM automation_workflows.trigger_inbox i
         ORDER BY i.queued_at LIMIT drain_trigger_inbox.batch FOR UPDATE SKIP LOCKED
    LOOP
        SELECT * INTO item FROM automation_workflows.trigger_inbox i WHERE i.ctid = at;
        SELECT r.rolname INTO who FROM pg_catalog.pg_roles r WHERE r.oid = item.started_by;
        done := item.rows_done;
        WHILE done < cardinality(item.rows) AND slices < drain_trigger_inbox.batch LOOP
            slices := slices + 1;
            BEGIN
                IF who IS NULL THEN
                    RAISE EXCEPTION 'the role that made the change (oid %) no longer exists', item.started_by
                          USING ERRCODE = 'undefined_object';
                END IF;
                EXECUTE format('SELECT array_agg(jsonb_build_object(''op'', $1, ''table'', $2, %L, to_jsonb(u.r::%s)) ORDER BY u.o)
                                  FROM unnest($3[$4:$5]) WITH ORDINALITY u(r, o)',
                               CASE item.op WHEN 'DELETE' THEN 'old' ELSE 'new' END, item.table_name::regclass)
                   INTO inputs USING item.op, item.table_name, item.rows, done + 1, done + 2500;
                EXECUTE format('SET LOCAL ROLE %I', who);
                started := started + automation.run_workflows(item.workflow_name, inputs);
                RESET ROLE;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
                RESET ROLE;
                INSERT INTO automation.errors (workflow_name, error_type, error_message, error_context)
                VALUES (item.workflow_name, 'TableTriggerFailed',
                        format('%s of %s row(s) of %s (table trigger %s) started no execution: %s',
                               item.op, least(2500, cardinality(item.rows) - done), item.table_name,
                               item.trigger_id, problem),
                        jsonb_build_object('sqlstate', state, 'trigger_id', item.trigger_id, 'op', item.op,
                                           'table', item.table_name, 'started_by', item.started_by,
                                           'queued_at', item.queued_at,
                                           'rows', to_jsonb(item.rows[done + 1:done + 2500])));
            END;
            done := done + 2500;
        END LOOP;
        IF done >= cardinality(item.rows) THEN
            DELETE FROM automation_workflows.trigger_inbox i WHERE i.ctid = at;
        ELSE
            -- (the rows themselves are not written again: an unchanged
            -- TOASTed value is kept as it is)
            UPDATE automation_workflows.trigger_inbox i SET rows_done = done WHERE i.ctid = at;
        END IF;
        EXIT WHEN slices >= drain_trigger_inbox.batch;
    END LOOP;
    RETURN started;
END
$fn$;

COMMENT ON FUNCTION automation.drain_trigger_inbox(integer) IS
'Start the executions that table triggers queued, oldest first, 2,500 rows at a time, up to batch such slices, each as the role that made the change; a slice that cannot be started goes to automation.errors with its rows. The scheduler calls it within milliseconds of a commit; returns the executions started.';
REVOKE EXECUTE ON FUNCTION automation.drain_trigger_inbox(integer) FROM PUBLIC;

GRANT INSERT ON automation_workflows.trigger_inbox TO automation_runner;

CREATE OR REPLACE FUNCTION automation.workflow_table_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    reg record;
    inputs jsonb[];
    tbl text := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);
    me oid;
    changed text;
    how_many bigint;
BEGIN
    IF TG_LEVEL IS DISTINCT FROM 'STATEMENT' OR TG_WHEN IS DISTINCT FROM 'AFTER' OR TG_NARGS <> 1 THEN
        RAISE EXCEPTION 'automation.workflow_table_trigger() only runs as the AFTER ... FOR EACH STATEMENT trigger that a table trigger of automation_triggers.registry attaches'
              USING ERRCODE = 'wrong_object_type';
    END IF;
    SELECT r.id, d.name AS workflow, r.config INTO reg
      FROM automation_triggers.registry r JOIN automation_workflows.definitions d ON d.id = r.workflow_id
     WHERE r.id = TG_ARGV[0]::integer AND r.trigger_type = 'table';
    IF NOT FOUND OR (reg.config->>'table')::regclass IS DISTINCT FROM TG_RELID THEN
        RAISE EXCEPTION 'automation.workflow_table_trigger(%) does not belong to table %', TG_ARGV[0], tbl
              USING ERRCODE = 'wrong_object_type',
                    HINT = 'Table triggers are attached by inserting a row into automation_triggers.registry.';
    END IF;
    IF automation.wake_recorder() THEN
        -- the rows as text (their own type's output: cheap), in one entry up
        -- to a million rows (a value may not exceed 1 GB), else 100,000 an
        -- entry; the role that made the change with them
        SELECT r.oid INTO me FROM pg_roles r WHERE r.rolname = current_user;
        changed := CASE WHEN TG_OP = 'DELETE' THEN 'old_rows' ELSE 'new_rows' END;
        EXECUTE format('SELECT count(*) FROM %I', changed) INTO how_many;
        IF how_many = 0 THEN
            RETURN NULL;
        ELSIF how_many <= 1000000 THEN
            EXECUTE format('INSERT INTO automation_workflows.trigger_inbox (trigger_id, workflow_name, op, table_name, started_by, rows)
                            SELECT $1, $2, $3, $4, $5, array_agg(c::text) FROM %I c', changed)
              USING reg.id, reg.workflow, TG_OP, tbl, me;
        ELSE
            EXECUTE format('INSERT INTO automation_workflows.trigger_inbox (trigger_id, workflow_name, op, table_name, started_by, rows)
                            SELECT $1, $2, $3, $4, $5, array_agg(p.r)
                              FROM (SELECT c::text AS r, (row_number() OVER ()) / 100000 AS part FROM %I c) p
                             GROUP BY p.part', changed)
              USING reg.id, reg.workflow, TG_OP, tbl, me;
        END IF;
        UPDATE automation_triggers.registry r SET last_fired_at = now() WHERE r.id = reg.id;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(jsonb_build_object('op', 'INSERT', 'table', tbl, 'new', to_jsonb(n))) INTO inputs FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(jsonb_build_object('op', 'UPDATE', 'table', tbl, 'new', to_jsonb(n))) INTO inputs FROM new_rows n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(jsonb_build_object('op', 'DELETE', 'table', tbl, 'old', to_jsonb(o))) INTO inputs FROM old_rows o;
    END IF;
    IF inputs IS NOT NULL THEN
        PERFORM automation.run_workflows(reg.workflow, inputs);
        UPDATE automation_triggers.registry r SET last_fired_at = now() WHERE r.id = reg.id;
    END IF;
    RETURN NULL;
END
$fn$;

-- firing a trigger (last_fired_at, next_fire_at) no longer detaches and re-attaches it
CREATE OR REPLACE FUNCTION automation_triggers.registry_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    def automation_workflows.definitions;
    tbl regclass;
    ev text;
    attached name;
    events text[];
    job text;
BEGIN
    IF TG_RELID IS DISTINCT FROM 'automation_triggers.registry'::regclass
       OR TG_LEVEL IS DISTINCT FROM 'ROW' OR TG_WHEN IS DISTINCT FROM 'BEFORE' THEN
        RAISE EXCEPTION 'automation_triggers.registry_check() only runs as a BEFORE ... FOR EACH ROW trigger of automation_triggers.registry'
              USING ERRCODE = 'wrong_object_type';
    END IF;
    IF NOT current_setting('check_function_bodies')::boolean THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    -- (0.6.0) firing writes last_fired_at / next_fire_at: what is attached
    -- stays (re-attaching it dropped the trigger being fired, and needs the
    -- table's owner)
    IF TG_OP = 'UPDATE' AND (NEW.id, NEW.trigger_type, NEW.config, NEW.workflow_id)
                            IS NOT DISTINCT FROM (OLD.id, OLD.trigger_type, OLD.config, OLD.workflow_id) THEN
        RETURN NEW;
    END IF;
    -- detach what the old row attached
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.trigger_type IN ('schedule', 'table') THEN
        IF OLD.trigger_type = 'schedule' THEN
            job := 'workflow trigger ' || OLD.id;
            -- (row-level security: the role that registered it, or a superuser)
            DELETE FROM automation.job j WHERE j.jobname = job;
        ELSE
            -- the triggers it attached (none if the table is gone)
            FOR attached, tbl IN
                SELECT t.tgname, t.tgrelid::regclass FROM pg_trigger t
                 WHERE t.tgrelid = to_regclass(OLD.config->>'table')
                   AND t.tgname IN ('automation_workflow_' || OLD.id || '_insert', 'automation_workflow_' || OLD.id || '_update',
                                    'automation_workflow_' || OLD.id || '_delete')
            LOOP
                EXECUTE format('DROP TRIGGER %I ON %s', attached, tbl);
            END LOOP;
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    IF NEW.trigger_type NOT IN ('schedule', 'table', 'manual') THEN
        RAISE NOTICE 'trigger type % is kept as data: only schedule, table and manual triggers start workflows', NEW.trigger_type;
        RETURN NEW;
    END IF;
    IF jsonb_typeof(NEW.config) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'the config of a % trigger must be a JSON object', NEW.trigger_type
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO def FROM automation_workflows.definitions d WHERE d.id = NEW.workflow_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'a % trigger needs the workflow it starts (workflow_id)', NEW.trigger_type
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Set workflow_id to the id of a row of automation_workflows.definitions.';
    ELSIF NOT def.is_active THEN
        RAISE EXCEPTION 'workflow % is inactive', def.name USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF NOT automation.check_definition(def.definition) THEN
        RAISE EXCEPTION 'workflow % has no steps and cannot be started', def.name
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF NEW.config ? 'input' AND jsonb_typeof(NEW.config->'input') <> 'object' THEN
        RAISE EXCEPTION 'the input in a trigger''s config must be a JSON object, not %', jsonb_typeof(NEW.config->'input')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.trigger_type = 'schedule' THEN
        IF jsonb_typeof(NEW.config->'cron') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'a schedule trigger needs "cron" in its config, such as {"cron": "0 2 * * *"}'
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
        -- the scheduler's own checks (cron syntax, @reboot, '30 seconds'...)
        PERFORM automation.schedule('workflow trigger ' || NEW.id, NEW.config->>'cron',
                                    format('SELECT automation.fire_trigger(%s)', NEW.id));
        NEW.next_fire_at := automation.next_run(NEW.config->>'cron');
    ELSIF NEW.trigger_type = 'table' THEN
        IF jsonb_typeof(NEW.config->'table') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'a table trigger needs "table" in its config, such as {"table": "public.orders", "events": ["INSERT"]}'
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
        tbl := to_regclass(NEW.config->>'table');
        IF tbl IS NULL THEN
            RAISE EXCEPTION 'table % does not exist', NEW.config->>'table' USING ERRCODE = 'undefined_table';
        ELSIF NOT has_table_privilege(tbl, 'TRIGGER') THEN
            RAISE EXCEPTION 'role % may not create triggers on table %', current_user, tbl
                  USING ERRCODE = 'insufficient_privilege',
                        HINT = 'The table''s owner (or a role granted TRIGGER on it) registers its table triggers.';
        END IF;
        IF jsonb_typeof(NEW.config->'events') IS DISTINCT FROM 'array' OR jsonb_array_length(NEW.config->'events') = 0 THEN
            RAISE EXCEPTION 'a table trigger needs "events": a non-empty array of INSERT, UPDATE, DELETE'
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
        events := ARRAY(SELECT upper(e) FROM jsonb_array_elements_text(NEW.config->'events') e);
        IF NOT events <@ ARRAY['INSERT', 'UPDATE', 'DELETE'] THEN
            RAISE EXCEPTION 'a table trigger''s events are INSERT, UPDATE and DELETE, not %', array_to_string(events, ', ')
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOREACH ev IN ARRAY events LOOP
            EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT EXECUTE FUNCTION automation.workflow_table_trigger(%L)',
                           'automation_workflow_' || NEW.id || '_' || lower(ev), ev, tbl,
                           CASE ev WHEN 'DELETE' THEN 'OLD TABLE AS old_rows' ELSE 'NEW TABLE AS new_rows' END,
                           NEW.id);
        END LOOP;
    END IF;
    RETURN NEW;
END
$fn$;

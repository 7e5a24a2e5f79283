-- The built-in scheduler (src/jobs/, run by the workers of src/worker/): pg_cron 1.6's tables and SQL API
-- under the schema automation, so that `cron.schedule(...)` ports by changing
-- the schema name; plus per-job timeouts, run-state columns, skipped runs.
--
-- Privileges follow pg_cron: a role sees and changes only its own jobs and
-- run history (row-level security on username); creating or moving a job to
-- another role needs superuser. The API functions are SECURITY INVOKER, so
-- those rules are the table's, not a definer's.

-- Rust functions (src/jobs/sql.rs).
CREATE FUNCTION automation.next_run(schedule text, after timestamptz DEFAULT pg_catalog.now(),
                                    timezone text DEFAULT NULL)
RETURNS timestamptz
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'next_run_wrapper';

COMMENT ON FUNCTION automation.next_run(text, timestamptz, text) IS
'When a schedule fires next after a time, reading it in timezone (automation.timezone when NULL); NULL for @reboot; for ''N seconds'', N seconds after it (a job''s grid starts when its schedule is set). An invalid schedule is an error (22023) naming the bad field.';

CREATE FUNCTION automation.next_fire(schedule text, due timestamptz, now timestamptz DEFAULT pg_catalog.now(),
                                     timezone text DEFAULT NULL)
RETURNS timestamptz
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'next_fire_wrapper';

COMMENT ON FUNCTION automation.next_fire(text, timestamptz, timestamptz, text) IS
'(0.11.0) The next fire of a job whose fire was due at due, seen at now, as the scheduler computes it: on the schedule (an ''N seconds'' job on its own grid, due + a multiple of N), fires missed by now coalesced into the next one after it; NULL for @reboot. An invalid schedule is an error (22023).';

CREATE FUNCTION automation.wake_scheduler()
RETURNS boolean
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wake_scheduler_wrapper';

COMMENT ON FUNCTION automation.wake_scheduler() IS
'Ask the launcher to start this database''s scheduler now and have it look at everything (the execution log, the trigger inbox, the SQL steps, runs left in flight) -- after a data-only restore, say; CREATE EXTENSION does. False, with a NOTICE, when automation_ext is not preloaded.';

CREATE FUNCTION automation.job_run_retention()
RETURNS interval
LANGUAGE c STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'job_run_retention_wrapper';

COMMENT ON FUNCTION automation.job_run_retention() IS 'The setting automation.job_run_retention as an interval.';

COMMENT ON FUNCTION automation.job_cache_invalidate() IS
'Trigger function on automation.job: the scheduler reloads its jobs when the change commits.';

CREATE TABLE automation.job (
    jobid    bigserial PRIMARY KEY,
    schedule text    NOT NULL,
    command  text    NOT NULL,
    -- kept for pg_cron compatibility; jobs always run on this server
    nodename text    NOT NULL DEFAULT 'localhost',
    nodeport integer NOT NULL DEFAULT pg_catalog.current_setting('port')::integer,
    database text    NOT NULL DEFAULT pg_catalog.current_database(),
    username text    NOT NULL DEFAULT CURRENT_USER,
    active   boolean NOT NULL DEFAULT true,
    jobname  text,
    -- beyond pg_cron:
    -- statement_timeout of each run (NULL: none)
    timeout  interval,
    -- maintained by the scheduler
    last_run_at          timestamptz,
    last_status          text,
    next_run_at          timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    -- 0.3.0: the role itself (username shows its current name), set from
    -- username when the row is written; 0 when that role did not exist (a
    -- restore into a cluster without it: the job is inactive)
    owner           oid     NOT NULL,
    -- 0.3.0: the job runs in the database that holds it, whatever its name
    -- (database then always shows the current name, also after a restore
    -- under another name or CREATE DATABASE ... TEMPLATE)
    local           boolean NOT NULL,
    -- 0.3.0: why the extension deactivated the job (owner dropped, ...)
    inactive_reason text,
    -- 0.6.0 (issue 17): the time zone its schedule is read in (NULL:
    -- automation.timezone)
    timezone        text,
    -- attempts after a failed one, the first after retry_backoff, doubling
    -- (with jitter), never reaching the next fire
    retries         integer  NOT NULL DEFAULT 0,
    retry_backoff   interval NOT NULL DEFAULT interval '10 seconds',
    -- a fire due while a run is still going: skip, queue, parallel N
    overlap         text     NOT NULL DEFAULT 'skip',
    -- among fires waiting for a slot, higher first
    priority        integer  NOT NULL DEFAULT 0,
    -- which runs job_run_details keeps (NULL: automation.log_runs), and at
    -- most how many (NULL: no cap besides automation.job_run_retention)
    log_runs        text,
    keep_runs       integer,
    -- maintained by the scheduler: 1, or the retry next_run_at is
    next_attempt    integer  NOT NULL DEFAULT 1,
    CONSTRAINT job_command_check CHECK (command <> ''),
    CONSTRAINT job_timeout_check CHECK (timeout > interval '0'),
    CONSTRAINT job_jobname_check CHECK (jobname <> ''),
    CONSTRAINT job_jobname_owner_key UNIQUE (jobname, owner),
    CONSTRAINT job_timezone_check CHECK (timezone <> ''),
    CONSTRAINT job_retries_check CHECK (retries BETWEEN 0 AND 100),
    CONSTRAINT job_retry_backoff_check CHECK (retry_backoff > interval '0' AND retry_backoff <= interval '1 day'),
    CONSTRAINT job_overlap_check CHECK (overlap ~ '^(skip|queue|parallel ([1-9][0-9]{0,2}|1000))$'),
    CONSTRAINT job_log_runs_check CHECK (log_runs IN ('all', 'failures', 'none')),
    CONSTRAINT job_keep_runs_check CHECK (keep_runs > 0),
    CONSTRAINT job_next_attempt_check CHECK (next_attempt >= 1)
);

COMMENT ON TABLE automation.job IS
    'Scheduled jobs (pg_cron''s cron.job columns, plus timeout, time zone, retries, overlap policy, priority, history mode, last/next run and consecutive failures). Each role sees its own.';

CREATE TABLE automation.job_run_details (
    jobid          bigint,
    runid          bigserial PRIMARY KEY,
    job_pid        integer,
    database       text,
    username       text,
    command        text,
    -- starting, running, succeeded, failed; skipped when the job's previous
    -- run was still going at the time this one was due
    status         text,
    return_message text,
    start_time     timestamptz,
    end_time       timestamptz,
    -- beyond pg_cron: the time the run was due
    scheduled_for  timestamptz,
    -- 0.6.0: 1, or the retry this run is
    attempt        integer NOT NULL DEFAULT 1,
    CONSTRAINT job_run_details_status_check
        CHECK (status IN ('starting', 'running', 'succeeded', 'failed', 'skipped'))
);

CREATE INDEX job_run_details_jobid_runid ON automation.job_run_details (jobid, runid DESC);
CREATE INDEX job_run_details_end_time ON automation.job_run_details USING brin (end_time);
CREATE INDEX job_run_details_in_flight ON automation.job_run_details (database)
    WHERE status IN ('starting', 'running');

COMMENT ON TABLE automation.job_run_details IS
    'One row per run of a job (pg_cron''s cron.job_run_details, plus scheduled_for and attempt). Purged after automation.job_run_retention, capped per job by keep_runs; automation.log_runs and the job''s log_runs choose which runs stay.';

-- A role sees its own jobs (by oid: a renamed role keeps them, a new role
-- with an old name gets none), and the runs of the jobs it sees. 0.8.0:
-- also the jobs of roles it may SET ROLE to (it could act as them anyway;
-- a trigger's job belongs to the trigger's owner).
ALTER TABLE automation.job ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_owner_policy ON automation.job
    USING (automation.may_act_as(owner))
    WITH CHECK (automation.may_act_as(owner));
ALTER TABLE automation.job_run_details ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_run_details_owner_policy ON automation.job_run_details
    USING (jobid IN (SELECT j.jobid FROM automation.job j));

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

-- (0.8.0) The histograms of every job of the database (the jobs the caller
-- sees) as Prometheus wants them: the finite bounds, the cumulative count
-- at each bound, the sum and the count (+Inf). What live_metrics() and the
-- postgres_exporter's HISTOGRAM columns read.
CREATE FUNCTION automation.job_histograms()
RETURNS TABLE (metric text, bounds double precision[], buckets bigint[], sum double precision, count bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH per_job AS (
        SELECT k.metric, k.buckets, k.total
          FROM automation.job_run_stats s JOIN automation.job j ON j.jobid OPERATOR(pg_catalog.=) s.jobid
         CROSS JOIN LATERAL (VALUES ('automation_job_run_duration_seconds', s.duration_buckets, s.duration_sum),
                                    ('automation_job_start_lateness_seconds', s.lateness_buckets, s.lateness_sum))
                             k(metric, buckets, total)
    ), per_bucket AS (
        SELECT p.metric, u.i, sum(u.n)::bigint AS n
          FROM per_job p CROSS JOIN LATERAL unnest(p.buckets) WITH ORDINALITY u(n, i)
         GROUP BY p.metric, u.i
    ), cumulative AS (
        SELECT b.metric, b.i, (sum(b.n) OVER (PARTITION BY b.metric ORDER BY b.i))::bigint AS c FROM per_bucket b
    ), names(metric) AS (
        VALUES ('automation_job_run_duration_seconds'), ('automation_job_start_lateness_seconds')
    )
    SELECT n.metric, automation.job_run_histogram_bounds(),
           coalesce((SELECT array_agg(c.c ORDER BY c.i) FROM cumulative c
                      WHERE c.metric OPERATOR(pg_catalog.=) n.metric
                        AND c.i OPERATOR(pg_catalog.<=) pg_catalog.array_length(automation.job_run_histogram_bounds(), 1)),
                    pg_catalog.array_fill(0::bigint, ARRAY[pg_catalog.array_length(automation.job_run_histogram_bounds(), 1)])),
           coalesce((SELECT sum(p.total) FROM per_job p WHERE p.metric OPERATOR(pg_catalog.=) n.metric), 0)::float8,
           coalesce((SELECT sum(b.n) FROM per_bucket b WHERE b.metric OPERATOR(pg_catalog.=) n.metric), 0)::bigint
      FROM names n
$fn$;
COMMENT ON FUNCTION automation.job_histograms() IS
'The run-duration and start-lateness histograms of the jobs the caller sees, summed: finite bounds, cumulative counts at them, sum and count (for Prometheus).';

-- Called by the scheduler for each run it records (duration and lateness
-- NULL when the run did not run: skipped, refused).
CREATE FUNCTION automation.count_job_run(job bigint, status text, duration double precision,
                                         lateness double precision)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
-- (0.7.0: PL/pgSQL, whose plans the scheduler keeps, instead of SQL, which
-- planned both statements again at every run)
BEGIN
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
END
$fn$;

COMMENT ON FUNCTION automation.count_job_run(bigint, text, double precision, double precision) IS
'Internal (the scheduler): count a run of a job in automation.job_run_stats.';
REVOKE EXECUTE ON FUNCTION automation.count_job_run(bigint, text, double precision, double precision) FROM PUBLIC;

-- (0.7.0) A run that succeeded, recorded in one call (the scheduler's
-- busiest path: a burst of 1,000 runs): its row ended (or deleted, when its
-- job's history keeps only failures or nothing), the job's last run, the
-- counters. `ended_from` are the statuses a run may succeed from.
CREATE FUNCTION automation.job_run_succeeded(runid bigint, jobid bigint, message text, pid integer,
                                             started timestamptz, ended timestamptz, lateness double precision,
                                             keep boolean, ended_from text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF job_run_succeeded.keep THEN
        UPDATE automation.job_run_details d
           SET status = 'succeeded', return_message = job_run_succeeded.message,
               job_pid = COALESCE(job_run_succeeded.pid, d.job_pid),
               start_time = job_run_succeeded.started, end_time = job_run_succeeded.ended
         WHERE d.runid = job_run_succeeded.runid AND d.status = ANY (job_run_succeeded.ended_from);
    ELSE
        DELETE FROM automation.job_run_details d WHERE d.runid = job_run_succeeded.runid;
    END IF;
    -- SKIP LOCKED: a user holding the job's row never stalls the scheduler
    UPDATE automation.job j
       SET last_run_at = job_run_succeeded.started, last_status = 'succeeded', consecutive_failures = 0
     WHERE j.jobid = (SELECT x.jobid FROM automation.job x WHERE x.jobid = job_run_succeeded.jobid FOR UPDATE SKIP LOCKED);
    PERFORM automation.count_job_run(job_run_succeeded.jobid, 'succeeded',
                                     extract(epoch FROM job_run_succeeded.ended - job_run_succeeded.started)::double precision,
                                     job_run_succeeded.lateness);
END
$fn$;
COMMENT ON FUNCTION automation.job_run_succeeded(bigint, bigint, text, integer, timestamptz, timestamptz, double precision, boolean, text[]) IS
'Internal (the scheduler): record a run that succeeded (its row, its job''s last run, the counters) in one call.';
REVOKE EXECUTE ON FUNCTION automation.job_run_succeeded(bigint, bigint, text, integer, timestamptz, timestamptz, double precision, boolean, text[]) FROM PUBLIC;

-- A schedule is checked (and next_run_at computed) whenever it is written,
-- however it is written. (0.11.0) An 'N seconds' schedule fires every N
-- seconds from when it is set (to the millisecond: jobs scheduled in one
-- transaction fire together), so the jobs of many databases do not all fall
-- in the same instant; an UPDATE that leaves the schedule and the time zone
-- as they were (alter_job(priority => ...)) keeps the job's grid: the next
-- run still to come (a pending retry with it), or the grid's next point.
CREATE FUNCTION automation.job_check_schedule()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.schedule = OLD.schedule AND NEW.timezone IS NOT DISTINCT FROM OLD.timezone
       AND OLD.next_run_at IS NOT NULL THEN
        IF OLD.next_run_at <= pg_catalog.now() THEN
            NEW.next_run_at := automation.next_fire(NEW.schedule, OLD.next_run_at, pg_catalog.now(), NEW.timezone);
            NEW.next_attempt := 1;
        END IF;
        RETURN NEW;
    END IF;
    NEW.next_run_at := automation.next_run(NEW.schedule, pg_catalog.date_trunc('milliseconds', pg_catalog.now()),
                                           NEW.timezone);
    NEW.next_attempt := 1;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER job_check_schedule
    BEFORE INSERT OR UPDATE OF schedule, timezone ON automation.job
    FOR EACH ROW EXECUTE FUNCTION automation.job_check_schedule();

-- Whoever writes a job (schedule(), alter_job(), or INSERT/UPDATE by hand),
-- the same checks (pg_cron's): another role's job needs superuser; the role
-- must exist and may connect to the database. It binds the job to the role's
-- oid and, for a job of this database, to this database whatever its name.
-- A superuser writing a job whose role or database does not exist (pg_restore
-- into another cluster) gets it inactive, with the reason, instead of an
-- error that would lose every job of the restore.
CREATE FUNCTION automation.job_check_target()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    superuser boolean := (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER);
    role_oid oid;
    problem text;
BEGIN
    IF TG_RELID IS DISTINCT FROM 'automation.job'::regclass OR TG_LEVEL <> 'ROW' OR TG_WHEN <> 'BEFORE' THEN
        RAISE EXCEPTION 'automation.job_check_target() only runs as a BEFORE ROW trigger of automation.job'
              USING ERRCODE = 'wrong_object_type';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.username IS DISTINCT FROM OLD.username THEN
        -- (0.8.0) or a role it may SET ROLE to, as for every object of the extension
        IF NEW.username IS DISTINCT FROM CURRENT_USER::text AND NOT superuser
           AND NOT automation.may_act_as((SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.username)) THEN
            RAISE EXCEPTION 'permission denied to create or move a job for role %', NEW.username
                  USING ERRCODE = 'insufficient_privilege',
                        HINT = pg_catalog.format('A job belongs to the role that schedules it, or to a role it may SET ROLE to; schedule it as %s itself, or leave username NULL.', NEW.username);
        END IF;
        IF NOT superuser OR TG_OP = 'UPDATE' THEN
            PERFORM automation.check_job_target(NULL, NEW.username);
        END IF;
        SELECT r.oid INTO role_oid FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.username;
        IF role_oid IS NULL THEN
            problem := pg_catalog.format('role "%s" does not exist', NEW.username);
        END IF;
        NEW.owner := COALESCE(role_oid, 0);
    END IF;
    IF TG_OP = 'INSERT' AND NEW.local IS NULL OR TG_OP = 'UPDATE' AND NEW.database IS DISTINCT FROM OLD.database THEN
        NEW.local := NEW.database IS NULL OR NEW.database = pg_catalog.current_database();
    END IF;
    IF NEW.local THEN
        NEW.database := pg_catalog.current_database();
    ELSIF NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = NEW.database) THEN
        IF NOT superuser OR TG_OP = 'UPDATE' THEN
            PERFORM automation.check_job_target(NEW.database, NEW.username);
        END IF;
        problem := COALESCE(problem || '; ', '') || pg_catalog.format('database "%s" does not exist', NEW.database);
    END IF;
    IF problem IS NULL AND NEW.active THEN
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = NEW.owner) THEN
            RAISE EXCEPTION 'the role that owned job % (%) no longer exists', NEW.jobid, NEW.username
                  USING ERRCODE = 'undefined_object',
                        HINT = 'A superuser can give the job to an existing role: automation.alter_job(jobid, username => ...).';
        END IF;
        IF NOT pg_catalog.has_database_privilege(NEW.owner, NEW.database, 'CONNECT') THEN
            RAISE EXCEPTION 'role "%" may not connect to database "%"', NEW.username, NEW.database
                  USING ERRCODE = 'insufficient_privilege';
        END IF;
        -- (0.8.0) jobs run as their owner, who needs automation_runner (the
        -- scheduler deactivates a job whose owner loses it)
        IF NOT (SELECT r.rolsuper OR pg_catalog.pg_has_role(r.oid, 'automation_runner', 'USAGE')
                  FROM pg_catalog.pg_roles r WHERE r.oid = NEW.owner) THEN
            IF NOT superuser THEN
                RAISE EXCEPTION 'role "%" is not a member of automation_runner: a job runs as its owner, who needs it', NEW.username
                      USING ERRCODE = 'insufficient_privilege',
                            HINT = pg_catalog.format('GRANT automation_runner TO %I;', NEW.username);
            END IF;
            problem := pg_catalog.format('role "%s" is not a member of automation_runner (GRANT automation_runner TO %I)',
                                         NEW.username, NEW.username);
        END IF;
        -- (0.8.0) a database that takes no connections (template0) never runs a job
        IF problem IS NULL AND NOT (SELECT d.datallowconn FROM pg_catalog.pg_database d WHERE d.datname = NEW.database) THEN
            IF NOT superuser THEN
                RAISE EXCEPTION 'database "%" does not allow connections: a job there would never run', NEW.database
                      USING ERRCODE = 'object_not_in_prerequisite_state',
                            HINT = 'Schedule it in a database that allows connections (ALTER DATABASE ... WITH ALLOW_CONNECTIONS true).';
            END IF;
            problem := pg_catalog.format('database "%s" does not allow connections', NEW.database);
        END IF;
    END IF;
    IF problem IS NOT NULL THEN
        RAISE WARNING 'job % (%) is inactive: %', NEW.jobid, COALESCE(NEW.jobname, 'unnamed'), problem;
        NEW.active := false;
        NEW.inactive_reason := problem;
    ELSIF NEW.active AND (TG_OP = 'INSERT' OR NOT OLD.active) THEN
        NEW.inactive_reason := NULL;
    END IF;
    -- pg_restore brings the default jobs of the dumped database (as the DBA
    -- left them): they replace the ones CREATE EXTENSION has just made
    IF TG_OP = 'INSERT' AND NEW.jobname LIKE 'automation: %' AND superuser THEN
        DELETE FROM automation.job j
         WHERE j.jobname LIKE 'automation: %' AND (j.jobname = NEW.jobname OR j.jobid = NEW.jobid);
        DELETE FROM automation.job_removed_defaults d WHERE d.jobname = NEW.jobname;
    END IF;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER job_check_target
    BEFORE INSERT OR UPDATE OF database, username, active ON automation.job
    FOR EACH ROW EXECUTE FUNCTION automation.job_check_target();

-- The default jobs a DBA unscheduled, so that a restore (whose CREATE
-- EXTENSION makes them again) removes them again.
CREATE TABLE automation.job_removed_defaults (
    jobname    text PRIMARY KEY,
    removed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE automation.job_removed_defaults IS
    'Default jobs (named ''automation: ...'') that were unscheduled; dumped, so that a restore leaves them unscheduled.';

CREATE FUNCTION automation.job_default_removed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_RELID = 'automation.job'::regclass AND TG_OP = 'DELETE' AND TG_LEVEL = 'ROW' THEN
        IF OLD.jobname LIKE 'automation: %'
           AND (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) THEN
            INSERT INTO automation.job_removed_defaults (jobname) VALUES (OLD.jobname) ON CONFLICT DO NOTHING;
        END IF;
        RETURN OLD;
    ELSIF TG_RELID = 'automation.job_removed_defaults'::regclass AND TG_OP = 'INSERT' AND TG_LEVEL = 'ROW' THEN
        DELETE FROM automation.job j WHERE j.jobname = NEW.jobname;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'automation.job_default_removed() only runs as a row trigger of automation.job and automation.job_removed_defaults'
          USING ERRCODE = 'wrong_object_type';
END
$fn$;

CREATE TRIGGER job_default_removed
    AFTER DELETE ON automation.job
    FOR EACH ROW EXECUTE FUNCTION automation.job_default_removed();
CREATE TRIGGER job_removed_defaults_apply
    AFTER INSERT ON automation.job_removed_defaults
    FOR EACH ROW EXECUTE FUNCTION automation.job_default_removed();

-- The scheduler of this database reloads its jobs when a change that matters
-- commits (a relcache invalidation it listens for; the scheduler's own
-- updates of the run-state columns do not fire this).
CREATE TRIGGER job_cache_invalidate
    AFTER INSERT OR DELETE OR TRUNCATE
       OR UPDATE OF schedule, command, database, username, active, jobname, timeout,
                    timezone, retries, retry_backoff, overlap, priority, log_runs, keep_runs
    ON automation.job
    FOR EACH STATEMENT EXECUTE FUNCTION automation.job_cache_invalidate();

-- Does the role exist, and the database (when not NULL)? The errors the API
-- functions give for a typo, and the trigger for anyone but a superuser.
CREATE FUNCTION automation.check_job_target(database text, username text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = username) THEN
        RAISE EXCEPTION 'role "%" does not exist', username USING ERRCODE = 'undefined_object';
    END IF;
    IF database IS NOT NULL AND NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = database) THEN
        RAISE EXCEPTION 'database "%" does not exist', database USING ERRCODE = 'invalid_catalog_name';
    END IF;
END
$fn$;

-- pg_cron's way of letting a role schedule is USAGE on its schema; ours is
-- membership in automation_runner. A role without it is told so, instead of
-- "permission denied for table job" (issue 17).
CREATE FUNCTION automation.check_job_privilege(privilege text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT has_table_privilege('automation.job', check_job_privilege.privilege) THEN
        RAISE EXCEPTION 'permission denied for table job'
              USING ERRCODE = 'insufficient_privilege',
                    DETAIL = format('Role %s may not %s jobs.', current_user, lower(check_job_privilege.privilege)),
                    HINT = format('Scheduling needs membership in automation_runner: GRANT automation_runner TO %I;',
                                  current_user);
    END IF;
END
$fn$;

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
    state text;
    msg text;
    detail text;
    hint text;
    id bigint;
BEGIN
    PERFORM automation.check_job_privilege('INSERT');
    -- the same name for the same role replaces the job (pg_cron's upsert),
    -- options included: one left out is back to its default
    BEGIN
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
    EXCEPTION WHEN OTHERS THEN
        -- (0.8.0) the refusal (a bad schedule, a role or database the job
        -- may not have) without the internal statement in its CONTEXT
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT;
        IF detail <> '' AND hint <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, DETAIL = detail, HINT = hint;
        ELSIF detail <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, DETAIL = detail;
        ELSIF hint <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, HINT = hint;
        END IF;
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg;
    END;
    RETURN id;
END
$fn$;

CREATE FUNCTION automation.schedule(schedule text, command text)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT automation.check_job_privilege('INSERT');
    INSERT INTO automation.job (schedule, command) VALUES (schedule, command) RETURNING jobid
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
    state text;
    msg text;
    detail text;
    hint text;
    id bigint;
    who text := COALESCE(username, CURRENT_USER::text);
BEGIN
    PERFORM automation.check_job_privilege('INSERT');
    PERFORM automation.check_job_target(database, who);
    BEGIN
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
    EXCEPTION WHEN OTHERS THEN
        -- (0.8.0) the refusal (a bad schedule, a role or database the job
        -- may not have) without the internal statement in its CONTEXT
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT;
        IF detail <> '' AND hint <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, DETAIL = detail, HINT = hint;
        ELSIF detail <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, DETAIL = detail;
        ELSIF hint <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, HINT = hint;
        END IF;
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg;
    END;
    RETURN id;
END
$fn$;

CREATE FUNCTION automation.unschedule(job_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM automation.check_job_privilege('DELETE');
    DELETE FROM automation.job WHERE jobid = job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'could not find valid entry for job %', job_id
              USING ERRCODE = 'undefined_object',
                    HINT = 'automation.job lists the jobs you own.';
    END IF;
    RETURN true;
END
$fn$;

CREATE FUNCTION automation.unschedule(job_name text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM automation.check_job_privilege('DELETE');
    DELETE FROM automation.job j
     WHERE j.jobname = job_name
       AND j.owner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'could not find valid entry for job %', pg_catalog.quote_literal(job_name)
              USING ERRCODE = 'undefined_object',
                    HINT = 'automation.job lists the jobs you own.';
    END IF;
    RETURN true;
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
    state text;
    msg text;
    detail text;
    hint text;
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
    BEGIN
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
    EXCEPTION WHEN OTHERS THEN
        -- (0.8.0) the refusal (a bad schedule, a role or database the job
        -- may not have) without the internal statement in its CONTEXT
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT;
        IF detail <> '' AND hint <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, DETAIL = detail, HINT = hint;
        ELSIF detail <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, DETAIL = detail;
        ELSIF hint <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, HINT = hint;
        END IF;
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg;
    END;
END
$fn$;

-- Run history retention: delete finished runs older than
-- automation.job_run_retention, a batch per transaction, so that a large
-- backlog never holds locks or a snapshot for long. A procedure that COMMITs
-- may not have a SET clause, so instead of pinning search_path it qualifies
-- every name and operator.
CREATE PROCEDURE automation.purge_job_run_details(batch integer DEFAULT 10000)
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

COMMENT ON FUNCTION automation.check_job_privilege(text) IS
'Internal: raise 42501 with a hint naming automation_runner unless the current role has privilege on automation.job.';
COMMENT ON FUNCTION automation.schedule(text, text, text, text, integer, interval, text, integer, text, integer) IS
'pg_cron''s cron.schedule(job_name, schedule, command): schedule a command in this database as the current role; the same job_name again replaces that job. Optional: timezone (NULL: automation.timezone), retries and retry_backoff, overlap (skip, queue, parallel N), priority, log_runs (all, failures, none; NULL: automation.log_runs), keep_runs. Returns the jobid.';
COMMENT ON FUNCTION automation.schedule(text, text) IS
'pg_cron''s cron.schedule(schedule, command): an unnamed job. Returns the jobid.';
COMMENT ON FUNCTION automation.schedule_in_database(text, text, text, text, text, boolean, interval, text, integer, interval, text, integer, text, integer) IS
'pg_cron''s cron.schedule_in_database: run the command in another database (and, for superusers, as another role); timeout becomes the run''s statement_timeout; the other options as for schedule().';
COMMENT ON FUNCTION automation.unschedule(bigint) IS 'Delete a job you own, by id.';
COMMENT ON FUNCTION automation.unschedule(text) IS 'Delete a job you own, by name.';
COMMENT ON FUNCTION automation.alter_job(bigint, text, text, text, text, boolean, interval, text, integer, interval, text, integer, text, integer) IS
'pg_cron''s cron.alter_job: change what is not NULL; timeout => ''0'' removes the timeout, timezone => '''' and log_runs => '''' return to the settings, keep_runs => 0 removes the cap. Moving a job to another role needs superuser.';
COMMENT ON PROCEDURE automation.purge_job_run_details(integer) IS
'Delete finished runs older than automation.job_run_retention (0 keeps them all), batch rows per transaction (CALL it at top level).';
COMMENT ON FUNCTION automation.check_job_target(text, text) IS 'Internal: raise when the role (or the database, if not NULL) does not exist.';
COMMENT ON FUNCTION automation.job_check_target() IS
'Internal: trigger on automation.job checking, however a job is written, that the current role may schedule it as its role in its database; binds the job to the role''s oid and, for this database''s jobs, to this database.';
COMMENT ON FUNCTION automation.job_check_schedule() IS 'Internal: validates a job''s schedule and sets next_run_at.';
COMMENT ON FUNCTION automation.job_default_removed() IS 'Internal: remembers unscheduled default jobs (and applies that memory on restore).';
-- trigger functions: nobody else attaches them to anything
REVOKE EXECUTE ON FUNCTION automation.job_check_target(), automation.job_check_schedule(),
                           automation.job_default_removed(), automation.job_cache_invalidate() FROM PUBLIC;


-- What the launcher and the schedulers share (0.3.0; src/jobs/sql.rs).
CREATE FUNCTION automation.scheduler_state()
RETURNS TABLE (database_oid oid, extension text, scheduler_pid integer, next_due timestamptz,
               waiting_since timestamptz, runs_waiting integer, runs_running integer,
               fires_waiting integer, max_workers integer, scheduler_workers integer)
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'scheduler_state_wrapper';

COMMENT ON FUNCTION automation.scheduler_state() IS
'Per database the launcher knows: whether it has the extension, its scheduler''s pid (schedulers run only while jobs are due), when it needs one next, since when it has waited for one, its runs waiting for a worker and running, its due fires waiting for a slot (automation.max_running_jobs, or no free run slot); and the cluster-wide budgets in force (automation.max_workers, automation.scheduler_workers, clamped to max_worker_processes).';

-- What the scheduler is doing: the launcher, each database's scheduler (its
-- activity line names the next run) or why none runs now, the runs in
-- progress or waiting for a worker, and for this database the next job due.
CREATE FUNCTION automation.scheduler_status()
RETURNS TABLE (component text, pid integer, database name, state text, since timestamptz, detail text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH workers AS (
        SELECT a.backend_type, a.pid, a.datname, a.backend_start, a.query, a.application_name, a.query_start, a.state
          FROM pg_catalog.pg_stat_activity a
         WHERE a.backend_type IN ('automation_ext launcher', 'automation_ext scheduler', 'automation_ext job')
    ), preloaded AS (
        -- (0.8.0) asked of the library, not of shared_preload_libraries,
        -- which only superusers and pg_read_all_settings may read
        SELECT automation.step_workers_available() AS yes
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

COMMENT ON FUNCTION automation.scheduler_status() IS
'The scheduler''s state: launcher (or why it is not running), each database''s scheduler with its next run, or (database) why none runs now (idle until its next fire, waiting for a scheduler, runs waiting for a worker), runs in progress, and this database''s next job.';

-- The default jobs; users may alter or unschedule them. (0.11.0) The
-- frequent ones count their minutes from CREATE EXTENSION ('N minutes'), so
-- that the databases of a cluster do not all run them at second 0.
INSERT INTO automation.job (jobname, schedule, command) VALUES
    ('automation: collect database metrics', '5 minutes', 'SELECT automation.collect_database_metrics()'),
    ('automation: time out stale executions', '1 minute', 'SELECT count(*) FROM automation.timeout_stale_executions()'),
    ('automation: purge job run history', '17 3 * * *', 'CALL automation.purge_job_run_details()'),
    ('automation: purge execution history', '47 * * * *', 'CALL automation.purge_executions()');

-- every job is dumped, the default ones as the DBA left them (a restored
-- default job replaces the one CREATE EXTENSION made: job_check_target),
-- and the default jobs that were unscheduled (removed again on restore)
SELECT pg_catalog.pg_extension_config_dump('automation.job', '');
SELECT pg_catalog.pg_extension_config_dump('automation.job_removed_defaults', '');
SELECT pg_catalog.pg_extension_config_dump('automation.job_jobid_seq', '');
SELECT pg_catalog.pg_extension_config_dump('automation.job_run_details', '');
SELECT pg_catalog.pg_extension_config_dump('automation.job_run_details_runid_seq', '');
-- (automation.job_run_stats is not dumped: counters start again after a restore)

-- Tell the launcher that this database now has jobs to run.
SELECT automation.wake_scheduler();

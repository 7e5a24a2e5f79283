-- The built-in scheduler (src/scheduler/): pg_cron 1.6's tables and SQL API
-- under the schema automation, so that `cron.schedule(...)` ports by changing
-- the schema name; plus per-job timeouts, run-state columns, skipped runs.
--
-- Privileges follow pg_cron: a role sees and changes only its own jobs and
-- run history (row-level security on username); creating or moving a job to
-- another role needs superuser. The API functions are SECURITY INVOKER, so
-- those rules are the table's, not a definer's.

-- Rust functions (src/scheduler/sql.rs).
CREATE FUNCTION automation.next_run(schedule text, after timestamptz DEFAULT pg_catalog.now(),
                                    timezone text DEFAULT NULL)
RETURNS timestamptz
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'next_run_wrapper';

COMMENT ON FUNCTION automation.next_run(text, timestamptz, text) IS
'When a schedule fires next after a time, reading it in timezone (automation.timezone when NULL); NULL for @reboot. An invalid schedule is an error (22023) naming the bad field.';

CREATE FUNCTION automation.wake_scheduler()
RETURNS boolean
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wake_scheduler_wrapper';

COMMENT ON FUNCTION automation.wake_scheduler() IS
'Ask the launcher to start this database''s scheduler now (CREATE EXTENSION does). False, with a NOTICE, when automation_ext is not preloaded.';

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
    CONSTRAINT job_command_check CHECK (command <> ''),
    CONSTRAINT job_timeout_check CHECK (timeout > interval '0'),
    CONSTRAINT job_jobname_check CHECK (jobname <> ''),
    CONSTRAINT job_jobname_owner_key UNIQUE (jobname, owner)
);

COMMENT ON TABLE automation.job IS
    'Scheduled jobs (pg_cron''s cron.job columns, plus timeout, last/next run and consecutive failures). Each role sees its own.';

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
    CONSTRAINT job_run_details_status_check
        CHECK (status IN ('starting', 'running', 'succeeded', 'failed', 'skipped'))
);

CREATE INDEX job_run_details_jobid_runid ON automation.job_run_details (jobid, runid DESC);
CREATE INDEX job_run_details_end_time ON automation.job_run_details USING brin (end_time);
CREATE INDEX job_run_details_in_flight ON automation.job_run_details (database)
    WHERE status IN ('starting', 'running');

COMMENT ON TABLE automation.job_run_details IS
    'One row per run of a job (pg_cron''s cron.job_run_details, plus scheduled_for). Purged after automation.job_run_retention.';

-- A role sees its own jobs (by oid: a renamed role keeps them, a new role
-- with an old name gets none), and the runs of the jobs it sees.
ALTER TABLE automation.job ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_owner_policy ON automation.job
    USING (owner OPERATOR(pg_catalog.=) (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER))
    WITH CHECK (owner OPERATOR(pg_catalog.=) (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER));
ALTER TABLE automation.job_run_details ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_run_details_owner_policy ON automation.job_run_details
    USING (jobid IN (SELECT j.jobid FROM automation.job j));

-- A schedule is checked (and next_run_at computed) whenever it is written,
-- however it is written.
CREATE FUNCTION automation.job_check_schedule()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    NEW.next_run_at := automation.next_run(NEW.schedule);
    RETURN NEW;
END
$fn$;

CREATE TRIGGER job_check_schedule
    BEFORE INSERT OR UPDATE OF schedule ON automation.job
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
        IF NEW.username IS DISTINCT FROM CURRENT_USER::text AND NOT superuser THEN
            RAISE EXCEPTION 'must be superuser to create or move a job for another role'
                  USING ERRCODE = 'insufficient_privilege',
                        HINT = pg_catalog.format('Schedule the job as %s itself, or leave username NULL.', NEW.username);
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
       OR UPDATE OF schedule, command, database, username, active, jobname, timeout
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

CREATE FUNCTION automation.schedule(job_name text, schedule text, command text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    id bigint;
BEGIN
    PERFORM automation.check_job_privilege('INSERT');
    -- the same name for the same role replaces the job (pg_cron's upsert)
    INSERT INTO automation.job AS j (jobname, schedule, command)
    VALUES (job_name, schedule, command)
    ON CONFLICT ON CONSTRAINT job_jobname_owner_key DO UPDATE
       SET schedule = EXCLUDED.schedule, command = EXCLUDED.command
    RETURNING j.jobid INTO id;
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
                                                timeout interval DEFAULT NULL)
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
    INSERT INTO automation.job AS j (jobname, schedule, command, database, username, active, timeout)
    VALUES (job_name, schedule, command, database, who, COALESCE(active, true), timeout)
    ON CONFLICT ON CONSTRAINT job_jobname_owner_key DO UPDATE
       SET schedule = EXCLUDED.schedule, command = EXCLUDED.command, database = EXCLUDED.database,
           active = EXCLUDED.active, timeout = EXCLUDED.timeout
    RETURNING j.jobid INTO id;
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
                                     active boolean DEFAULT NULL, timeout interval DEFAULT NULL)
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
                           ELSE alter_job.timeout END
     WHERE j.jobid = job_id;
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
COMMENT ON FUNCTION automation.schedule(text, text, text) IS
'pg_cron''s cron.schedule(job_name, schedule, command): schedule a command in this database as the current role; the same job_name again replaces that job. Returns the jobid.';
COMMENT ON FUNCTION automation.schedule(text, text) IS
'pg_cron''s cron.schedule(schedule, command): an unnamed job. Returns the jobid.';
COMMENT ON FUNCTION automation.schedule_in_database(text, text, text, text, text, boolean, interval) IS
'pg_cron''s cron.schedule_in_database: run the command in another database (and, for superusers, as another role); timeout becomes the run''s statement_timeout.';
COMMENT ON FUNCTION automation.unschedule(bigint) IS 'Delete a job you own, by id.';
COMMENT ON FUNCTION automation.unschedule(text) IS 'Delete a job you own, by name.';
COMMENT ON FUNCTION automation.alter_job(bigint, text, text, text, text, boolean, interval) IS
'pg_cron''s cron.alter_job: change what is not NULL; timeout => ''0'' removes the timeout. Moving a job to another role needs superuser.';
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


-- What the launcher and the schedulers share (0.3.0; src/scheduler/sql.rs).
CREATE FUNCTION automation.scheduler_state()
RETURNS TABLE (database_oid oid, extension text, scheduler_pid integer, next_due timestamptz,
               waiting_since timestamptz, runs_waiting integer, runs_running integer,
               max_workers integer, scheduler_workers integer)
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'scheduler_state_wrapper';

COMMENT ON FUNCTION automation.scheduler_state() IS
'Per database the launcher knows: whether it has the extension, its scheduler''s pid (schedulers run only while jobs are due), when it needs one next, since when it has waited for one, its runs waiting for a worker and running; and the cluster-wide budgets in force (automation.max_workers, automation.scheduler_workers, clamped to max_worker_processes).';

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

-- The default jobs; users may alter or unschedule them.
INSERT INTO automation.job (jobname, schedule, command) VALUES
    ('automation: collect database metrics', '*/5 * * * *', 'SELECT automation.collect_database_metrics()'),
    ('automation: time out stale executions', '* * * * *', 'SELECT count(*) FROM automation.timeout_stale_executions()'),
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

-- Tell the launcher that this database now has jobs to run.
SELECT automation.wake_scheduler();

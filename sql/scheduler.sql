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
    CONSTRAINT job_jobname_username_key UNIQUE (jobname, username),
    CONSTRAINT job_command_check CHECK (command <> ''),
    CONSTRAINT job_timeout_check CHECK (timeout > interval '0'),
    CONSTRAINT job_jobname_check CHECK (jobname <> '')
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

ALTER TABLE automation.job ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_owner_policy ON automation.job
    USING (username OPERATOR(pg_catalog.=) CURRENT_USER::text)
    WITH CHECK (username OPERATOR(pg_catalog.=) CURRENT_USER::text);
ALTER TABLE automation.job_run_details ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_run_details_owner_policy ON automation.job_run_details
    USING (username OPERATOR(pg_catalog.=) CURRENT_USER::text);

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

-- The scheduler of this database reloads its jobs when a change that matters
-- commits (a relcache invalidation it listens for; the scheduler's own
-- updates of the run-state columns do not fire this).
CREATE TRIGGER job_cache_invalidate
    AFTER INSERT OR DELETE OR TRUNCATE
       OR UPDATE OF schedule, command, database, username, active, jobname, timeout
    ON automation.job
    FOR EACH STATEMENT EXECUTE FUNCTION automation.job_cache_invalidate();

-- Refuse what pg_cron refuses: another role's job without superuser, a
-- database that does not exist or that the role may not connect to.
CREATE FUNCTION automation.check_job_target(database text, username text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF username IS DISTINCT FROM CURRENT_USER::text
       AND NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) THEN
        RAISE EXCEPTION 'must be superuser to create or move a job for another role'
              USING ERRCODE = 'insufficient_privilege',
                    HINT = pg_catalog.format('Schedule the job as %s itself, or leave username NULL.', username);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = username) THEN
        RAISE EXCEPTION 'role "%" does not exist', username USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = database) THEN
        RAISE EXCEPTION 'database "%" does not exist', database USING ERRCODE = 'invalid_catalog_name';
    END IF;
    IF NOT pg_catalog.has_database_privilege(username, database, 'CONNECT') THEN
        RAISE EXCEPTION 'role "%" may not connect to database "%"', username, database
              USING ERRCODE = 'insufficient_privilege';
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
    -- the same name for the same role replaces the job (pg_cron's upsert)
    INSERT INTO automation.job AS j (jobname, schedule, command)
    VALUES (job_name, schedule, command)
    ON CONFLICT ON CONSTRAINT job_jobname_username_key DO UPDATE
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
    PERFORM automation.check_job_target(database, who);
    INSERT INTO automation.job AS j (jobname, schedule, command, database, username, active, timeout)
    VALUES (job_name, schedule, command, database, who, COALESCE(active, true), timeout)
    ON CONFLICT ON CONSTRAINT job_jobname_username_key DO UPDATE
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
    DELETE FROM automation.job WHERE jobname = job_name AND username = CURRENT_USER::text;
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
    SELECT * INTO current FROM automation.job j WHERE j.jobid = job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'could not find valid entry for job %', job_id
              USING ERRCODE = 'undefined_object',
                    HINT = 'automation.job lists the jobs you own.';
    END IF;
    IF database IS NOT NULL OR username IS NOT NULL THEN
        PERFORM automation.check_job_target(COALESCE(database, current.database),
                                            COALESCE(username, current.username));
    END IF;
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
'Delete finished runs older than automation.job_run_retention, batch rows per transaction (CALL it at top level).';
COMMENT ON FUNCTION automation.check_job_target(text, text) IS 'Internal: may the current role schedule jobs in this database as this role?';
COMMENT ON FUNCTION automation.job_check_schedule() IS 'Internal: validates a job''s schedule and sets next_run_at.';


-- What the scheduler is doing: the launcher, each database's scheduler (its
-- activity line names the next run), the runs in progress, and for this
-- database the next job due.
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
'The scheduler''s state: launcher (or why it is not running), each database''s scheduler with its next run, runs in progress, and this database''s next job.';

-- The default jobs; users may alter or unschedule them.
INSERT INTO automation.job (jobname, schedule, command) VALUES
    ('automation: collect database metrics', '*/5 * * * *', 'SELECT automation.collect_database_metrics()'),
    ('automation: time out stale executions', '* * * * *', 'SELECT count(*) FROM automation.timeout_stale_executions()'),
    ('automation: purge job run history', '17 3 * * *', 'CALL automation.purge_job_run_details()');

-- the default jobs are made by CREATE EXTENSION itself: dumping them too
-- would make a restore fail on their names
SELECT pg_catalog.pg_extension_config_dump('automation.job', $$WHERE jobname IS NULL OR jobname NOT LIKE 'automation: %'$$);
SELECT pg_catalog.pg_extension_config_dump('automation.job_jobid_seq', '');
SELECT pg_catalog.pg_extension_config_dump('automation.job_run_details', '');
SELECT pg_catalog.pg_extension_config_dump('automation.job_run_details_runid_seq', '');

-- Tell the launcher that this database now has jobs to run.
SELECT automation.wake_scheduler();

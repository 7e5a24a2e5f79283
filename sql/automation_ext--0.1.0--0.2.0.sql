-- automation_ext 0.1.0 -> 0.2.0
--
-- Frozen once released, like every upgrade script: it repeats the 0.2.0
-- objects from the install files (sql/api.sql, migrations.sql, discovery.sql,
-- audit.sql, scheduler.sql, timeseries.sql, maintenance.sql, roles.sql) as they
-- were at 0.2.0, because those files will keep
-- changing and this script must not. pg_test/sql/upgrade.sql checks that an
-- upgraded database has exactly the catalog of a fresh 0.2.0 install.
--
-- Runs with search_path = pg_catalog (the control file's schema), like the
-- install script; everything is schema-qualified.

-- Migrations record who applied them and how long they took.
ALTER TABLE automation.schema_migrations
    ADD COLUMN applied_by  name,
    ADD COLUMN duration_ms numeric;
COMMENT ON TABLE automation.schema_migrations IS
    'Applied migrations with their SHA-256 checksums (automation.apply_migration, automation.migration_status).';

-- Trigger functions written in Rust, as pgrx declares them in a fresh
-- install: the data-change audit (src/audit.rs) and the scheduler's job
-- cache invalidation (src/scheduler/sql.rs).
CREATE FUNCTION automation."audit_row_change"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'audit_row_change_wrapper';
CREATE FUNCTION automation."job_cache_invalidate"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'job_cache_invalidate_wrapper';

-- ---- as sql/api.sql at 0.2.0 ----
-- The seed's API-facing workflow table, with row-level security: every role
-- sees and changes only the rows it created. (0.2.0)

CREATE TABLE automation_workflows.api_workflows (
    id         uuid         NOT NULL DEFAULT pg_catalog.gen_random_uuid() PRIMARY KEY,
    name       varchar(255) NOT NULL,
    definition jsonb        NOT NULL,
    -- the owner of the row: defaults to the role inserting it, and the
    -- policy below refuses any other value (no forging on INSERT or UPDATE)
    created_by varchar(100) NOT NULL DEFAULT CURRENT_USER,
    created_at timestamptz  NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz  NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT api_workflows_name_check CHECK (name <> ''),
    -- names are unique per owner; another role may use the same name
    CONSTRAINT api_workflows_created_by_name_key UNIQUE (created_by, name)
);

CREATE TRIGGER trg_api_workflows_touch_updated_at
    BEFORE UPDATE ON automation_workflows.api_workflows
    FOR EACH ROW EXECUTE FUNCTION automation_workflows.touch_updated_at();

ALTER TABLE automation_workflows.api_workflows ENABLE ROW LEVEL SECURITY;
-- FORCE: the owning role is subject to the policy too (superusers and
-- BYPASSRLS roles still see everything, as PostgreSQL always allows).
ALTER TABLE automation_workflows.api_workflows FORCE ROW LEVEL SECURITY;

-- USING filters what a role can see, update and delete; WITH CHECK refuses a
-- new or updated row whose created_by is not the current role.
CREATE POLICY api_access_policy ON automation_workflows.api_workflows
    USING (created_by OPERATOR(pg_catalog.=) CURRENT_USER::text)
    WITH CHECK (created_by OPERATOR(pg_catalog.=) CURRENT_USER::text);

COMMENT ON TABLE automation_workflows.api_workflows IS
    'Workflows registered through an API; row-level security: a role sees and changes only the rows whose created_by is that role.';

-- The seed's v_workflow_status, over api_workflows. security_invoker: the
-- policy above is applied as the querying role, so the view shows each role
-- its own workflows only. (automation.v_workflow_status is the same summary
-- over automation_workflows.definitions.)
CREATE VIEW automation_workflows.v_api_workflow_status WITH (security_invoker = true) AS
SELECT wf.id,
       wf.name,
       wf.created_by,
       count(we.id) AS total_executions,
       count(we.id) FILTER (WHERE we.status = 'success') AS successes,
       count(we.id) FILTER (WHERE we.status = 'error') AS errors,
       avg(extract(epoch FROM we.completed_at - we.started_at)) AS avg_duration_seconds
  FROM automation_workflows.api_workflows wf
  LEFT JOIN automation_workflows.workflow_executions we ON we.workflow_name = wf.name
 GROUP BY wf.id, wf.name, wf.created_by;

COMMENT ON VIEW automation_workflows.v_api_workflow_status IS
    'Execution summary of the calling role''s api_workflows (row-level security applies through the view).';

SELECT pg_catalog.pg_extension_config_dump('automation_workflows.api_workflows', '');

-- ---- as sql/migrations.sql at 0.2.0 ----
-- Schema migrations with checksums (0.2.0): the seed's schema_migrations
-- pattern as two functions.
--
-- apply_migration is SECURITY INVOKER and deliberately does not pin
-- search_path: the migration's SQL runs as the caller, in the caller's
-- transaction, with the caller's search_path (so `CREATE TABLE t` lands where
-- the caller expects). Its own statements are schema-qualified throughout,
-- operators included.

CREATE FUNCTION automation.apply_migration(version text, sql text)
RETURNS boolean
LANGUAGE plpgsql
AS $fn$
DECLARE
    new_checksum text;
    recorded     record;
    started      timestamptz;
BEGIN
    IF version IS NULL OR pg_catalog.btrim(version) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'a migration needs a version'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass a version such as ''001_create_tables'' as the first argument.';
    END IF;
    IF pg_catalog.length(version) OPERATOR(pg_catalog.>) 255 THEN
        RAISE EXCEPTION 'migration version is % characters long, at most 255 are allowed',
                        pg_catalog.length(version)
              USING ERRCODE = 'string_data_right_truncation';
    END IF;
    IF sql IS NULL OR pg_catalog.btrim(sql) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'migration % has no SQL', version
              USING ERRCODE = 'invalid_parameter_value';
    END IF;

    new_checksum := pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(sql, 'UTF8')), 'hex');

    -- Two sessions applying the same version: the second waits here for the
    -- first to commit, then sees its row.
    PERFORM pg_catalog.pg_advisory_xact_lock(
        pg_catalog.hashtext('automation.apply_migration'), pg_catalog.hashtext(version));

    SELECT m.checksum, m.applied_at INTO recorded
      FROM automation.schema_migrations m
     WHERE m.version OPERATOR(pg_catalog.=) apply_migration.version;
    IF FOUND THEN
        IF recorded.checksum OPERATOR(pg_catalog.=) new_checksum THEN
            RAISE NOTICE 'migration % is already applied with this checksum, skipped', version;
            RETURN false;
        END IF;
        RAISE EXCEPTION 'migration % was applied with checksum %, but this SQL has checksum %',
                        version, COALESCE(recorded.checksum, '(none)'), new_checksum
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'An applied migration must not change. Put the change in a migration with a new version.';
    END IF;

    started := pg_catalog.clock_timestamp();
    EXECUTE sql;
    INSERT INTO automation.schema_migrations (version, applied_at, checksum, applied_by, duration_ms)
    VALUES (version, pg_catalog.now(), new_checksum, CURRENT_USER,
            pg_catalog.round(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) started)::numeric
                             OPERATOR(pg_catalog.*) 1000, 3));
    RETURN true;
END
$fn$;

COMMENT ON FUNCTION automation.apply_migration(text, text) IS
'Run a migration''s SQL in the current transaction (as the caller, with the caller''s search_path) and record it in automation.schema_migrations with its SHA-256 checksum. Returns true when applied, false when the same version with the same SQL was applied before; the same version with different SQL is an error naming both checksums.';

CREATE FUNCTION automation.migration_status()
RETURNS TABLE (version text, applied_at timestamptz, checksum text, applied_by name, duration_ms numeric)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT m.version::text, m.applied_at, m.checksum::text, m.applied_by, m.duration_ms
      FROM automation.schema_migrations m
     ORDER BY m.applied_at, m.version
$fn$;

COMMENT ON FUNCTION automation.migration_status() IS
'Applied migrations, oldest first: version, when, SHA-256 checksum, by whom, how long the SQL took.';

-- ---- as sql/discovery.sql at 0.2.0 ----
-- Schema discovery for dynamic ETL (0.2.0): the seed's information_schema
-- queries, fixed. The seed joined key_column_usage on constraint name alone
-- (names are only unique per table, so columns picked up other tables'
-- constraints), missed CHECK constraints, and returned one row per
-- constraint; this returns one row per column with its constraint types as
-- an array, reads pg_catalog directly, and lists only tables the caller has
-- some privilege on (as information_schema does).

CREATE FUNCTION automation.describe_tables(schema_name text DEFAULT NULL)
RETURNS TABLE (table_schema name, table_name name, column_name name, ordinal_position integer,
               data_type text, is_nullable boolean, column_default text,
               constraint_types text[], constraint_names name[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF schema_name IS NOT NULL
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = schema_name) THEN
        RAISE EXCEPTION 'schema "%" does not exist', schema_name
              USING ERRCODE = 'invalid_schema_name',
                    HINT = 'Pass the schema name unquoted, as it is stored (case matters); NULL lists every user schema.';
    END IF;
    RETURN QUERY
    SELECT n.nspname, c.relname, a.attname, a.attnum::integer,
           pg_catalog.format_type(a.atttypid, a.atttypmod),
           NOT a.attnotnull,
           CASE WHEN a.attgenerated = 's'
                THEN 'GENERATED ALWAYS AS (' || pg_catalog.pg_get_expr(d.adbin, d.adrelid) || ') STORED'
                WHEN a.attidentity = 'a' THEN 'GENERATED ALWAYS AS IDENTITY'
                WHEN a.attidentity = 'd' THEN 'GENERATED BY DEFAULT AS IDENTITY'
                ELSE pg_catalog.pg_get_expr(d.adbin, d.adrelid) END,
           k.types, k.names
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
      LEFT JOIN LATERAL (
            SELECT pg_catalog.array_agg(DISTINCT CASE con.contype
                                                  WHEN 'p' THEN 'PRIMARY KEY'
                                                  WHEN 'u' THEN 'UNIQUE'
                                                  WHEN 'f' THEN 'FOREIGN KEY'
                                                  WHEN 'c' THEN 'CHECK'
                                                  WHEN 'x' THEN 'EXCLUDE'
                                                  ELSE con.contype::text END) AS types,
                   pg_catalog.array_agg(con.conname ORDER BY con.conname) AS names
              FROM pg_catalog.pg_constraint con
             WHERE con.conrelid = c.oid AND a.attnum = ANY (con.conkey)
      ) k ON true
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
       AND NOT c.relispartition
       AND (schema_name IS NULL
            OR n.nspname = schema_name)
       AND (schema_name IS NOT NULL
            OR (n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
                AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'))
       AND pg_catalog.has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
     ORDER BY n.nspname, c.relname, a.attnum;
END
$fn$;

COMMENT ON FUNCTION automation.describe_tables(text) IS
'Columns of the tables, views and foreign tables in a schema (every user schema when NULL) that the caller has a privilege on: type, nullability, default (or its GENERATED clause), and the types and names of the constraints the column takes part in. One row per column; partitions are left out (their parent is listed).';

CREATE FUNCTION automation.generate_insert(target regclass)
RETURNS text
LANGUAGE c STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'generate_insert_wrapper';

COMMENT ON FUNCTION automation.generate_insert(regclass) IS
'A parameterized INSERT for a table: every column that accepts a value, in column order, as $1…$n; identifiers quoted; generated and GENERATED ALWAYS identity columns left out.';

-- ---- as sql/audit.sql at 0.2.0 ----
-- Data-change audit (src/audit.rs), 0.2.0.

CREATE FUNCTION automation.enable_audit(target regclass)
RETURNS text
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'enable_audit_wrapper';

COMMENT ON FUNCTION automation.enable_audit(regclass) IS
'Record every INSERT, UPDATE, DELETE and TRUNCATE of a table in automation_audit.log (actor, time, transaction, old and new rows as jsonb, changed columns for UPDATE). Needs ownership of the table. Returns the trigger definitions.';

CREATE FUNCTION automation.disable_audit(target regclass)
RETURNS boolean
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'disable_audit_wrapper';

COMMENT ON FUNCTION automation.disable_audit(regclass) IS
'Stop auditing a table (the rows already logged stay). Returns whether it was audited.';

COMMENT ON FUNCTION automation.audit_row_change() IS
'Trigger function behind automation.enable_audit(): writes the change to automation_audit.log as the log''s owner; the users audited need no privilege on the log.';

-- ---- as sql/scheduler.sql at 0.2.0 ----
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

-- ---- as sql/timeseries.sql at 0.2.0 ----
-- Pipeline metrics as time series without TimescaleDB (0.2.0; src/timeseries.rs):
-- partitions made ahead and dropped after retention, an hourly rollup kept
-- current incrementally, a live view over it, bulk ingest through an UNLOGGED
-- staging table.

CREATE FUNCTION automation.time_bucket(bucket_width interval, ts timestamptz,
                                       origin timestamptz DEFAULT '2000-01-03 00:00:00+00')
RETURNS timestamptz
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'time_bucket_wrapper';

CREATE FUNCTION automation.time_bucket(bucket_width interval, ts timestamp,
                                       origin timestamp DEFAULT '2000-01-03 00:00:00')
RETURNS timestamp
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'time_bucket_ts_wrapper';

CREATE FUNCTION automation.try_timestamptz(value text)
RETURNS timestamptz
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'try_timestamptz_wrapper';

CREATE FUNCTION automation.metrics_settings()
RETURNS TABLE (partition_interval text, retention text, partitions_ahead integer)
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'metrics_settings_wrapper';

COMMENT ON FUNCTION automation.time_bucket(interval, timestamptz, timestamptz) IS
'The start of the bucket of width bucket_width that holds ts (TimescaleDB''s time_bucket): days and time are fixed lengths counted in UTC from origin (a Monday by default); months follow the calendar.';
COMMENT ON FUNCTION automation.time_bucket(interval, timestamp, timestamp) IS
'time_bucket for timestamp without time zone.';
COMMENT ON FUNCTION automation.try_timestamptz(text) IS
'An ISO 8601 timestamp (UTC when it has no offset), or NULL when the text is not one. Never raises.';
COMMENT ON FUNCTION automation.metrics_settings() IS
'automation.metrics_partition_interval, automation.metrics_retention and automation.metrics_partitions_ahead in force.';

------------------------------------------------------------------------------
-- Partitions

-- Create the partitions from the current one to metrics_partitions_ahead
-- ahead, and one for every period with rows in the default partition (moving
-- those rows into it); drop partitions that ended before now() - retention
-- and expire such rows from the default partition. Partitions are named
-- pipeline_metrics_p<start in UTC>. Idempotent; one call at a time.
CREATE FUNCTION automation.maintain_metrics_partitions()
RETURNS TABLE (action text, partition_name text, range_start timestamptz, range_end timestamptz, row_count bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    width interval;
    keep interval;
    ahead integer;
    fmt text;
    b timestamptz;
    e timestamptz;
    part text;
    n bigint;
    r record;
BEGIN
    SELECT s.partition_interval, s.retention, s.partitions_ahead INTO r FROM automation.metrics_settings() s;
    BEGIN
        width := r.partition_interval::interval;
        keep := r.retention::interval;
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'automation.metrics_partition_interval (%) and automation.metrics_retention (%) must be intervals',
                        r.partition_interval, r.retention
              USING ERRCODE = 'invalid_parameter_value';
    END;
    ahead := r.partitions_ahead;
    IF width < interval '1 hour' AND pg_catalog.date_part('month', width) = 0 THEN
        RAISE EXCEPTION 'automation.metrics_partition_interval is %, partitions narrower than an hour are not supported', width
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    fmt := CASE WHEN pg_catalog.date_part('month', width) > 0 OR pg_catalog.date_part('year', width) > 0 THEN 'YYYYMM'
                WHEN width >= interval '1 day' AND pg_catalog.date_part('hour', width) = 0 THEN 'YYYYMMDD'
                ELSE 'YYYYMMDD"_"HH24MI' END;

    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('automation.maintain_metrics_partitions'));

    FOR b IN
        SELECT DISTINCT automation.time_bucket(width, d.time) FROM automation.pipeline_metrics_default d
         WHERE d.time >= pg_catalog.now() - keep
        UNION
        SELECT pg_catalog.generate_series(automation.time_bucket(width, pg_catalog.now()),
                                          automation.time_bucket(width, pg_catalog.now()) + width * ahead, width)
        ORDER BY 1
    LOOP
        e := b + width;
        part := 'pipeline_metrics_p' || pg_catalog.to_char(b AT TIME ZONE 'UTC', fmt);
        CONTINUE WHEN pg_catalog.to_regclass(pg_catalog.format('automation.%I', part)) IS NOT NULL;
        BEGIN
            -- rows for the period waiting in the default partition move in
            IF pg_catalog.to_regclass('pg_temp.automation_moving') IS NULL THEN
                CREATE TEMP TABLE automation_moving (LIKE automation.pipeline_metrics) ON COMMIT DROP;
            ELSE
                TRUNCATE pg_temp.automation_moving;
            END IF;
            WITH moved AS (DELETE FROM automation.pipeline_metrics_default d
                            WHERE d.time >= b AND d.time < e RETURNING d.*)
            INSERT INTO pg_temp.automation_moving SELECT * FROM moved;
            GET DIAGNOSTICS n = ROW_COUNT;
            EXECUTE pg_catalog.format('CREATE TABLE automation.%I PARTITION OF automation.pipeline_metrics FOR VALUES FROM (%L) TO (%L)',
                                      part, b, e);
            INSERT INTO automation.pipeline_metrics SELECT * FROM pg_temp.automation_moving;
            action := CASE WHEN n > 0 THEN 'split from default' ELSE 'created' END;
        EXCEPTION WHEN invalid_object_definition THEN
            -- overlaps a partition of another width (the setting changed)
            action := 'skipped: overlaps an existing partition';
            n := 0;
        END;
        partition_name := part; range_start := b; range_end := e; row_count := n;
        RETURN NEXT;
    END LOOP;

    FOR r IN
        SELECT c.oid::regclass AS rel, c.relname,
               (pg_catalog.regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)')) AS bounds
          FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'automation.pipeline_metrics'::regclass
           AND c.oid <> 'automation.pipeline_metrics_default'::regclass
    LOOP
        CONTINUE WHEN r.bounds IS NULL OR r.bounds[2]::timestamptz > pg_catalog.now() - keep;
        EXECUTE pg_catalog.format('SELECT count(*) FROM %s', r.rel) INTO n;
        EXECUTE pg_catalog.format('DROP TABLE %s', r.rel);
        action := 'dropped'; partition_name := r.relname;
        range_start := r.bounds[1]::timestamptz; range_end := r.bounds[2]::timestamptz; row_count := n;
        RETURN NEXT;
    END LOOP;

    DELETE FROM automation.pipeline_metrics_default d WHERE d.time < pg_catalog.now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        action := 'expired from default'; partition_name := 'pipeline_metrics_default';
        range_start := NULL; range_end := pg_catalog.now() - keep; row_count := n;
        RETURN NEXT;
    END IF;
END
$fn$;

COMMENT ON FUNCTION automation.maintain_metrics_partitions() IS
'Create pipeline_metrics partitions ahead (automation.metrics_partition_interval, automation.metrics_partitions_ahead), split rows out of the default partition, drop partitions older than automation.metrics_retention. Returns what it did.';

------------------------------------------------------------------------------
-- Hourly rollup (the seed's continuous aggregate)

CREATE TABLE automation.pipeline_metrics_hourly (
    bucket        timestamptz  NOT NULL,
    pipeline_name varchar(255) NOT NULL,
    stage         varchar(100) NOT NULL,
    executions    bigint       NOT NULL,
    avg_duration  numeric,
    total_records bigint,
    successes     bigint       NOT NULL,
    errors        bigint       NOT NULL,
    PRIMARY KEY (bucket, pipeline_name, stage)
);

COMMENT ON TABLE automation.pipeline_metrics_hourly IS
    'Hourly rollup of pipeline_metrics (UTC hours), complete up to the watermark; refreshed incrementally by automation.refresh_pipeline_metrics_hourly(). Query automation.pipeline_metrics_hourly_live for up-to-the-second figures.';

-- Hours whose rows changed since they were last rolled up: one row per hour
-- and writing transaction (so that a refresh never deletes the mark of a
-- transaction it could not see yet).
CREATE TABLE automation.pipeline_metrics_invalidations (
    bucket timestamptz NOT NULL,
    xid    xid8        NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    PRIMARY KEY (bucket, xid)
);

CREATE TABLE automation.pipeline_metrics_hourly_state (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- every hour before this is in pipeline_metrics_hourly, except invalidated ones
    watermark        timestamptz,
    refreshed_at     timestamptz,
    last_buckets     bigint,
    last_duration_ms numeric
);
INSERT INTO automation.pipeline_metrics_hourly_state DEFAULT VALUES;

-- SECURITY DEFINER: whoever may write pipeline_metrics marks the hours it
-- touched, without a privilege on the bookkeeping table (the function only
-- inserts hour marks derived from the statement's own rows).
CREATE FUNCTION automation.pipeline_metrics_invalidate()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO automation.pipeline_metrics_invalidations (bucket)
        SELECT DISTINCT pg_catalog.date_trunc('hour', c.time, 'UTC') FROM changed_rows c
        ON CONFLICT DO NOTHING;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO automation.pipeline_metrics_invalidations (bucket)
        SELECT DISTINCT pg_catalog.date_trunc('hour', o.time, 'UTC') FROM old_rows o
        ON CONFLICT DO NOTHING;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE automation.pipeline_metrics_hourly_state SET watermark = NULL;
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER pipeline_metrics_invalidate_insert
    AFTER INSERT ON automation.pipeline_metrics REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION automation.pipeline_metrics_invalidate();
CREATE TRIGGER pipeline_metrics_invalidate_update
    AFTER UPDATE ON automation.pipeline_metrics REFERENCING OLD TABLE AS old_rows NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION automation.pipeline_metrics_invalidate();
CREATE TRIGGER pipeline_metrics_invalidate_delete
    AFTER DELETE ON automation.pipeline_metrics REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION automation.pipeline_metrics_invalidate();
CREATE TRIGGER pipeline_metrics_invalidate_truncate
    AFTER TRUNCATE ON automation.pipeline_metrics
    FOR EACH STATEMENT EXECUTE FUNCTION automation.pipeline_metrics_invalidate();

-- Roll up the hours that changed (or, the first time and on request, all of
-- them), up to the start of the current hour: the new watermark.
CREATE FUNCTION automation.refresh_pipeline_metrics_hourly(full_refresh boolean DEFAULT false)
RETURNS TABLE (buckets bigint, rows_aggregated bigint, watermark timestamptz, was_full boolean, duration_ms numeric)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    new_watermark timestamptz := pg_catalog.date_trunc('hour', pg_catalog.now(), 'UTC');
    old_watermark timestamptz;
    touched timestamptz[];
    span record;
    nr bigint;
    n bigint;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('automation.refresh_pipeline_metrics_hourly'));
    SELECT s.watermark INTO old_watermark FROM automation.pipeline_metrics_hourly_state s;
    was_full := full_refresh OR old_watermark IS NULL;
    IF was_full THEN
        DELETE FROM automation.pipeline_metrics_invalidations i WHERE i.bucket < new_watermark;
        DELETE FROM automation.pipeline_metrics_hourly;
    ELSE
        WITH gone AS (DELETE FROM automation.pipeline_metrics_invalidations i
                       WHERE i.bucket < new_watermark RETURNING i.bucket)
        SELECT pg_catalog.array_agg(DISTINCT g.bucket) INTO touched FROM gone g;
        touched := COALESCE(touched, '{}');
        DELETE FROM automation.pipeline_metrics_hourly h WHERE h.bucket = ANY (touched);
    END IF;
    -- one range scan per run of consecutive hours (everything before the
    -- watermark for a full refresh): constant bounds let the planner prune
    -- partitions and use the BRIN index on time, where a join against the
    -- list of hours would scan the whole table
    nr := 0;
    FOR span IN
        SELECT '-infinity'::timestamptz AS lo, new_watermark AS hi WHERE was_full
        UNION ALL
        SELECT min(g.b), max(g.b) + interval '1 hour'
          FROM (SELECT u.b, u.b - pg_catalog.row_number() OVER (ORDER BY u.b) * interval '1 hour' AS run
                  FROM pg_catalog.unnest(touched) AS u(b)) g
         GROUP BY g.run
         ORDER BY 1
    LOOP
        INSERT INTO automation.pipeline_metrics_hourly
        SELECT pg_catalog.date_trunc('hour', m.time, 'UTC'), m.pipeline_name, m.stage, count(*), avg(m.duration_ms),
               sum(m.records_processed), count(*) FILTER (WHERE m.status = 'success'),
               count(*) FILTER (WHERE m.status = 'error')
          FROM automation.pipeline_metrics m
         WHERE m.time >= span.lo AND m.time < span.hi
         GROUP BY 1, 2, 3;
        GET DIAGNOSTICS n = ROW_COUNT;
        nr := nr + n;
    END LOOP;
    IF was_full THEN
        SELECT count(DISTINCT h.bucket) INTO buckets FROM automation.pipeline_metrics_hourly h;
    ELSE
        buckets := pg_catalog.cardinality(touched);
    END IF;
    rows_aggregated := nr;
    watermark := new_watermark;
    duration_ms := pg_catalog.round((pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - started) * 1000)::numeric, 3);
    UPDATE automation.pipeline_metrics_hourly_state s
       SET watermark = new_watermark, refreshed_at = pg_catalog.clock_timestamp(),
           last_buckets = buckets, last_duration_ms = refresh_pipeline_metrics_hourly.duration_ms;
    RETURN NEXT;
END
$fn$;

COMMENT ON FUNCTION automation.refresh_pipeline_metrics_hourly(boolean) IS
'Bring automation.pipeline_metrics_hourly up to the start of the current hour, recomputing only the hours whose rows changed since the last refresh (late rows included); full_refresh => true recomputes everything. Returns hours refreshed, rollup rows written, the new watermark, whether it was a full refresh, and how long it took.';

-- Materialized hours, with the hours not rolled up yet (the current one,
-- and any changed since the last refresh) computed from the raw rows.
CREATE VIEW automation.pipeline_metrics_hourly_live WITH (security_invoker = true) AS
WITH state AS (SELECT COALESCE(s.watermark, '-infinity') AS watermark FROM automation.pipeline_metrics_hourly_state s),
pending AS (SELECT DISTINCT i.bucket FROM automation.pipeline_metrics_invalidations i, state
             WHERE i.bucket < state.watermark)
SELECT h.bucket, h.pipeline_name, h.stage, h.executions, h.avg_duration, h.total_records, h.successes, h.errors
  FROM automation.pipeline_metrics_hourly h, state
 WHERE h.bucket < state.watermark
   AND NOT EXISTS (SELECT FROM pending p WHERE p.bucket = h.bucket)
UNION ALL
SELECT pg_catalog.date_trunc('hour', m.time, 'UTC'), m.pipeline_name, m.stage, count(*), avg(m.duration_ms),
       sum(m.records_processed), count(*) FILTER (WHERE m.status = 'success'), count(*) FILTER (WHERE m.status = 'error')
  FROM automation.pipeline_metrics m
 WHERE m.time >= (SELECT watermark FROM state)
 GROUP BY 1, 2, 3
UNION ALL
SELECT pg_catalog.date_trunc('hour', m.time, 'UTC'), m.pipeline_name, m.stage, count(*), avg(m.duration_ms),
       sum(m.records_processed), count(*) FILTER (WHERE m.status = 'success'), count(*) FILTER (WHERE m.status = 'error')
  FROM automation.pipeline_metrics m
 -- bounds the planner can prune and index with, then the exact hours
 WHERE m.time >= (SELECT min(p.bucket) FROM pending p)
   AND m.time < (SELECT max(p.bucket) + interval '1 hour' FROM pending p)
   AND pg_catalog.date_trunc('hour', m.time, 'UTC') IN (SELECT p.bucket FROM pending p)
 GROUP BY 1, 2, 3;

COMMENT ON VIEW automation.pipeline_metrics_hourly_live IS
    'pipeline_metrics_hourly plus the hours not rolled up yet, computed on the fly (TimescaleDB''s real-time aggregate).';

------------------------------------------------------------------------------
-- Bulk ingest

-- COPY target. Typed columns, or one jsonb object per row in payload with
-- the same keys (time as ISO 8601, UTC when it has no offset). Numbers are
-- bigint and names unbounded here so that a bad value fails one row at flush
-- time, not the whole COPY.
CREATE UNLOGGED TABLE automation.metrics_staging (
    time              timestamptz,
    pipeline_name     text,
    stage             text,
    duration_ms       bigint,
    records_processed bigint,
    status            text,
    error_message     text,
    payload           jsonb
);

COMMENT ON TABLE automation.metrics_staging IS
    'UNLOGGED staging for bulk metric ingest (COPY into it, then automation.flush_metrics_staging()). Not crash-safe by design: flush promptly.';

-- Each staged row as it would land, with the reason it cannot (NULL when it
-- can). Typed columns are checked as they are (no casts, no regular
-- expressions); only jsonb payload values are parsed; an unusable payload
-- number becomes -1 so that the range check reports it.
CREATE VIEW automation.metrics_staging_checked WITH (security_invoker = true) AS
SELECT p.t_time AS time, p.t_pipeline AS pipeline_name, p.t_stage AS stage, p.t_duration AS duration_ms,
       p.t_records AS records_processed, p.t_status AS status, p.t_error AS error_message, p.payload,
       CASE
         WHEN p.t_time IS NULL AND p.bad_time_text
           THEN pg_catalog.format('time is not an ISO 8601 timestamp: %s', p.payload->>'time')
         WHEN p.t_time IS NULL THEN 'time is missing'
         WHEN p.t_pipeline IS NULL OR p.t_pipeline = '' THEN 'pipeline_name is missing'
         WHEN pg_catalog.length(p.t_pipeline) > 255 THEN 'pipeline_name is longer than 255 characters'
         WHEN p.t_stage IS NULL OR p.t_stage = '' THEN 'stage is missing'
         WHEN pg_catalog.length(p.t_stage) > 100 THEN 'stage is longer than 100 characters'
         WHEN p.t_duration < 0 OR p.t_duration > 2147483647
           THEN pg_catalog.format('duration_ms is not an integer from 0 to 2147483647: %s',
                                  COALESCE(p.duration_ms::text, p.payload->>'duration_ms'))
         WHEN p.t_records < 0 OR p.t_records > 2147483647
           THEN pg_catalog.format('records_processed is not an integer from 0 to 2147483647: %s',
                                  COALESCE(p.records_processed::text, p.payload->>'records_processed'))
         WHEN p.t_status IS NOT NULL
              AND p.t_status NOT IN ('running', 'success', 'error', 'warning', 'skipped', 'timeout', 'cancelled')
           THEN pg_catalog.format('status is not one of running, success, error, warning, skipped, timeout, cancelled: %s', p.t_status)
       END AS reason
  FROM (SELECT COALESCE(t.time, automation.try_timestamptz(t.payload->>'time')) AS t_time,
               COALESCE(t.pipeline_name, t.payload->>'pipeline_name') AS t_pipeline,
               COALESCE(t.stage, t.payload->>'stage') AS t_stage,
               COALESCE(t.status, t.payload->>'status') AS t_status,
               COALESCE(t.error_message, t.payload->>'error_message') AS t_error,
               CASE WHEN t.duration_ms IS NOT NULL OR t.payload IS NULL THEN t.duration_ms
                    WHEN t.payload->>'duration_ms' ~ '^[0-9]{1,10}$' THEN (t.payload->>'duration_ms')::bigint
                    WHEN t.payload->>'duration_ms' IS NOT NULL THEN -1 END AS t_duration,
               CASE WHEN t.records_processed IS NOT NULL OR t.payload IS NULL THEN t.records_processed
                    WHEN t.payload->>'records_processed' ~ '^[0-9]{1,10}$' THEN (t.payload->>'records_processed')::bigint
                    WHEN t.payload->>'records_processed' IS NOT NULL THEN -1 END AS t_records,
               t.time IS NULL AND t.payload ? 'time' AS bad_time_text,
               t.duration_ms, t.records_processed, t.payload
          FROM automation.metrics_staging t) p;

COMMENT ON VIEW automation.metrics_staging_checked IS
    'The staged metric rows as automation.flush_metrics_staging() would move them, with the reason a row would be rejected (NULL: it lands).';

-- Staging is locked for the flush (writers wait a few seconds; nothing
-- COPYed meanwhile can be lost), read for the good rows (and again for the
-- bad ones only if there are any), and truncated: no DELETE, so no dead rows
-- to vacuum and no second copy.
-- Rows go in sorted the way the (pipeline_name, time DESC) index is: index
-- insertions then touch neighbouring pages instead of random ones, which
-- saves more than the sort costs (work_mem is raised for this function so the
-- sort of a large batch stays in memory).
CREATE FUNCTION automation.flush_metrics_staging()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET work_mem = '256MB'
AS $fn$
DECLARE
    moved bigint;
    rejected bigint;
BEGIN
    LOCK TABLE automation.metrics_staging IN ACCESS EXCLUSIVE MODE;
    INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, duration_ms, records_processed, status, error_message)
    SELECT c.time, c.pipeline_name, c.stage, c.duration_ms::integer, c.records_processed::integer, c.status, c.error_message
      FROM automation.metrics_staging_checked c WHERE c.reason IS NULL
     ORDER BY c.pipeline_name, c.time DESC;
    GET DIAGNOSTICS moved = ROW_COUNT;
    -- counting is much cheaper than checking every row again: look for the
    -- rejected rows only when there are some
    SELECT count(*) - moved INTO rejected FROM automation.metrics_staging;
    IF rejected > 0 THEN
        INSERT INTO automation.errors (workflow_name, error_type, error_message, error_context)
        SELECT pg_catalog.left(c.pipeline_name, 255), 'invalid_metric_row', c.reason,
               pg_catalog.jsonb_build_object('row', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                   'time', c.time, 'pipeline_name', c.pipeline_name, 'stage', c.stage, 'duration_ms', c.duration_ms,
                   'records_processed', c.records_processed, 'status', c.status, 'error_message', c.error_message,
                   'payload', c.payload)),
                   'source', 'automation.metrics_staging')
          FROM automation.metrics_staging_checked c WHERE c.reason IS NOT NULL;
    END IF;
    TRUNCATE automation.metrics_staging;
    IF rejected > 0 THEN
        RAISE WARNING '% staged metric row(s) rejected, % moved', rejected, moved
              USING HINT = 'The rejected rows and their reasons are in automation.errors (error_type invalid_metric_row).';
    END IF;
    RETURN moved;
END
$fn$;

COMMENT ON FUNCTION automation.flush_metrics_staging() IS
'Move the rows of automation.metrics_staging into pipeline_metrics in one transaction and return how many moved; rows that fail a check go to automation.errors (error_type invalid_metric_row) with the reason, and the good ones still land.';

-- The scheduler keeps partitions made and the rollup current.
INSERT INTO automation.job (jobname, schedule, command) VALUES
    ('automation: refresh pipeline_metrics_hourly', '* * * * *', 'SELECT * FROM automation.refresh_pipeline_metrics_hourly()'),
    ('automation: maintain pipeline_metrics partitions', '*/10 * * * *', 'SELECT * FROM automation.maintain_metrics_partitions()');

-- ---- as sql/maintenance.sql at 0.2.0 ----
-- Index maintenance (0.2.0; src/maintenance.rs): real bloat estimates,
-- rebuilds that do not block writes (REINDEX INDEX CONCURRENTLY, run at top
-- level by a background worker), cleanup of what failed rebuilds leave, and
-- an audit row for every action.

CREATE FUNCTION automation.btree_expected_pages(tuples float8, key_width float8, has_nulls boolean,
                                                fillfactor integer, block_size integer)
RETURNS float8
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'btree_expected_pages_wrapper';

CREATE FUNCTION automation.bloat_ratio(actual_pages float8, expected_pages float8)
RETURNS float8
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'bloat_ratio_wrapper';

CREATE FUNCTION automation.bloat_ratio_from_density(avg_leaf_density float8, fillfactor integer)
RETURNS float8
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'bloat_ratio_from_density_wrapper';

CREATE FUNCTION automation.start_index_maintenance()
RETURNS boolean
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'start_index_maintenance_wrapper';

CREATE FUNCTION automation.record_maintenance(operation text, target regclass, details jsonb)
RETURNS void
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'record_maintenance_wrapper';

COMMENT ON FUNCTION automation.btree_expected_pages(float8, float8, boolean, integer, integer) IS
'Pages a freshly built B-tree of this many entries of this key width would take (the statistical estimate of the common bloat queries).';
COMMENT ON FUNCTION automation.bloat_ratio(float8, float8) IS 'Percent of actual_pages a rebuild to expected_pages would give back (0 when none).';
COMMENT ON FUNCTION automation.bloat_ratio_from_density(float8, integer) IS 'Bloat percent from pgstattuple''s avg_leaf_density against the fillfactor.';
COMMENT ON FUNCTION automation.start_index_maintenance() IS 'Internal: start the worker that carries out the rebuilds this transaction queued, once it commits.';
COMMENT ON FUNCTION automation.record_maintenance(text, regclass, jsonb) IS 'Internal: audit row for a maintenance action of the caller (REINDEX, REINDEX FAILED, DROP INVALID INDEX).';

-- Rebuilds handed to the worker, with their outcome.
CREATE TABLE automation.index_maintenance_queue (
    id              bigserial   PRIMARY KEY,
    batch           xid8        NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    queued_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    index_oid       oid         NOT NULL,
    index_name      text        NOT NULL,
    action          text        NOT NULL,
    requested_by    name        NOT NULL DEFAULT CURRENT_USER,
    size_before     bigint,
    bloat_ratio     numeric,
    estimated_by    text,
    lock_timeout_ms integer     NOT NULL,
    status          text        NOT NULL DEFAULT 'queued',
    size_after      bigint,
    error           text,
    finished_at     timestamptz,
    CONSTRAINT index_maintenance_queue_action_check CHECK (action IN ('reindex', 'drop')),
    CONSTRAINT index_maintenance_queue_status_check CHECK (status IN ('queued', 'done', 'failed', 'skipped'))
);
CREATE INDEX index_maintenance_queue_queued ON automation.index_maintenance_queue (batch) WHERE status = 'queued';

COMMENT ON TABLE automation.index_maintenance_queue IS
    'Index rebuilds and cleanups handed to the index maintenance worker by automation.maintain_indexes(), with their outcome.';

-- Every index of the user schemas (or of one), with its size and bloat.
-- B-tree bloat comes from pgstattuple's leaf density when that extension is
-- installed and usable, otherwise from statistics (pg_class, pg_stats);
-- estimated_by says which, or why there is none.
CREATE FUNCTION automation.index_bloat(schema_name text DEFAULT NULL)
RETURNS TABLE (index_oid oid, table_oid oid, table_schema name, table_name name, index_name name,
               access_method name, index_bytes bigint, is_valid boolean, may_rebuild boolean,
               bloat_ratio numeric, estimated_by text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    pgstattuple_schema name;
    block_size integer := pg_catalog.current_setting('block_size')::integer;
    r record;
    density float8;
BEGIN
    SELECT n.nspname INTO pgstattuple_schema
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pgstattuple';
    FOR r IN
        SELECT c.oid, t.oid AS toid, tn.nspname AS tschema, t.relname AS tname, c.relname AS iname, am.amname,
               pg_catalog.pg_relation_size(c.oid) AS bytes, c.reltuples, i.indisvalid,
               pg_catalog.pg_has_role(t.relowner, 'USAGE') AS mine,
               COALESCE((SELECT (pg_catalog.regexp_match(o, '^fillfactor=(\d+)$'))[1]::integer
                           FROM pg_catalog.unnest(c.reloptions) o WHERE o LIKE 'fillfactor=%'), 90) AS ff,
               w.width, w.nulls, w.with_stats, i.indnkeyatts
          FROM pg_catalog.pg_index i
          JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid AND c.relkind = 'i'
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
          JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
          JOIN pg_catalog.pg_am am ON am.oid = c.relam
          LEFT JOIN LATERAL (
              SELECT sum(st.avg_width)::float8 AS width, COALESCE(bool_or(st.null_frac > 0), false) AS nulls,
                     count(st.avg_width) AS with_stats
                FROM pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos)
                LEFT JOIN LATERAL (
                    SELECT s.avg_width, s.null_frac FROM pg_catalog.pg_stats s
                     WHERE k.attnum > 0 AND NOT s.inherited AND s.schemaname = tn.nspname AND s.tablename = t.relname
                       AND s.attname = (SELECT a.attname FROM pg_catalog.pg_attribute a
                                         WHERE a.attrelid = t.oid AND a.attnum = k.attnum)
                    UNION ALL
                    SELECT s.avg_width, s.null_frac FROM pg_catalog.pg_stats s
                     WHERE k.attnum = 0 AND s.schemaname = n.nspname AND s.tablename = c.relname
                       AND s.attname = (SELECT a.attname FROM pg_catalog.pg_attribute a
                                         WHERE a.attrelid = c.oid AND a.attnum = k.pos)
                ) st ON true
               WHERE k.pos <= i.indnkeyatts
          ) w ON true
         WHERE tn.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
           AND tn.nspname !~ '^pg_(toast_)?temp_'
           AND (schema_name IS NULL OR tn.nspname = schema_name)
    LOOP
        index_oid := r.oid; table_oid := r.toid; table_schema := r.tschema; table_name := r.tname;
        index_name := r.iname; access_method := r.amname; index_bytes := r.bytes; is_valid := r.indisvalid;
        may_rebuild := r.mine; bloat_ratio := NULL; estimated_by := NULL;
        density := NULL;
        IF r.amname = 'btree' AND r.indisvalid AND pgstattuple_schema IS NOT NULL THEN
            BEGIN
                EXECUTE pg_catalog.format('SELECT avg_leaf_density FROM %I.pgstatindex($1)', pgstattuple_schema)
                   INTO density USING r.oid;
            EXCEPTION WHEN OTHERS THEN
                density := NULL; -- not permitted (needs pg_stat_scan_tables): fall back to statistics
            END;
        END IF;
        IF density IS NOT NULL THEN
            bloat_ratio := pg_catalog.round(automation.bloat_ratio_from_density(density, r.ff)::numeric, 1);
            estimated_by := pg_catalog.format('pgstattuple: leaf density %s%% of fillfactor %s%%', pg_catalog.round(density::numeric, 1), r.ff);
        ELSIF r.amname <> 'btree' THEN
            estimated_by := pg_catalog.format('none: no bloat estimate for %s indexes', r.amname);
        ELSIF r.reltuples < 0 OR r.with_stats < r.indnkeyatts THEN
            estimated_by := 'none: the table has not been analyzed';
        ELSE
            bloat_ratio := pg_catalog.round(automation.bloat_ratio(
                               (r.bytes / block_size)::float8,
                               automation.btree_expected_pages(r.reltuples::float8, r.width, r.nulls, r.ff, block_size))::numeric, 1);
            estimated_by := 'statistics: pg_class.reltuples and pg_stats.avg_width';
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;

COMMENT ON FUNCTION automation.index_bloat(text) IS
'Every index of a schema (all user schemas when NULL): size, validity, whether the caller may rebuild it, and the estimated bloat percent with how it was estimated (pgstattuple''s leaf density when installed, else statistics; none for non-B-tree indexes).';

CREATE FUNCTION automation.maintain_indexes(schema_name text DEFAULT NULL, bloat_threshold numeric DEFAULT 30,
                                            min_size_bytes bigint DEFAULT 1000000, dry_run boolean DEFAULT false,
                                            max_indexes integer DEFAULT 5, blocking boolean DEFAULT false,
                                            lock_timeout interval DEFAULT '5s')
RETURNS TABLE (table_name text, index_name text, index_size text, bloat_ratio numeric, action_taken text,
               estimated_by text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
    rebuilt integer := 0;
    queued integer := 0;
    ms integer;
    saved_lock_timeout text := pg_catalog.current_setting('lock_timeout');
    after bigint;
BEGIN
    IF bloat_threshold IS NULL OR bloat_threshold < 0 OR bloat_threshold > 100 THEN
        RAISE EXCEPTION 'bloat_threshold must be a percentage from 0 to 100, not %', bloat_threshold
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_indexes IS NULL OR max_indexes < 0 OR min_size_bytes IS NULL OR min_size_bytes < 0 THEN
        RAISE EXCEPTION 'max_indexes and min_size_bytes must be zero or more'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lock_timeout IS NULL OR lock_timeout < interval '0' THEN
        RAISE EXCEPTION 'lock_timeout must be an interval of zero or more' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF schema_name IS NOT NULL AND NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = schema_name) THEN
        RAISE EXCEPTION 'schema "%" does not exist', schema_name
              USING ERRCODE = 'invalid_schema_name',
                    HINT = 'Pass the schema name as it is stored (case matters), or NULL for every user schema.';
    END IF;
    IF NOT dry_run AND NOT blocking
       AND NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) THEN
        RAISE EXCEPTION 'concurrent rebuilds are handed to a background worker, which only a superuser may ask for'
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'Use blocking => true to rebuild indexes of your own tables in this session, or dry_run => true to see what would be done.';
    END IF;
    ms := LEAST(pg_catalog.date_part('epoch', lock_timeout) * 1000, 2147483647)::integer;

    -- One pass over the estimates (they may read whole indexes): first what
    -- failed concurrent rebuilds left (invalid *_ccnew / *_ccold indexes),
    -- then the rebuild candidates, most bloated first.
    FOR r IN SELECT x.*
               FROM (SELECT b.*, NOT b.is_valid AND b.index_name ~ '_cc(new|old)[0-9]*$' AS leftover
                       FROM automation.index_bloat(schema_name) b) x
              WHERE x.leftover
                 OR (x.is_valid AND x.index_bytes >= min_size_bytes
                     AND (x.bloat_ratio IS NULL OR x.bloat_ratio >= bloat_threshold))
              ORDER BY x.leftover DESC, x.bloat_ratio DESC NULLS LAST, x.index_bytes DESC,
                       x.table_schema, x.table_name, x.index_name
    LOOP
        table_name := pg_catalog.format('%I.%I', r.table_schema, r.table_name);
        index_name := pg_catalog.format('%I.%I', r.table_schema, r.index_name);
        index_size := pg_catalog.pg_size_pretty(r.index_bytes);
        bloat_ratio := CASE WHEN r.leftover THEN NULL ELSE r.bloat_ratio END;
        estimated_by := CASE WHEN r.leftover THEN NULL ELSE r.estimated_by END;
        IF r.leftover THEN
            IF NOT r.may_rebuild THEN
                action_taken := 'skipped: invalid leftover of a failed concurrent rebuild, but the table is not yours';
            ELSIF dry_run THEN
                action_taken := 'would drop: invalid leftover of a failed concurrent rebuild';
            ELSIF blocking THEN
                PERFORM pg_catalog.set_config('lock_timeout', ms || 'ms', true);
                EXECUTE pg_catalog.format('DROP INDEX %s', index_name);
                PERFORM pg_catalog.set_config('lock_timeout', saved_lock_timeout, true);
                PERFORM automation.record_maintenance('DROP INVALID INDEX', r.table_oid::regclass,
                    pg_catalog.jsonb_build_object('index', index_name, 'size_before', r.index_bytes, 'concurrently', false));
                action_taken := 'dropped: invalid leftover of a failed concurrent rebuild';
            ELSE
                INSERT INTO automation.index_maintenance_queue (index_oid, index_name, action, size_before, lock_timeout_ms)
                VALUES (r.index_oid, index_name, 'drop', r.index_bytes, ms);
                queued := queued + 1;
                action_taken := 'drop scheduled: invalid leftover of a failed concurrent rebuild';
            END IF;
        ELSE
            IF r.bloat_ratio IS NULL THEN
                action_taken := 'not rebuilt: no estimate';
            ELSIF NOT r.may_rebuild THEN
                action_taken := 'skipped: only the owner of the table may rebuild its indexes';
            ELSIF rebuilt >= max_indexes THEN
                action_taken := pg_catalog.format('skipped: max_indexes (%s) reached', max_indexes);
            ELSIF dry_run THEN
                action_taken := CASE WHEN blocking THEN 'would reindex (blocking)' ELSE 'would reindex concurrently' END;
                rebuilt := rebuilt + 1;
            ELSIF blocking THEN
                BEGIN
                    PERFORM pg_catalog.set_config('lock_timeout', ms || 'ms', true);
                    EXECUTE pg_catalog.format('REINDEX INDEX %s', index_name);
                    PERFORM pg_catalog.set_config('lock_timeout', saved_lock_timeout, true);
                    after := pg_catalog.pg_relation_size(r.index_oid);
                    PERFORM automation.record_maintenance('REINDEX', r.table_oid::regclass,
                        pg_catalog.jsonb_build_object('index', index_name, 'size_before', r.index_bytes, 'size_after', after,
                                                      'bloat_ratio', r.bloat_ratio, 'estimated_by', r.estimated_by,
                                                      'concurrently', false));
                    action_taken := pg_catalog.format('reindexed (blocking): %s -> %s', index_size, pg_catalog.pg_size_pretty(after));
                EXCEPTION WHEN OTHERS THEN
                    PERFORM pg_catalog.set_config('lock_timeout', saved_lock_timeout, true);
                    PERFORM automation.record_maintenance('REINDEX FAILED', r.table_oid::regclass,
                        pg_catalog.jsonb_build_object('index', index_name, 'size_before', r.index_bytes, 'error', SQLERRM,
                                                      'concurrently', false));
                    action_taken := 'reindex failed: ' || SQLERRM;
                END;
                rebuilt := rebuilt + 1;
            ELSE
                INSERT INTO automation.index_maintenance_queue
                       (index_oid, index_name, action, size_before, bloat_ratio, estimated_by, lock_timeout_ms)
                VALUES (r.index_oid, index_name, 'reindex', r.index_bytes, r.bloat_ratio, r.estimated_by, ms);
                queued := queued + 1;
                rebuilt := rebuilt + 1;
                action_taken := 'reindex scheduled';
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;

    IF queued > 0 AND NOT automation.start_index_maintenance() THEN
        RAISE EXCEPTION 'could not start the index maintenance worker: every background worker slot is in use'
              USING ERRCODE = 'configuration_limit_exceeded',
                    HINT = 'Raise max_worker_processes, or run again with blocking => true.';
    END IF;
END
$fn$;

COMMENT ON FUNCTION automation.maintain_indexes(text, numeric, bigint, boolean, integer, boolean, interval) IS
'Rebuild up to max_indexes valid indexes of at least min_size_bytes whose estimated bloat is at least bloat_threshold percent, largest bloat first: by default with REINDEX INDEX CONCURRENTLY in a background worker once this transaction commits (action "reindex scheduled"; outcome in automation.index_maintenance_queue and automation_audit.log), or in this session with blocking => true. Invalid leftovers of failed concurrent rebuilds are dropped. lock_timeout bounds every lock wait. dry_run changes nothing.';

INSERT INTO automation.job (jobname, schedule, command) VALUES
    ('automation: maintain indexes', '0 2 * * 0', 'SELECT * FROM automation.maintain_indexes()');

-- ---- as sql/roles.sql at 0.2.0 ----
-- Group roles for administrators to grant (0.2.0). Both are NOLOGIN and get
-- no password; roles are global, so they outlive DROP EXTENSION and are
-- created only when missing (the grants below are (re)applied either way).
--
--   automation_runner   runs workflows: reads and writes the workflow and
--                       trigger tables, records errors and pipeline metrics,
--                       calls the runtime functions. Nothing else: not the
--                       audit log, not monitoring samples, not migrations,
--                       not table ownership.
--   automation_monitor  (created in monitoring.sql) reads; may collect
--                       monitoring samples.

DO $role$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'automation_runner') THEN
        CREATE ROLE automation_runner NOLOGIN;
    END IF;
END
$role$;

GRANT USAGE ON SCHEMA automation, automation_workflows, automation_triggers TO automation_runner;
GRANT SELECT, INSERT, UPDATE ON
      automation_workflows.definitions,
      automation_workflows.workflow_executions,
      automation_triggers.registry,
      automation.errors
   TO automation_runner;
-- row-level security limits these to the runner's own rows
GRANT SELECT, INSERT, UPDATE, DELETE ON automation_workflows.api_workflows TO automation_runner;
GRANT SELECT, INSERT ON automation.pipeline_metrics TO automation_runner;
-- bulk ingest: COPY into staging, then automation.flush_metrics_staging()
GRANT SELECT, INSERT, DELETE, TRUNCATE ON automation.metrics_staging TO automation_runner;
GRANT SELECT ON automation.metrics_staging_checked TO automation_runner;
GRANT SELECT ON automation.pipeline_metrics_hourly, automation.pipeline_metrics_hourly_live,
                automation.pipeline_metrics_hourly_state, automation.pipeline_metrics_invalidations
   TO automation_runner, automation_monitor;
GRANT SELECT ON automation_workflows.v_api_workflow_status, automation.v_workflow_status TO automation_runner;
GRANT USAGE, SELECT ON SEQUENCE
      automation_workflows.definitions_id_seq,
      automation_triggers.registry_id_seq
   TO automation_runner;
-- its own jobs (row-level security: username = current_user; scheduling as
-- another role needs superuser)
GRANT SELECT, INSERT, UPDATE, DELETE ON automation.job TO automation_runner;
GRANT SELECT ON automation.job_run_details TO automation_runner;
GRANT USAGE, SELECT ON SEQUENCE automation.job_jobid_seq TO automation_runner;

-- The monitor reads the workflow state as well as the health samples.
GRANT USAGE ON SCHEMA automation_workflows, automation_triggers TO automation_monitor;
GRANT SELECT ON
      automation_workflows.definitions,
      automation_workflows.workflow_executions,
      automation_workflows.v_api_workflow_status,
      automation_triggers.registry,
      automation.errors,
      automation.pipeline_metrics,
      automation.v_workflow_status
   TO automation_monitor;


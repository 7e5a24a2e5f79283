-- automation_ext 0.1.0 -> 0.2.0
--
-- Frozen once released, like every upgrade script: it repeats the 0.2.0
-- objects from the install files (sql/api.sql, migrations.sql, discovery.sql,
-- audit.sql, scheduler.sql, roles.sql) as they were at 0.2.0, because those files will keep
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


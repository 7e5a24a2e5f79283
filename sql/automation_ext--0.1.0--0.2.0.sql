-- automation_ext 0.1.0 -> 0.2.0
--
-- Frozen once released, like every upgrade script: it repeats the 0.2.0
-- objects from the install files (sql/api.sql, migrations.sql, discovery.sql,
-- audit.sql, roles.sql) as they were at 0.2.0, because those files will keep
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

-- The data-change audit trigger (src/audit.rs).
CREATE FUNCTION automation."audit_row_change"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'audit_row_change_wrapper';

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


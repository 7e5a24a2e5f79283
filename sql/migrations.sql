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

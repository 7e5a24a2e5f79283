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

-- Not STRICT: NULL bloat_ratio/estimated_by are fine; NULL index or action
-- are refused by the function itself.
CREATE FUNCTION automation.maintain_index_blocking(index regclass, action text, lock_timeout_ms integer,
                                                   bloat_ratio numeric DEFAULT NULL, estimated_by text DEFAULT NULL)
RETURNS text
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'maintain_index_blocking_wrapper';

COMMENT ON FUNCTION automation.btree_expected_pages(float8, float8, boolean, integer, integer) IS
'Pages a freshly built B-tree of this many entries of this key width would take (the statistical estimate of the common bloat queries).';
COMMENT ON FUNCTION automation.bloat_ratio(float8, float8) IS 'Percent of actual_pages a rebuild to expected_pages would give back (0 when none).';
COMMENT ON FUNCTION automation.bloat_ratio_from_density(float8, integer) IS 'Bloat percent from pgstattuple''s avg_leaf_density against the fillfactor.';
COMMENT ON FUNCTION automation.start_index_maintenance() IS 'Internal: start the worker that carries out the rebuilds this transaction queued, once it commits.';
COMMENT ON FUNCTION automation.maintain_index_blocking(regclass, text, integer, numeric, text) IS
'Internal (maintain_indexes with blocking => true): as the caller, who must own the table, REINDEX INDEX (action reindex) or DROP INDEX an invalid leftover (action drop) within lock_timeout_ms, and write the audit row of what was done (REINDEX, REINDEX FAILED, DROP INVALID INDEX). Returns NULL, or the error of a REINDEX that failed.';
-- only superusers queue concurrent rebuilds (maintain_indexes checks)
REVOKE EXECUTE ON FUNCTION automation.start_index_maintenance() FROM PUBLIC;

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
    failure text;
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
                PERFORM automation.maintain_index_blocking(r.index_oid::regclass, 'drop', ms);
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
                failure := automation.maintain_index_blocking(r.index_oid::regclass, 'reindex', ms, r.bloat_ratio, r.estimated_by);
                IF failure IS NULL THEN
                    action_taken := pg_catalog.format('reindexed (blocking): %s -> %s', index_size,
                                                      pg_catalog.pg_size_pretty(pg_catalog.pg_relation_size(r.index_oid)));
                ELSE
                    action_taken := 'reindex failed: ' || failure;
                END IF;
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

    -- (nested, so that only a caller who queued something, a superuser,
    -- needs the privilege to execute it)
    IF queued > 0 THEN
        IF NOT automation.start_index_maintenance() THEN
            RAISE EXCEPTION 'could not start the index maintenance worker: every background worker slot is in use'
                  USING ERRCODE = 'configuration_limit_exceeded',
                        HINT = 'Raise max_worker_processes, or run again with blocking => true.';
        END IF;
    END IF;
END
$fn$;

COMMENT ON FUNCTION automation.maintain_indexes(text, numeric, bigint, boolean, integer, boolean, interval) IS
'Rebuild up to max_indexes valid indexes of at least min_size_bytes whose estimated bloat is at least bloat_threshold percent, largest bloat first: by default with REINDEX INDEX CONCURRENTLY in a background worker once this transaction commits (action "reindex scheduled"; outcome in automation.index_maintenance_queue and automation_audit.log), or in this session with blocking => true. Invalid leftovers of failed concurrent rebuilds are dropped. lock_timeout bounds every lock wait. dry_run changes nothing.';

INSERT INTO automation.job (jobname, schedule, command) VALUES
    ('automation: maintain indexes', '0 2 * * 0', 'SELECT * FROM automation.maintain_indexes()');

-- Index maintenance in this session (dry run, blocking rebuilds, leftovers);
-- the concurrent rebuilds by the background worker are in
-- pg_test/integration/tests/index_maintenance.rs.
CREATE EXTENSION IF NOT EXISTS automation_ext;
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS "Maint ""S""; x" CASCADE;
DROP ROLE IF EXISTS regress_maint_other;
RESET client_min_messages;
DELETE FROM automation_audit.log;

CREATE SCHEMA "Maint ""S""; x";
CREATE TABLE "Maint ""S""; x"."My Table;" (id int, val text, tags int[], at timestamptz);
INSERT INTO "Maint ""S""; x"."My Table;"
SELECT g, md5(g::text), ARRAY[g % 10], '2026-01-01'::timestamptz + g * interval '1 second'
  FROM generate_series(1, 200000) g;
CREATE INDEX "bloated ""idx""" ON "Maint ""S""; x"."My Table;" (id);
CREATE INDEX "gin idx" ON "Maint ""S""; x"."My Table;" USING gin (tags);
CREATE INDEX "brin idx" ON "Maint ""S""; x"."My Table;" USING brin (at);
-- nine rows in ten go, spread over the whole key range
DELETE FROM "Maint ""S""; x"."My Table;" WHERE id % 10 <> 0;
VACUUM ANALYZE "Maint ""S""; x"."My Table;";
-- an index of the same table built afterwards is not bloated
CREATE INDEX "fresh idx" ON "Maint ""S""; x"."My Table;" (id);
ANALYZE "Maint ""S""; x"."My Table;";

SELECT index_name, access_method, is_valid, may_rebuild,
       bloat_ratio > 80 AS bloated, bloat_ratio < 15 AS healthy, estimated_by
  FROM automation.index_bloat('Maint "S"; x') ORDER BY index_name;

-- dry run: reports, changes nothing
SELECT pg_relation_size('"Maint ""S""; x"."bloated ""idx"""') AS before \gset
SELECT table_name, index_name, bloat_ratio > 80 AS bloated, action_taken, estimated_by
  FROM automation.maintain_indexes('Maint "S"; x', min_size_bytes => 0, dry_run => true) ORDER BY index_name;
SELECT pg_relation_size('"Maint ""S""; x"."bloated ""idx"""') = :before AS unchanged;

-- blocking rebuild, in this session: to a fraction of its size, audited
SELECT index_name, action_taken ~ '^reindexed \(blocking\): ' AS rebuilt
  FROM automation.maintain_indexes('Maint "S"; x', min_size_bytes => 0, blocking => true)
 WHERE bloat_ratio IS NOT NULL;
SELECT pg_relation_size('"Maint ""S""; x"."bloated ""idx"""') < :before * 0.2 AS a_fraction_of_its_size;
SELECT operation, table_schema, table_name, actor = current_user AS by_me, details->>'index' AS index,
       (details->>'size_after')::bigint < (details->>'size_before')::bigint / 5 AS shrank, details->>'concurrently' AS concurrently
  FROM automation_audit.log WHERE operation LIKE 'REINDEX%' ORDER BY id;
SHOW lock_timeout;
-- now nothing is bloated
SELECT count(*) AS still_bloated FROM automation.maintain_indexes('Maint "S"; x', min_size_bytes => 0, dry_run => true)
 WHERE bloat_ratio IS NOT NULL;

-- with pgstattuple installed, its leaf density is used; without it (an
-- installation without contrib, such as the PyPI build of 16.2 the tests
-- use: expected/maintain_indexes_1.out), the estimate from statistics
DELETE FROM "Maint ""S""; x"."My Table;" WHERE id % 20 <> 0;
VACUUM ANALYZE "Maint ""S""; x"."My Table;";
SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pgstattuple') AS have_pgstattuple \gset
\if :have_pgstattuple
CREATE EXTENSION IF NOT EXISTS pgstattuple;
\endif
SELECT index_name, bloat_ratio > 30 AS bloated, estimated_by ~ '^pgstattuple: leaf density' AS from_pgstattuple
  FROM automation.index_bloat('Maint "S"; x') WHERE access_method = 'btree' ORDER BY index_name;
DROP EXTENSION IF EXISTS pgstattuple;

-- a failed concurrent build leaves an invalid index (named as REINDEX
-- CONCURRENTLY names its copies); it is reported and dropped
INSERT INTO "Maint ""S""; x"."My Table;" VALUES (1, 'dup'), (2, 'dup');
CREATE UNIQUE INDEX CONCURRENTLY "val_ccnew" ON "Maint ""S""; x"."My Table;" (val);
SELECT index_name, action_taken FROM automation.maintain_indexes('Maint "S"; x', dry_run => true)
 WHERE index_name LIKE '%ccnew%';
SELECT index_name, action_taken FROM automation.maintain_indexes('Maint "S"; x', blocking => true)
 WHERE index_name LIKE '%ccnew%';
SELECT count(*) AS invalid_left FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
 WHERE c.relname = 'My Table;' AND NOT i.indisvalid;
SELECT operation, details->>'index' AS index FROM automation_audit.log WHERE operation = 'DROP INVALID INDEX';

-- who may do what
CREATE ROLE regress_maint_other LOGIN;
GRANT USAGE ON SCHEMA automation, "Maint ""S""; x" TO regress_maint_other;
GRANT SELECT ON "Maint ""S""; x"."My Table;" TO regress_maint_other;   -- so that it sees the statistics
SET ROLE regress_maint_other;
SELECT count(*) FROM automation.maintain_indexes('Maint "S"; x');
SELECT index_name, action_taken FROM automation.maintain_indexes('Maint "S"; x', bloat_threshold => 0, min_size_bytes => 0, blocking => true)
 WHERE bloat_ratio IS NOT NULL ORDER BY 1;
SELECT automation.maintain_index_blocking('automation.job_pkey', 'reindex', 1000);
RESET ROLE;

-- bad input
SELECT * FROM automation.maintain_indexes(bloat_threshold => 150);
SELECT * FROM automation.maintain_indexes('no such schema');
SELECT * FROM automation.maintain_indexes(max_indexes => -1);
SELECT * FROM automation.maintain_indexes(lock_timeout => '-1s');

-- the weekly default job
SELECT jobname, schedule, command FROM automation.job WHERE jobname = 'automation: maintain indexes';

DROP SCHEMA "Maint ""S""; x" CASCADE;
REVOKE USAGE ON SCHEMA automation FROM regress_maint_other;
DROP ROLE regress_maint_other;
DELETE FROM automation_audit.log;

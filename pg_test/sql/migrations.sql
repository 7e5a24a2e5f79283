-- automation.apply_migration / migration_status: SHA-256 checksums,
-- idempotent re-application, immutable history.
CREATE EXTENSION IF NOT EXISTS automation_ext;
DELETE FROM automation.schema_migrations;
SET client_min_messages = warning;
DROP TABLE IF EXISTS public.mig_a, public.mig_b;
RESET client_min_messages;

-- several statements, run in the caller's transaction with the caller's search_path
SET search_path = public;
SELECT automation.apply_migration('001_create', 'CREATE TABLE mig_a (id int); CREATE INDEX ON mig_a (id);');
RESET search_path;
SELECT to_regclass('public.mig_a') IS NOT NULL AS created;
-- the checksum is SHA-256 of the SQL text
SELECT version, checksum = encode(sha256(convert_to('CREATE TABLE mig_a (id int); CREATE INDEX ON mig_a (id);', 'UTF8')), 'hex') AS sha256,
       length(checksum) AS hex_digits, applied_by = current_user AS by_me, duration_ms >= 0 AS timed
  FROM automation.migration_status();

-- the same version with the same SQL: a no-op that says so
SET search_path = public;
SELECT automation.apply_migration('001_create', 'CREATE TABLE mig_a (id int); CREATE INDEX ON mig_a (id);');
-- the same version with other SQL: an error naming both checksums
SELECT automation.apply_migration('001_create', 'CREATE TABLE mig_a (id bigint);');
RESET search_path;

-- a failing migration records nothing and leaves nothing behind
SELECT automation.apply_migration('002_broken', 'CREATE TABLE public.mig_b (id int); SELECT 1/0;');
SELECT to_regclass('public.mig_b') IS NULL AS rolled_back,
       count(*) AS recorded FROM automation.schema_migrations WHERE version = '002_broken';

-- inside an explicit transaction, a rollback takes the migration and its record away
BEGIN;
SELECT automation.apply_migration('003_tx', 'CREATE TABLE public.mig_b (id int);');
ROLLBACK;
SELECT count(*) AS after_rollback FROM automation.schema_migrations WHERE version = '003_tx';

-- bad input
SELECT automation.apply_migration(NULL, 'SELECT 1');
SELECT automation.apply_migration('  ', 'SELECT 1');
SELECT automation.apply_migration('004', '');
SELECT automation.apply_migration(repeat('v', 256), 'SELECT 1');

SELECT automation.apply_migration('002_fixed', 'ALTER TABLE public.mig_a ADD COLUMN note text;');
SELECT version, left(checksum, 12) AS checksum FROM automation.migration_status();

DROP TABLE public.mig_a;
DELETE FROM automation.schema_migrations;

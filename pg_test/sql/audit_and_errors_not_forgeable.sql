-- Issue 15 (3): a runner could write the audit log in the extension's name
-- (record_maintenance('REINDEX', 'public.secret_tbl', ...)), an all-NULL
-- error row (record_failure(NULL, ...)), and jobs that skipped
-- check_job_target (INSERT INTO automation.job directly).
CREATE EXTENSION IF NOT EXISTS automation_ext;
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS regress_forge CASCADE;
DROP ROLE IF EXISTS regress_forger;
DROP ROLE IF EXISTS regress_victim;
RESET client_min_messages;
CREATE ROLE regress_forger LOGIN IN ROLE automation_runner;
CREATE ROLE regress_victim LOGIN;
CREATE SCHEMA regress_forge;
CREATE TABLE regress_forge.secret_tbl (id int PRIMARY KEY);
CREATE TABLE regress_forge.own_tbl (id int PRIMARY KEY);
ALTER TABLE regress_forge.own_tbl OWNER TO regress_forger;
GRANT USAGE ON SCHEMA regress_forge TO regress_forger;
DROP DATABASE IF EXISTS regress_no_connect;
CREATE DATABASE regress_no_connect;
REVOKE CONNECT ON DATABASE regress_no_connect FROM PUBLIC;
CREATE TEMP TABLE audit_before AS SELECT count(*) AS n FROM automation_audit.log;

\set VERBOSITY terse
SET ROLE regress_forger;
-- the old way is gone
SELECT automation.record_maintenance('REINDEX', 'regress_forge.secret_tbl', '{"forged": true}');
-- the one function that writes maintenance rows acts first, on the caller's own indexes only
SELECT automation.maintain_index_blocking('regress_forge.secret_tbl_pkey', 'reindex', 1000);
SELECT automation.maintain_index_blocking('regress_forge.secret_tbl_pkey', 'drop', 1000);
SELECT automation.maintain_index_blocking('regress_forge.own_tbl_pkey', 'drop', 1000);
SELECT automation.maintain_index_blocking('regress_forge.own_tbl_pkey', 'vacuum', 1000);
-- on its own table it really reindexes, and says so
SELECT automation.maintain_index_blocking('regress_forge.own_tbl_pkey', 'reindex', 1000) IS NULL AS reindexed;
SELECT automation.start_index_maintenance();

-- errors: only failures of executions that failed, under their own name.
-- (0.8.0) record_failure is internal: only the runtime's own functions
-- call it
SELECT automation.record_failure(NULL, NULL, NULL, NULL, NULL);
SELECT automation.start_execution('forge-etl') AS running_id \gset
\set VERBOSITY sqlstate
SELECT automation.record_failure(:'running_id', 'forge-etl', 'Forged', 'never happened', NULL);
\set VERBOSITY terse
SELECT automation.fail_execution(:'running_id', 'Boom', 'it broke') IS NOT NULL AS real_failure_recorded;
-- a runner records an error by hand only as its own
INSERT INTO automation.errors (workflow_name, error_type, owner) VALUES ('forge-etl', 'Forged', 'regress_victim');

-- jobs: the checks of schedule() hold for direct writes
INSERT INTO automation.job (schedule, command, username) VALUES ('* * * * *', 'SELECT 1', 'regress_victim');
INSERT INTO automation.job (schedule, command, database) VALUES ('* * * * *', 'SELECT 1', 'no_such_db');
INSERT INTO automation.job (schedule, command, database) VALUES ('* * * * *', 'SELECT 1', 'regress_no_connect');
INSERT INTO automation.job (jobname, schedule, command) VALUES ('mine', '* * * * *', 'SELECT 1')
RETURNING jobname, username, owner = (SELECT oid FROM pg_roles WHERE rolname = current_user) AS bound_to_me,
          local, database = current_database() AS this_database;
UPDATE automation.job SET username = 'regress_victim' WHERE jobname = 'mine';
UPDATE automation.job SET owner = 10 WHERE jobname = 'mine';
UPDATE automation.job SET database = 'regress_no_connect' WHERE jobname = 'mine';
UPDATE automation.job SET database = 'no_such_db' WHERE jobname = 'mine';
SELECT jobname, username FROM automation.job;
RESET ROLE;
\set VERBOSITY default

-- the audit log holds exactly the one real REINDEX, by the forger, on its own table
SELECT actor, table_schema, table_name, operation, details->>'index' AS index,
       (details ? 'size_after') AS measured
  FROM automation_audit.log ORDER BY id DESC LIMIT (SELECT count(*) FROM automation_audit.log) - (SELECT n FROM audit_before);
SELECT workflow_name, error_type FROM automation.errors WHERE execution_id = :'running_id';
SELECT count(*) AS all_null_errors FROM automation.errors WHERE workflow_name IS NULL AND error_type IS NULL;

DELETE FROM automation.job WHERE jobname = 'mine';
DELETE FROM automation.errors WHERE execution_id = :'running_id';
DELETE FROM automation_workflows.workflow_executions WHERE id = :'running_id';
DROP SCHEMA regress_forge CASCADE;
DROP ROLE regress_forger;
DROP DATABASE regress_no_connect;
DROP ROLE regress_victim;

-- Least privilege: the group roles automation_runner and automation_monitor,
-- row-level security on api_workflows, and SECURITY DEFINER hygiene, tested
-- with real login roles (SET ROLE), each boundary both ways.
CREATE EXTENSION IF NOT EXISTS automation_ext;

SET client_min_messages = warning;
DROP SCHEMA IF EXISTS regress_private CASCADE;
DROP ROLE IF EXISTS regress_alice;
DROP ROLE IF EXISTS regress_bob;
DROP ROLE IF EXISTS regress_mon;
DROP ROLE IF EXISTS regress_nobody;
RESET client_min_messages;

-- The group roles: NOLOGIN, no password, no special powers.
SELECT rolname, rolcanlogin, rolpassword IS NULL AS no_password, rolsuper, rolcreaterole,
       rolcreatedb, rolbypassrls, rolinherit
  FROM pg_authid WHERE rolname IN ('automation_runner', 'automation_monitor') ORDER BY 1;

CREATE ROLE regress_alice LOGIN IN ROLE automation_runner;
CREATE ROLE regress_bob LOGIN IN ROLE automation_runner;
CREATE ROLE regress_mon LOGIN IN ROLE automation_monitor;
CREATE ROLE regress_nobody LOGIN;
CREATE SCHEMA regress_private;
CREATE TABLE regress_private.secrets (x int);
GRANT USAGE ON SCHEMA public TO regress_alice;

------------------------------------------------------------------------------
-- automation_runner runs workflows ...
SET ROLE regress_alice;
SELECT automation.start_execution('etl', '{"n": 1}') AS running_id \gset
SELECT automation.complete_execution(:'running_id', '{"rows": 10}');
SELECT automation.enqueue_execution('etl') AS queued_id \gset
SELECT count(*) AS claimed FROM automation.claim_executions('etl', 'worker-1');
SELECT automation.fail_execution(:'queued_id', 'Timeout', 'upstream slow') IS NOT NULL AS failure_recorded;
SELECT automation.retry_failed_workflow('etl', 3) AS retried_or_backing_off;
SELECT count(*) AS timed_out FROM automation.timeout_stale_executions('1 hour');
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('etl', '{}');
UPDATE automation_workflows.definitions SET version = 2 WHERE name = 'etl';
INSERT INTO automation_triggers.registry (trigger_type, config) VALUES ('webhook', '{}');
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status)
VALUES ('2026-01-01', 'p', 'load', 'success');
-- (a runner may record finished queue executions itself; the scheduler does it within milliseconds)
SELECT automation.record_executions() >= 0 AS recorded;
SELECT status, count(*) FROM automation_workflows.workflow_executions GROUP BY 1 ORDER BY 1;
SELECT name, total_executions FROM automation.v_workflow_status;

-- ... and nothing else.
SELECT count(*) FROM automation_audit.log;
SELECT count(*) FROM automation.database_monitoring;
SELECT count(*) FROM automation.schema_migrations;
SELECT automation.apply_migration('regress_001', 'SELECT 1');
SELECT count(*) FROM regress_private.secrets;
DELETE FROM automation_workflows.workflow_executions;
TRUNCATE automation_workflows.definitions;
ALTER TABLE automation_workflows.definitions OWNER TO regress_alice;
ALTER TABLE automation_workflows.definitions ADD COLUMN owner_note text;
DROP TABLE automation_triggers.registry;
SELECT automation.enable_audit('automation_workflows.definitions');
CREATE TABLE automation_workflows.planted (x int);
CREATE FUNCTION automation.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT NULL::timestamptz';
RESET ROLE;

------------------------------------------------------------------------------
-- api_workflows: each role sees and changes only its own rows.
SET ROLE regress_alice;
INSERT INTO automation_workflows.api_workflows (name, definition) VALUES ('etl', '{"steps": 1}');
SELECT name, created_by FROM automation_workflows.api_workflows;
-- created_by cannot be forged on INSERT ...
INSERT INTO automation_workflows.api_workflows (name, definition, created_by)
VALUES ('forged', '{}', 'regress_bob');
RESET ROLE;

SET ROLE regress_bob;
SELECT count(*) AS alices_rows_bob_sees FROM automation_workflows.api_workflows;
UPDATE automation_workflows.api_workflows SET definition = '{"hijacked": true}';
DELETE FROM automation_workflows.api_workflows;
-- the same name is free for another role
INSERT INTO automation_workflows.api_workflows (name, definition) VALUES ('etl', '{"steps": 2}');
-- ... nor on UPDATE (handing a row to somebody else)
UPDATE automation_workflows.api_workflows SET created_by = 'regress_alice';
-- and the view applies the policy as the caller
SELECT name, created_by, total_executions FROM automation_workflows.v_api_workflow_status;
RESET ROLE;

SET ROLE regress_alice;
SELECT name, created_by, total_executions, successes, errors
  FROM automation_workflows.v_api_workflow_status;
UPDATE automation_workflows.api_workflows SET definition = '{"steps": 3}' WHERE name = 'etl';
SELECT definition, updated_at >= created_at AS touched FROM automation_workflows.api_workflows;
RESET ROLE;

-- a superuser sees everything
SELECT name, created_by, definition FROM automation_workflows.api_workflows ORDER BY created_by;

------------------------------------------------------------------------------
-- automation_monitor reads, and collects samples, but changes no workflow state.
SET ROLE regress_mon;
SELECT count(*) AS executions_visible FROM automation_workflows.workflow_executions;
SELECT count(*) > 0 AS health_checks FROM automation.health_check();
SELECT (automation.collect_database_metrics()).check_time IS NOT NULL AS collected;
-- (at least its own: the default job may have collected one meanwhile)
SELECT count(*) >= 1 AS samples FROM automation.database_monitoring;
SELECT automation.start_execution('etl');
UPDATE automation_workflows.definitions SET is_active = false;
SELECT count(*) FROM automation_audit.log;
RESET ROLE;

-- a role that was granted neither cannot reach the schemas at all
SET ROLE regress_nobody;
SELECT automation.start_execution('etl');
SELECT count(*) FROM automation_workflows.definitions;
RESET ROLE;

------------------------------------------------------------------------------
-- SECURITY DEFINER hygiene: every SECURITY DEFINER function of the extension
-- pins search_path ending in pg_temp; every SQL and PL/pgSQL function pins it
-- except apply_migration, which runs the caller's SQL with the caller's path,
-- and purge_job_run_details, a procedure that COMMITs (which a SET clause
-- forbids), and (0.12.0) may_work, which the planner inlines into the
-- queue's statements only without a SET clause; they qualify every name
-- instead.
WITH ext_functions AS (
    SELECT p.* FROM pg_proc p
      JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
     WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'automation_ext')
)
SELECT oid::regprocedure AS unpinned, prosecdef
  FROM ext_functions
 WHERE (prosecdef OR prolang IN (SELECT oid FROM pg_language WHERE lanname IN ('sql', 'plpgsql')))
   AND NOT EXISTS (SELECT FROM unnest(proconfig) c WHERE c ~ '^search_path=pg_catalog(, .*)?, pg_temp$')
 ORDER BY 1;

-- (0.12.0) and the planner inlines may_work: the plan calls what it is made of
EXPLAIN (VERBOSE, COSTS OFF) SELECT automation.may_work(10::oid, 10::oid, 'x');

-- a now() planted ahead of pg_catalog in the caller's search_path does not
-- redirect the runtime functions
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT ''1999-01-01''::timestamptz';
SET search_path = public, pg_catalog;
SELECT now() < '2000-01-01' AS the_plant_works_for_unpinned_code;
SELECT automation.start_execution('shadow') AS shadow_id \gset
RESET search_path;
DROP FUNCTION public.now();
SELECT started_at > '2000-01-01' AS real_now FROM automation_workflows.workflow_executions WHERE id = :'shadow_id';

------------------------------------------------------------------------------
-- clean up
DELETE FROM automation_workflows.api_workflows;
DROP SCHEMA regress_private CASCADE;
REVOKE USAGE ON SCHEMA public FROM regress_alice;
DROP ROLE regress_alice;
DROP ROLE regress_bob;
DROP ROLE regress_mon;
DROP ROLE regress_nobody;

-- ALTER EXTENSION automation_ext UPDATE from the released 0.1.0: the data
-- survives, the new features work, and the upgraded catalog is exactly that of
-- a fresh install of the current version.

-- Everything the extension defines, by name and definition (oids differ).
CREATE FUNCTION pg_temp.extension_catalog() RETURNS TABLE (kind text, name text, detail text)
LANGUAGE sql AS $$
WITH ext AS (SELECT oid, extconfig FROM pg_extension WHERE extname = 'automation_ext'),
schemas AS (SELECT oid, nspname, nspacl FROM pg_namespace
             WHERE nspname IN ('automation', 'automation_workflows', 'automation_triggers', 'automation_audit')),
rels AS (SELECT c.* FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM schemas))
SELECT 'member', pg_describe_object(d.classid, d.objid, d.objsubid), NULL
  FROM pg_depend d, ext
 WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
UNION ALL
SELECT 'schema', nspname::text, concat_ws(' | ', nspacl::text, obj_description(oid, 'pg_namespace')) FROM schemas
UNION ALL
SELECT 'relation', oid::regclass::text,
       concat_ws(' | ', relkind, relpersistence, relacl::text, reloptions::text, relrowsecurity,
                 relforcerowsecurity, relispartition, pg_get_expr(relpartbound, oid),
                 obj_description(oid, 'pg_class'))
  FROM rels
UNION ALL
SELECT 'column', a.attrelid::regclass::text || '.' || a.attname,
       concat_ws(' | ', a.attnum, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
                 a.attgenerated, pg_get_expr(ad.adbin, ad.adrelid), a.attacl::text,
                 col_description(a.attrelid, a.attnum))
  FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
 WHERE a.attrelid IN (SELECT oid FROM rels) AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint', conrelid::regclass::text || ' ' || conname, pg_get_constraintdef(oid)
  FROM pg_constraint WHERE conrelid IN (SELECT oid FROM rels)
UNION ALL
SELECT 'index', indexrelid::regclass::text, pg_get_indexdef(indexrelid)
  FROM pg_index WHERE indrelid IN (SELECT oid FROM rels)
UNION ALL
SELECT 'trigger', tgrelid::regclass::text || ' ' || tgname, pg_get_triggerdef(oid)
  FROM pg_trigger WHERE tgrelid IN (SELECT oid FROM rels) AND NOT tgisinternal
UNION ALL
SELECT 'policy', polrelid::regclass::text || ' ' || polname,
       concat_ws(' | ', polcmd, polpermissive, polroles::regrole[]::text,
                 pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid))
  FROM pg_policy WHERE polrelid IN (SELECT oid FROM rels)
UNION ALL
SELECT 'view', oid::regclass::text, pg_get_viewdef(oid) FROM rels WHERE relkind IN ('v', 'm')
UNION ALL
SELECT 'function', p.oid::regprocedure::text,
       concat_ws(' | ', CASE WHEN p.prokind <> 'a' THEN md5(pg_get_functiondef(p.oid)) END,
                 p.proacl::text, obj_description(p.oid, 'pg_proc'))
  FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM schemas)
UNION ALL
SELECT 'aggregate', aggfnoid::regprocedure::text,
       concat_ws(' | ', aggtransfn, aggfinalfn, aggcombinefn, aggserialfn, aggdeserialfn,
                 aggmtransfn, aggminvtransfn, aggmfinalfn, aggtranstype::regtype, aggmtranstype::regtype)
  FROM pg_aggregate WHERE aggfnoid IN (SELECT oid FROM pg_proc WHERE pronamespace IN (SELECT oid FROM schemas))
UNION ALL
SELECT 'dumped with pg_dump', c::regclass::text, NULL FROM ext, unnest(ext.extconfig) c
$$;

CREATE EXTENSION automation_ext VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT count(*) AS api_table_in_010 FROM pg_class WHERE relname = 'api_workflows';

-- data of every kind, written through 0.1.0's own functions
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('etl', '{"v": 1}');
SELECT automation.start_execution('etl') AS done_id \gset
SELECT automation.complete_execution(:'done_id');
SELECT automation.start_execution('etl') AS failed_id \gset
SELECT automation.fail_execution(:'failed_id', 'Boom', 'it broke') IS NOT NULL AS failed;
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status, duration_ms)
VALUES ('2026-03-01 10:00', 'p', 'load', 'success', 12);
INSERT INTO automation.schema_migrations (version, checksum) VALUES ('000_by_hand', 'abc');
INSERT INTO automation_audit.log (operation, details) VALUES ('NOTE', '{"before": "upgrade"}');

ALTER EXTENSION automation_ext UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';

-- the data survived
SELECT status, count(*) FROM automation_workflows.workflow_executions GROUP BY 1 ORDER BY 1;
SELECT workflow_name, error_type, error_message FROM automation.errors;
SELECT pipeline_name, duration_ms FROM automation.pipeline_metrics;
SELECT version, checksum, applied_by, duration_ms FROM automation.migration_status();
SELECT operation, details FROM automation_audit.log;
SELECT automation.pipeline_success_rate(status) FROM automation_workflows.workflow_executions;

-- and the new features work on it
SELECT automation.apply_migration('001_after_upgrade', 'CREATE TABLE public.upgraded_t (id int)');
SELECT automation.enable_audit('public.upgraded_t') IS NOT NULL AS audit_enabled;
INSERT INTO public.upgraded_t VALUES (1);
SELECT operation, new_row FROM automation_audit.log WHERE table_name = 'upgraded_t';
INSERT INTO automation_workflows.api_workflows (name, definition) VALUES ('etl', '{}');
SELECT name, created_by = current_user AS mine, total_executions FROM automation_workflows.v_api_workflow_status;

CREATE TEMP TABLE upgraded AS SELECT * FROM pg_temp.extension_catalog();
DROP TABLE public.upgraded_t;
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
CREATE TEMP TABLE fresh AS SELECT * FROM pg_temp.extension_catalog();

-- the upgraded catalog is the fresh one: no differences
SELECT count(*) > 150 AS compared_many_objects FROM fresh;
(SELECT 'only after upgrade' AS difference, * FROM upgraded EXCEPT SELECT 'only after upgrade', * FROM fresh)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh EXCEPT SELECT 'only in a fresh install', * FROM upgraded)
ORDER BY 1, 2, 3;

DROP EXTENSION automation_ext CASCADE;

------------------------------------------------------------------------------
-- 0.2.0 -> current: jobs become bound to their role's oid and to this
-- database; partitions get the CHECK that pg_dump can restore.
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_upgrade_owner;
DROP ROLE IF EXISTS regress_upgrade_gone;
RESET client_min_messages;
CREATE ROLE regress_upgrade_owner LOGIN IN ROLE automation_runner;
CREATE ROLE regress_upgrade_gone LOGIN;
CREATE EXTENSION automation_ext VERSION '0.2.0';
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT automation.schedule('mine', '*/5 * * * *', 'SELECT 1') > 0 AS scheduled;
SELECT automation.schedule_in_database('theirs', '@hourly', 'SELECT 2', current_database(), 'regress_upgrade_owner') > 0 AS scheduled;
SELECT automation.schedule_in_database('elsewhere', '@daily', 'SELECT 3', 'postgres') > 0 AS scheduled;
SELECT automation.schedule_in_database('orphan', '@daily', 'SELECT 4', current_database(), 'regress_upgrade_gone') > 0 AS scheduled;
DROP ROLE regress_upgrade_gone;   -- 0.2.0 let this happen
SELECT automation.alter_job(jobid, active => false) FROM automation.job WHERE jobname = 'automation: maintain indexes';
SELECT count(*) > 0 AS partitions FROM automation.maintain_metrics_partitions();
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status) VALUES (now(), 'p', 's', 'success');

ALTER EXTENSION automation_ext UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT jobname, username, owner = (SELECT oid FROM pg_roles WHERE rolname = username) AS bound, local,
       database = current_database() AS here, active, inactive_reason
  FROM automation.job ORDER BY jobid;
SELECT count(*) AS metrics_kept FROM automation.pipeline_metrics;
SELECT count(DISTINCT pg_get_constraintdef(c.oid)) AS one_status_check
  FROM pg_constraint c JOIN pg_inherits i ON i.inhrelid = c.conrelid
 WHERE i.inhparent = 'automation.pipeline_metrics'::regclass AND c.conname = 'pipeline_metrics_status_check';
-- the renamed owner keeps the job; a new role with the old name gets none of it
ALTER ROLE regress_upgrade_owner RENAME TO regress_upgrade_renamed;
CREATE ROLE regress_upgrade_owner LOGIN IN ROLE automation_runner;
SET ROLE regress_upgrade_owner;
SELECT count(*) AS jobs_of_the_new_role FROM automation.job;
RESET ROLE;
SET ROLE regress_upgrade_renamed;
SELECT jobname FROM automation.job;
RESET ROLE;

-- partitions made by maintain_metrics_partitions are data, not the extension's
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT inhrelid::regclass AS rel FROM pg_inherits
              WHERE inhparent = 'automation.pipeline_metrics'::regclass AND inhrelid <> 'automation.pipeline_metrics_default'::regclass
    LOOP
        EXECUTE format('DROP TABLE %s', r.rel);
    END LOOP;
END $$;
CREATE TEMP TABLE upgraded_020 AS SELECT * FROM pg_temp.extension_catalog();
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
CREATE TEMP TABLE fresh_020 AS SELECT * FROM pg_temp.extension_catalog();
(SELECT 'only after upgrade from 0.2.0' AS difference, * FROM upgraded_020 EXCEPT SELECT 'only after upgrade from 0.2.0', * FROM fresh_020)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh_020 EXCEPT SELECT 'only in a fresh install', * FROM upgraded_020)
ORDER BY 1, 2, 3;
DROP EXTENSION automation_ext CASCADE;
DROP ROLE regress_upgrade_owner;
DROP ROLE regress_upgrade_renamed;

------------------------------------------------------------------------------
-- 0.3.0 -> current: queued and claimed executions move into the execution
-- queue with their ids, attempts and leases, and carry on there.
CREATE EXTENSION automation_ext VERSION '0.3.0';
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT count(automation.enqueue_execution('etl', jsonb_build_object('n', n), now() - interval '1 hour' + n * interval '1 s'))
  FROM generate_series(1, 4) n;
SELECT automation.enqueue_execution('etl', '{"n": 9}', now() + interval '1 day') AS later_id \gset
SELECT id AS claimed_id FROM automation.claim_executions('etl', 'w-old', 1) \gset
SELECT automation.start_execution('adhoc') AS started_id \gset
SELECT automation.start_execution('etl') AS done_id \gset
SELECT automation.complete_execution(:'done_id');
SELECT automation.start_execution('etl') AS failed_id \gset
SELECT automation.fail_execution(:'failed_id', 'Boom', 'before the upgrade') IS NOT NULL AS failed;

ALTER EXTENSION automation_ext UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
-- where everything is now
SELECT metadata->>'n' AS n, status, claimed_by, attempts, id = :'claimed_id' AS the_claimed_one,
       id = :'later_id' AS the_later_one
  FROM automation.executions WHERE workflow_name = 'etl' AND status IN ('pending', 'running')
 ORDER BY run_after;
SELECT status, count(*) FROM automation_workflows.workflow_executions GROUP BY 1 ORDER BY 1;
-- the old worker still completes what it claimed; the rest is claimed in order
SELECT automation.complete_execution(:'claimed_id', '{"after": "upgrade"}', 'w-old');
SELECT string_agg(metadata->>'n', ',') AS claimed FROM automation.claim_executions('etl', 'w-new', 10);
SELECT automation.complete_execution(:'started_id');
-- (the scheduler records finished queue executions within milliseconds; now, here)
SELECT automation.record_executions() >= 0 AS recorded;
SELECT workflow_name, status, metadata->>'after' AS after FROM automation_workflows.workflow_executions
 WHERE id IN (:'claimed_id', :'started_id') ORDER BY 1;
-- the retry of the error from before the upgrade goes through the queue
UPDATE automation.errors SET next_retry_at = now() - interval '1 s';
SELECT automation.retry_failed_workflow('etl') AS retried;
SELECT retry_of = :'failed_id' AS retries_the_old_failure FROM automation_workflows.execution_queue WHERE retry_of IS NOT NULL;
-- the purge job is there, inactive
SELECT jobname, active FROM automation.job WHERE jobname = 'automation: purge execution history';

CREATE TEMP TABLE upgraded_030 AS SELECT * FROM pg_temp.extension_catalog();
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
CREATE TEMP TABLE fresh_030 AS SELECT * FROM pg_temp.extension_catalog();
(SELECT 'only after upgrade from 0.3.0' AS difference, * FROM upgraded_030 EXCEPT SELECT 'only after upgrade from 0.3.0', * FROM fresh_030)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh_030 EXCEPT SELECT 'only in a fresh install', * FROM upgraded_030)
ORDER BY 1, 2, 3;
DROP EXTENSION automation_ext CASCADE;

------------------------------------------------------------------------------
-- 0.4.0 -> current: definitions are checked when written (0.5.0). One
-- written before that the format refuses stays as it is; changing a
-- definition bumps its version; queued work carries on.
CREATE EXTENSION automation_ext VERSION '0.4.0';
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
INSERT INTO automation_workflows.definitions (name, definition)
VALUES ('free', '{"schedule": "@daily"}'),
       ('odd', '{"steps": ["extract", "load"]}'),
       ('etl', '{"steps": [{"name": "extract", "queue": "etl"}, {"name": "load", "after": ["extract"], "sql": "SELECT 1"}]}');
SELECT automation.enqueue_execution('etl', '{"n": 1}') AS queued_id \gset
SELECT count(*) AS claimed FROM automation.claim_executions('etl', 'w-old', 1);

ALTER EXTENSION automation_ext UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT name, version, definition FROM automation_workflows.definitions ORDER BY name;
SELECT name, automation.check_definition(definition) AS runnable FROM automation_workflows.definitions
 WHERE name <> 'odd' ORDER BY name;
\set VERBOSITY terse
UPDATE automation_workflows.definitions SET definition = '{"steps": ["extract"]}' WHERE name = 'odd';
\set VERBOSITY default
UPDATE automation_workflows.definitions
   SET definition = '{"steps": [{"name": "extract", "queue": "etl"}]}' WHERE name IN ('odd', 'etl');
SELECT name, version FROM automation_workflows.definitions ORDER BY name;
-- and the upgraded database runs it
SELECT automation.run_workflow('etl', '{"after": "upgrade"}') AS run_id \gset
SELECT c.step, c.input->'input' AS input
  FROM automation.claim_steps('etl', 'w-new') c, automation.complete_step(c.id);
SELECT status FROM automation_workflows.workflow_executions WHERE id = :'run_id';
SELECT automation.complete_execution(:'queued_id', NULL, 'w-old');
SELECT automation.record_executions() >= 0 AS recorded;
SELECT status FROM automation.executions WHERE id = :'queued_id';

CREATE TEMP TABLE upgraded_040 AS SELECT * FROM pg_temp.extension_catalog();
TRUNCATE automation_workflows.workflow_executions;
DELETE FROM automation_workflows.definitions;
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
CREATE TEMP TABLE fresh_040 AS SELECT * FROM pg_temp.extension_catalog();
(SELECT 'only after upgrade from 0.4.0' AS difference, * FROM upgraded_040 EXCEPT SELECT 'only after upgrade from 0.4.0', * FROM fresh_040)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh_040 EXCEPT SELECT 'only in a fresh install', * FROM upgraded_040)
ORDER BY 1, 2, 3;
DROP EXTENSION automation_ext CASCADE;

------------------------------------------------------------------------------
-- 0.5.0 -> current: jobs get a time zone, retries, an overlap policy, a
-- priority and a history mode (0.6.0); existing jobs keep their behaviour
-- and their runs; the new options work on them.
CREATE EXTENSION automation_ext VERSION '0.5.0';
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT automation.schedule('nightly', '30 2 * * *', 'SELECT 1') AS nightly_id \gset
INSERT INTO automation.job_run_details (jobid, status, start_time, end_time, scheduled_for)
VALUES (:nightly_id, 'succeeded', now() - interval '1 day', now() - interval '1 day', now() - interval '1 day');

ALTER EXTENSION automation_ext UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT jobname, schedule, timezone, retries, retry_backoff, overlap, priority, log_runs, keep_runs, next_attempt
  FROM automation.job WHERE jobid = :nightly_id;
SELECT status, attempt FROM automation.job_run_details WHERE jobid = :nightly_id;
-- the old three-argument call still schedules; the new options apply
SELECT automation.schedule('nightly', '30 2 * * *', 'SELECT 2', timezone => 'Asia/Tokyo', retries => 2) = :nightly_id AS same_job;
SELECT command, timezone, retries, next_run_at = automation.next_run('30 2 * * *', now(), 'Asia/Tokyo') AS in_tokyo
  FROM automation.job WHERE jobid = :nightly_id;
SELECT automation.alter_job(:nightly_id, overlap => 'queue', priority => 5);
SELECT overlap, priority FROM automation.job WHERE jobid = :nightly_id;

CREATE TEMP TABLE upgraded_050 AS SELECT * FROM pg_temp.extension_catalog();
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
CREATE TEMP TABLE fresh_050 AS SELECT * FROM pg_temp.extension_catalog();
(SELECT 'only after upgrade from 0.5.0' AS difference, * FROM upgraded_050 EXCEPT SELECT 'only after upgrade from 0.5.0', * FROM fresh_050)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh_050 EXCEPT SELECT 'only in a fresh install', * FROM upgraded_050)
ORDER BY 1, 2, 3;
DROP EXTENSION automation_ext CASCADE;

------------------------------------------------------------------------------
-- 0.6.0 -> current: SQL steps run (0.7.0). A queue workflow's execution in
-- flight keeps running; a workflow with SQL steps, refused by 0.6.0, starts;
-- automation_runner loses the columns it must not write.
CREATE EXTENSION automation_ext VERSION '0.6.0';
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
INSERT INTO automation_workflows.definitions (name, definition)
VALUES ('q060', '{"steps": [{"name": "a", "queue": "q060"}, {"name": "b", "after": ["a"], "queue": "q060"}]}'),
       ('s060', '{"steps": [{"name": "a", "sql": "SELECT 1"}]}');
SELECT automation.run_workflow('q060') AS q060_id \gset
SELECT count(*) AS claimed FROM automation.claim_steps('q060', 'w');
SELECT automation.run_workflow('s060');

ALTER EXTENSION automation_ext UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT automation.complete_step(id, '{"ok": true}') FROM automation_workflows.step_runs
 WHERE execution_id = :'q060_id' AND step = 'a';
SELECT step, status, queue FROM automation_workflows.step_runs WHERE execution_id = :'q060_id' ORDER BY id;
SELECT automation.run_workflow('s060') IS NOT NULL AS sql_workflow_starts;
SELECT step, queue IS NULL AS sql_step FROM automation_workflows.step_runs r
  JOIN automation_workflows.workflow_runs w USING (execution_id) WHERE w.workflow_name = 's060';
-- (0.8.0: nothing of the runs is writable by runners)
SELECT has_column_privilege('automation_runner', 'automation_workflows.workflow_runs', 'owner', 'INSERT') AS runner_sets_owner,
       has_column_privilege('automation_runner', 'automation_workflows.workflow_runs', 'definition', 'UPDATE') AS runner_changes_definition,
       has_column_privilege('automation_runner', 'automation_workflows.step_runs', 'status', 'UPDATE') AS runner_updates_status;

CREATE TEMP TABLE upgraded_060 AS SELECT * FROM pg_temp.extension_catalog();
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
CREATE TEMP TABLE fresh_060 AS SELECT * FROM pg_temp.extension_catalog();
(SELECT 'only after upgrade from 0.6.0' AS difference, * FROM upgraded_060 EXCEPT SELECT 'only after upgrade from 0.6.0', * FROM fresh_060)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh_060 EXCEPT SELECT 'only in a fresh install', * FROM upgraded_060)
ORDER BY 1, 2, 3;
DROP EXTENSION automation_ext CASCADE;

------------------------------------------------------------------------------
-- 0.7.0 -> current: tenancy (0.8.0). Existing rows get their owners (an
-- engine execution its starter, a schedule trigger its job's owner, a
-- definition the one role its triggers and executions agree on, other
-- triggers their definition's owner, errors their execution's owner; the
-- rest: definitions and triggers the extension's owner, queued and past
-- executions automation_runner, as WARNINGs say), and work in flight
-- carries on under the new rules.
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_up_etl;
DROP ROLE IF EXISTS regress_up_other;
RESET client_min_messages;
CREATE ROLE regress_up_etl LOGIN IN ROLE automation_runner;
CREATE ROLE regress_up_other LOGIN IN ROLE automation_runner;
CREATE EXTENSION automation_ext VERSION '0.7.0';
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
INSERT INTO automation_workflows.definitions (name, definition)
VALUES ('up-etl', '{"steps": [{"name": "a", "queue": "up-q"}, {"name": "b", "after": ["a"], "queue": "up-q"}]}'),
       ('up-shared', '{"steps": [{"name": "a", "queue": "up-shared"}]}'),
       ('up-nobody', '{"steps": [{"name": "a", "queue": "up-nobody"}]}');
SET ROLE regress_up_etl;
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'schedule', '{"cron": "@yearly"}', id FROM automation_workflows.definitions WHERE name = 'up-etl';
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'manual', '{}', id FROM automation_workflows.definitions WHERE name = 'up-etl';
SELECT automation.run_workflow('up-etl', '{"n": 1}') AS etl_exec \gset
SELECT count(*) AS claimed FROM automation.claim_steps('up-q', 'w-etl');
SELECT automation.run_workflow('up-shared') IS NOT NULL AS started;
SELECT automation.enqueue_execution('up-jobs', '{"n": 1}') AS etl_queued \gset
SELECT automation.start_execution('up-jobs') AS etl_failed \gset
SELECT automation.fail_execution(:'etl_failed', 'Boom', 'before') IS NOT NULL AS failed;
-- (issue 29) an engine execution that failed, with an idempotency key: the
-- update releases the key, and it can be re-run
SELECT automation.run_workflow('up-etl', '{"n": 2}', idempotency_key => 'day-1') AS etl_broken \gset
SELECT automation.fail_step(c.id, 'broken', false, 'w-etl') FROM automation.claim_steps('up-q', 'w-etl') c
 WHERE c.execution_id = :'etl_broken';
RESET ROLE;
SET ROLE regress_up_other;
SELECT automation.run_workflow('up-shared') IS NOT NULL AS started;
RESET ROLE;
-- a change a table trigger saw, not drained yet (in a transaction with the
-- update and the look at it: a scheduler that starts when the update
-- commits sweeps the inbox, and could drain it before the look)
BEGIN;
INSERT INTO automation_workflows.trigger_inbox (trigger_id, workflow_name, op, table_name, started_by, rows)
SELECT r.id, 'up-etl', 'INSERT', 'public.up_t', 'regress_up_other'::regrole::oid, ARRAY['(1)']
  FROM automation_triggers.registry r WHERE r.trigger_type = 'manual';
-- (issue 28) a metric at infinity, which stopped partition maintenance, and
-- a job of a role outside automation_runner
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage) VALUES ('infinity', 'up-inf', 's');
CREATE ROLE regress_up_plain LOGIN;
SELECT automation.schedule_in_database('up-plain', '@yearly', 'SELECT 1', current_database(), 'regress_up_plain') > 0 AS scheduled;

ALTER EXTENSION automation_ext UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT count(*) AS infinite_metrics FROM automation.pipeline_metrics WHERE NOT isfinite(time);
SELECT error_type, error_context->'row'->>'pipeline_name' AS moved FROM automation.errors WHERE workflow_name = 'up-inf';
DELETE FROM automation.job WHERE jobname = 'up-plain';
DROP ROLE regress_up_plain;
SELECT name, owner FROM automation_workflows.definitions ORDER BY name;
SELECT trigger_type, owner, enabled FROM automation_triggers.registry ORDER BY id;
SELECT workflow_name, owner, status FROM automation.executions ORDER BY workflow_name, owner::text, status;
SELECT workflow_name, error_type, owner FROM automation.errors WHERE workflow_name <> 'up-inf';
SELECT owner, changed_by FROM automation_workflows.trigger_inbox;
COMMIT;
-- etl's work carries on, as etl's; the others' is not etl's
SET ROLE regress_up_etl;
SELECT automation.complete_step(id, '{"after": "upgrade"}', 'w-etl') FROM automation_workflows.step_runs
 WHERE execution_id = :'etl_exec' AND step = 'a';
SELECT step, input->'steps'->'a' AS from_a FROM automation.claim_steps('up-q', 'w-etl');
-- its failed execution runs again, from the failed step, with the key
SELECT automation.rerun_workflow(:'etl_broken') AS etl_rerun \gset
SELECT step, status FROM automation_workflows.step_runs WHERE execution_id = :'etl_rerun';
SELECT automation.run_workflow('up-etl', '{}', idempotency_key => 'day-1') = :'etl_rerun' AS key_went_with_the_rerun;
-- and its queued execution, which any runner works as before
SELECT count(*) AS claimed FROM automation.claim_executions('up-jobs', 'w-etl');
SELECT count(*) AS executions_etl_sees FROM automation.executions;
SELECT automation.run_workflow('up-nobody');
RESET ROLE;
-- the extension's owner gives the unowned workflow away
UPDATE automation_workflows.definitions SET owner = 'regress_up_other' WHERE name = 'up-nobody';
SET ROLE regress_up_other;
SELECT automation.run_workflow('up-nobody') IS NOT NULL AS started_after_handover;
RESET ROLE;

CREATE TEMP TABLE upgraded_070 AS SELECT * FROM pg_temp.extension_catalog();
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
CREATE TEMP TABLE fresh_070 AS SELECT * FROM pg_temp.extension_catalog();
(SELECT 'only after upgrade from 0.7.0' AS difference, * FROM upgraded_070 EXCEPT SELECT 'only after upgrade from 0.7.0', * FROM fresh_070)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh_070 EXCEPT SELECT 'only in a fresh install', * FROM upgraded_070)
ORDER BY 1, 2, 3;
DROP EXTENSION automation_ext CASCADE;
DROP ROLE regress_up_etl;
DROP ROLE regress_up_other;

------------------------------------------------------------------------------
-- 0.8.0 -> current: 0.9.0 (PostgreSQL 16 and 18). describe_tables leaves
-- out PostgreSQL 18's NOT NULL constraints (is_nullable says it), and on 18
-- the NOT NULL constraints of the columns 0.8.0 renamed get a fresh
-- install's names (the catalogs compared below would differ on 18 otherwise).
CREATE EXTENSION automation_ext VERSION '0.8.0';
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
CREATE TABLE public.up_090 (id int PRIMARY KEY, label text NOT NULL);
ALTER EXTENSION automation_ext UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT column_name, is_nullable, constraint_types
  FROM automation.describe_tables('public') WHERE table_name = 'up_090';
DROP TABLE public.up_090;
CREATE TEMP TABLE upgraded_080 AS SELECT * FROM pg_temp.extension_catalog();
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
CREATE TEMP TABLE fresh_080 AS SELECT * FROM pg_temp.extension_catalog();
(SELECT 'only after upgrade from 0.8.0' AS difference, * FROM upgraded_080 EXCEPT SELECT 'only after upgrade from 0.8.0', * FROM fresh_080)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh_080 EXCEPT SELECT 'only in a fresh install', * FROM upgraded_080)
ORDER BY 1, 2, 3;
DROP EXTENSION automation_ext CASCADE;

------------------------------------------------------------------------------
-- 0.9.0 -> current: 0.10.0 (queue history modes). An error recorded before
-- the upgrade has no retry_input: its retry still takes the failed
-- execution's input from the history; a failure after the upgrade keeps it.
CREATE EXTENSION automation_ext VERSION '0.9.0';
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT automation.enqueue_execution('up-100', '{"input": "before"}') IS NOT NULL AS queued;
SELECT count(*) AS claimed FROM automation.claim_executions('up-100', 'w', 1);
SELECT automation.fail_execution(id, 'E', 'broke before the upgrade', NULL, 'w') IS NOT NULL AS failed
  FROM automation_workflows.execution_queue WHERE workflow_name = 'up-100';
-- this library records under 0.9.0's SQL (no queue_settings yet) as 0.9.0
-- did: into the history, nothing set aside as RecordingFailed
SELECT automation.record_executions() >= 0 AS recorded;
SELECT status FROM automation_workflows.workflow_executions WHERE workflow_name = 'up-100';
SELECT count(*) AS set_aside FROM automation.errors WHERE error_type = 'RecordingFailed';
ALTER EXTENSION automation_ext UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT retry_input IS NULL AS no_input_kept_before FROM automation.errors WHERE workflow_name = 'up-100';
UPDATE automation.errors SET next_retry_at = now() - interval '1 second' WHERE workflow_name = 'up-100';
SELECT automation.retry_failed_workflow('up-100') AS retried;
SELECT metadata->>'input' AS retry_input FROM automation_workflows.execution_queue WHERE workflow_name = 'up-100';
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('up-100', '{}');
SELECT automation.set_queue_history('up-100', 'none') AS previous;
CREATE TEMP TABLE upgraded_090 AS SELECT * FROM pg_temp.extension_catalog();
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
CREATE TEMP TABLE fresh_090 AS SELECT * FROM pg_temp.extension_catalog();
(SELECT 'only after upgrade from 0.9.0' AS difference, * FROM upgraded_090 EXCEPT SELECT 'only after upgrade from 0.9.0', * FROM fresh_090)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh_090 EXCEPT SELECT 'only in a fresh install', * FROM upgraded_090)
ORDER BY 1, 2, 3;
DROP EXTENSION automation_ext CASCADE;

------------------------------------------------------------------------------
-- 0.10.0 -> current: 0.11.0 ('N seconds' on a job's own grid). A job keeps
-- its next run (0.10.0's: aligned to a multiple of N) through the upgrade; an
-- alter_job that leaves the schedule as it was keeps the next run still to
-- come (0.10.0's trigger computed it again); a new schedule starts its grid
-- when it is set.
CREATE EXTENSION automation_ext VERSION '0.10.0';
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
-- (the next run set in the transaction that schedules it: docs/scheduler.md)
BEGIN;
SELECT automation.schedule('up-110', '10 seconds', 'SELECT 1') > 0 AS scheduled;
UPDATE automation.job SET next_run_at = '2100-01-01 00:00:10+00' WHERE jobname = 'up-110';
COMMIT;
-- a default job the DBA changed keeps its schedule; the other frequent one
-- counts its minutes from the update
SELECT automation.alter_job(jobid, schedule => '*/7 * * * *') FROM automation.job
 WHERE jobname = 'automation: collect database metrics';
ALTER EXTENSION automation_ext UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT jobname, schedule FROM automation.job WHERE jobname LIKE 'automation: %' ORDER BY jobname;
SELECT automation.alter_job(jobid, priority => 1) FROM automation.job WHERE jobname = 'up-110';
SELECT next_run_at AT TIME ZONE 'UTC' AS kept, priority FROM automation.job WHERE jobname = 'up-110';
BEGIN;
SELECT automation.alter_job(jobid, schedule => '20 seconds') FROM automation.job WHERE jobname = 'up-110';
SELECT next_run_at = date_trunc('milliseconds', now()) + interval '20 seconds' AS from_now
  FROM automation.job WHERE jobname = 'up-110';
COMMIT;
CREATE TEMP TABLE upgraded_0100 AS SELECT * FROM pg_temp.extension_catalog();
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
CREATE TEMP TABLE fresh_0100 AS SELECT * FROM pg_temp.extension_catalog();
(SELECT 'only after upgrade from 0.10.0' AS difference, * FROM upgraded_0100 EXCEPT SELECT 'only after upgrade from 0.10.0', * FROM fresh_0100)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh_0100 EXCEPT SELECT 'only in a fresh install', * FROM upgraded_0100)
ORDER BY 1, 2, 3;
DROP EXTENSION automation_ext CASCADE;

------------------------------------------------------------------------------
-- 0.11.0 -> current: 0.12.0 (the queue's fillfactor is 50, may_work is
-- inlined). The queue's other storage parameters keep their values; an
-- execution claimed before the upgrade completes after it.
CREATE EXTENSION automation_ext VERSION '0.11.0';
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT automation.enqueue_execution('up-120', '{"n": 1}') IS NOT NULL AS enqueued;
SELECT count(*) AS claimed FROM automation.claim_executions('up-120', 'w-up', 5);
ALTER EXTENSION automation_ext UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT reloptions FROM pg_class WHERE oid = 'automation_workflows.execution_queue'::regclass;
SELECT proconfig FROM pg_proc WHERE oid = 'automation.may_work(oid, oid, text)'::regprocedure;
SELECT automation.complete_executions(ARRAY(SELECT id FROM automation_workflows.execution_queue
                                             WHERE workflow_name = 'up-120'), NULL, 'w-up') AS completed;
SELECT automation.record_executions() >= 0 AS recorded;
SELECT status FROM automation_workflows.workflow_executions WHERE workflow_name = 'up-120';
CREATE TEMP TABLE upgraded_0110 AS SELECT * FROM pg_temp.extension_catalog();
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
CREATE TEMP TABLE fresh_0110 AS SELECT * FROM pg_temp.extension_catalog();
(SELECT 'only after upgrade from 0.11.0' AS difference, * FROM upgraded_0110 EXCEPT SELECT 'only after upgrade from 0.11.0', * FROM fresh_0110)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh_0110 EXCEPT SELECT 'only in a fresh install', * FROM upgraded_0110)
ORDER BY 1, 2, 3;
DROP EXTENSION automation_ext CASCADE;

------------------------------------------------------------------------------
-- 0.12.0 -> current: 0.13.0 (the functions that log finished executions hand
-- the recorder the lowest and the highest TID of their rows:
-- executions_logged(uuid[], tid, tid)
-- replaces executions_logged(uuid[])). An execution completed by 0.12.0's
-- functions is recorded after the upgrade; 0.13.0's complete, fail and
-- cancel (cancel_workflow of a queued one) the others; nobody but the
-- functions may call the new one.
CREATE EXTENSION automation_ext VERSION '0.12.0';
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT count(*) AS enqueued FROM generate_series(1, 4) n, automation.enqueue_execution('up-130', jsonb_build_object('n', n));
SELECT count(*) AS claimed FROM automation.claim_executions('up-130', 'w-up', 3);
SELECT automation.complete_executions(ARRAY(SELECT id FROM automation_workflows.execution_queue
                                             WHERE workflow_name = 'up-130' AND metadata->>'n' = '1'), NULL, 'w-up')
       AS completed_before;
ALTER EXTENSION automation_ext UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT to_regprocedure('automation.executions_logged(uuid[])') IS NULL AS one_argument_gone,
       has_function_privilege('automation_runner', 'automation.executions_logged(uuid[], tid, tid)', 'EXECUTE')
       AS runner_may_call;
SELECT automation.complete_executions(ARRAY(SELECT id FROM automation_workflows.execution_queue
                                             WHERE workflow_name = 'up-130' AND metadata->>'n' = '2'), NULL, 'w-up')
       AS completed_after;
SELECT automation.fail_execution(id, 'up', 'failed after the upgrade', NULL, 'w-up') IS NOT NULL AS failed_after
  FROM automation_workflows.execution_queue WHERE workflow_name = 'up-130' AND metadata->>'n' = '3';
SELECT automation.cancel_workflow(id, 'cancelled after the upgrade') AS cancelled_after
  FROM automation_workflows.execution_queue WHERE workflow_name = 'up-130' AND metadata->>'n' = '4';
SELECT automation.record_executions() >= 0 AS recorded;
SELECT metadata->>'n' AS n, status FROM automation_workflows.workflow_executions
 WHERE workflow_name = 'up-130' ORDER BY 1;
SELECT count(*) AS left_in_the_log FROM automation_workflows.execution_log WHERE workflow_name = 'up-130';
CREATE TEMP TABLE upgraded_0120 AS SELECT * FROM pg_temp.extension_catalog();
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
CREATE TEMP TABLE fresh_0120 AS SELECT * FROM pg_temp.extension_catalog();
(SELECT 'only after upgrade from 0.12.0' AS difference, * FROM upgraded_0120 EXCEPT SELECT 'only after upgrade from 0.12.0', * FROM fresh_0120)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh_0120 EXCEPT SELECT 'only in a fresh install', * FROM upgraded_0120)
ORDER BY 1, 2, 3;
DROP EXTENSION automation_ext CASCADE;

------------------------------------------------------------------------------
-- 0.13.0 -> current: 0.14.0 (the console's newest-first indexes of the
-- history ascending and read backwards). Executions recorded before the
-- upgrade are in the rebuilt indexes, and listed newest first through them.
CREATE EXTENSION automation_ext VERSION '0.13.0';
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT count(*) AS enqueued FROM generate_series(1, 3) n, automation.enqueue_execution('up-140', jsonb_build_object('n', n));
SELECT automation.complete_executions(ARRAY(SELECT id FROM automation.claim_executions('up-140', 'w-up', 3)), NULL, 'w-up')
       AS completed_before;
SELECT automation.record_executions() >= 0 AS recorded;
ALTER EXTENSION automation_ext UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT i.indexrelid::regclass AS index, pg_get_indexdef(i.indexrelid) AS definition
  FROM pg_index i
 WHERE i.indrelid = 'automation_workflows.workflow_executions'::regclass
   AND i.indexrelid::regclass::text LIKE '%recent'
 ORDER BY 1;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT e.metadata->>'n' AS n FROM automation_workflows.workflow_executions e
 WHERE e.workflow_name = 'up-140' AND e.started_at IS NOT NULL
 ORDER BY e.started_at DESC, e.id DESC LIMIT 20;
SELECT e.metadata->>'n' AS n, e.status FROM automation_workflows.workflow_executions e
 WHERE e.workflow_name = 'up-140' AND e.started_at IS NOT NULL
 ORDER BY e.started_at DESC, e.id DESC LIMIT 20;
RESET enable_seqscan;
CREATE TEMP TABLE upgraded_0130 AS SELECT * FROM pg_temp.extension_catalog();
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
CREATE TEMP TABLE fresh_0130 AS SELECT * FROM pg_temp.extension_catalog();
(SELECT 'only after upgrade from 0.13.0' AS difference, * FROM upgraded_0130 EXCEPT SELECT 'only after upgrade from 0.13.0', * FROM fresh_0130)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh_0130 EXCEPT SELECT 'only in a fresh install', * FROM upgraded_0130)
ORDER BY 1, 2, 3;
DROP EXTENSION automation_ext CASCADE;

------------------------------------------------------------------------------
-- 0.14.0 -> current: 0.15.0 (a success of a queue whose history keeps
-- nothing is handed to the scheduler through shared memory instead of the
-- log: automation.hand_off_successes). A success of a 'none' queue logged by
-- 0.14.0's completion is counted after the upgrade; one completed after it
-- is counted too (through the log here, or handed off: the count is the
-- same); nobody but the completion may call the new function.
CREATE EXTENSION automation_ext VERSION '0.14.0';
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('up-150', '{}');
SELECT automation.set_queue_history('up-150', 'none');
SELECT count(*) AS enqueued FROM generate_series(1, 2) n, automation.enqueue_execution('up-150', jsonb_build_object('n', n));
SELECT automation.complete_executions(ARRAY(SELECT id FROM automation.claim_executions('up-150', 'w-up', 1)), NULL, 'w-up')
       AS completed_before;
ALTER EXTENSION automation_ext UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';
SELECT has_function_privilege('automation_runner', 'automation.hand_off_successes(uuid[], text[], timestamptz[])', 'EXECUTE')
       AS runner_may_call;
SELECT automation.complete_executions(ARRAY(SELECT id FROM automation.claim_executions('up-150', 'w-up', 1)), NULL, 'w-up')
       AS completed_after;
SELECT automation.record_executions() >= 0 AS recorded;
SELECT sum(finished) AS successes_counted FROM automation.execution_stats WHERE workflow_name = 'up-150' AND status = 'success';
SELECT count(*) AS kept FROM automation_workflows.workflow_executions WHERE workflow_name = 'up-150';
SELECT count(*) AS left_in_the_log FROM automation_workflows.execution_log WHERE workflow_name = 'up-150';
CREATE TEMP TABLE upgraded_0140 AS SELECT * FROM pg_temp.extension_catalog();
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
CREATE TEMP TABLE fresh_0140 AS SELECT * FROM pg_temp.extension_catalog();
(SELECT 'only after upgrade from 0.14.0' AS difference, * FROM upgraded_0140 EXCEPT SELECT 'only after upgrade from 0.14.0', * FROM fresh_0140)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh_0140 EXCEPT SELECT 'only in a fresh install', * FROM upgraded_0140)
ORDER BY 1, 2, 3;
DROP EXTENSION automation_ext CASCADE;

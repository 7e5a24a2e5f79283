-- Issue 27: no role can make SQL run as another role. Every path a hostile
-- member of automation_runner found on 0.7.0, and the variants, tried as
-- such a member: each fails with 42501 (or, for direct reads and writes of
-- another role's rows, finds nothing: row-level security), and the
-- victim's work is untouched.
CREATE EXTENSION IF NOT EXISTS automation_ext;
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS regress_t_alice, regress_t_bob, regress_t_carol CASCADE;
DROP ROLE IF EXISTS regress_t_alice;
DROP ROLE IF EXISTS regress_t_bob;
DROP ROLE IF EXISTS regress_t_carol;
DROP ROLE IF EXISTS regress_t_app;
DROP ROLE IF EXISTS regress_t_team;
RESET client_min_messages;

CREATE ROLE regress_t_alice LOGIN IN ROLE automation_runner;
CREATE ROLE regress_t_bob LOGIN IN ROLE automation_runner;
CREATE ROLE regress_t_carol LOGIN IN ROLE automation_runner;
-- a role that only writes one table of bob's
CREATE ROLE regress_t_app LOGIN;
CREATE SCHEMA regress_t_alice AUTHORIZATION regress_t_alice;
CREATE SCHEMA regress_t_bob AUTHORIZATION regress_t_bob;
CREATE SCHEMA regress_t_carol AUTHORIZATION regress_t_carol;

-- drained(): the scheduler drains the trigger inbox after the commit; this
-- drains too, so it does not matter who gets there first
CREATE FUNCTION pg_temp.drained() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..1000 LOOP
        PERFORM automation.drain_trigger_inbox(100);
        IF NOT EXISTS (SELECT FROM automation_workflows.trigger_inbox) THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
    RETURN false;
END $$;

------------------------------------------------------------------------------
-- The victims' work. A superuser's workflow with a SQL step, a schedule
-- trigger (yearly: it never fires during the test) and a manual trigger,
-- and an execution waiting (delayed) to start.
INSERT INTO automation_workflows.definitions (name, definition)
VALUES ('regress-t-admin', '{"steps": [{"name": "who", "sql": "SELECT current_user::text"}]}');
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'schedule', '{"cron": "@yearly"}', id FROM automation_workflows.definitions WHERE name = 'regress-t-admin'
RETURNING id AS admin_schedule \gset
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'manual', '{}', id FROM automation_workflows.definitions WHERE name = 'regress-t-admin'
RETURNING id AS admin_manual \gset
SELECT automation.run_workflow('regress-t-admin', '{}', now() + interval '1 hour') AS admin_exec \gset

-- bob's: a workflow with a queue step, a manual trigger holding a secret,
-- a table trigger on his table (which regress_t_app may write), a running
-- step, and executions of a queue-only workflow
SET ROLE regress_t_bob;
INSERT INTO automation_workflows.definitions (name, definition)
VALUES ('regress-t-bob', '{"steps": [{"name": "mail", "queue": "regress-t-bob-q"}]}');
CREATE TABLE regress_t_bob.orders (id int PRIMARY KEY, customer text);
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'manual', '{"input": {"secret": "bobs-token"}}', id FROM automation_workflows.definitions WHERE name = 'regress-t-bob'
RETURNING id AS bob_manual \gset
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'table', '{"table": "regress_t_bob.orders", "events": ["INSERT", "UPDATE"]}', id
  FROM automation_workflows.definitions WHERE name = 'regress-t-bob'
RETURNING id AS bob_table \gset
SELECT automation.run_workflow('regress-t-bob', '{"customer": 42}') AS bob_exec \gset
SELECT id AS bob_step FROM automation.claim_steps('regress-t-bob-q', 'bob-worker') \gset
SELECT automation.enqueue_execution('regress-t-bob-jobs', '{"card": "4111"}', unique_key => 'k1') AS bob_queued \gset
RESET ROLE;
GRANT USAGE ON SCHEMA regress_t_bob TO regress_t_app;
GRANT SELECT, INSERT, UPDATE ON regress_t_bob.orders TO regress_t_app;

-- what the victims' work looks like, to compare after the attacks
CREATE TEMP TABLE before AS
SELECT 'registry' AS what, id::text AS key, (trigger_type, config, workflow_id, owner, enabled)::text AS state
  FROM automation_triggers.registry
UNION ALL SELECT 'definition', name, (version, definition, owner)::text FROM automation_workflows.definitions
UNION ALL SELECT 'run', execution_id::text, (definition, input, owner, steps_left)::text FROM automation_workflows.workflow_runs
UNION ALL SELECT 'step', id::text, (status, worker, input, queue)::text FROM automation_workflows.step_runs
UNION ALL SELECT 'execution', id::text, (status, metadata, owner)::text FROM automation.executions;

------------------------------------------------------------------------------
\set VERBOSITY sqlstate
SET ROLE regress_t_alice;
INSERT INTO automation_workflows.definitions (name, definition)
VALUES ('regress-t-alice', '{"steps": [{"name": "escalate", "sql": "ALTER ROLE regress_t_alice SUPERUSER"}]}');

-- path 1: the trigger inbox is nobody's to write (42501), nor to wake
INSERT INTO automation_workflows.trigger_inbox (trigger_id, workflow_name, op, table_name, owner, rows)
VALUES (:bob_table, 'regress-t-bob', 'INSERT', 'regress_t_bob.orders', 'regress_t_bob', ARRAY['(1,x)']);
SELECT automation.wake_recorder();
SELECT automation.drain_trigger_inbox(1);

-- path 2: another role's trigger cannot be repointed, retargeted or
-- deleted (row-level security: UPDATE 0 / DELETE 0), whatever the settings
UPDATE automation_triggers.registry SET workflow_id = (SELECT id FROM automation_workflows.definitions WHERE name = 'regress-t-alice')
 WHERE id = :admin_schedule;
SET check_function_bodies = off;
UPDATE automation_triggers.registry SET workflow_id = (SELECT id FROM automation_workflows.definitions WHERE name = 'regress-t-alice')
 WHERE id = :bob_table;
UPDATE automation_triggers.registry SET config = '{"table": "regress_t_alice.t", "events": ["INSERT"]}' WHERE id = :bob_table;
DELETE FROM automation_triggers.registry WHERE id IN (:admin_schedule, :admin_manual, :bob_manual, :bob_table);
RESET check_function_bodies;
-- nor given to another role, nor made to start another role's workflow
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id, owner)
SELECT 'manual', '{}', id, 'regress_t_bob' FROM automation_workflows.definitions WHERE name = 'regress-t-alice';
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'manual', '{}', id FROM automation_workflows.definitions WHERE name = 'regress-t-alice'
RETURNING id AS alice_manual \gset
UPDATE automation_triggers.registry SET owner = 'regress_t_bob' WHERE id = :alice_manual;
-- (another role's definition is not even visible to point at)
SELECT count(*) AS definitions_alice_sees FROM automation_workflows.definitions;
-- definitions: not changed, taken over or given away
UPDATE automation_workflows.definitions SET definition = '{"steps": [{"name": "who", "sql": "ALTER ROLE regress_t_alice SUPERUSER"}]}'
 WHERE name IN ('regress-t-admin', 'regress-t-bob');
INSERT INTO automation_workflows.definitions (name, definition, owner) VALUES ('regress-t-gift', '{}', 'regress_t_bob');
-- a name in use by another role's executions cannot be defined (its
-- owner would manage them)
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('regress-t-bob-jobs', '{}');

-- path 3: step runs and workflow runs cannot be forged or replayed
UPDATE automation_workflows.step_runs SET status = 'pending', worker = NULL WHERE execution_id = :'admin_exec';
INSERT INTO automation_workflows.step_runs (execution_id, step, queue, input)
VALUES (:'admin_exec', 'who', NULL, '{"input": {"forged_by": "alice"}}');
UPDATE automation_workflows.workflow_runs SET definition = '{}' WHERE execution_id = :'admin_exec';
INSERT INTO automation_workflows.workflow_runs (execution_id, workflow_name, version, definition, input, owner, admitted,
                                                run_after, steps_left)
VALUES (gen_random_uuid(), 'regress-t-admin', 1, '{}', '{}', 10, true, now(), 1);
INSERT INTO automation_workflows.execution_log (id, workflow_name, status, completed_at, attempts, owner)
VALUES (gen_random_uuid(), 'regress-t-bob-jobs', 'bogus-status', now(), 1, 'regress_t_bob');
UPDATE automation_workflows.execution_queue SET metadata = '{"card": "stolen"}';
-- the internal functions are nobody's to call
SELECT automation.run_workflow_as(10, 'regress-t-admin', '{}', NULL, NULL);
SELECT automation.stop_sql_step(1, 10);
SELECT automation.workflow_finish(:'admin_exec', 'cancelled', NULL);
SELECT automation.refuse_sql_steps(10, 'x');
-- a step worker's functions are a step worker's
SELECT * FROM automation.claim_sql_step('step worker 1');
SELECT automation.finish_sql_step(1, 'step worker 1', '1', NULL);

-- path 4: another role's triggers, executions and steps are not alice's
-- to fire, cancel, work or read
SELECT automation.fire_trigger(:admin_manual);
SELECT automation.fire_trigger(:bob_manual);
SELECT automation.cancel_workflow(:'admin_exec');
SELECT automation.cancel_workflow(:'bob_exec');
SELECT automation.complete_step(:bob_step, '{"sent": true}');
SELECT automation.fail_step(:bob_step, 'no');
SELECT automation.extend_step_lease(:bob_step, 'bob-worker');
SELECT automation.complete_execution(:'bob_queued');
SELECT automation.fail_execution(:'bob_queued', 'x', 'y');
SELECT automation.extend_lease(:'bob_queued', 'w');
\set VERBOSITY terse
SELECT count(*) AS bobs_steps_claimed FROM automation.claim_steps('regress-t-bob-q', 'mallory', 100);
SELECT count(*) AS bobs_executions_claimed FROM automation.claim_executions('regress-t-bob-jobs', 'mallory', 100);
SELECT count(*) AS bobs_timed_out FROM automation.timeout_stale_executions('1 microsecond');
SELECT automation.retry_failed_workflow('regress-t-bob-jobs') AS retried;
-- the same unique key is alice's own: a second execution, not bob's
SELECT automation.enqueue_execution('regress-t-bob-jobs', '{"alice": true}', unique_key => 'k1') <> :'bob_queued' AS own_execution;
-- nothing of the others is readable
SELECT (SELECT count(*) FROM automation_triggers.registry) AS triggers,
       (SELECT count(*) FROM automation_triggers.registry WHERE config::text LIKE '%bobs-token%') AS secrets,
       (SELECT count(*) FROM automation_workflows.workflow_runs) AS runs,
       (SELECT count(*) FROM automation_workflows.step_runs) AS steps,
       (SELECT count(*) FROM automation_workflows.workflow_executions) AS history,
       (SELECT count(*) FROM automation.executions WHERE owner <> 'regress_t_alice'::regrole) AS others_executions,
       (SELECT count(*) FROM automation.workflow_progress) AS progress,
       (SELECT count(*) FROM automation.errors) AS errors,
       (SELECT count(*) FROM automation.job) AS jobs;
RESET ROLE;

-- untouched: every row of the victims is as it was
SELECT b.what, b.key, b.state AS before, n.state AS now
  FROM before b
  LEFT JOIN (SELECT 'registry' AS what, id::text AS key, (trigger_type, config, workflow_id, owner, enabled)::text AS state
               FROM automation_triggers.registry
             UNION ALL SELECT 'definition', name, (version, definition, owner)::text FROM automation_workflows.definitions
             UNION ALL SELECT 'run', execution_id::text, (definition, input, owner, steps_left)::text FROM automation_workflows.workflow_runs
             UNION ALL SELECT 'step', id::text, (status, worker, input, queue)::text FROM automation_workflows.step_runs
             UNION ALL SELECT 'execution', id::text, (status, metadata, owner)::text FROM automation.executions) n
    ON n.what = b.what AND n.key = b.key
 WHERE n.state IS DISTINCT FROM b.state;
SELECT rolsuper AS alice_is_superuser FROM pg_roles WHERE rolname = 'regress_t_alice';

------------------------------------------------------------------------------
-- Sharing, explicitly: bob lets alice run his workflow and carol work it.
\set VERBOSITY terse
SET ROLE regress_t_bob;
SELECT automation.grant_workflow('regress-t-bob', 'regress_t_alice');
SELECT automation.grant_workflow('regress-t-bob', 'regress_t_carol', 'work');
SELECT workflow_name, grantee, privilege, granted_by FROM automation_workflows.workflow_grants ORDER BY 2, 3;
RESET ROLE;
SET ROLE regress_t_alice;
-- she reads it, starts it (as herself), but cannot change, share or point a trigger at it
SELECT name, owner FROM automation_workflows.definitions WHERE name = 'regress-t-bob';
SELECT automation.run_workflow('regress-t-bob', '{"by": "alice"}') AS alice_exec \gset
SELECT owner FROM automation.executions WHERE id = :'alice_exec';
UPDATE automation_workflows.definitions SET is_active = false WHERE name = 'regress-t-bob';
SELECT automation.grant_workflow('regress-t-bob', 'regress_t_alice', 'work');
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'manual', '{}', id FROM automation_workflows.definitions WHERE name = 'regress-t-bob';
-- bob's own executions stay his
SELECT count(*) AS bobs_executions_alice_sees FROM automation.executions WHERE owner = 'regress_t_bob'::regrole;
RESET ROLE;
-- carol works the queue steps of every execution of it, and reads them
SET ROLE regress_t_carol;
SELECT count(*) AS claimed_by_carol FROM automation.claim_steps('regress-t-bob-q', 'carol-worker', 10);
SELECT owner, count(*) FROM automation.executions WHERE workflow_name = 'regress-t-bob' GROUP BY 1 ORDER BY 1;
-- (work is not management: cancelling stays with the execution's and the workflow's owners)
\set VERBOSITY sqlstate
SELECT automation.cancel_workflow(:'bob_exec');
\set VERBOSITY terse
RESET ROLE;
-- bob takes it back: alice may no longer start it
SET ROLE regress_t_bob;
SELECT automation.revoke_workflow('regress-t-bob', 'regress_t_alice');
RESET ROLE;
SET ROLE regress_t_alice;
\set VERBOSITY sqlstate
SELECT automation.run_workflow('regress-t-bob');
\set VERBOSITY terse
RESET ROLE;

------------------------------------------------------------------------------
-- Table triggers: a writer with only its table privileges writes as before
-- (no grant on any automation schema); the executions are the trigger's
-- owner's, noting who wrote; UPDATE gives old and new.
SET ROLE regress_t_app;
INSERT INTO regress_t_bob.orders VALUES (1, 'ada');
UPDATE regress_t_bob.orders SET customer = 'ada lovelace' WHERE id = 1;
SELECT count(*) FROM automation_workflows.workflow_runs;
RESET ROLE;
SELECT pg_temp.drained();
SELECT owner, input->>'op' AS op, input->>'changed_by' AS changed_by, input->'old'->>'customer' AS old,
       input->'new'->>'customer' AS new
  FROM automation_workflows.workflow_runs WHERE input->>'table' = 'regress_t_bob.orders' ORDER BY created_at, 2;
-- (issue 29) the writer's data is only ever the workflow's input: a row
-- that looks like SQL runs nothing as bob, and the writer cannot reach the
-- inbox (or anything of the extension) directly
SET ROLE regress_t_app;
INSERT INTO regress_t_bob.orders VALUES (2, $$x'); ALTER ROLE regress_t_app SUPERUSER; --$$);
\set VERBOSITY sqlstate
INSERT INTO automation_workflows.trigger_inbox (trigger_id, workflow_name, op, table_name, owner, rows)
VALUES (0, 'regress-t-bob', 'INSERT', 'regress_t_bob.orders', 'regress_t_bob', ARRAY['(3,x)']);
SELECT automation.drain_trigger_inbox();
\set VERBOSITY terse
RESET ROLE;
SELECT pg_temp.drained();
SELECT input->'new'->>'customer' AS customer_as_data, (SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_t_app') AS app_superuser
  FROM automation_workflows.workflow_runs WHERE input->>'table' = 'regress_t_bob.orders' AND input->'new'->>'id' = '2';

------------------------------------------------------------------------------
-- Path 1, the ordinary route: carol's table has a domain whose CHECK is
-- carol's code. The scheduler drains the inbox as a superuser, but casts
-- the rows as carol, in a security-restricted operation: her code runs as
-- carol, and cannot SET ROLE back.
SET ROLE regress_t_carol;
CREATE TABLE regress_t_carol.seen (who name, session name, superuser boolean);
-- armed: only at the drain (a SET ROLE test session could itself RESET
-- ROLE at the INSERT: that is the test's superuser, not the drain)
CREATE TABLE regress_t_carol.armed (on_ boolean);
INSERT INTO regress_t_carol.armed VALUES (false);
CREATE FUNCTION regress_t_carol.evil(v int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (SELECT on_ FROM regress_t_carol.armed) THEN
        RETURN true;
    END IF;
    INSERT INTO regress_t_carol.seen SELECT current_user, session_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE regress_t_carol SUPERUSER';
    END IF;
    IF v = 2 THEN
        EXECUTE 'RESET ROLE';
        EXECUTE 'ALTER ROLE regress_t_carol SUPERUSER';
    END IF;
    RETURN true;
END $$;
CREATE DOMAIN regress_t_carol.d AS int CHECK (regress_t_carol.evil(VALUE));
CREATE TABLE regress_t_carol.t (id int, v regress_t_carol.d);
INSERT INTO automation_workflows.definitions (name, definition)
VALUES ('regress-t-carol', '{"steps": [{"name": "s", "queue": "regress-t-carol-q"}]}');
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'table', '{"table": "regress_t_carol.t", "events": ["INSERT"]}', id
  FROM automation_workflows.definitions WHERE name = 'regress-t-carol';
BEGIN;
INSERT INTO regress_t_carol.t VALUES (1, 1);
UPDATE regress_t_carol.armed SET on_ = true;
COMMIT;
RESET ROLE;
SELECT pg_temp.drained();
-- the CHECK ran (at the drain) as carol, never as the superuser
SELECT DISTINCT who, superuser FROM regress_t_carol.seen ORDER BY 1;
SELECT count(*) AS started_as_carol FROM automation_workflows.workflow_runs
 WHERE workflow_name = 'regress-t-carol' AND owner = 'regress_t_carol'::regrole;
SET ROLE regress_t_carol;
BEGIN;
UPDATE regress_t_carol.armed SET on_ = false;
INSERT INTO regress_t_carol.t VALUES (2, 2);
UPDATE regress_t_carol.armed SET on_ = true;
COMMIT;
RESET ROLE;
SELECT pg_temp.drained();
-- RESET ROLE inside the restricted cast fails: the slice goes to the
-- errors (with its rows), carol stays carol
SELECT error_type, regexp_replace(error_message, 'trigger [0-9]+', 'trigger N') AS error_message,
       error_context->'rows' AS rows, owner
  FROM automation.errors WHERE workflow_name = 'regress-t-carol';
SELECT rolsuper AS carol_is_superuser FROM pg_roles WHERE rolname = 'regress_t_carol';
-- carol attaching the trigger function to her own table under bob's
-- trigger id starts nothing of bob's
SET ROLE regress_t_carol;
CREATE TABLE regress_t_carol.orders (id int PRIMARY KEY, customer text);
\set VERBOSITY sqlstate
CREATE TRIGGER automation_workflow_1_insert AFTER INSERT ON regress_t_carol.orders
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION automation.workflow_table_trigger(:'bob_table');
INSERT INTO regress_t_carol.orders VALUES (7, 'forged');
\set VERBOSITY terse
DROP TABLE regress_t_carol.orders;
RESET ROLE;

------------------------------------------------------------------------------
-- search_path planting: a role's own objects ahead of pg_catalog change
-- nothing the functions do
SET ROLE regress_t_alice;
CREATE FUNCTION regress_t_alice.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql AS $$ SELECT 'object' $$;
CREATE FUNCTION regress_t_alice.text_eq(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR regress_t_alice.= (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_t_alice.text_eq);
SET search_path = regress_t_alice, pg_catalog;
SELECT automation.run_workflow('regress-t-alice', '[1]');
SELECT count(*) AS still_invisible FROM automation_workflows.definitions WHERE name = 'regress-t-admin';
RESET search_path;
-- SECURITY DEFINER: a function of alice's that starts a workflow starts it
-- as alice, whoever calls it (PostgreSQL's rule, kept)
CREATE FUNCTION regress_t_alice.start_mine() RETURNS uuid LANGUAGE sql SECURITY DEFINER
    AS $$ SELECT automation.run_workflow('regress-t-alice', '{"via": "definer"}', now() + interval '1 hour') $$;
GRANT USAGE ON SCHEMA regress_t_alice TO regress_t_bob;
RESET ROLE;
SET ROLE regress_t_bob;
SELECT regress_t_alice.start_mine() AS via_definer \gset
RESET ROLE;
SELECT owner FROM automation.executions WHERE id = :'via_definer';
SELECT rolsuper AS alice_is_superuser FROM pg_roles WHERE rolname = 'regress_t_alice';

------------------------------------------------------------------------------
-- a role that may SET ROLE to another acts for it (PostgreSQL's own rule):
-- a team role owns a definition, its members change it
CREATE ROLE regress_t_team NOLOGIN;
GRANT regress_t_team TO regress_t_alice;
SET ROLE regress_t_alice;
INSERT INTO automation_workflows.definitions (name, definition, owner) VALUES ('regress-t-team', '{}', 'regress_t_team');
UPDATE automation_workflows.definitions SET definition = '{"v": 2}' WHERE name = 'regress-t-team';
RESET ROLE;
SET ROLE regress_t_bob;
UPDATE automation_workflows.definitions SET definition = '{"v": 3}' WHERE name = 'regress-t-team';
RESET ROLE;
SELECT name, owner, definition FROM automation_workflows.definitions WHERE name = 'regress-t-team';

------------------------------------------------------------------------------
-- a role that is not a runner runs nothing, whatever it may call
SET ROLE regress_t_app;
\set VERBOSITY sqlstate
SELECT automation.enqueue_execution('regress-t-app');
\set VERBOSITY terse
RESET ROLE;

-- clean up
SELECT automation.cancel_workflow(:'admin_exec');
DELETE FROM automation_triggers.registry WHERE owner::text LIKE 'regress_t_%' OR workflow_id IN
       (SELECT id FROM automation_workflows.definitions WHERE name LIKE 'regress-t-%');
DELETE FROM automation_workflows.workflow_executions WHERE workflow_name LIKE 'regress-t-%';
DELETE FROM automation_workflows.execution_queue WHERE workflow_name LIKE 'regress-t-%';
DELETE FROM automation.errors WHERE workflow_name LIKE 'regress-t-%';
DELETE FROM automation_workflows.definitions WHERE name LIKE 'regress-t-%';
DELETE FROM automation.job WHERE owner::regrole::text LIKE 'regress_t_%';
DROP SCHEMA regress_t_alice, regress_t_bob, regress_t_carol CASCADE;
DROP ROLE regress_t_alice;
DROP ROLE regress_t_bob;
DROP ROLE regress_t_carol;
DROP ROLE regress_t_app;
DROP ROLE regress_t_team;

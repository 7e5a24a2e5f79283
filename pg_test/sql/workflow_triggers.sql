-- Issue 18 (7): the trigger registry is live. A row of
-- automation_triggers.registry starts its workflow: on a schedule (a job of
-- the scheduler), on changes to a table (statement triggers with transition
-- tables, one execution per row), or by hand (fire_trigger).
CREATE EXTENSION IF NOT EXISTS automation_ext;
INSERT INTO automation_workflows.definitions (name, definition)
VALUES ('on-order', '{"steps": [{"name": "ship", "queue": "orders"}]}'),
       ('nightly', '{"steps": [{"name": "report", "queue": "reports"}]}'),
       ('sleepy', '{"steps": [{"name": "x", "queue": "x"}]}'),
       ('notes', '{"free": "form"}');
UPDATE automation_workflows.definitions SET is_active = false WHERE name = 'sleepy';
CREATE TABLE public.regress_orders (id int PRIMARY KEY, customer text, total numeric);

-- manual: fire_trigger, the configured input merged with the given one
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'manual', '{"input": {"source": "button", "priority": 1}}', id FROM automation_workflows.definitions WHERE name = 'nightly'
RETURNING id AS manual_id \gset
SELECT automation.fire_trigger(:manual_id, '{"priority": 5}') AS fired_id \gset
SELECT r.input - 'trigger' AS input, r.input->'trigger'->>'type' AS fired_by, (r.input->'trigger'->>'id')::int = r.trigger_id AS linked, e.status FROM automation_workflows.workflow_runs r JOIN automation_workflows.workflow_executions e ON e.id = r.execution_id
 WHERE r.execution_id = :'fired_id';
SELECT last_fired_at IS NOT NULL AS fired, next_fire_at FROM automation_triggers.registry WHERE id = :manual_id;

-- schedule: a job of the scheduler, owned by who registered it, fires it
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'schedule', '{"cron": "0 2 * * *", "input": {"source": "cron"}}', id FROM automation_workflows.definitions WHERE name = 'nightly'
RETURNING id AS schedule_id, next_fire_at > now() AS next_fire_known \gset
SELECT :'next_fire_known' AS next_fire_known;
SELECT jobname = 'workflow trigger ' || :schedule_id AS named, schedule, command = format('SELECT automation.fire_trigger(%s)', :schedule_id) AS fires_it,
       username = current_user AS owned_by_writer
  FROM automation.job WHERE jobname LIKE 'workflow trigger %';
SELECT automation.fire_trigger(:schedule_id) IS NOT NULL AS fired_like_the_job_does;
UPDATE automation_triggers.registry SET config = '{"cron": "*/5 * * * *"}' WHERE id = :schedule_id;
SELECT schedule FROM automation.job WHERE jobname = 'workflow trigger ' || :schedule_id;
DELETE FROM automation_triggers.registry WHERE id = :schedule_id;
SELECT count(*) AS job_left FROM automation.job WHERE jobname = 'workflow trigger ' || :schedule_id;

-- table: one execution per changed row, with the row as input. (0.6.0) The
-- changing statement appends the rows to the trigger inbox; the scheduler
-- starts the executions after the commit. drained() waits for that (it
-- drains too, so it does not matter who gets there first).
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
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'table', '{"table": "public.regress_orders", "events": ["INSERT", "delete"]}', id
  FROM automation_workflows.definitions WHERE name = 'on-order'
RETURNING id AS table_id \gset
SELECT tgname ~ '^automation_workflow_[0-9]+_(insert|delete)$' AS named, pg_get_triggerdef(oid) ~ 'REFERENCING (NEW|OLD) TABLE' AS transition
  FROM pg_trigger WHERE tgrelid = 'public.regress_orders'::regclass ORDER BY tgname;
INSERT INTO public.regress_orders VALUES (1, 'ada', 10), (2, 'bob', 20), (3, 'cy', 30);
UPDATE public.regress_orders SET total = total + 1;
DELETE FROM public.regress_orders WHERE id = 3;
SELECT pg_temp.drained();
SELECT r.input->>'op' AS op, r.input->>'table' AS tbl, coalesce(r.input->'new'->>'id', r.input->'old'->>'id') AS row_id,
       r.input->'new'->>'customer' AS customer
  FROM automation_workflows.workflow_runs r WHERE r.workflow_name = 'on-order'
 ORDER BY r.input->>'op' DESC, row_id;
SELECT count(*) AS claimable_ship_steps FROM automation_workflows.step_runs WHERE queue = 'orders' AND status = 'pending';
SELECT last_fired_at IS NOT NULL AS fired FROM automation_triggers.registry WHERE id = :table_id;
-- firing writes last_fired_at; that does not detach and re-attach the triggers
SELECT string_agg(oid::text, ',' ORDER BY oid) AS trigger_oids FROM pg_trigger
 WHERE tgrelid = 'public.regress_orders'::regclass \gset
UPDATE automation_triggers.registry SET last_fired_at = now(), next_fire_at = NULL WHERE id = :table_id;
SELECT string_agg(oid::text, ',' ORDER BY oid) = :'trigger_oids' AS same_triggers FROM pg_trigger
 WHERE tgrelid = 'public.regress_orders'::regclass;
-- a thousand rows in one statement: a thousand executions
INSERT INTO public.regress_orders SELECT g, 'bulk', g FROM generate_series(100, 1099) g;
SELECT pg_temp.drained();
SELECT count(*) AS bulk_executions FROM automation_workflows.workflow_runs WHERE workflow_name = 'on-order' AND input->'new'->>'customer' = 'bulk';
-- a change whose executions cannot start when the scheduler gets to it
-- (here: the workflow was deactivated in the same transaction) is not lost:
-- it goes to automation.errors with its rows
BEGIN;
INSERT INTO public.regress_orders VALUES (4000, 'late', 1);
UPDATE automation_workflows.definitions SET is_active = false WHERE name = 'on-order';
COMMIT;
SELECT pg_temp.drained();
SELECT error_type, error_message, error_context->'rows' AS rows, error_context->>'sqlstate' AS sqlstate
  FROM automation.errors WHERE error_type = 'TableTriggerFailed';
UPDATE automation_workflows.definitions SET is_active = true WHERE name = 'on-order';
-- deleting the registry row detaches the triggers
DELETE FROM automation_triggers.registry WHERE id = :table_id;
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = 'public.regress_orders'::regclass;
INSERT INTO public.regress_orders VALUES (5000, 'after', 1);
SELECT pg_temp.drained();
SELECT count(*) AS started_after_detach FROM automation_workflows.workflow_runs WHERE input->'new'->>'customer' = 'after';

-- refused at write time
\set VERBOSITY terse
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'schedule', '{"cron": "61 * * * *"}', id FROM automation_workflows.definitions WHERE name = 'nightly';
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'schedule', '{"every": "day"}', id FROM automation_workflows.definitions WHERE name = 'nightly';
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'table', '{"table": "public.nope", "events": ["INSERT"]}', id FROM automation_workflows.definitions WHERE name = 'on-order';
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'table', '{"table": "public.regress_orders", "events": ["TRUNCATE"]}', id FROM automation_workflows.definitions WHERE name = 'on-order';
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'table', '{"table": "public.regress_orders", "events": []}', id FROM automation_workflows.definitions WHERE name = 'on-order';
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'manual', '{}', id FROM automation_workflows.definitions WHERE name = 'sleepy';
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'manual', '{}', id FROM automation_workflows.definitions WHERE name = 'notes';
INSERT INTO automation_triggers.registry (trigger_type, config) VALUES ('manual', '{}');
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'manual', '{"input": [1]}', id FROM automation_workflows.definitions WHERE name = 'nightly';
SELECT automation.fire_trigger(999999);
SELECT automation.fire_trigger(:manual_id, '"x"');
-- a role that may not create triggers on the table
-- (a workflow of its own: 0.8.0, a trigger starts only its owner's workflows)
CREATE ROLE regress_trigger_user IN ROLE automation_runner;
SET ROLE regress_trigger_user;
INSERT INTO automation_workflows.definitions (name, definition)
VALUES ('trigger-user-flow', '{"steps": [{"name": "a", "queue": "q"}]}');
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'table', '{"table": "public.regress_orders", "events": ["INSERT"]}', id FROM automation_workflows.definitions WHERE name = 'trigger-user-flow';
DELETE FROM automation_workflows.definitions WHERE name = 'trigger-user-flow';
RESET ROLE;
DROP ROLE regress_trigger_user;
\set VERBOSITY default
-- other trigger types are kept as data
INSERT INTO automation_triggers.registry (trigger_type, config) VALUES ('webhook', '{"path": "/hook"}');
-- the trigger function refuses to run for a table it was not attached for
CREATE TABLE public.regress_other (id int);
CREATE TRIGGER borrowed AFTER INSERT ON public.regress_other REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION automation.workflow_table_trigger('1');
\set VERBOSITY terse
INSERT INTO public.regress_other VALUES (1);
\set VERBOSITY default

DROP TABLE public.regress_other, public.regress_orders;
DELETE FROM automation_triggers.registry;
TRUNCATE automation_workflows.workflow_executions;
DELETE FROM automation_workflows.definitions;

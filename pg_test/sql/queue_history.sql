-- Issue 33: what a queue's history keeps, per workflow
-- (automation.set_queue_history): full (everything, the default), errors
-- (failures, timeouts, cancellations), none (counted and notified only).
-- Who may set it, bad input refused with its SQLSTATE, what each mode keeps,
-- that every finished execution is counted in every mode, and that a retry
-- keeps its input when the history did not keep the failed execution.
-- (The completion NOTIFYs, from a real LISTEN client: the integration test
-- queue.rs.)
CREATE EXTENSION IF NOT EXISTS automation_ext;
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_qh_owner;
DROP ROLE IF EXISTS regress_qh_other;
RESET client_min_messages;
\set VERBOSITY terse
\set SHOW_CONTEXT never
CREATE ROLE regress_qh_owner LOGIN IN ROLE automation_runner;
CREATE ROLE regress_qh_other LOGIN IN ROLE automation_runner;

SET ROLE regress_qh_owner;
INSERT INTO automation_workflows.definitions (name, definition)
VALUES ('qh-full', '{}'), ('qh-errors', '{}'), ('qh-none', '{}');
-- bad input
SELECT automation.set_queue_history('qh-none', 'some');
SELECT automation.set_queue_history('qh-none', NULL);
SELECT automation.set_queue_history('qh-missing', 'none');
SELECT automation.set_queue_history(NULL, 'none');
-- the previous mode comes back
SELECT automation.set_queue_history('qh-errors', 'errors') AS previous;
SELECT automation.set_queue_history('qh-none', 'errors') AS previous;
SELECT automation.set_queue_history('qh-none', 'none') AS previous;
SELECT automation.set_queue_history('qh-full', 'full') AS previous;
SELECT workflow_name, history, set_by FROM automation.queue_settings ORDER BY 1;

-- another member of automation_runner may not change it, nor see it, nor
-- write the table
SET ROLE regress_qh_other;
SELECT automation.set_queue_history('qh-none', 'full');
SELECT count(*) AS settings_seen_by_another_runner FROM automation.queue_settings;
UPDATE automation.queue_settings SET history = 'errors';
INSERT INTO automation.queue_settings (workflow_name, history, set_by) VALUES ('qh-full', 'none', 'regress_qh_other');
DELETE FROM automation.queue_settings;
-- nor may a role outside automation_runner
RESET ROLE;
CREATE ROLE regress_qh_outsider LOGIN;
SET ROLE regress_qh_outsider;
SELECT automation.set_queue_history('qh-none', 'full');
RESET ROLE;
DROP ROLE regress_qh_outsider;

-- In each queue: two successes, a failure, a cancellation, a timeout.
SET ROLE regress_qh_owner;
CREATE TEMP TABLE runs (workflow_name text, kind text, id uuid);
INSERT INTO runs
SELECT w, k, automation.enqueue_execution(w, jsonb_build_object('kind', k, 'queue', w))
  FROM unnest(ARRAY['qh-full', 'qh-errors', 'qh-none']) w,
       unnest(ARRAY['ok1', 'ok2', 'fail', 'cancel', 'stale']) k;
SELECT bool_and(automation.cancel_workflow(id, 'not needed')) AS cancelled FROM runs WHERE kind = 'cancel';
SELECT count(*) AS claimed
  FROM unnest(ARRAY['qh-full', 'qh-errors', 'qh-none']) w, automation.claim_executions(w, 'w1', 10);
SELECT sum(automation.complete_executions(ARRAY(SELECT id FROM runs r WHERE r.workflow_name = w AND kind LIKE 'ok%'),
                                          '{"done": true}', 'w1')) AS completed
  FROM unnest(ARRAY['qh-full', 'qh-errors', 'qh-none']) w;
SELECT count(automation.fail_execution(id, 'Boom', 'it broke', '{"at": "step 2"}', 'w1')) AS failed
  FROM runs WHERE kind = 'fail';
SELECT pg_sleep(0.01);
SELECT count(*) AS timed_out FROM automation.timeout_stale_executions(interval '1 millisecond')
 WHERE id IN (SELECT id FROM runs);
-- recorded now (the scheduler may get there first: either way), and until
-- the log has none of them
RESET ROLE;
DO $$
BEGIN
    FOR i IN 1..200 LOOP
        PERFORM automation.record_executions();
        EXIT WHEN NOT EXISTS (SELECT FROM automation_workflows.execution_log l
                               WHERE l.workflow_name IN ('qh-full', 'qh-errors', 'qh-none'));
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
-- what each history kept
SELECT r.workflow_name, r.kind, e.status
  FROM runs r JOIN automation_workflows.workflow_executions e ON e.id = r.id
 ORDER BY 1, 2;
-- everything finished is counted, kept or not
SELECT workflow_name, status, sum(finished) AS finished
  FROM automation.execution_stats
 WHERE workflow_name IN ('qh-full', 'qh-errors', 'qh-none')
 GROUP BY 1, 2 ORDER BY 1, 2;
-- the failures are errors in every mode, with the failed execution's input
SELECT e.workflow_name, e.error_type, e.retry_input->>'kind' AS input_kind, e.resolved_at IS NULL AS open
  FROM automation.errors e JOIN runs r ON r.id = e.execution_id
 ORDER BY 1, 2;
-- and their retries are enqueued with that input, also where the history
-- did not keep the execution (none)
UPDATE automation.errors SET next_retry_at = now() - interval '1 second'
 WHERE workflow_name IN ('qh-full', 'qh-errors', 'qh-none');
SET ROLE regress_qh_owner;
SELECT w AS workflow_name, automation.retry_failed_workflow(w) AS retried, automation.retry_failed_workflow(w) AS retried_again
  FROM unnest(ARRAY['qh-full', 'qh-errors', 'qh-none']) w ORDER BY 1;
SELECT q.workflow_name, q.metadata->>'kind' AS kind, q.retry_of IS NOT NULL AS is_retry
  FROM automation_workflows.execution_queue q
 WHERE q.workflow_name IN ('qh-full', 'qh-errors', 'qh-none') ORDER BY 1, 2;

-- (0.15.0) a success of a 'none' queue is not written to the execution
-- log: the completion hands it to the scheduler through shared memory, and
-- it is counted (and notified) once the completing transaction committed;
-- a completion rolled back hands nothing off. (This database has a
-- scheduler recording for it; with none, it would be logged as before.)
SELECT automation.enqueue_execution('qh-none', '{"kind": "handed"}') AS handed \gset
SELECT automation.enqueue_execution('qh-none', '{"kind": "rolled back"}') AS rolled_back \gset
SELECT count(*) AS claimed FROM automation.claim_executions('qh-none', 'w1', 10);
RESET ROLE;
CREATE TEMP TABLE counted_before AS
SELECT coalesce(sum(finished), 0) AS n FROM automation.execution_stats WHERE workflow_name = 'qh-none' AND status = 'success';
SET ROLE regress_qh_owner;
BEGIN;
SELECT automation.complete_executions(ARRAY[:'rolled_back'::uuid], NULL, 'w1') AS completed;
ROLLBACK;
BEGIN;
SELECT automation.complete_executions(ARRAY[:'handed'::uuid], NULL, 'w1') AS completed;
SELECT count(*) AS in_the_log FROM automation_workflows.execution_log WHERE id = :'handed';
SELECT count(*) AS anywhere FROM automation.executions WHERE id = :'handed';
COMMIT;
-- a runner may not hand off (it would count and notify what did not happen)
SELECT automation.hand_off_successes(ARRAY[:'handed']::uuid[], ARRAY['qh-none'], ARRAY[now()]);
RESET ROLE;
DO $$
BEGIN
    FOR i IN 1..200 LOOP
        PERFORM automation.record_executions();
        EXIT WHEN (SELECT sum(finished) FROM automation.execution_stats
                    WHERE workflow_name = 'qh-none' AND status = 'success') > (SELECT n FROM counted_before);
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
-- (a wrongly counted rolled-back one would be counted by now too)
SELECT pg_sleep(0.2);
SELECT automation.record_executions() >= 0 AS recorded;
SELECT sum(finished) - (SELECT n FROM counted_before) AS counted
  FROM automation.execution_stats WHERE workflow_name = 'qh-none' AND status = 'success';
SELECT status FROM automation.executions WHERE id = :'rolled_back';
DROP TABLE counted_before;
SET ROLE regress_qh_owner;
-- record_executions() counts this transaction's own hand-offs in it; such a
-- transaction may not be prepared (its slots would wait for as long as it
-- stays prepared): refused, and nothing counted
SELECT automation.enqueue_execution('qh-none', '{"kind": "prepared"}') AS prepared \gset
SELECT count(*) AS claimed FROM automation.claim_executions('qh-none', 'w1', 10);
BEGIN;
SELECT automation.complete_executions(ARRAY[:'prepared'::uuid], NULL, 'w1') AS completed;
SELECT automation.record_executions() AS counted_here;
PREPARE TRANSACTION 'qh-prepared';
SELECT status FROM automation.executions WHERE id = :'prepared';
-- counted in a subtransaction that rolls back: counted again, once (the
-- same execution, still running after the refused PREPARE)
RESET ROLE;
CREATE TEMP TABLE counted_before AS
SELECT coalesce(sum(finished), 0) AS n FROM automation.execution_stats WHERE workflow_name = 'qh-none' AND status = 'success';
SET ROLE regress_qh_owner;
BEGIN;
SELECT automation.complete_executions(ARRAY[:'prepared'::uuid], NULL, 'w1') AS completed;
SAVEPOINT counting;
SELECT automation.record_executions() AS counted_here;
ROLLBACK TO SAVEPOINT counting;
SELECT automation.record_executions() AS counted_again;
COMMIT;
RESET ROLE;
SELECT sum(finished) - (SELECT n FROM counted_before) AS counted
  FROM automation.execution_stats WHERE workflow_name = 'qh-none' AND status = 'success';
DROP TABLE counted_before;
SET ROLE regress_qh_owner;

-- back to full: kept again from then on
SELECT automation.set_queue_history('qh-none', 'full') AS previous;
SELECT count(*) AS settings_left FROM automation.queue_settings WHERE workflow_name = 'qh-none';

-- cleanup
DROP TABLE runs;
RESET ROLE;
DELETE FROM automation_workflows.execution_queue WHERE workflow_name IN ('qh-full', 'qh-errors', 'qh-none');
DELETE FROM automation_workflows.workflow_executions WHERE workflow_name IN ('qh-full', 'qh-errors', 'qh-none');
DELETE FROM automation.errors WHERE workflow_name IN ('qh-full', 'qh-errors', 'qh-none');
DELETE FROM automation.execution_stats WHERE workflow_name IN ('qh-full', 'qh-errors', 'qh-none');
-- a workflow's settings go with its definition
UPDATE automation_workflows.definitions SET name = 'qh-errors-renamed' WHERE name = 'qh-errors';
SELECT workflow_name, history FROM automation.queue_settings ORDER BY 1;
DELETE FROM automation_workflows.definitions WHERE name IN ('qh-full', 'qh-errors-renamed', 'qh-none');
SELECT count(*) AS settings_left_after_the_definitions FROM automation.queue_settings;
DROP ROLE regress_qh_owner;
DROP ROLE regress_qh_other;

-- Issue 18 (2): workflows of queue steps run — started by run_workflow,
-- worked by outside workers through claim_steps / complete_step / fail_step,
-- finished by the engine.
CREATE EXTENSION IF NOT EXISTS automation_ext;
TRUNCATE automation.pipeline_metrics, automation.errors;

-- a diamond: a, then b and c (either order), then d
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('diamond', '{"steps": [
    {"name": "a", "queue": "q"},
    {"name": "b", "after": ["a"], "queue": "q"},
    {"name": "c", "after": ["a"], "queue": "q"},
    {"name": "d", "after": ["b", "c"], "queue": "q"}]}');
SELECT automation.run_workflow('diamond', '{"day": "2026-11-26"}') AS diamond_id \gset
SELECT status FROM automation_workflows.workflow_executions WHERE id = :'diamond_id';
SELECT done, running, pending, waiting, failed FROM automation.workflow_progress WHERE execution_id = :'diamond_id';
-- one claimable step: a, with the workflow input
SELECT step, attempt, input FROM automation.claim_steps('q', 'w1', 10) \gset a_
SELECT :'a_step' AS step, :'a_input' AS input;
SELECT id AS a_id FROM automation_workflows.step_runs WHERE execution_id = :'diamond_id' AND step = 'a' \gset
SELECT automation.complete_step(:a_id, '{"rows": 3, "records_processed": 3}', 'w1');
-- b and c are claimable now, with a's output; d waits for both
SELECT step, input->'steps' AS deps FROM automation.claim_steps('q', 'w1', 10) ORDER BY step;
SELECT done, running, pending, waiting FROM automation.workflow_progress WHERE execution_id = :'diamond_id';
SELECT automation.complete_step(id, jsonb_build_object('from', step)) FROM automation_workflows.step_runs
 WHERE execution_id = :'diamond_id' AND step = 'b';
SELECT count(*) AS nothing_yet FROM automation.claim_steps('q', 'w1', 10);
SELECT automation.complete_step(id, jsonb_build_object('from', step)) FROM automation_workflows.step_runs
 WHERE execution_id = :'diamond_id' AND step = 'c';
SELECT step, input->'steps' AS deps FROM automation.claim_steps('q', 'w1', 10);
SELECT automation.complete_step(id) FROM automation_workflows.step_runs WHERE execution_id = :'diamond_id' AND step = 'd';
SELECT status, completed_at IS NOT NULL AS completed FROM automation_workflows.workflow_executions WHERE id = :'diamond_id';
SELECT done, running, pending, waiting, failed FROM automation.workflow_progress WHERE execution_id = :'diamond_id';
-- every finished step wrote a pipeline_metrics row
SELECT pipeline_name, stage, status, records_processed FROM automation.pipeline_metrics ORDER BY stage;
SELECT round(automation.pipeline_success_rate(status), 2) AS success_rate FROM automation.pipeline_metrics;

-- retries: fails twice, then succeeds (backoff waited out by moving time)
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('flaky', '{"steps": [
    {"name": "call", "queue": "flaky", "retry": {"max_attempts": 3, "backoff": "1 hour"}}]}');
SELECT automation.run_workflow('flaky') AS flaky_id \gset
SELECT automation.fail_step(id, 'HTTP 503', worker_id => 'w1') FROM automation.claim_steps('flaky', 'w1');
SELECT count(*) AS not_before_the_backoff FROM automation.claim_steps('flaky', 'w1');
SELECT attempt, status, visible_at > now() + interval '29 minutes' AS backs_off FROM automation_workflows.step_runs
 WHERE execution_id = :'flaky_id' ORDER BY attempt;
UPDATE automation_workflows.step_runs SET visible_at = now() WHERE execution_id = :'flaky_id' AND status = 'pending';
SELECT automation.fail_step(id, 'HTTP 503') FROM automation.claim_steps('flaky', 'w1');
UPDATE automation_workflows.step_runs SET visible_at = now() WHERE execution_id = :'flaky_id' AND status = 'pending';
SELECT automation.complete_step(id, '{"ok": true}') FROM automation.claim_steps('flaky', 'w1');
SELECT attempt, status, error->>'message' AS error FROM automation_workflows.step_runs WHERE execution_id = :'flaky_id' ORDER BY attempt;
SELECT status FROM automation_workflows.workflow_executions WHERE id = :'flaky_id';

-- attempts used up: the execution fails, its other steps are cancelled, the
-- failure is in automation.errors
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('doomed', '{"steps": [
    {"name": "left", "queue": "doomed", "retry": {"max_attempts": 2, "backoff": "1 ms"}},
    {"name": "right", "queue": "doomed"},
    {"name": "after", "after": ["left", "right"], "queue": "doomed"}]}');
SELECT automation.run_workflow('doomed') AS doomed_id \gset
SELECT string_agg(step, ',' ORDER BY step) AS claimed FROM automation.claim_steps('doomed', 'w1', 10);
SELECT automation.fail_step(id, 'disk full', sqlstate => '53100') FROM automation_workflows.step_runs
 WHERE execution_id = :'doomed_id' AND step = 'left' AND status = 'running';
SELECT pg_sleep(0.01);
SELECT automation.fail_step(id, 'disk full again', sqlstate => '53100') FROM automation.claim_steps('doomed', 'w1', 10)
 WHERE step = 'left';
SELECT status, error_details->>'step' AS step, error_details->>'attempts' AS attempts, error_details->>'message' AS message
  FROM automation_workflows.workflow_executions WHERE id = :'doomed_id';
SELECT step, attempt, status, error FROM automation_workflows.step_runs WHERE execution_id = :'doomed_id' ORDER BY step, attempt;
SELECT workflow_name, error_type, error_message, execution_id = :'doomed_id' AS this_execution FROM automation.errors;
SELECT done, running, pending, waiting, failed FROM automation.workflow_progress WHERE execution_id = :'doomed_id';
-- a late result of a cancelled step is refused
\set VERBOSITY terse
SELECT automation.complete_step(id) FROM automation_workflows.step_runs WHERE execution_id = :'doomed_id' AND step = 'right';
\set VERBOSITY default

-- fan-out and fan-in: one run per element, the next step gets their outputs in order
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('fan', '{"steps": [
    {"name": "list", "queue": "fan"},
    {"name": "each", "after": ["list"], "queue": "fan", "map": "$.list.items"},
    {"name": "sum", "after": ["each"], "queue": "fan"}]}');
SELECT automation.run_workflow('fan') AS fan_id \gset
SELECT automation.complete_step(id, '{"items": [10, 20, 30]}') FROM automation.claim_steps('fan', 'w1');
SELECT step, map_index, input->'item' AS item FROM automation_workflows.step_runs
 WHERE execution_id = :'fan_id' AND step = 'each' ORDER BY map_index;
SELECT automation.complete_step(id, jsonb_build_object('doubled', (input->>'item')::int * 2))
  FROM automation.claim_steps('fan', 'w1', 10) ORDER BY map_index DESC;
SELECT step, input->'steps'->'each' AS fan_in FROM automation.claim_steps('fan', 'w1', 10);
-- an empty array: the mapped step is done at once, with []
SELECT automation.run_workflow('fan') AS fan2_id \gset
SELECT automation.complete_step(id, '{"items": []}') FROM automation.claim_steps('fan', 'w1');
SELECT step, input->'steps'->'each' AS fan_in FROM automation.claim_steps('fan', 'w1', 10);
-- not an array: the execution fails, saying why
SELECT automation.run_workflow('fan') AS fan3_id \gset
SELECT automation.complete_step(id, '{"items": "oops"}') FROM automation.claim_steps('fan', 'w1');
SELECT status, error_details->>'message' AS message FROM automation_workflows.workflow_executions WHERE id = :'fan3_id';
UPDATE automation_workflows.step_runs SET status = 'cancelled' WHERE status IN ('pending', 'running');

-- idempotency: the same key gives the same execution
SELECT automation.run_workflow('flaky', '{}', idempotency_key => 'order-42') AS first_id \gset
SELECT automation.run_workflow('flaky', '{"other": 1}', idempotency_key => 'order-42') = :'first_id' AS same_execution;
SELECT count(*) AS executions FROM automation_workflows.workflow_runs WHERE idempotency_key = 'order-42';

-- concurrency 1: the second waits (pending, no steps) until the first ends
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('serial', '{"concurrency": 1, "steps": [
    {"name": "only", "queue": "serial"}]}');
SELECT automation.run_workflow('serial', '{"n": 1}') AS s1 \gset
SELECT automation.run_workflow('serial', '{"n": 2}') AS s2 \gset
SELECT e.status, w.admitted, (SELECT count(*) FROM automation_workflows.step_runs r WHERE r.execution_id = e.id) AS steps
  FROM automation_workflows.workflow_executions e JOIN automation_workflows.workflow_runs w ON w.execution_id = e.id
 WHERE e.workflow_name = 'serial' ORDER BY w.input->>'n';
SELECT input->'input' AS claimed FROM automation.claim_steps('serial', 'w1', 10) \gset
SELECT :'claimed' AS claimed_only_the_first;
SELECT automation.complete_step(id) FROM automation_workflows.step_runs WHERE execution_id = :'s1';
SELECT input->'input' AS claimed FROM automation.claim_steps('serial', 'w1', 10);
SELECT e.status, w.admitted FROM automation_workflows.workflow_executions e
  JOIN automation_workflows.workflow_runs w ON w.execution_id = e.id WHERE e.id = :'s2';

-- cancel: pending and running steps end, the execution is cancelled
SELECT automation.run_workflow('diamond') AS cancel_id \gset
SELECT count(*) FROM automation.claim_steps('q', 'w1');
SELECT automation.cancel_workflow(:'cancel_id', 'operator said so') AS cancelled;
SELECT automation.cancel_workflow(:'cancel_id') AS again;
SELECT status, error_details->>'message' AS reason FROM automation_workflows.workflow_executions WHERE id = :'cancel_id';
SELECT step, status FROM automation_workflows.step_runs WHERE execution_id = :'cancel_id';

-- an edited definition does not change a running execution
SELECT automation.run_workflow('diamond') AS old_id \gset
UPDATE automation_workflows.definitions SET definition = '{"steps": [{"name": "z", "queue": "q"}]}' WHERE name = 'diamond';
SELECT version AS runs_version, definition->'steps'->0->>'name' AS first_step FROM automation_workflows.workflow_runs WHERE execution_id = :'old_id';
SELECT step FROM automation.claim_steps('q', 'w1', 10);
SELECT automation.run_workflow('diamond') AS new_id \gset
SELECT version AS new_version FROM automation_workflows.workflow_runs WHERE execution_id = :'new_id';

-- a delayed execution is pending, its first step claimable when due
SELECT automation.run_workflow('serial', '{"n": 3}', run_after => now() + interval '1 hour') AS later_id \gset
SELECT status FROM automation_workflows.workflow_executions WHERE id = :'later_id';

-- an expired lease: the attempt times out and is retried (or the execution fails)
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('slow', '{"steps": [
    {"name": "s", "queue": "slow", "timeout": "50 ms", "retry": {"max_attempts": 2, "backoff": "1 ms"}}]}');
SELECT automation.run_workflow('slow') AS slow_id \gset
SELECT lease_expires_at < clock_timestamp() + interval '1 second' AS lease_capped_by_timeout
  FROM automation.claim_steps('slow', 'w1', 1, '1 hour');
SELECT pg_sleep(0.1);
-- (the scheduler expires it at its deadline; or this sweep does, whichever is first)
SELECT automation.expire_steps() >= 0 AS swept;
SELECT attempt, status FROM automation_workflows.step_runs WHERE execution_id = :'slow_id' ORDER BY attempt;
SELECT pg_sleep(0.01);
SELECT attempt FROM automation.claim_steps('slow', 'w2', 1);
SELECT pg_sleep(0.1);
-- (claim_steps expires its queue's leases first, as the minutely sweep does)
SELECT count(*) AS nothing_to_claim FROM automation.claim_steps('slow', 'w3', 1);
SELECT attempt, status, worker, error->>'sqlstate' AS sqlstate FROM automation_workflows.step_runs WHERE execution_id = :'slow_id' ORDER BY attempt;
SELECT status FROM automation_workflows.workflow_executions WHERE id = :'slow_id';

-- refusals
\set VERBOSITY terse
SELECT automation.run_workflow('nope');
SELECT automation.run_workflow('flaky', '[1]');
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('data', '{"note": 1}');
SELECT automation.run_workflow('data');
UPDATE automation_workflows.definitions SET is_active = false WHERE name = 'data';
SELECT automation.run_workflow('data');
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('sqlwf', '{"steps": [{"name": "a", "sql": "SELECT 1"}]}');
SELECT automation.run_workflow('sqlwf') IS NOT NULL AS sql_steps_start;
SELECT * FROM automation.claim_steps('q', '');
SELECT * FROM automation.claim_steps('q', 'w', 0);
SELECT * FROM automation.claim_steps('q', 'w', 1, '0 s');
SELECT automation.complete_step(NULL);
SELECT automation.complete_step(-1);
SELECT automation.fail_step(-1, 'x');
SELECT automation.cancel_workflow('00000000-0000-0000-0000-000000000000');
\set VERBOSITY default

-- the generic timeout sweep leaves workflow executions to their definitions
UPDATE automation_workflows.workflow_executions SET started_at = now() - interval '2 hours' WHERE id = :'new_id';
SELECT count(*) AS timed_out FROM automation.timeout_stale_executions('1 hour') t WHERE t.id = :'new_id';
SELECT status FROM automation_workflows.workflow_executions WHERE id = :'new_id';

-- purged or deleted history takes its runs and step runs with it; so does TRUNCATE
SELECT count(*) AS runs_before FROM automation_workflows.workflow_runs;
DELETE FROM automation_workflows.workflow_executions WHERE id = :'diamond_id';
SELECT count(*) AS runs_of_the_deleted FROM automation_workflows.workflow_runs WHERE execution_id = :'diamond_id';
SELECT count(*) AS step_runs_of_the_deleted FROM automation_workflows.step_runs WHERE execution_id = :'diamond_id';
-- (first let the step workers finish sqlwf: a TRUNCATE while a worker holds a
-- claimed step and waits to mark its execution running is a deadlock, which
-- PostgreSQL resolves by failing one of the two)
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN NOT EXISTS (SELECT FROM automation_workflows.workflow_executions
                               WHERE workflow_name = 'sqlwf' AND status IN ('pending', 'running'));
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
TRUNCATE automation_workflows.workflow_executions;
SELECT (SELECT count(*) FROM automation_workflows.workflow_runs) + (SELECT count(*) FROM automation_workflows.step_runs) AS left_after_truncate;
DELETE FROM automation_workflows.definitions;
TRUNCATE automation.pipeline_metrics, automation.errors;

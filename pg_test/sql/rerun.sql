-- Issue 29, items 1, 2 and 5: a failed execution is run again from where it
-- failed (rerun_workflow), idempotency keys hold only against pending,
-- running and succeeded executions, cancel works on every execution
-- automation.executions shows, and map takes filters and tolerates failed
-- elements (max_failures). Queue steps, completed by hand: deterministic.
CREATE EXTENSION IF NOT EXISTS automation_ext;
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_rr_alice;
DROP ROLE IF EXISTS regress_rr_bob;
RESET client_min_messages;
CREATE ROLE regress_rr_alice LOGIN IN ROLE automation_runner;
CREATE ROLE regress_rr_bob LOGIN IN ROLE automation_runner;
-- try(sql): the SQLSTATE and message of the error sql raises (or 'ok')
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE state text; msg text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    RETURN state || ': ' || regexp_replace(msg, '[0-9a-f]{8}-[0-9a-f-]{27}', '<id>', 'g');
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.try(text) TO PUBLIC;
-- try_hint(sql): the SQLSTATE and hint of the error sql raises
CREATE FUNCTION pg_temp.try_hint(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE state text; hint text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, hint = PG_EXCEPTION_HINT;
    RETURN state || ': ' || hint;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.try_hint(text) TO PUBLIC;
-- work(queue, outcome): claim every claimable step of a queue and complete
-- it with its element's value, or fail it (outcome 'fail', or 'fail-odd':
-- the odd items), non-retryable
CREATE FUNCTION pg_temp.work(queue text, outcome text DEFAULT 'ok') RETURNS integer LANGUAGE plpgsql AS $$
DECLARE c record; n integer := 0;
BEGIN
    FOR c IN SELECT * FROM automation.claim_steps(queue, 'w', 100) ORDER BY map_index DESC LOOP
        BEGIN
            IF outcome = 'fail' OR (outcome = 'fail-odd' AND (c.input->>'item')::int % 2 = 1) THEN
                PERFORM automation.fail_step(c.id, 'broke on ' || coalesce(c.input->>'item', c.step), false, 'w');
            ELSE
                PERFORM automation.complete_step(c.id, jsonb_build_object('v', coalesce(c.input->'item', to_jsonb(c.step))), 'w');
            END IF;
            n := n + 1;
        EXCEPTION WHEN object_not_in_prerequisite_state THEN
            NULL; -- its execution ended meanwhile (a sibling failed it)
        END;
    END LOOP;
    RETURN n;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.work(text, text) TO PUBLIC;

------------------------------------------------------------------------------
-- 1. resume: extract (done) -> transform (mapped, one element failed) -> load
SET ROLE regress_rr_alice;
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('rr-etl', '{"steps": [
    {"name": "extract", "queue": "rr-x"},
    {"name": "transform", "after": ["extract"], "queue": "rr-t", "map": "$.extract.items"},
    {"name": "load", "after": ["transform"], "queue": "rr-l"}]}');
SELECT automation.run_workflow('rr-etl', '{"day": "2026-11-26"}', idempotency_key => '2026-11-26') AS first \gset
SELECT c.id AS extract_step FROM automation.claim_steps('rr-x', 'w') c \gset
SELECT automation.complete_step(:extract_step, '{"items": [1, 2, 3, 4]}', 'w');
SELECT pg_temp.work('rr-t', 'fail-odd') AS worked;
SELECT status, error_details->>'step' AS failed_step FROM automation_workflows.workflow_executions WHERE id = :'first';
SELECT workflow_name, error_type, resolved_at IS NULL AS open FROM automation.errors WHERE execution_id = :'first';
-- the key no longer holds: the same key starts a new execution
SELECT automation.run_workflow('rr-etl', '{"day": "2026-11-26"}', idempotency_key => '2026-11-26') <> :'first' AS key_released;
SELECT automation.cancel_workflow(execution_id) FROM automation_workflows.workflow_runs
 WHERE workflow_name = 'rr-etl' AND execution_id <> :'first';
-- re-run: extract is carried over, and the elements of transform that succeeded
SELECT automation.rerun_workflow(:'first') AS second \gset
SELECT step, map_index, status, output FROM automation_workflows.step_runs WHERE execution_id = :'second' ORDER BY step, map_index;
SELECT metadata->>'rerun_of' = :'first' AS linked FROM automation_workflows.workflow_executions WHERE id = :'second';
SELECT retry_execution_id = :'second' AS error_points_at_rerun FROM automation.errors WHERE execution_id = :'first';
SELECT pg_temp.work('rr-t') AS worked;
SELECT input->'steps'->'transform' AS load_gets FROM automation_workflows.step_runs WHERE execution_id = :'second' AND step = 'load';
SELECT pg_temp.work('rr-l') AS worked;
SELECT status FROM automation_workflows.workflow_executions WHERE id = :'second';
-- its success resolves the error of the execution it re-ran
SELECT resolved_at IS NOT NULL AS resolved FROM automation.errors WHERE execution_id = :'first';
-- the key went with the re-run: now it holds again
SELECT automation.run_workflow('rr-etl', '{}', idempotency_key => '2026-11-26') = :'second' AS key_holds;

-- from_step: load again (a succeeded execution too), the rest carried over
SELECT automation.rerun_workflow(:'second', from_step => 'load') AS third \gset
SELECT step, count(*) FILTER (WHERE status = 'success') AS carried, count(*) FILTER (WHERE status = 'pending') AS to_run
  FROM automation_workflows.step_runs WHERE execution_id = :'third' GROUP BY step ORDER BY step;
SELECT pg_temp.work('rr-l') AS worked;
-- from_step upstream: transform and load run again in full
SELECT automation.rerun_workflow(:'third', from_step => 'transform') AS fourth \gset
SELECT step, count(*) FILTER (WHERE status = 'success') AS carried, count(*) FILTER (WHERE status = 'pending') AS to_run
  FROM automation_workflows.step_runs WHERE execution_id = :'fourth' GROUP BY step ORDER BY step;
SELECT automation.cancel_workflow(:'fourth');
-- a re-run that fails again, and its re-run: both errors resolved at the end
SELECT automation.rerun_workflow(:'fourth') AS fifth \gset
SELECT pg_temp.work('rr-t', 'fail') AS worked;
SELECT automation.rerun_workflow(:'fifth') AS sixth \gset
SELECT pg_temp.work('rr-t') + pg_temp.work('rr-l') AS worked;
SELECT status FROM automation_workflows.workflow_executions WHERE id = :'sixth';
SELECT count(*) FILTER (WHERE resolved_at IS NULL) AS still_open FROM automation.errors WHERE workflow_name = 'rr-etl';

-- refusals
SELECT pg_temp.try($$SELECT automation.rerun_workflow('00000000-0000-0000-0000-000000000000')$$);
SELECT pg_temp.try(format($$SELECT automation.rerun_workflow(%L)$$, :'sixth'));
SELECT pg_temp.try(format($$SELECT automation.rerun_workflow(%L, from_step => 'nope')$$, :'sixth'));
SELECT pg_temp.try($$SELECT * FROM automation.claim_steps('rr-x', 'w', wait => '-1 s')$$);
SELECT count(*) AS nothing_came FROM automation.claim_steps('rr-nothing', 'w', wait => '10 ms');
SELECT automation.run_workflow('rr-etl') AS running \gset
SELECT pg_temp.try(format($$SELECT automation.rerun_workflow(%L)$$, :'running'));
SELECT automation.cancel_workflow(:'running');
RESET ROLE;
-- bob may not re-run alice's execution, nor see it
SET ROLE regress_rr_bob;
SELECT pg_temp.try(format($$SELECT automation.rerun_workflow(%L)$$, :'running'));
RESET ROLE;
-- unless alice shares the workflow: then the re-run is bob's
SET ROLE regress_rr_alice;
SELECT automation.grant_workflow('rr-etl', 'regress_rr_bob', 'run');
RESET ROLE;
SET ROLE regress_rr_bob;
SELECT automation.rerun_workflow(:'running') AS bobs \gset
SELECT owner FROM automation_workflows.workflow_executions WHERE id = :'bobs';
SELECT automation.cancel_workflow(:'bobs');
RESET ROLE;
-- the latest version: a step added since runs, the rest is carried over
SET ROLE regress_rr_alice;
UPDATE automation_workflows.definitions SET definition = '{"steps": [
    {"name": "extract", "queue": "rr-x"},
    {"name": "transform", "after": ["extract"], "queue": "rr-t", "map": "$.extract.items"},
    {"name": "load", "after": ["transform"], "queue": "rr-l"},
    {"name": "report", "after": ["load"], "queue": "rr-r"}]}' WHERE name = 'rr-etl';
SELECT automation.rerun_workflow(:'sixth', from_step => 'load', latest_version => true) AS seventh \gset
SELECT (SELECT version FROM automation_workflows.workflow_runs WHERE execution_id = :'seventh') AS version,
       ARRAY(SELECT DISTINCT step FROM automation_workflows.step_runs WHERE execution_id = :'seventh' AND status = 'success' ORDER BY 1) AS carried;
SELECT automation.cancel_workflow(:'seventh');

------------------------------------------------------------------------------
-- cancel: queue executions too, pending and claimed (0.7.0: P0002)
SELECT automation.enqueue_execution('rr-jobs') AS queued \gset
SELECT automation.enqueue_execution('rr-jobs') AS claimed \gset
SELECT count(*) AS claimed_one FROM automation.claim_executions('rr-jobs', 'w', 1);
SELECT automation.cancel_workflow(:'queued') AS cancelled_pending;
SELECT automation.cancel_workflow(:'claimed') AS cancelled_claimed;
SELECT automation.cancel_workflow(:'queued') AS again;
SELECT status, error_details->>'cancelled_by' AS by FROM automation.executions WHERE workflow_name = 'rr-jobs' ORDER BY 1;
-- the worker that held it learns so
SELECT pg_temp.try(format($$SELECT automation.complete_execution(%L, NULL, 'w')$$, :'claimed'));
SELECT pg_temp.try($$SELECT automation.cancel_workflow('00000000-0000-0000-0000-000000000000')$$);

------------------------------------------------------------------------------
-- 5. map: filters are lists; max_failures tolerates failed elements
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('rr-map', '{"steps": [
    {"name": "extract", "queue": "rr-mx"},
    {"name": "ship", "after": ["extract"], "queue": "rr-ms", "map": "$.extract.items[*] ? (@.kind == \"domestic\").n",
     "max_failures": 1},
    {"name": "summary", "after": ["ship"], "queue": "rr-mr"}]}');
SELECT automation.run_workflow('rr-map') AS m \gset
SELECT c.id AS mx FROM automation.claim_steps('rr-mx', 'w') c \gset
SELECT automation.complete_step(:mx, '{"items": [{"kind": "domestic", "n": 1}, {"kind": "abroad", "n": 2},
                                                 {"kind": "domestic", "n": 3}, {"kind": "domestic", "n": 4}]}', 'w');
SELECT map_index, input->'item' AS item FROM automation_workflows.step_runs WHERE execution_id = :'m' AND step = 'ship' ORDER BY 1;
-- items 1 and 3 fail: one failure is tolerated, the second fails the execution
SELECT c.id AS first_odd FROM automation.claim_steps('rr-ms', 'w', 1) c \gset
SELECT automation.fail_step(:first_odd, 'no address', false, 'w');
SELECT status FROM automation_workflows.workflow_executions WHERE id = :'m';
SELECT pg_temp.work('rr-ms', 'fail-odd') AS worked;
SELECT status, error_details->>'message' AS why FROM automation_workflows.workflow_executions WHERE id = :'m';
-- one failure in four with max_failures 0.25 (a share): the fan-in gets the
-- successes, and the failures beside them
UPDATE automation_workflows.definitions SET definition = jsonb_set(definition, '{steps,1,max_failures}', '0.5') WHERE name = 'rr-map';
SELECT automation.run_workflow('rr-map') AS m2 \gset
SELECT c.id AS mx FROM automation.claim_steps('rr-mx', 'w') c \gset
SELECT automation.complete_step(:mx, '{"items": [{"kind": "domestic", "n": 1}, {"kind": "domestic", "n": 2},
                                                 {"kind": "domestic", "n": 4}, {"kind": "domestic", "n": 6}]}', 'w');
SELECT pg_temp.work('rr-ms', 'fail-odd') AS worked;
SELECT input->'steps'->'ship' AS successes, input->'failures'->'ship'->0->'item' AS failed_item,
       input->'failures'->'ship'->0->'error'->>'message' AS failed_why
  FROM automation_workflows.step_runs WHERE execution_id = :'m2' AND step = 'summary';
SELECT pg_temp.work('rr-mr') AS worked;
SELECT status FROM automation_workflows.workflow_executions WHERE id = :'m2';
-- a filter that matches nothing: an empty list, the step done at once
SELECT automation.run_workflow('rr-map') AS m3 \gset
SELECT c.id AS mx FROM automation.claim_steps('rr-mx', 'w') c \gset
SELECT automation.complete_step(:mx, '{"items": [{"kind": "abroad", "n": 1}]}', 'w');
SELECT step, status, output FROM automation_workflows.step_runs WHERE execution_id = :'m3' AND step = 'ship';
SELECT automation.cancel_workflow(:'m3');
-- refused when written: never a list, not a path, max_failures without map
SELECT pg_temp.try($$INSERT INTO automation_workflows.definitions (name, definition) VALUES ('rr-bad', '{"steps": [
    {"name": "a", "queue": "q"}, {"name": "b", "after": ["a"], "queue": "q", "map": "$.a.items.size()"}]}')$$);
SELECT pg_temp.try($$INSERT INTO automation_workflows.definitions (name, definition) VALUES ('rr-bad', '{"steps": [
    {"name": "a", "queue": "q"}, {"name": "b", "after": ["a"], "queue": "q", "map": "$.a.items[*"}]}')$$);
SELECT pg_temp.try($$INSERT INTO automation_workflows.definitions (name, definition) VALUES ('rr-bad', '{"steps": [
    {"name": "a", "queue": "q", "max_failures": 2}]}')$$);
SELECT pg_temp.try($$INSERT INTO automation_workflows.definitions (name, definition) VALUES ('rr-bad', '{"steps": [
    {"name": "a", "queue": "q"}, {"name": "b", "after": ["a"], "queue": "q", "map": "$.a", "max_failures": 1.5}]}')$$);
RESET ROLE;

------------------------------------------------------------------------------
-- 8. messages: the same complete_step again (a lost acknowledgement) is a
-- no-op; a different result for a step that succeeded is refused, and the
-- hint says it succeeded (0.7.0: "its lease expired")
SET ROLE regress_rr_alice;
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('rr-msg', '{"steps": [{"name": "a", "queue": "rr-msg"}, {"name": "b", "after": ["a"], "queue": "rr-msg"}]}');
SELECT automation.run_workflow('rr-msg') AS msg_exec \gset
SELECT c.id AS msg_step FROM automation.claim_steps('rr-msg', 'w1') c \gset
SELECT automation.complete_step(:msg_step, '{"n": 1}', 'w1');
SELECT automation.complete_step(:msg_step, '{"n": 1}', 'w1') AS again_is_a_no_op;
SELECT count(*) AS one_b FROM automation_workflows.step_runs WHERE execution_id = :'msg_exec' AND step = 'b';
SELECT pg_temp.try_hint(format($$SELECT automation.complete_step(%s, '{"n": 2}', 'w1')$$, :msg_step)) AS different_output;
SELECT pg_temp.try_hint(format($$SELECT automation.complete_step(%s, '{"n": 1}', 'w2')$$, :msg_step)) AS other_worker;
SELECT automation.cancel_workflow(:'msg_exec');
RESET ROLE;

------------------------------------------------------------------------------
-- 2. history that ends (0.7.0 kept every failed execution for ever): with
-- the default retentions (executions 30 days, errors 90), a success of 40
-- days ago goes, a failure of 40 days ago with an open error stays, one of
-- 100 days ago goes with its open error, and so does an old resolved error
INSERT INTO automation_workflows.workflow_executions (id, workflow_name, status, started_at, completed_at, owner) VALUES
    ('00000000-0000-0000-0000-00000000aa01', 'rr-old', 'success', now() - interval '40 days', now() - interval '40 days', 'regress_rr_alice'),
    ('00000000-0000-0000-0000-00000000aa02', 'rr-old', 'error', now() - interval '40 days', now() - interval '40 days', 'regress_rr_alice'),
    ('00000000-0000-0000-0000-00000000aa03', 'rr-old', 'timeout', now() - interval '100 days', now() - interval '100 days', 'regress_rr_alice'),
    ('00000000-0000-0000-0000-00000000aa04', 'rr-old', 'cancelled', now() - interval '10 days', now() - interval '10 days', 'regress_rr_alice');
INSERT INTO automation.errors (workflow_name, error_type, error_time, execution_id, owner, resolved_at) VALUES
    ('rr-old', 'Boom', now() - interval '40 days', '00000000-0000-0000-0000-00000000aa02', 'regress_rr_alice', NULL),
    ('rr-old', 'Boom', now() - interval '100 days', '00000000-0000-0000-0000-00000000aa03', 'regress_rr_alice', NULL),
    ('rr-old', 'Old', now() - interval '120 days', NULL, 'regress_rr_alice', now() - interval '95 days');
CALL automation.purge_executions();
SELECT id, status FROM automation_workflows.workflow_executions WHERE workflow_name = 'rr-old' ORDER BY id;
SELECT error_type, execution_id FROM automation.errors WHERE workflow_name = 'rr-old' ORDER BY error_time;

-- clean up
DELETE FROM automation.errors WHERE workflow_name LIKE 'rr-%';
DELETE FROM automation_workflows.workflow_executions WHERE workflow_name LIKE 'rr-%';
SELECT automation.record_executions() >= 0 AS recorded;
DELETE FROM automation_workflows.workflow_executions WHERE workflow_name LIKE 'rr-%';
DELETE FROM automation_workflows.definitions WHERE name LIKE 'rr-%';
DROP ROLE regress_rr_alice;
DROP ROLE regress_rr_bob;

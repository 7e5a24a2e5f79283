-- Issue 16: the execution queue seen from SQL — bad arguments refused with
-- their SQLSTATEs, keyed claims only at READ COMMITTED, and the bounded
-- history (purge_executions, a procedure that commits: only callable here,
-- at top level).
CREATE EXTENSION IF NOT EXISTS automation_ext;
\set VERBOSITY terse
\set SHOW_CONTEXT never
-- arguments
SELECT automation.enqueue_execution('q', '{}', priority => NULL);
SELECT automation.enqueue_execution('q', '{}', concurrency_key => 'k');
SELECT automation.enqueue_execution('q', '{}', concurrency_limit => 2);
SELECT automation.enqueue_execution('q', '{}', concurrency_key => 'k', concurrency_limit => 0);
SELECT automation.enqueue_execution(repeat('x', 256));
SELECT automation.enqueue_execution('q', '"a string"');
SELECT * FROM automation.claim_executions('q', 'w', 1, wait => '-1 s');
SELECT * FROM automation.claim_executions('q', 'w', 1, wait => '2 hours');
SELECT automation.record_executions(0);
CALL automation.purge_executions(0);
-- direct writes obey the same rules
INSERT INTO automation_workflows.execution_queue (workflow_name, run_after, visible_at, metadata)
VALUES ('q', now(), now(), '[]');
INSERT INTO automation_workflows.execution_queue (workflow_name, run_after, visible_at, concurrency_key)
VALUES ('q', now(), now(), 'k');
-- keyed executions are claimed at READ COMMITTED only (the limit is counted
-- again after the key's lock, which needs a fresh snapshot)
SELECT automation.enqueue_execution('keyed', '{}', concurrency_key => 'k', concurrency_limit => 1) IS NOT NULL AS queued;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM automation.claim_executions('keyed', 'w');
ROLLBACK;
SELECT count(*) AS claimed_at_read_committed FROM automation.claim_executions('keyed', 'w');
SELECT count(*) AS none_while_the_key_is_busy FROM automation.claim_executions('keyed', 'w');

-- bounded history
TRUNCATE automation_workflows.workflow_executions, automation.errors;
INSERT INTO automation_workflows.workflow_executions (id, workflow_name, status, started_at, completed_at)
VALUES ('00000000-0000-0000-0000-00000000000a', 'etl', 'success', now() - interval '40 days', now() - interval '40 days'),
       ('00000000-0000-0000-0000-00000000000b', 'etl', 'error',   now() - interval '40 days', now() - interval '40 days'),
       ('00000000-0000-0000-0000-00000000000c', 'etl', 'error',   now() - interval '40 days', now() - interval '40 days'),
       ('00000000-0000-0000-0000-00000000000d', 'etl', 'success', now() - interval '2 days',  now() - interval '2 days'),
       ('00000000-0000-0000-0000-00000000000e', 'etl', 'running', now() - interval '40 days', NULL);
INSERT INTO automation.errors (workflow_name, error_type, execution_id, resolved_at, dead_lettered_at, error_time)
VALUES ('etl', 'open',         '00000000-0000-0000-0000-00000000000b', NULL, NULL, now() - interval '40 days'),
       ('etl', 'old resolved', '00000000-0000-0000-0000-00000000000c', now() - interval '100 days', NULL, now() - interval '100 days'),
       ('etl', 'old dead',     NULL, NULL, now() - interval '100 days', now() - interval '100 days'),
       ('etl', 'recent',       NULL, now() - interval '1 day', NULL, now() - interval '1 day');
SHOW automation.execution_retention;
SHOW automation.error_retention;
CALL automation.purge_executions(1);
-- kept: the one an open error refers to, the recent one, the running one
SELECT right(id::text, 1) AS kept, status FROM automation_workflows.workflow_executions ORDER BY id;
SELECT error_type AS kept_error FROM automation.errors ORDER BY 1;
-- the default job
SELECT jobname, schedule, command, active FROM automation.job WHERE jobname = 'automation: purge execution history';
TRUNCATE automation_workflows.execution_queue, automation_workflows.workflow_executions, automation.errors;

-- Names planted ahead of pg_catalog in the caller's search_path (a now(), a
-- text = that is always false) change nothing in claiming and completing.
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT ''1999-01-01''::timestamptz';
CREATE FUNCTION public.never(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT false';
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.never);
SELECT automation.enqueue_execution('planted', '{"n": 1}') AS planted_id \gset
SET search_path = public, pg_catalog;
SELECT 'a'::text = 'a'::text AS the_plant_works_for_unqualified_code;
SELECT count(*) AS claimed FROM automation.claim_executions('planted', 'w');
SELECT automation.complete_executions(ARRAY[:'planted_id']::uuid[], '{"done": true}', 'w') AS completed;
RESET search_path;
DROP OPERATOR public.= (text, text);
DROP FUNCTION public.never(text, text);
DROP FUNCTION public.now();
SELECT automation.record_executions() >= 0 AS recorded;
SELECT status, completed_at > '2000-01-01' AS real_now, metadata->>'done' AS done
  FROM automation_workflows.workflow_executions WHERE id = :'planted_id';

-- one call completes queue executions and start_execution() ones together;
-- all or nothing: an id that is not running fails the call, and the queue
-- execution it came with stays claimed
SELECT automation.enqueue_execution('mixed', '{}') AS queued_id \gset
SELECT automation.start_execution('mixed') AS started_id \gset
SELECT count(*) AS claimed FROM automation.claim_executions('mixed', 'w');
SELECT automation.complete_executions(ARRAY[:'queued_id', :'started_id', '00000000-0000-0000-0000-0000000000ff']::uuid[]);
SELECT status, claimed_by FROM automation.executions WHERE id = :'queued_id';
SELECT automation.complete_executions(ARRAY[:'queued_id', :'started_id']::uuid[]) AS completed;
SELECT set_config('regress.queued_id', :'queued_id', false) IS NOT NULL AS noted;
DO $$
BEGIN
    PERFORM automation.complete_executions(ARRAY[current_setting('regress.queued_id')]::uuid[]);
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    RAISE NOTICE 'again: %', replace(SQLERRM, current_setting('regress.queued_id'), '<id>');
END $$;
SELECT automation.complete_executions(NULL);
SELECT automation.complete_execution(NULL);
SELECT automation.complete_executions('{}') AS none_completed;
SELECT * FROM automation.claim_executions('mixed', '');
SELECT * FROM automation.claim_executions('mixed', 'w', 0);
SELECT * FROM automation.claim_executions('mixed', 'w', 1, lease => '0 s');
SELECT * FROM automation.claim_executions('mixed', 'w', 1, lease => NULL);

-- cached plans outlive the tables they were made for: DROP and CREATE
-- EXTENSION in this session, and claiming and completing still work
DROP EXTENSION automation_ext CASCADE;
CREATE EXTENSION automation_ext;
SELECT automation.enqueue_execution('again', '{}') AS again_id \gset
SELECT count(*) AS claimed_after_recreate FROM automation.claim_executions('again', 'w');
SELECT automation.complete_execution(:'again_id', NULL, 'w');
SELECT automation.record_executions() >= 0 AS recorded;
SELECT status FROM automation_workflows.workflow_executions WHERE id = :'again_id';
TRUNCATE automation_workflows.execution_queue, automation_workflows.workflow_executions, automation.errors;

-- SQL steps (0.7.0): run by the step workers of the preloaded library as the
-- role that started the workflow; outputs as jsonb; step_input() only in a
-- step; what automation_runner may not write.
CREATE FUNCTION pg_temp.finished(id uuid) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    s text;
BEGIN
    FOR i IN 1..600 LOOP
        SELECT status INTO s FROM automation_workflows.workflow_executions WHERE workflow_executions.id = finished.id;
        IF s NOT IN ('pending', 'running') THEN
            RETURN s;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN 'still ' || s;
END
$$;

-- outputs: json as is, numbers and booleans as JSON, anything else a string
SELECT automation.step_output('{"a": 1}', 'jsonb'::regtype) AS jsonb_value,
       automation.step_output('[1, 2]', 'json'::regtype) AS json_value,
       automation.step_output('42', 'int4'::regtype) AS int_value,
       automation.step_output('1.5e3', 'float8'::regtype) AS float_value,
       automation.step_output('NaN', 'float8'::regtype) AS nan_value,
       automation.step_output('t', 'bool'::regtype) AS bool_value,
       automation.step_output('2026-01-01', 'date'::regtype) AS date_value,
       automation.step_output(NULL, 'int4'::regtype) AS null_value;

-- outside a step
SELECT automation.step_input();

INSERT INTO automation_workflows.definitions (name, definition) VALUES ('sql-chain', '{"steps": [
    {"name": "extract", "sql": "SELECT jsonb_build_object(''rows'', jsonb_build_array(1, 2, 3), ''by'', current_user)"},
    {"name": "double", "after": ["extract"], "map": "$.extract.rows", "sql": "SELECT (automation.step_input()->>''item'')::int * 2"},
    {"name": "load", "after": ["double"], "sql": "SELECT automation.step_input()->''steps''->''double''"},
    {"name": "nothing", "after": ["load"], "sql": "SELECT 1 WHERE false"}]}');
SELECT automation.run_workflow('sql-chain', '{"day": "2026-01-01"}') AS chain_id \gset
SELECT pg_temp.finished(:'chain_id');
SELECT step, map_index, status, output, queue IS NULL AS sql_step, worker LIKE 'step worker %' AS by_step_worker
  FROM automation_workflows.step_runs WHERE execution_id = :'chain_id'
 ORDER BY array_position(ARRAY['extract', 'double', 'load', 'nothing'], step), map_index;
SELECT done, running, pending, waiting, failed FROM automation.workflow_progress WHERE execution_id = :'chain_id';
SELECT stage, status, count(*) FROM automation.pipeline_metrics WHERE pipeline_name = 'sql-chain' GROUP BY 1, 2 ORDER BY 1;

-- an error: its SQLSTATE, the execution fails, the next step never starts
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('sql-broken', '{"steps": [
    {"name": "divide", "sql": "SELECT 1 / (SELECT count(*)::int FROM pg_class WHERE false)"},
    {"name": "after", "after": ["divide"], "sql": "SELECT 1"}]}');
SELECT automation.run_workflow('sql-broken') AS broken_id \gset
SELECT pg_temp.finished(:'broken_id');
SELECT step, status, error FROM automation_workflows.step_runs WHERE execution_id = :'broken_id' ORDER BY id;
SELECT error_details->>'message' AS message FROM automation_workflows.workflow_executions WHERE id = :'broken_id';

-- a queue worker cannot claim a SQL step
SELECT count(*) AS claimed FROM automation.claim_steps('', 'w');

-- what automation_runner may write of a workflow's runs: nothing (0.8.0:
-- only the engine's functions write them)
SELECT c.relname, a.attname,
       has_column_privilege('automation_runner', c.oid, a.attnum, 'INSERT') AS ins,
       has_column_privilege('automation_runner', c.oid, a.attnum, 'UPDATE') AS upd
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.oid IN ('automation_workflows.workflow_runs'::regclass, 'automation_workflows.step_runs'::regclass)
 ORDER BY 1, a.attnum;

-- a role that may not log in cannot run SQL steps: they fail, with why
CREATE ROLE regress_sql_nologin NOLOGIN IN ROLE automation_runner;
SELECT automation.grant_workflow('sql-broken', 'regress_sql_nologin');
SET ROLE regress_sql_nologin;
SELECT automation.run_workflow('sql-broken') AS nologin_id \gset
RESET ROLE;
SELECT pg_temp.finished(:'nologin_id');
SELECT step, status, error->>'sqlstate' AS sqlstate, error->>'message' AS message
  FROM automation_workflows.step_runs WHERE execution_id = :'nologin_id';
DELETE FROM automation_workflows.workflow_executions WHERE id = :'nologin_id';
DROP ROLE regress_sql_nologin;

-- Issue 18 (1): a workflow definition is checked when it is written. Every
-- mistake is refused with SQLSTATE 22023 and a message naming the step and
-- the field; a definition without steps stays valid data; a changed
-- definition gets the next version.
CREATE EXTENSION IF NOT EXISTS automation_ext;

CREATE FUNCTION pg_temp.written(definition jsonb) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO automation_workflows.definitions (name, definition) VALUES ('regress_try', definition);
    DELETE FROM automation_workflows.definitions WHERE name = 'regress_try';
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

SELECT d AS definition, pg_temp.written(d::jsonb) AS outcome FROM (VALUES
    -- data without steps, and valid workflows
    ('{}'),
    ('{"schedule": "@daily", "anything": [1, 2, 3]}'),
    ('{"steps": [{"name": "a", "sql": "SELECT 1"}]}'),
    ('{"steps": [{"name": "a", "queue": "q"}, {"name": "b", "after": ["a"], "queue": "q", "map": "$.a.items"}], "timeout": "1 hour", "concurrency": 3}'),
    ('{"steps": [{"name": "a", "sql": "SELECT 1", "timeout": "30 s", "retry": {"max_attempts": 5, "backoff": "1 s", "max_backoff": "1 min"}}]}'),
    -- the shape
    ('[1, 2]'),
    ('{"steps": {}}'),
    ('{"steps": []}'),
    ('{"steps": ["a"]}'),
    ('{"steps": [{"name": "a", "sql": "SELECT 1"}], "owner": "me"}'),
    -- names
    ('{"steps": [{"sql": "SELECT 1"}]}'),
    ('{"steps": [{"name": " ", "sql": "SELECT 1"}]}'),
    ('{"steps": [{"name": "a", "sql": "SELECT 1"}, {"name": "a", "queue": "q"}]}'),
    -- dependencies
    ('{"steps": [{"name": "a", "after": ["ghost"], "sql": "SELECT 1"}]}'),
    ('{"steps": [{"name": "a", "after": ["a"], "sql": "SELECT 1"}]}'),
    ('{"steps": [{"name": "a", "after": ["c"], "sql": "1"}, {"name": "b", "after": ["a"], "sql": "1"}, {"name": "c", "after": ["b"], "sql": "1"}, {"name": "d", "sql": "1"}]}'),
    ('{"steps": [{"name": "a", "after": 7, "sql": "SELECT 1"}]}'),
    -- what runs it
    ('{"steps": [{"name": "a", "sql": "SELECT 1", "queue": "q"}]}'),
    ('{"steps": [{"name": "a"}]}'),
    ('{"steps": [{"name": "a", "sql": ""}]}'),
    ('{"steps": [{"name": "a", "sql": "SELECT 1", "retries": 3}]}'),
    -- intervals: PostgreSQL's syntax, positive
    ('{"steps": [{"name": "a", "sql": "SELECT 1", "timeout": "5 parsecs"}]}'),
    ('{"steps": [{"name": "a", "sql": "SELECT 1", "timeout": "-5 s"}]}'),
    ('{"steps": [{"name": "a", "sql": "SELECT 1", "timeout": 5}]}'),
    ('{"steps": [{"name": "a", "sql": "SELECT 1", "retry": {"max_attempts": 2, "backoff": "soon"}}]}'),
    ('{"steps": [{"name": "a", "sql": "SELECT 1"}], "timeout": "0"}'),
    -- retries, concurrency, fan-out
    ('{"steps": [{"name": "a", "sql": "SELECT 1", "retry": {"max_attempts": 101}}]}'),
    ('{"steps": [{"name": "a", "sql": "SELECT 1", "retry": 3}]}'),
    ('{"steps": [{"name": "a", "sql": "SELECT 1"}], "concurrency": -1}'),
    ('{"steps": [{"name": "a", "queue": "q"}, {"name": "b", "queue": "q", "map": "$.a.items"}]}'),
    ('{"steps": [{"name": "a", "queue": "q"}, {"name": "b", "after": ["a"], "queue": "q", "map": "a.items"}]}')
) v(d);

-- the error as a client sees it, with its hint
\set VERBOSITY default
INSERT INTO automation_workflows.definitions (name, definition)
VALUES ('broken', '{"steps": [{"name": "load", "after": ["extract"], "sql": "CALL load()"}]}');

-- check_definition: true for a workflow, false for data
SELECT automation.check_definition('{"steps": [{"name": "a", "queue": "q"}]}') AS runnable,
       automation.check_definition('{"note": "not a workflow"}') AS data_only;

-- versions: a changed definition gets the next one; an unchanged one keeps
-- it; a writer may set a higher one; a version never goes back
INSERT INTO automation_workflows.definitions (name, definition)
VALUES ('etl', '{"steps": [{"name": "a", "sql": "SELECT 1"}]}');
UPDATE automation_workflows.definitions SET is_active = false WHERE name = 'etl';
SELECT version FROM automation_workflows.definitions WHERE name = 'etl';
UPDATE automation_workflows.definitions SET definition = '{"steps": [{"name": "a", "sql": "SELECT 2"}]}' WHERE name = 'etl';
SELECT version FROM automation_workflows.definitions WHERE name = 'etl';
UPDATE automation_workflows.definitions SET definition = '{"steps": [{"name": "a", "sql": "SELECT 3"}]}', version = 10 WHERE name = 'etl';
SELECT version FROM automation_workflows.definitions WHERE name = 'etl';
UPDATE automation_workflows.definitions SET version = 3 WHERE name = 'etl';
-- an invalid change is refused and changes nothing
UPDATE automation_workflows.definitions SET definition = '{"steps": [{"name": "a"}]}' WHERE name = 'etl';
SELECT version, definition->'steps'->0->>'sql' AS sql FROM automation_workflows.definitions WHERE name = 'etl';

-- with check_function_bodies off (as in pg_dump's output) nothing is checked,
-- so that a dump with a definition written before 0.5.0 restores
SET check_function_bodies = off;
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('legacy', '{"steps": ["extract", "load"]}');
RESET check_function_bodies;
SELECT name FROM automation_workflows.definitions WHERE name = 'legacy';
-- but it cannot be changed into another invalid one
UPDATE automation_workflows.definitions SET definition = '{"steps": ["extract"]}' WHERE name = 'legacy';

DELETE FROM automation_workflows.definitions;

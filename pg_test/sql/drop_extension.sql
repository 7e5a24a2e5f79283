-- DROP EXTENSION ... CASCADE removes everything CREATE EXTENSION made.
DROP EXTENSION automation_ext CASCADE;

-- every schema-level object in the database, by name (oids change)
CREATE FUNCTION pg_temp.catalog_objects() RETURNS TABLE (kind text, name text)
LANGUAGE sql AS $$
    SELECT 'namespace', nspname::text FROM pg_namespace WHERE nspname !~ '^pg_(toast_)?temp'
    UNION ALL SELECT 'relation', oid::regclass::text FROM pg_class
               WHERE relnamespace::regnamespace::text !~ '^pg_(toast_)?temp'
                 AND relnamespace <> 'pg_toast'::regnamespace
    UNION ALL SELECT 'function', oid::regprocedure::text FROM pg_proc
               WHERE pronamespace::regnamespace::text !~ '^pg_temp'
    UNION ALL SELECT 'type', oid::regtype::text FROM pg_type
               WHERE typnamespace::regnamespace::text !~ '^pg_(toast_)?temp'
                 AND typnamespace <> 'pg_toast'::regnamespace
    UNION ALL SELECT 'operator', oid::regoperator::text FROM pg_operator
    UNION ALL SELECT 'trigger', tgname::text FROM pg_trigger
    UNION ALL SELECT 'event trigger', evtname::text FROM pg_event_trigger
    UNION ALL SELECT 'extension', extname::text FROM pg_extension
$$;
CREATE TEMP TABLE before_install AS SELECT * FROM pg_temp.catalog_objects();

CREATE EXTENSION automation_ext;
-- with data in it, so CASCADE has rows and dependent objects to remove
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('wf', '{}');
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'cron', '{}', id FROM automation_workflows.definitions;
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status) VALUES (now(), 'p', 's', 'success');
SELECT count(*) > 40 AS many_objects_created
  FROM (SELECT * FROM pg_temp.catalog_objects() EXCEPT SELECT * FROM before_install) created;

DROP EXTENSION automation_ext CASCADE;

-- nothing left behind, nothing removed that was there before
(SELECT 'left behind' AS problem, * FROM pg_temp.catalog_objects() EXCEPT SELECT 'left behind', * FROM before_install)
UNION ALL
(SELECT 'removed', * FROM before_install EXCEPT SELECT 'removed', * FROM pg_temp.catalog_objects());

-- Typos and impossible values are clear errors, not silent data.
-- terse: the DETAIL lines carry random uuids and timestamps
\set VERBOSITY terse

-- statuses outside the known set
INSERT INTO automation_workflows.workflow_executions (workflow_name, status) VALUES ('etl', 'sucess');
INSERT INTO automation_workflows.workflow_executions (workflow_name, status) VALUES ('etl', NULL);
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status)
VALUES ('2026-01-01', 'p', 'load', 'SUCCESS');

-- every known status is accepted
INSERT INTO automation_workflows.workflow_executions (workflow_name, status)
SELECT 'etl', s FROM unnest(ARRAY['pending','running','success','error','timeout','cancelled','retrying']) s;
SELECT status, count(*) FROM automation_workflows.workflow_executions GROUP BY 1 ORDER BY 1;

-- an execution cannot complete before it started
INSERT INTO automation_workflows.workflow_executions (workflow_name, status, started_at, completed_at)
VALUES ('etl', 'success', '2026-01-02', '2026-01-01');

-- pipeline metrics: negative counts are refused; a row for any time lands
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, duration_ms) VALUES (now(), 'p', 'load', -1);
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, duration_ms, records_processed, status)
VALUES ('1999-12-31 23:59', 'p', 'load', 10, 100, 'success'),
       ('2100-01-01', 'p', 'load', 12, 100, 'error'),
       ('2026-06-01', 'p', 'load', 11, 100, NULL);
SELECT tableoid::regclass AS partition, count(*) FROM automation.pipeline_metrics GROUP BY 1;

-- definitions: unique names, no empty name, version >= 1
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('wf', '{}');
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('wf', '{}');
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('', '{}');
INSERT INTO automation_workflows.definitions (name, definition, version) VALUES ('wf0', '{}', 0);
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('wf-null', NULL);

-- a definition with triggers cannot be deleted out from under them
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
SELECT 'cron', '{"schedule": "@daily"}', id FROM automation_workflows.definitions WHERE name = 'wf';
DELETE FROM automation_workflows.definitions WHERE name = 'wf';
INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id) VALUES ('cron', '{}', 999999);

-- error queue and monitoring bounds
INSERT INTO automation.errors (workflow_name, retry_count) VALUES ('etl', -1);
INSERT INTO automation.database_monitoring (cache_hit_ratio) VALUES (101);

-- audit log: operations are upper-case verbs; defaults record who and when
INSERT INTO automation_audit.log (operation) VALUES ('insert');
INSERT INTO automation_audit.log (table_schema, table_name, operation, new_row)
VALUES ('public', 't', 'INSERT', '{"id": 1}')
RETURNING actor = current_user AS actor_ok, session_actor = session_user AS session_ok,
          xact_id = pg_current_xact_id() AS same_xact, logged_at IS NOT NULL AS timed;

-- clean up for the next test
TRUNCATE automation_workflows.workflow_executions, automation.pipeline_metrics,
         automation_triggers.registry, automation_audit.log;
DELETE FROM automation_workflows.definitions;

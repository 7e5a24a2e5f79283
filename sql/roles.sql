-- Group roles for administrators to grant (0.2.0). Both are NOLOGIN and get
-- no password; roles are global, so they outlive DROP EXTENSION and are
-- created only when missing (the grants below are (re)applied either way).
--
--   automation_runner   runs workflows: reads and writes the workflow and
--                       trigger tables, records errors and pipeline metrics,
--                       calls the runtime functions. Nothing else: not the
--                       audit log, not monitoring samples, not migrations,
--                       not table ownership.
--   automation_monitor  (created in monitoring.sql) reads; may collect
--                       monitoring samples.

DO $role$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'automation_runner') THEN
        -- (0.6.0) a first install in another database at the same moment
        -- may create it first: then it exists, which is all we need
        BEGIN
            CREATE ROLE automation_runner NOLOGIN;
        EXCEPTION WHEN unique_violation OR duplicate_object THEN
            NULL;
        END;
    END IF;
END
$role$;

GRANT USAGE ON SCHEMA automation, automation_workflows, automation_triggers TO automation_runner;
-- 0.8.0 (issue 27): row-level security limits every one of these to the
-- rows of the roles the runner may act as (SET ROLE to), and what it may
-- read to what it may act on or work (src/tenancy.rs, docs/security.md).
-- Definitions and triggers are written directly (the seed's way); a
-- definition or trigger belongs to the role that writes it.
GRANT SELECT, INSERT, UPDATE, DELETE ON
      automation_workflows.definitions,
      automation_triggers.registry
   TO automation_runner;
-- the seed's executions table: a runner inserts and updates its own rows
GRANT SELECT, INSERT, UPDATE ON automation_workflows.workflow_executions, automation.errors TO automation_runner;
-- The queue, the workflow engine's runs, the trigger inbox and the grants
-- change only through the functions (enqueue_execution, claim_executions,
-- run_workflow, claim_steps, grant_workflow...), which check who calls
-- them: nothing here can be forged, repointed or replayed.
GRANT SELECT ON automation_workflows.execution_queue, automation_workflows.execution_log, automation.executions,
                automation_workflows.workflow_runs, automation_workflows.step_runs,
                automation_workflows.workflow_grants
   TO automation_runner;
GRANT SELECT ON automation.workflow_progress TO automation_runner, automation_monitor;
-- registering a table trigger creates a trigger that runs this function
GRANT EXECUTE ON FUNCTION automation.workflow_table_trigger() TO automation_runner;
-- writing a definition asks whether its name is in use by other roles
GRANT EXECUTE ON FUNCTION automation.workflow_in_use_by_others(text, oid) TO automation_runner;
-- row-level security limits these to the runner's own rows
GRANT SELECT, INSERT, UPDATE, DELETE ON automation_workflows.api_workflows TO automation_runner;
GRANT SELECT, INSERT ON automation.pipeline_metrics TO automation_runner;
-- bulk ingest: COPY into staging, then automation.flush_metrics_staging()
GRANT SELECT, INSERT, DELETE, TRUNCATE ON automation.metrics_staging TO automation_runner;
GRANT SELECT ON automation.metrics_staging_checked TO automation_runner;
GRANT SELECT ON automation.pipeline_metrics_hourly, automation.pipeline_metrics_hourly_live,
                automation.pipeline_metrics_hourly_state, automation.pipeline_metrics_invalidations
   TO automation_runner, automation_monitor;
GRANT SELECT ON automation_workflows.v_api_workflow_status, automation.v_workflow_status TO automation_runner;
GRANT USAGE, SELECT ON SEQUENCE
      automation_workflows.definitions_id_seq,
      automation_triggers.registry_id_seq
   TO automation_runner;
-- its own jobs (row-level security: username = current_user; scheduling as
-- another role needs superuser)
GRANT SELECT, INSERT, UPDATE, DELETE ON automation.job TO automation_runner;
GRANT SELECT ON automation.job_run_details, automation.job_run_stats TO automation_runner;
GRANT USAGE, SELECT ON SEQUENCE automation.job_jobid_seq TO automation_runner;

-- The monitor reads the workflow state as well as the health samples.
GRANT SELECT ON automation_workflows.execution_queue, automation_workflows.execution_log, automation.executions
   TO automation_monitor;
GRANT SELECT ON automation_workflows.workflow_runs, automation_workflows.step_runs,
                automation_workflows.workflow_grants TO automation_monitor;
GRANT USAGE ON SCHEMA automation_workflows, automation_triggers TO automation_monitor;
GRANT SELECT ON
      automation_workflows.definitions,
      automation_workflows.workflow_executions,
      automation_workflows.v_api_workflow_status,
      automation_triggers.registry,
      automation.errors,
      automation.pipeline_metrics,
      automation.v_workflow_status
   TO automation_monitor;

-- (0.8.0, issue 29) the monitor reads what the exporter file and the
-- dashboard count: every job (a policy: the others see the jobs of roles
-- they may act as), their runs and counters (which follow the jobs a role
-- sees), and the finished-execution counters
CREATE POLICY job_monitor_read ON automation.job FOR SELECT TO automation_monitor
    USING (true);
GRANT SELECT ON automation.job, automation.job_run_details, automation.job_run_stats, automation.execution_stats
   TO automation_monitor;

-- (0.10.0, issue 33) what the history keeps of a queue: read by who may read
-- the workflow (row-level security), written only by set_queue_history
GRANT SELECT ON automation.queue_settings TO automation_runner, automation_monitor;

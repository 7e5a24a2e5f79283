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
GRANT SELECT, INSERT, UPDATE ON
      automation_workflows.definitions,
      automation_workflows.workflow_executions,
      automation_triggers.registry,
      automation.errors
   TO automation_runner;
-- 0.4.0: the execution queue and its log (the runtime functions are
-- SECURITY INVOKER: they act with the caller's privileges)
GRANT SELECT, INSERT, UPDATE, DELETE ON automation_workflows.execution_queue TO automation_runner;
GRANT SELECT, INSERT, DELETE ON automation_workflows.execution_log TO automation_runner;
GRANT SELECT ON automation.executions TO automation_runner;
-- 0.5.0: workflow executions and their step runs (run_workflow, claim_steps,
-- complete_step... are SECURITY INVOKER too)
-- 0.7.0: not every column. started_by (the role a workflow's SQL steps run
-- as) is always the role that inserts the row, and neither it nor the
-- definition an execution runs, nor a step run's input, SQL-step-ness or
-- execution can be changed afterwards: a runner cannot have SQL run as
-- another role.
GRANT SELECT ON automation_workflows.workflow_runs, automation_workflows.step_runs TO automation_runner;
GRANT INSERT (execution_id, workflow_name, version, definition, input, idempotency_key, admitted, run_after,
              deadline, open_elements, steps_left, created_at)
   ON automation_workflows.workflow_runs TO automation_runner;
GRANT UPDATE (admitted, open_elements, steps_left) ON automation_workflows.workflow_runs TO automation_runner;
GRANT INSERT ON automation_workflows.step_runs TO automation_runner;
GRANT UPDATE (status, worker, started_at, completed_at, lease_expires_at, output, error)
   ON automation_workflows.step_runs TO automation_runner;
GRANT SELECT ON automation.workflow_progress TO automation_runner, automation_monitor;
-- registering a table trigger creates a trigger that runs this function
GRANT EXECUTE ON FUNCTION automation.workflow_table_trigger() TO automation_runner;
-- (0.6.0) the trigger appends the changes it saw, as the role that made them
GRANT INSERT ON automation_workflows.trigger_inbox TO automation_runner;
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
GRANT SELECT ON automation_workflows.workflow_runs, automation_workflows.step_runs TO automation_monitor;
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

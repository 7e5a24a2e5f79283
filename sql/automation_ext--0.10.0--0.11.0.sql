-- automation_ext 0.10.0 -> 0.11.0
--
-- Frozen once released, like every upgrade script. Runs with search_path =
-- pg_catalog; everything is schema-qualified. pg_test/sql/upgrade.sql checks
-- that an upgraded database has exactly the catalog of a fresh install.
--
-- 0.11.0, issue 34 (precision at scale):
-- * an 'N seconds' schedule fires every N seconds from when it is set (as
--   pg_cron 1.5 counts them), no longer on multiples of N: the jobs of a
--   hundred databases no longer all fall in the same instant. The library
--   keeps each job on its grid; this trigger starts the grid (to the
--   millisecond) and keeps it, with a pending retry, through an UPDATE that
--   leaves the schedule and the time zone as they were. Existing jobs keep
--   their next run, and so their aligned grid, until their schedule is set
--   again. automation.next_fire(schedule, due, now, timezone) is the
--   scheduler's own next-fire rule in SQL; the trigger and fire_trigger_as
--   (a schedule trigger's next_fire_at) use it.
-- * 'N minutes' (1 to 59) is accepted beside 'N seconds' (the library's
--   parser), counted the same way; the frequent default jobs use it
--   (metrics '5 minutes', the stale-execution sweep and the hourly rollup's
--   refresh '1 minute', the metrics partitions '10 minutes'), so that a
--   cluster's databases do not all run them at second 0 -- here, where the
--   DBA left their schedules as CREATE EXTENSION made them.
-- * the COMMENTs of next_run() and wake_scheduler() say what they now do.

CREATE FUNCTION automation.next_fire(schedule text, due timestamptz, now timestamptz DEFAULT pg_catalog.now(),
                                     timezone text DEFAULT NULL)
RETURNS timestamptz
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'next_fire_wrapper';

COMMENT ON FUNCTION automation.next_fire(text, timestamptz, timestamptz, text) IS
'(0.11.0) The next fire of a job whose fire was due at due, seen at now, as the scheduler computes it: on the schedule (an ''N seconds'' job on its own grid, due + a multiple of N), fires missed by now coalesced into the next one after it; NULL for @reboot. An invalid schedule is an error (22023).';

CREATE OR REPLACE FUNCTION automation.job_check_schedule()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.schedule = OLD.schedule AND NEW.timezone IS NOT DISTINCT FROM OLD.timezone
       AND OLD.next_run_at IS NOT NULL THEN
        IF OLD.next_run_at <= pg_catalog.now() THEN
            NEW.next_run_at := automation.next_fire(NEW.schedule, OLD.next_run_at, pg_catalog.now(), NEW.timezone);
            NEW.next_attempt := 1;
        END IF;
        RETURN NEW;
    END IF;
    NEW.next_run_at := automation.next_run(NEW.schedule, pg_catalog.date_trunc('milliseconds', pg_catalog.now()),
                                           NEW.timezone);
    NEW.next_attempt := 1;
    RETURN NEW;
END
$fn$;

-- a schedule trigger's next_fire_at follows its job's grid (automation.next_fire)
CREATE OR REPLACE FUNCTION automation.fire_trigger_as(caller oid, id integer, input jsonb)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    reg automation_triggers.registry;
    def automation_workflows.definitions;
    started uuid;
    why text;
    due timestamptz;
    overlap text;
    busy bigint;
    waiting bigint;
BEGIN
    SELECT * INTO reg FROM automation_triggers.registry r WHERE r.id = fire_trigger_as.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'trigger % does not exist', fire_trigger_as.id
              USING ERRCODE = 'undefined_object', HINT = 'automation_triggers.registry lists the triggers you own.';
    ELSIF NOT automation.role_may_act_as(fire_trigger_as.caller, reg.owner) THEN
        RAISE EXCEPTION 'permission denied for trigger %', fire_trigger_as.id
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'A trigger is fired by its owner (or a role that may SET ROLE to it).';
    ELSIF reg.trigger_type NOT IN ('schedule', 'manual') THEN
        RAISE EXCEPTION 'trigger % is a % trigger; only schedule and manual triggers are fired by hand', fire_trigger_as.id,
                        reg.trigger_type
              USING ERRCODE = 'wrong_object_type';
    ELSIF NOT reg.enabled THEN
        RAISE EXCEPTION 'trigger % is paused%', fire_trigger_as.id, coalesce(': ' || reg.inactive_reason, '')
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'UPDATE automation_triggers.registry SET enabled = true WHERE id = ... resumes it.';
    END IF;
    IF fire_trigger_as.input IS NOT NULL AND jsonb_typeof(fire_trigger_as.input) <> 'object' THEN
        RAISE EXCEPTION 'the input of a trigger must be a JSON object, not %', jsonb_typeof(fire_trigger_as.input)
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO def FROM automation_workflows.definitions d WHERE d.id = reg.workflow_id;
    IF NOT FOUND THEN
        why := 'its workflow no longer exists';
    ELSIF NOT automation.role_may_act_as(reg.owner, def.owner) THEN
        why := format('its owner %s may no longer act as %s, the owner of workflow %s', reg.owner, def.owner, def.name);
    ELSIF NOT automation.role_may_act_as(reg.owner, reg.owner) THEN
        why := format('its owner (role %s) no longer exists', reg.owner::oid);
    END IF;
    IF why IS NOT NULL THEN
        UPDATE automation_triggers.registry r SET enabled = false, inactive_reason = why WHERE r.id = reg.id;
        RAISE WARNING 'trigger % is paused: %', reg.id, why
              USING HINT = 'A trigger starts only a workflow its owner owns (or whose owner it may SET ROLE to).';
        RETURN NULL;
    END IF;
    -- (0.8.0) when the fire was due: a schedule trigger's job run says so
    -- (automation.scheduled_for, set by its worker); a fire by hand is due now
    IF reg.trigger_type = 'schedule' THEN
        due := nullif(current_setting('automation.scheduled_for', true), '')::timestamptz;
    END IF;
    -- (0.8.0) overlap: skip (the default of schedule triggers: no new
    -- execution while one of this trigger's is pending or running), queue
    -- (at most max_queued of them waiting to start), parallel (no limit)
    overlap := coalesce(reg.config->>'overlap', CASE WHEN reg.trigger_type = 'schedule' THEN 'skip' ELSE 'parallel' END);
    IF overlap <> 'parallel' THEN
        SELECT count(*), count(*) FILTER (WHERE e.status = 'pending') INTO busy, waiting
          FROM automation_workflows.workflow_runs w
          JOIN automation_workflows.workflow_executions e ON e.id = w.execution_id AND e.status IN ('pending', 'running')
         WHERE w.trigger_id = reg.id;
        IF (overlap = 'skip' AND busy > 0)
           OR (overlap = 'queue' AND waiting >= coalesce((reg.config->>'max_queued')::integer, 10)) THEN
            UPDATE automation_triggers.registry r
               SET skipped_fires = r.skipped_fires + 1, last_skipped_at = now(),
                   next_fire_at = CASE WHEN r.trigger_type = 'schedule' AND r.enabled
                                       THEN automation.next_fire(r.config->>'cron', coalesce(due, now()), now(), r.config->>'timezone') END
             WHERE r.id = reg.id;
            RAISE NOTICE 'trigger % skipped this fire: % of its executions % (overlap %)', reg.id,
                         CASE WHEN overlap = 'skip' THEN busy ELSE waiting END,
                         CASE WHEN overlap = 'skip' THEN 'are pending or running' ELSE 'wait to start' END, overlap;
            RETURN NULL;
        END IF;
    END IF;
    started := automation.run_workflow_as(reg.owner, def.name,
                                          coalesce(reg.config->'input', '{}') || coalesce(fire_trigger_as.input, '{}')
                                          || jsonb_build_object('trigger', jsonb_build_object(
                                                 'id', reg.id, 'type', reg.trigger_type,
                                                 'scheduled_for', coalesce(due, clock_timestamp()),
                                                 'fired_at', clock_timestamp())),
                                          NULL,
                                          -- a repeated or caught-up fire never starts the same
                                          -- scheduled time twice (while its execution holds the key)
                                          CASE WHEN due IS NOT NULL
                                               THEN format('trigger %s at %s', reg.id,
                                                           to_char(due AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')) END);
    UPDATE automation_workflows.workflow_runs w SET trigger_id = reg.id
     WHERE w.execution_id = started AND w.trigger_id IS NULL;
    UPDATE automation_triggers.registry r
       SET last_fired_at = now(),
           next_fire_at = CASE WHEN r.trigger_type = 'schedule' AND r.enabled
                               THEN automation.next_fire(r.config->>'cron', coalesce(due, now()), now(), r.config->>'timezone') END
     WHERE r.id = reg.id;
    RETURN started;
END
$fn$;

COMMENT ON FUNCTION automation.next_run(text, timestamptz, text) IS
'When a schedule fires next after a time, reading it in timezone (automation.timezone when NULL); NULL for @reboot; for ''N seconds'', N seconds after it (a job''s grid starts when its schedule is set). An invalid schedule is an error (22023) naming the bad field.';

COMMENT ON FUNCTION automation.wake_scheduler() IS
'Ask the launcher to start this database''s scheduler now and have it look at everything (the execution log, the trigger inbox, the SQL steps, runs left in flight) -- after a data-only restore, say; CREATE EXTENSION does. False, with a NOTICE, when automation_ext is not preloaded.';

UPDATE automation.job SET schedule = '5 minutes'
 WHERE jobname = 'automation: collect database metrics' AND schedule = '*/5 * * * *';
UPDATE automation.job SET schedule = '1 minute'
 WHERE jobname = 'automation: time out stale executions' AND schedule = '* * * * *';
UPDATE automation.job SET schedule = '1 minute'
 WHERE jobname = 'automation: refresh pipeline_metrics_hourly' AND schedule = '* * * * *';
UPDATE automation.job SET schedule = '10 minutes'
 WHERE jobname = 'automation: maintain pipeline_metrics partitions' AND schedule = '*/10 * * * *';

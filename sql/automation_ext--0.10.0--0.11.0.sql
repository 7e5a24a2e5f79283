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
--   again.
-- * the COMMENTs of next_run() and wake_scheduler() say what they now do.

CREATE OR REPLACE FUNCTION automation.job_check_schedule()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.schedule = OLD.schedule AND NEW.timezone IS NOT DISTINCT FROM OLD.timezone
       AND OLD.next_run_at > pg_catalog.now() THEN
        RETURN NEW;
    END IF;
    NEW.next_run_at := automation.next_run(NEW.schedule, pg_catalog.date_trunc('milliseconds', pg_catalog.now()),
                                           NEW.timezone);
    NEW.next_attempt := 1;
    RETURN NEW;
END
$fn$;

COMMENT ON FUNCTION automation.next_run(text, timestamptz, text) IS
'When a schedule fires next after a time, reading it in timezone (automation.timezone when NULL); NULL for @reboot; for ''N seconds'', N seconds after it (a job''s grid starts when its schedule is set). An invalid schedule is an error (22023) naming the bad field.';

COMMENT ON FUNCTION automation.wake_scheduler() IS
'Ask the launcher to start this database''s scheduler now and have it look at everything (the execution log, the trigger inbox, the SQL steps, runs left in flight) -- after a data-only restore, say; CREATE EXTENSION does. False, with a NOTICE, when automation_ext is not preloaded.';

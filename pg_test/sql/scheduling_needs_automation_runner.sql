-- Issue 17: a role given only USAGE on the schema (pg_cron's way) got
-- "permission denied for table job" with no word of what it needs. The
-- scheduling functions now say: membership in automation_runner.
CREATE EXTENSION IF NOT EXISTS automation_ext;
CREATE ROLE regress_cron_user;
GRANT USAGE ON SCHEMA automation TO regress_cron_user;
SET ROLE regress_cron_user;
SELECT automation.schedule('nightly', '0 3 * * *', 'SELECT 1');
\set VERBOSITY terse
SELECT automation.schedule('0 3 * * *', 'SELECT 1');
SELECT automation.schedule_in_database('nightly', '0 3 * * *', 'SELECT 1', current_database());
SELECT automation.alter_job(1, active => false);
SELECT automation.unschedule('nightly');
SELECT automation.unschedule(1);
\set VERBOSITY default
RESET ROLE;
-- with the membership it works
GRANT automation_runner TO regress_cron_user;
SET ROLE regress_cron_user;
SELECT automation.schedule('nightly', '0 3 * * *', 'SELECT 1') > 0 AS scheduled;
SELECT automation.unschedule('nightly') AS unscheduled;
RESET ROLE;
REVOKE USAGE ON SCHEMA automation FROM regress_cron_user;
DROP ROLE regress_cron_user;

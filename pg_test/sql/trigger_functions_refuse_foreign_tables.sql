-- Issue 15 (2): any automation_runner member could attach the SECURITY
-- DEFINER function pipeline_metrics_invalidate() to a table of its own and
-- forge rollup invalidations (or reset the watermark with a TRUNCATE). Now
-- nobody but superusers may name the extension's trigger functions in
-- CREATE TRIGGER, and each refuses to run for any table but its own.
CREATE EXTENSION IF NOT EXISTS automation_ext;
SET client_min_messages = warning;
DROP TABLE IF EXISTS public.regress_mine;
DROP ROLE IF EXISTS regress_borrower;
RESET client_min_messages;
CREATE ROLE regress_borrower LOGIN IN ROLE automation_runner;
GRANT CREATE, USAGE ON SCHEMA public TO regress_borrower;

-- the SECURITY DEFINER functions (two), and every one pins its search_path
SELECT p.oid::regprocedure AS security_definer,
       p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'] AS pins_search_path
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname LIKE 'automation%' AND p.prosecdef ORDER BY 1;

\set VERBOSITY terse
SET ROLE regress_borrower;
CREATE TABLE public.regress_mine (time timestamptz);
CREATE TRIGGER borrowed AFTER TRUNCATE ON public.regress_mine
    FOR EACH STATEMENT EXECUTE FUNCTION automation.pipeline_metrics_invalidate();
CREATE TRIGGER borrowed AFTER INSERT ON public.regress_mine
    FOR EACH STATEMENT EXECUTE FUNCTION automation.job_cache_invalidate();
CREATE TRIGGER borrowed BEFORE INSERT ON public.regress_mine
    FOR EACH ROW EXECUTE FUNCTION automation.job_check_target();
CREATE TRIGGER borrowed BEFORE INSERT ON public.regress_mine
    FOR EACH ROW EXECUTE FUNCTION automation.job_check_schedule();
CREATE TRIGGER borrowed BEFORE INSERT ON public.regress_mine
    FOR EACH ROW EXECUTE FUNCTION automation_workflows.definitions_check();
CREATE TRIGGER borrowed AFTER TRUNCATE ON public.regress_mine
    FOR EACH STATEMENT EXECUTE FUNCTION automation_workflows.workflow_runs_forget();
RESET ROLE;

-- even attached by a superuser, they refuse to run for another table
SELECT automation.refresh_pipeline_metrics_hourly() IS NOT NULL AS refreshed;
CREATE TRIGGER borrowed AFTER TRUNCATE ON public.regress_mine
    FOR EACH STATEMENT EXECUTE FUNCTION automation.pipeline_metrics_invalidate();
TRUNCATE public.regress_mine;
DROP TRIGGER borrowed ON public.regress_mine;
CREATE TRIGGER borrowed AFTER INSERT ON public.regress_mine REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION automation.pipeline_metrics_invalidate();
INSERT INTO public.regress_mine VALUES ('2020-01-01 10:00+00');
DROP TRIGGER borrowed ON public.regress_mine;
CREATE TRIGGER borrowed AFTER INSERT ON public.regress_mine
    FOR EACH STATEMENT EXECUTE FUNCTION automation.job_cache_invalidate();
INSERT INTO public.regress_mine VALUES (now());
DROP TRIGGER borrowed ON public.regress_mine;
CREATE TRIGGER borrowed BEFORE INSERT ON public.regress_mine
    FOR EACH ROW EXECUTE FUNCTION automation.job_check_target();
INSERT INTO public.regress_mine VALUES (now());
DROP TRIGGER borrowed ON public.regress_mine;
CREATE TRIGGER borrowed AFTER DELETE ON public.regress_mine
    FOR EACH ROW EXECUTE FUNCTION automation.job_default_removed();
DELETE FROM public.regress_mine;
INSERT INTO public.regress_mine VALUES (now());
DELETE FROM public.regress_mine;
DROP TRIGGER borrowed ON public.regress_mine;
CREATE TRIGGER borrowed BEFORE INSERT ON public.regress_mine
    FOR EACH ROW EXECUTE FUNCTION automation_workflows.definitions_check();
INSERT INTO public.regress_mine VALUES (now());
DROP TRIGGER borrowed ON public.regress_mine;
CREATE TRIGGER borrowed AFTER TRUNCATE ON public.regress_mine
    FOR EACH STATEMENT EXECUTE FUNCTION automation_workflows.workflow_runs_forget();
TRUNCATE public.regress_mine;
\set VERBOSITY default

-- the watermark was not reset and no mark was forged
SELECT watermark IS NOT NULL AS watermark_kept FROM automation.pipeline_metrics_hourly_state;
SELECT count(*) AS forged_marks FROM automation.pipeline_metrics_invalidations WHERE bucket = '2020-01-01 10:00+00';

-- the real triggers still work
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status) VALUES ('2021-03-04 05:06+00', 'p', 's', 'success');
SELECT count(*) AS real_marks FROM automation.pipeline_metrics_invalidations WHERE bucket = '2021-03-04 05:00+00';
DELETE FROM automation.pipeline_metrics WHERE time = '2021-03-04 05:06+00';
SELECT automation.refresh_pipeline_metrics_hourly() IS NOT NULL AS refreshed;

DROP TABLE public.regress_mine;
REVOKE ALL ON SCHEMA public FROM regress_borrower;
DROP ROLE regress_borrower;

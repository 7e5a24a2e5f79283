-- The install script resolves nothing through schemas other users can write
-- (pg_cron PR #192's test, adapted), and refuses a pre-existing "automation"
-- schema owned by someone else.
DROP EXTENSION automation_ext CASCADE;

CREATE TABLE public.canary (hit text);
-- better-typed overloads of functions the script calls, and an operator
CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql
    AS $$ INSERT INTO public.canary VALUES ('lower') RETURNING 'x' $$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql
    AS $$ INSERT INTO public.canary VALUES ('now') RETURNING 'epoch'::timestamptz $$;
CREATE FUNCTION public.gen_random_uuid() RETURNS uuid LANGUAGE sql
    AS $$ INSERT INTO public.canary VALUES ('uuid') RETURNING '00000000-0000-0000-0000-000000000000'::uuid $$;
CREATE FUNCTION public.hostile_eq(varchar, varchar) RETURNS boolean LANGUAGE sql
    AS $$ INSERT INTO public.canary VALUES ('='); SELECT true $$;
CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.hostile_eq);
-- the attacker's search_path is the installing session's
SET search_path = public, pg_catalog;

CREATE EXTENSION automation_ext;
INSERT INTO automation_workflows.workflow_executions (workflow_name, status) VALUES ('Etl', 'running');
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('wf', '{}');
SELECT count(*) AS hostile_calls FROM public.canary;
SELECT id <> '00000000-0000-0000-0000-000000000000' AS real_uuid FROM automation_workflows.workflow_executions;

RESET search_path;
DROP EXTENSION automation_ext CASCADE;
DROP OPERATOR public.= (varchar, varchar);
DROP FUNCTION public.hostile_eq(varchar, varchar), public.lower(varchar), public.now(), public.gen_random_uuid();
DROP TABLE public.canary;

-- a pre-existing schema named automation (here: another role's) is refused
CREATE ROLE automation_regress_squatter;
CREATE SCHEMA automation AUTHORIZATION automation_regress_squatter;
-- (the error's context differs by major: 18 adds the script's statement)
\set SHOW_CONTEXT never
CREATE EXTENSION automation_ext;
\set SHOW_CONTEXT errors
DROP SCHEMA automation;
DROP ROLE automation_regress_squatter;

-- and installation works again afterwards
CREATE EXTENSION automation_ext;
SELECT extversion FROM pg_extension WHERE extname = 'automation_ext';

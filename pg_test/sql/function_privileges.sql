-- Issue 15: what automation_runner and automation_monitor may execute. A new
-- function shows up here (and must be meant for them), internal helpers and
-- trigger functions must not.
CREATE EXTENSION IF NOT EXISTS automation_ext;
SELECT p.oid::regprocedure AS function,
       has_function_privilege('automation_runner', p.oid, 'EXECUTE') AS runner,
       has_function_privilege('automation_monitor', p.oid, 'EXECUTE') AS monitor
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('automation', 'automation_workflows', 'automation_triggers', 'automation_audit')
   AND (has_function_privilege('automation_runner', p.oid, 'EXECUTE')
        OR has_function_privilege('automation_monitor', p.oid, 'EXECUTE'))
 ORDER BY p.oid::regprocedure::text;
-- and no trigger function is executable by PUBLIC, except the two meant to
-- be attached to users' tables (auditing, completion NOTIFY)
SELECT p.oid::regprocedure AS public_trigger_function
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname LIKE 'automation%' AND p.prorettype = 'trigger'::regtype
   AND has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY p.oid::regprocedure::text;

-- The console's newest-first lists of executions (console/src/pages.rs)
-- are read through an index, every page of them, whatever the filter:
-- since 0.14.0 these indexes are ascending and read backwards (an
-- ascending index of a growing column stays compact; a descending one was
-- 1.7 times the size). The queries as the console sends them, with the
-- values it binds written in (its driver's first plans are planned for
-- the values, as here).
SET client_min_messages = warning;
INSERT INTO automation_workflows.workflow_executions (workflow_name, status, started_at, completed_at, error_details)
SELECT 'ci-' || (n % 5), CASE WHEN n % 10 = 0 THEN 'error' ELSE 'success' END,
       timestamptz '2026-01-01' + n * interval '1 second', timestamptz '2026-01-01' + n * interval '1 second',
       CASE WHEN n % 10 = 0 THEN '{"message": "it broke"}'::jsonb END
  FROM generate_series(1, 20000) n;
ANALYZE automation_workflows.workflow_executions;
-- the executions page: no filter, then the next page (keyset)
EXPLAIN (COSTS OFF)
SELECT e.id, e.workflow_name, e.status, e.started_at
  FROM automation_workflows.workflow_executions e
 WHERE e.started_at IS NOT NULL
   AND (NULL::text[] IS NULL OR e.status = ANY (NULL::text[]))
   AND (NULL::text IS NULL OR e.workflow_name = NULL::text)
   AND (NULL::text IS NULL OR e.started_at > now() - NULL::text::interval)
   AND (NULL::text IS NULL OR (e.started_at, e.id) < (NULL::text::timestamptz, NULL::uuid))
 ORDER BY e.started_at DESC, e.id DESC
 LIMIT 50;
EXPLAIN (COSTS OFF)
SELECT e.id, e.workflow_name, e.status, e.started_at
  FROM automation_workflows.workflow_executions e
 WHERE e.started_at IS NOT NULL
   AND (NULL::text[] IS NULL OR e.status = ANY (NULL::text[]))
   AND (NULL::text IS NULL OR e.workflow_name = NULL::text)
   AND (NULL::text IS NULL OR e.started_at > now() - NULL::text::interval)
   AND ('2026-01-01 03:00:00+00'::text IS NULL
        OR (e.started_at, e.id) < ('2026-01-01 03:00:00+00'::timestamptz, '00000000-0000-0000-0000-000000000000'::uuid))
 ORDER BY e.started_at DESC, e.id DESC
 LIMIT 50;
-- the failed ones ("failed": error and timeout)
EXPLAIN (COSTS OFF)
SELECT e.id, e.workflow_name, e.status, e.started_at
  FROM automation_workflows.workflow_executions e
 WHERE e.started_at IS NOT NULL
   AND ('{error,timeout}'::text[] IS NULL OR e.status = ANY ('{error,timeout}'::text[]))
   AND (NULL::text IS NULL OR e.workflow_name = NULL::text)
   AND (NULL::text IS NULL OR e.started_at > now() - NULL::text::interval)
   AND (NULL::text IS NULL OR (e.started_at, e.id) < (NULL::text::timestamptz, NULL::uuid))
 ORDER BY e.started_at DESC, e.id DESC
 LIMIT 50;
-- one workflow's, on the executions page and on the workflow's own page
EXPLAIN (COSTS OFF)
SELECT e.id, e.workflow_name, e.status, e.started_at
  FROM automation_workflows.workflow_executions e
 WHERE e.started_at IS NOT NULL
   AND (NULL::text[] IS NULL OR e.status = ANY (NULL::text[]))
   AND ('ci-3'::text IS NULL OR e.workflow_name = 'ci-3'::text)
   AND (NULL::text IS NULL OR e.started_at > now() - NULL::text::interval)
   AND (NULL::text IS NULL OR (e.started_at, e.id) < (NULL::text::timestamptz, NULL::uuid))
 ORDER BY e.started_at DESC, e.id DESC
 LIMIT 50;
EXPLAIN (COSTS OFF)
SELECT e.id, e.status, e.started_at, e.completed_at
  FROM automation_workflows.workflow_executions e
 WHERE e.workflow_name = 'ci-3' AND e.started_at IS NOT NULL
 ORDER BY e.started_at DESC, e.id DESC LIMIT 20;
-- and the rows are the newest, in order
SELECT e.workflow_name, e.status, e.started_at
  FROM automation_workflows.workflow_executions e
 WHERE e.workflow_name = 'ci-0' AND e.started_at IS NOT NULL
 ORDER BY e.started_at DESC, e.id DESC LIMIT 3;
DELETE FROM automation_workflows.workflow_executions WHERE workflow_name LIKE 'ci-_';
DELETE FROM automation.execution_stats WHERE workflow_name LIKE 'ci-_';
RESET client_min_messages;

-- automation.pipeline_success_rate: the seed's semantics, natively.
CREATE EXTENSION IF NOT EXISTS automation_ext;

-- every row counts toward the total (NULL statuses too); 'success' is exact
SELECT automation.pipeline_success_rate(s) AS mixed
  FROM (VALUES ('success'), ('error'), (NULL), ('success')) v(s);
SELECT automation.pipeline_success_rate(s) AS case_sensitive
  FROM (VALUES ('success'), ('Success'), ('SUCCESS'), ('success ')) v(s);
SELECT automation.pipeline_success_rate(s) AS all_null
  FROM (VALUES (NULL::text), (NULL)) v(s);
SELECT automation.pipeline_success_rate(s) AS one_row FROM (VALUES ('success')) v(s);
SELECT automation.pipeline_success_rate(s) AS none_ok FROM (VALUES ('error'), ('timeout')) v(s);
SELECT automation.pipeline_success_rate(s) AS thirds
  FROM (VALUES ('success'), ('error'), ('error')) v(s);
-- an empty group is NULL
SELECT automation.pipeline_success_rate(s) IS NULL AS empty_is_null
  FROM (VALUES ('success')) v(s) WHERE false;
-- varchar and text inputs, and the result type
SELECT pg_typeof(automation.pipeline_success_rate('success'::varchar)) AS from_varchar,
       pg_typeof(automation.pipeline_success_rate('success'::text)) AS from_text;
-- a long (toasted, compressed) status is read correctly
SELECT automation.pipeline_success_rate(s) AS long_values
  FROM (VALUES (repeat('success', 10000)), ('success')) v(s);

-- the seed's PL/pgSQL aggregate, as the reference
CREATE FUNCTION public.success_rate_accum(state NUMERIC[], status VARCHAR) RETURNS NUMERIC[] AS $$
BEGIN
    state[1] := COALESCE(state[1], 0) + 1;
    state[2] := COALESCE(state[2], 0) + CASE WHEN status = 'success' THEN 1 ELSE 0 END;
    RETURN state;
END;
$$ LANGUAGE plpgsql;
CREATE FUNCTION public.success_rate_final(state NUMERIC[]) RETURNS NUMERIC AS $$
BEGIN
    RETURN ROUND((state[2] / NULLIF(state[1], 0) * 100)::NUMERIC, 2);
END;
$$ LANGUAGE plpgsql;
CREATE AGGREGATE public.seed_success_rate(VARCHAR) (
    SFUNC = public.success_rate_accum, STYPE = NUMERIC[],
    FINALFUNC = public.success_rate_final, INITCOND = '{0,0}');

-- random data: 200 pipelines of 1 to 400 rows, statuses including NULL
SELECT setseed(0.42);
CREATE TABLE public.runs AS
SELECT p AS pipeline, n,
       (ARRAY['success', 'success', 'success', 'error', 'warning', NULL, 'Success'])[1 + floor(random() * 7)::int]::varchar AS status
  FROM generate_series(1, 200) p, generate_series(1, 1 + (p * 7919) % 400) n;
ANALYZE public.runs;

-- identical to the seed's aggregate and to the built-in expression, per group
SELECT count(*) AS groups,
       count(*) FILTER (WHERE native IS DISTINCT FROM seed) AS differ_from_seed,
       count(*) FILTER (WHERE native IS DISTINCT FROM builtin) AS differ_from_builtin
  FROM (SELECT pipeline,
               automation.pipeline_success_rate(status) AS native,
               public.seed_success_rate(status) AS seed,
               round(100.0 * count(*) FILTER (WHERE status = 'success') / nullif(count(*), 0), 2) AS builtin
          FROM public.runs GROUP BY pipeline) g;

-- with FILTER, and a group that the filter empties
SELECT pipeline, automation.pipeline_success_rate(status) FILTER (WHERE n <= 4) AS first_four,
       automation.pipeline_success_rate(status) FILTER (WHERE n < 0) AS none
  FROM public.runs WHERE pipeline IN (1, 2) GROUP BY pipeline ORDER BY pipeline;

-- a parallel plan: Partial Aggregate -> Gather -> Finalize, same result as serial
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
EXPLAIN (COSTS OFF) SELECT automation.pipeline_success_rate(status) FROM public.runs;
EXPLAIN (COSTS OFF)
SELECT pipeline, automation.pipeline_success_rate(status) FROM public.runs GROUP BY pipeline;
CREATE TEMP TABLE parallel_result AS
SELECT pipeline, automation.pipeline_success_rate(status) AS rate FROM public.runs GROUP BY pipeline;
SELECT automation.pipeline_success_rate(status) AS parallel_total FROM public.runs;
RESET max_parallel_workers_per_gather;
SET max_parallel_workers_per_gather = 0;
SELECT automation.pipeline_success_rate(status) AS serial_total FROM public.runs;
SELECT count(*) AS groups_differing_parallel_vs_serial
  FROM parallel_result p
  JOIN (SELECT pipeline, automation.pipeline_success_rate(status) AS rate FROM public.runs GROUP BY pipeline) s
 USING (pipeline)
 WHERE p.rate IS DISTINCT FROM s.rate;
RESET max_parallel_workers_per_gather;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;

-- window frames: the sliding frame (inverse transition) equals recomputing each frame
SELECT count(*) AS frames, count(*) FILTER (WHERE slid IS DISTINCT FROM recomputed) AS differ
  FROM (SELECT r.pipeline, r.n,
               automation.pipeline_success_rate(r.status)
                   OVER (PARTITION BY r.pipeline ORDER BY r.n ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS slid,
               (SELECT automation.pipeline_success_rate(x.status) FROM public.runs x
                 WHERE x.pipeline = r.pipeline AND x.n BETWEEN r.n - 9 AND r.n) AS recomputed
          FROM public.runs r WHERE r.pipeline <= 20) w;
-- frames that start empty or shrink to nothing give NULL
SELECT n, automation.pipeline_success_rate(s) OVER (ORDER BY n ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS last_two,
       automation.pipeline_success_rate(s) OVER (ORDER BY n ROWS BETWEEN 1 FOLLOWING AND 1 FOLLOWING) AS next_one
  FROM (VALUES (1, 'success'), (2, 'error'), (3, NULL), (4, 'success')) v(n, s) ORDER BY n;

-- the aggregates and every support function are PARALLEL SAFE and have the
-- signatures PostgreSQL requires (deserialize: (bytea, internal) -> internal)
SELECT p.oid::regprocedure AS function, p.proparallel, p.proisstrict, p.prorettype::regtype AS returns
  FROM pg_proc p
 WHERE p.pronamespace = 'automation'::regnamespace
   AND (p.proname LIKE 'success\_rate\_%' OR p.proname = 'pipeline_success_rate')
 ORDER BY p.oid::regprocedure::text;
SELECT a.aggfnoid::regprocedure AS aggregate, a.aggcombinefn, a.aggserialfn, a.aggdeserialfn,
       a.aggmtransfn, a.aggminvtransfn
  FROM pg_aggregate a WHERE a.aggfnoid::regproc::text = 'automation.pipeline_success_rate'
 ORDER BY a.aggfnoid::regprocedure::text;

DROP TABLE public.runs;
DROP AGGREGATE public.seed_success_rate(VARCHAR);
DROP FUNCTION public.success_rate_accum(NUMERIC[], VARCHAR), public.success_rate_final(NUMERIC[]);

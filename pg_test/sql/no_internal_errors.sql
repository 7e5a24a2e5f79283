-- Issue 15 (5): no input reachable from SQL may produce an internal error
-- (SQLSTATE class XX) or crash the server. Every function and procedure of
-- the extension is called with NULLs, empty strings, infinities, extreme
-- numbers and intervals and a 1 MB string; each call runs in a
-- subtransaction that is rolled back, and every error's SQLSTATE is kept.
CREATE EXTENSION IF NOT EXISTS automation_ext;
SET client_min_messages = error;
CREATE TEMP TABLE fuzz_values (type regtype, k int, v text);
INSERT INTO fuzz_values
SELECT t::regtype, k - 1, v
  FROM (VALUES
    ('text', ARRAY['', repeat('x', 1048576), 'automation', '* * * * *', 'public', E'a\\b"c''d;', '@reboot']),
    ('character varying', ARRAY['', repeat('é', 524288), 'success', 'error']),
    ('name', ARRAY['', 'automation', 'postgres']),
    ('timestamp with time zone', ARRAY['infinity', '-infinity', '4714-11-24 00:00:00+00 BC', '294276-12-31 23:59:59+00', '2026-11-25 12:00+00']),
    ('timestamp without time zone', ARRAY['infinity', '-infinity', '4714-11-24 00:00:00 BC', '294276-12-31 23:59:59']),
    ('interval', ARRAY['-1 hour', '0', '178000000 years', '-178000000 years', '1 month 1 day', '2147483647 days 2562047788 hours', '1 microsecond']),
    ('integer', ARRAY['-1', '0', '2147483647', '-2147483648', '1']),
    ('bigint', ARRAY['-1', '0', '9223372036854775807', '-9223372036854775808', '1']),
    ('smallint', ARRAY['-1', '0', '32767', '-32768']),
    ('numeric', ARRAY['NaN', '-1e100', '1e100', '0', '-0.5']),
    ('double precision', ARRAY['NaN', 'Infinity', '-Infinity', '-1', '0', '1e308']),
    ('boolean', ARRAY['true', 'false']),
    ('jsonb', ARRAY['{}', '[]', 'null', '"str"', '{"steps": [{"name": "a"}]}', '{"a": ' || repeat('[', 1000) || repeat(']', 1000) || '}']),
    ('json', ARRAY['{}', '[]', 'null']),
    ('uuid', ARRAY['00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff']),
    ('uuid[]', ARRAY['{}', '{NULL}', '{00000000-0000-0000-0000-000000000000,NULL}']),
    ('text[]', ARRAY['{}', '{NULL}', '{"",x}']),
    ('regclass', ARRAY['pg_class', 'automation.job', 'automation.pipeline_metrics', 'automation_workflows.workflow_executions']),
    ('oid', ARRAY['0', '4294967295'])
  ) AS t(t, vs), unnest(vs) WITH ORDINALITY AS u(v, k);

CREATE TEMP TABLE fuzz_results (fn text, call int, sqlstate text, message text);

DO $fuzz$
DECLARE
    f record;
    call int;
    args text[];
    t regtype;
    i int;
    n_values int;
    v text;
    sql text;
BEGIN
    FOR f IN
        SELECT p.oid, p.oid::regprocedure::text AS name, p.prokind,
               (SELECT array_agg(a.t::regtype ORDER BY a.i) FROM unnest(p.proargtypes) WITH ORDINALITY a(t, i)) AS types
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname IN ('automation', 'automation_workflows', 'automation_triggers', 'automation_audit')
           AND p.prorettype <> 'trigger'::regtype
           AND NOT 'internal'::regtype = ANY (p.proargtypes::oid[])   -- aggregate support: not callable from SQL
           AND p.oid::regprocedure::text NOT IN ('automation.start_index_maintenance()', 'automation.wake_scheduler()')
         ORDER BY 2
    LOOP
        n_values := coalesce((SELECT max(k) FROM fuzz_values WHERE type = ANY (f.types)), 0) + 1;
        FOR call IN -1 .. n_values - 1 LOOP
            args := '{}';
            FOR i IN 1 .. coalesce(array_length(f.types, 1), 0) LOOP
                t := f.types[i];
                IF call < 0 THEN
                    v := NULL;   -- call -1: every argument NULL
                ELSE
                    SELECT fv.v INTO v FROM fuzz_values fv
                     WHERE fv.type = t
                       AND fv.k = (call + i) % (SELECT count(*) FROM fuzz_values x WHERE x.type = t);
                    IF NOT FOUND THEN
                        v := NULL;
                    END IF;
                END IF;
                args := args || (quote_nullable(v) || '::' || format_type(t, NULL));
            END LOOP;
            sql := CASE
                WHEN f.prokind = 'p' THEN format('CALL %s(%s)', f.oid::regproc, array_to_string(args, ', '))
                WHEN f.prokind = 'a' THEN format('SELECT %s(x) FROM (VALUES (%s)) v(x)', f.oid::regproc, args[1])
                ELSE format('SELECT count(*) FROM (SELECT %s(%s)) r', f.oid::regproc, array_to_string(args, ', '))
            END;
            BEGIN
                EXECUTE sql;
                RAISE EXCEPTION 'fuzz: rolled back';
            EXCEPTION WHEN OTHERS THEN
                IF SQLERRM <> 'fuzz: rolled back' THEN
                    INSERT INTO fuzz_results VALUES (f.name, call, SQLSTATE, left(SQLERRM, 200));
                ELSE
                    INSERT INTO fuzz_results VALUES (f.name, call, NULL, NULL);
                END IF;
            END;
        END LOOP;
    END LOOP;
END
$fuzz$;
RESET client_min_messages;

-- many functions, many calls, many of them refused: the test does test
SELECT count(DISTINCT fn) > 55 AS functions_called, count(*) > 300 AS calls,
       count(*) FILTER (WHERE sqlstate IS NOT NULL) > 100 AS refused_calls
  FROM fuzz_results;
-- and not one internal error
SELECT fn, call, sqlstate, message FROM fuzz_results WHERE sqlstate LIKE 'XX%' ORDER BY 1, 2;

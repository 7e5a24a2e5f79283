-- Issue 15 (4, 5): time_bucket('1 month', '2026-11-02 12:00+00') gave
-- 2026-10-03 (months counted from the default origin's day, the 3rd), and
-- infinities gave garbage or internal errors.
CREATE EXTENSION IF NOT EXISTS automation_ext;
SET timezone = 'UTC';
SELECT automation.time_bucket('1 month', '2026-11-02 12:00+00'::timestamptz) AS month,
       automation.time_bucket('1 year', '2026-01-02'::timestamp) AS year,
       automation.time_bucket('3 months', '2026-11-02 12:00+00'::timestamptz) AS quarter,
       automation.time_bucket('1 week', '2026-11-25 12:00+00'::timestamptz) AS week_starts_monday;

-- month, quarter and year widths agree with date_trunc over four centuries
-- (every 7 days and 5 hours, in UTC and for timestamp without time zone)
SELECT count(*) AS instants,
       count(*) FILTER (WHERE automation.time_bucket('1 month', t) <> date_trunc('month', t, 'UTC')) AS month_wrong,
       count(*) FILTER (WHERE automation.time_bucket('3 months', t) <> date_trunc('quarter', t, 'UTC')) AS quarter_wrong,
       count(*) FILTER (WHERE automation.time_bucket('1 year', t) <> date_trunc('year', t, 'UTC')) AS year_wrong,
       count(*) FILTER (WHERE automation.time_bucket('1 month', t::timestamp) <> date_trunc('month', t::timestamp)) AS ts_month_wrong,
       count(*) FILTER (WHERE automation.time_bucket('1 year', t::timestamp) <> date_trunc('year', t::timestamp)) AS ts_year_wrong
  FROM generate_series('1850-01-01'::timestamptz, '2250-01-01', interval '7 days 5 hours') t;

-- fixed widths with odd origins against exact arithmetic on microseconds
-- (extract(epoch ...) is numeric: no rounding), and against date_bin where
-- the instant is not before the origin (date_bin of PostgreSQL 16.2, the
-- build tested for 16, puts an instant before the origin that falls on a
-- bucket's start into the bucket before: 1970-01-01 00:00 in hourly buckets
-- from 1999-12-29 gives 1969-12-31 23:00; Debian's 15.20 and 18.6 do not)
WITH cases AS (
    SELECT w, o, t, extract(epoch FROM w) AS ew, extract(epoch FROM o) AS eo, extract(epoch FROM t) AS et
      FROM unnest(ARRAY[interval '1 hour', '7 minutes 3 seconds', '3 days 5 microseconds', '999999 microseconds']) w,
           unnest(ARRAY['2000-01-01 07:00:13.000001+00', '1999-12-29 00:00:00+00', '1987-06-05 04:03+00']::timestamptz[]) o,
           unnest(ARRAY['2026-11-25 13:59+00', '1970-01-01 00:00+00', '1999-12-31 23:59:59.999999+00', '1600-02-29 12:00+00']::timestamptz[]) t
)
SELECT count(*) AS cases,
       count(*) FILTER (WHERE extract(epoch FROM automation.time_bucket(w, t, o))
                              IS DISTINCT FROM eo + floor((et - eo) / ew) * ew) AS wrong,
       count(*) FILTER (WHERE t >= o AND automation.time_bucket(w, t, o) IS DISTINCT FROM date_bin(w, t, o)) AS differs_from_date_bin
  FROM cases;

-- infinities as date_bin: an infinite ts comes back, an infinite origin is 22008
\set VERBOSITY terse
SELECT automation.time_bucket('1 hour', 'infinity'::timestamptz) AS pos,
       automation.time_bucket('1 hour', '-infinity'::timestamptz) AS neg,
       date_bin('1 hour', 'infinity'::timestamptz, '2000-01-01') AS date_bin_pos,
       automation.time_bucket('1 month', 'infinity'::timestamp) AS ts_pos;
SELECT automation.time_bucket('1 hour', now(), 'infinity');
SELECT automation.time_bucket('1 hour', now()::timestamp, '-infinity');
-- out of range is 22008, not an internal error
SELECT automation.time_bucket('1 month', '4714-11-24 00:00:00+00 BC'::timestamptz, '2000-01-15');
SELECT automation.time_bucket('100000000 years', '1999-01-01'::timestamptz);
SELECT automation.time_bucket('2147483647 days', '1999-01-01'::timestamptz);
SELECT automation.time_bucket('0', now());
SELECT automation.time_bucket('1 month 1 day', now());
-- NULLs give NULL
SELECT automation.time_bucket(NULL, now()) IS NULL AS a, automation.time_bucket('1 hour', NULL::timestamptz) IS NULL AS b,
       automation.time_bucket('1 hour', '2026-11-25 13:30+00'::timestamptz, NULL) AS c;
-- next_run refuses infinities instead of an internal error or a silent NULL
SELECT automation.next_run('* * * * *', '-infinity');
SELECT automation.next_run('* * * * *', 'infinity');
SELECT automation.next_run('* * * * *', '294270-01-01');
SELECT automation.next_run('0 0 1 1 *', '2026-11-25 13:30+00', 'UTC');
\set VERBOSITY default

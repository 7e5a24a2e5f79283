#!/usr/bin/env bash
# Benchmark for issue "native pipeline_success_rate aggregate":
# GROUP BY pipeline_name over N rows (default 2,000,000) of
# automation.pipeline_metrics with 50 pipelines, timing
#   native   automation.pipeline_success_rate(status)
#   seed     the seed's PL/pgSQL aggregate (NUMERIC[] state)
#   builtin  round(100.0 * count(*) FILTER (WHERE status = 'success') / nullif(count(*), 0), 2)
# single-threaded (max_parallel_workers_per_gather = 0), and the native one
# again with 2 parallel workers. Queries are interleaved; medians of R rounds.
#
# Needs the cluster scripts/setup.sh prepared. Usage: bash bench/success_rate.sh [rows] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROWS=${1:-2000000}
ROUNDS=${2:-5}
DB=automation_bench

recreate_database "$DB"
psql_admin -d "$DB" -q <<SQL
SET client_min_messages = warning;
CREATE EXTENSION automation_ext;
-- the seed's aggregate, verbatim
CREATE OR REPLACE FUNCTION public.success_rate_accum(state NUMERIC[], status VARCHAR) RETURNS NUMERIC[] AS \$\$
BEGIN
    state[1] := COALESCE(state[1], 0) + 1;
    state[2] := COALESCE(state[2], 0) + CASE WHEN status = 'success' THEN 1 ELSE 0 END;
    RETURN state;
END;
\$\$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION public.success_rate_final(state NUMERIC[]) RETURNS NUMERIC AS \$\$
BEGIN
    RETURN ROUND((state[2] / NULLIF(state[1], 0) * 100)::NUMERIC, 2);
END;
\$\$ LANGUAGE plpgsql;
CREATE AGGREGATE public.pipeline_success_rate(VARCHAR) (
    SFUNC = public.success_rate_accum, STYPE = NUMERIC[],
    FINALFUNC = public.success_rate_final, INITCOND = '{0,0}');

SELECT setseed(0.5);
INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, duration_ms, records_processed, status)
SELECT now() - i * interval '1 second', 'pipeline-' || (i % 50), 'load', (random() * 5000)::int,
       (random() * 10000)::int,
       CASE WHEN random() < 0.85 THEN 'success' WHEN random() < 0.7 THEN 'error' ELSE 'warning' END
  FROM generate_series(1, $ROWS) i;
VACUUM ANALYZE automation.pipeline_metrics;
SQL

declare -A QUERY=(
  [native]="SELECT pipeline_name, automation.pipeline_success_rate(status) FROM automation.pipeline_metrics GROUP BY pipeline_name"
  [seed]="SELECT pipeline_name, public.pipeline_success_rate(status) FROM automation.pipeline_metrics GROUP BY pipeline_name"
  [builtin]="SELECT pipeline_name, round(100.0 * count(*) FILTER (WHERE status = 'success') / nullif(count(*), 0), 2) FROM automation.pipeline_metrics GROUP BY pipeline_name"
)

run() { # workers query -> ms
    psql_admin -d "$DB" -At <<SQL | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
SET max_parallel_workers_per_gather = $1;
\\o /dev/null
\\timing on
$2;
SQL
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# results must agree before timing means anything
diffs=$(psql_admin -d "$DB" -Atc "SELECT count(*) FROM (${QUERY[native]}) n FULL JOIN (${QUERY[seed]}) s USING (pipeline_name)
        FULL JOIN (${QUERY[builtin]}) b USING (pipeline_name)
        WHERE n.pipeline_success_rate IS DISTINCT FROM s.pipeline_success_rate OR n.pipeline_success_rate IS DISTINCT FROM b.round")
[ "$diffs" = 0 ] || die "native, seed and built-in results differ in $diffs groups"
run 0 "${QUERY[builtin]}" >/dev/null  # warm the cache

declare -A samples
for round in $(seq 1 "$ROUNDS"); do
    for v in native seed builtin; do
        ms=$(run 0 "${QUERY[$v]}"); samples[$v]+="$ms "
        printf 'round %d  %-16s %9.1f ms\n' "$round" "$v" "$ms" >&2
    done
    ms=$(run 2 "${QUERY[native]}"); samples[parallel]+="$ms "
    printf 'round %d  %-16s %9.1f ms\n' "$round" "native, 2 workers" "$ms" >&2
done
med() { echo "${samples[$1]}" | tr ' ' '\n' | grep . | median; }
n=$(med native); s=$(med seed); b=$(med builtin); p=$(med parallel)
plan=$(psql_admin -d "$DB" -Atc "SET max_parallel_workers_per_gather = 2; EXPLAIN (COSTS OFF) ${QUERY[native]}" | grep -c "Partial" || true)
echo
echo "GROUP BY 50 pipelines over $ROWS rows, median of $ROUNDS rounds (results checked equal):"
awk -v n="$n" -v s="$s" -v b="$b" -v p="$p" 'BEGIN {
    printf "  native,  single-threaded   %9.1f ms\n", n
    printf "  seed PL/pgSQL aggregate    %9.1f ms   native/seed    = %.3f (goal <= 0.5)\n", s, n / s
    printf "  built-in count FILTER      %9.1f ms   native/builtin = %.3f (goal <= 1.15)\n", b, n / b
    printf "  native, 2 parallel workers %9.1f ms   parallel/single = %.3f (goal < 1)\n", p, p / n
}'
echo "  parallel plan has Partial Aggregate: $([ "$plan" -gt 0 ] && echo yes || echo NO)"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), PostgreSQL $(psql_admin -Atc 'SHOW server_version')"
psql_admin -qc "DROP DATABASE $DB" >/dev/null

#!/usr/bin/env bash
# Benchmark for issue "pipeline metrics as time series":
#   ingest   COPY 1,000,000 metric rows into automation.metrics_staging and
#            flush_metrics_staging() (validating every row), side by side with
#            the seed's pattern (the same COPY, then a plain
#            INSERT INTO pipeline_metrics SELECT ... FROM staging) and with COPY
#            straight into pipeline_metrics;
#   refresh  pipeline_metrics holding 10,000,000 rows over 90 days: a full
#            recomputation of the hourly rollup, against the incremental
#            refresh after 10,000 new rows in the last three hours, and after
#            10,000 of which 100 are late, scattered over the past 89 days
#            (each late row makes one more old hour to recompute).
# Goals (issue): ingest >= 200,000 rows/s; incremental refresh <= 5% of full.
#
# Needs the cluster scripts/setup.sh prepared. About 5 minutes.
# Usage: bash bench/timeseries.sh [ingest rows] [table rows]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
INGEST=${1:-1000000}
TABLE=${2:-10000000}
DB=automation_bench_ts
recreate_database "$DB"
q() { psql_admin -d "$DB" -qAt -c "$1"; }
# seconds a statement takes, measured by the server
timed() { psql_admin -d "$DB" -qAt -c "\\timing on" -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1; }
q "SET client_min_messages = warning; CREATE EXTENSION automation_ext"
q "UPDATE automation.job SET active = false"   # no scheduled work during the benchmark
q "SELECT count(*) FROM automation.maintain_metrics_partitions()" >/dev/null

file=$(mktemp /tmp/automation_ext-metrics.XXXXXX.tsv)
chown postgres:postgres "$file"
q "COPY (SELECT now() - random() * interval '2 hours', 'pipeline-' || (n % 20), 'stage-' || (n % 5),
               (random() * 5000)::int, (random() * 10000)::int,
               (ARRAY['success', 'success', 'success', 'error', 'warning'])[1 + n % 5]
          FROM generate_series(1, $INGEST) n) TO '$file'"
cols="(time, pipeline_name, stage, duration_ms, records_processed, status)"

log "ingest: $INGEST rows, three ways"
copy_ms=$(timed "COPY automation.metrics_staging $cols FROM '$file'")
flush_ms=$(timed "SELECT automation.flush_metrics_staging()")
q "TRUNCATE automation.pipeline_metrics"
seed_copy_ms=$(timed "COPY automation.metrics_staging $cols FROM '$file'")
seed_insert_ms=$(timed "WITH t AS (DELETE FROM automation.metrics_staging RETURNING *)
                        INSERT INTO automation.pipeline_metrics $cols
                        SELECT time, pipeline_name, stage, duration_ms, records_processed, status FROM t")
q "TRUNCATE automation.pipeline_metrics"
direct_ms=$(timed "COPY automation.pipeline_metrics $cols FROM '$file'")
rm -f "$file"
q "TRUNCATE automation.pipeline_metrics"

log "refresh: loading $TABLE rows over 90 days"
q "SET automation.metrics_retention = '120 days'"
q "INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, duration_ms, records_processed, status)
   SELECT date_trunc('hour', now()) - interval '90 days' + (n::float8 / $TABLE) * interval '90 days',
          'pipeline-' || (n % 20), 'stage-' || (n % 5), (random() * 5000)::int, (random() * 10000)::int,
          (ARRAY['success', 'success', 'success', 'error', 'warning'])[1 + n % 5]
     FROM generate_series(1, $TABLE) n"
q "VACUUM ANALYZE automation.pipeline_metrics"
full=()
for _ in 1 2; do
    full+=("$(q "SELECT duration_ms FROM automation.refresh_pipeline_metrics_hourly(true)")")
done
incremental=()
late=()
for round in 1 2 3; do
    # 10,000 new rows in the last three hours
    q "INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, duration_ms, records_processed, status)
       SELECT date_trunc('hour', now()) - random() * interval '3 hours',
              'pipeline-' || (n % 20), 'stage-' || (n % 5), 10, 10, 'success'
         FROM generate_series(1, 10000) n"
    incremental+=("$(q "SELECT duration_ms || ' ms (' || buckets || ' hours)' FROM automation.refresh_pipeline_metrics_hourly()")")
    # the same, with 100 of them late, scattered over the past 89 days
    q "INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, duration_ms, records_processed, status)
       SELECT CASE WHEN n <= 100 THEN now() - random() * interval '89 days'
                   ELSE date_trunc('hour', now()) - random() * interval '3 hours' END,
              'pipeline-' || (n % 20), 'stage-' || (n % 5), 10, 10, 'success'
         FROM generate_series(1, 10000) n"
    late+=("$(q "SELECT duration_ms || ' ms (' || buckets || ' hours)' FROM automation.refresh_pipeline_metrics_hourly()")")
done
rows=$(q "SELECT count(*) FROM automation.pipeline_metrics")
hourly=$(q "SELECT count(*) FROM automation.pipeline_metrics_hourly")
best_full=$(printf '%s\n' "${full[@]}" | sort -n | head -1)

rate() { awk -v n="$INGEST" -v a="$1" -v b="${2:-0}" 'BEGIN { printf "%.0f rows/s", n / ((a + b) / 1000) }'; }
echo
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), PostgreSQL $(psql_admin -Atc 'SHOW server_version')"
printf 'ingest %s rows: COPY to staging %.0f ms + flush (validated) %.0f ms = %s\n' "$INGEST" "$copy_ms" "$flush_ms" "$(rate "$copy_ms" "$flush_ms")"
printf '  seed pattern: COPY to staging %.0f ms + plain INSERT ... SELECT %.0f ms = %s\n' "$seed_copy_ms" "$seed_insert_ms" "$(rate "$seed_copy_ms" "$seed_insert_ms")"
printf '  COPY straight into pipeline_metrics: %.0f ms = %s\n' "$direct_ms" "$(rate "$direct_ms")"
echo "refresh over $rows rows ($hourly hourly rows):"
echo "  full recomputation: ${full[*]} ms"
echo "  incremental after 10,000 new rows (last 3 hours): ${incremental[*]}"
echo "  incremental after 10,000 new rows, 100 of them late: ${late[*]}"
awk -v f="$best_full" -v i="$(echo "${incremental[2]}" | cut -d' ' -f1)" -v l="$(echo "${late[2]}" | cut -d' ' -f1)" \
    'BEGIN { printf "  incremental / full: %.2f%% (recent rows), %.2f%% (with late rows)\n", 100 * i / f, 100 * l / f }'

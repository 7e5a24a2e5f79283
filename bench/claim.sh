#!/usr/bin/env bash
# Benchmark for issue "workflow runtime": claim-and-complete throughput with
# pgbench, 8 clients, batch 1 and batch 100, as workers do it: one
# transaction claims, a second completes. Side by side:
#   runtime  automation.claim_executions + automation.complete_executions
#   bare     the same two steps as plain SQL (UPDATE ... FOR UPDATE SKIP LOCKED,
#            then UPDATE ... WHERE id = ANY(...)), on the same table
# After each run, checks that no execution was claimed twice.
# (pgbench substitutes :ids textually, also inside quotes.)
#
# Needs the cluster scripts/setup.sh prepared. Usage: bash bench/claim.sh [clients]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
CLIENTS=${1:-8}
DB=automation_bench
PGBENCH=$PG_BIN/pgbench
work=$(mktemp -d /tmp/automation_ext-bench.XXXXXX)
chmod 755 "$work"
recreate_database "$DB"
psql_admin -d "$DB" -qc "SET client_min_messages = warning; CREATE EXTENSION automation_ext"

cat >"$work/runtime.sql" <<'SQL'
SELECT coalesce(array_agg(id), '{}') AS ids FROM automation.claim_executions('bench', 'w' || :client_id, :batch)
\gset
SELECT automation.complete_executions(':ids'::uuid[], NULL, 'w' || :client_id);
SQL
cat >"$work/bare.sql" <<'SQL'
WITH due AS (
    SELECT id FROM automation_workflows.workflow_executions
     WHERE workflow_name = 'bench' AND status = 'pending' AND run_after <= now()
     ORDER BY run_after LIMIT :batch FOR UPDATE SKIP LOCKED),
claimed AS (
    UPDATE automation_workflows.workflow_executions e
       SET status = 'running', claimed_by = 'w' || :client_id,
           lease_expires_at = now() + interval '5 minutes', started_at = now(), attempts = e.attempts + 1
      FROM due WHERE e.id = due.id RETURNING e.id)
SELECT coalesce(array_agg(id), '{}') AS ids FROM claimed
\gset
UPDATE automation_workflows.workflow_executions
   SET status = 'success', completed_at = now(), lease_expires_at = NULL
 WHERE id = ANY(':ids'::uuid[]) AND status = 'running';
SQL

run() { # variant batch transactions-per-client -> executions/s
    local variant=$1 batch=$2 tx=$3 rows=$(( $2 * $3 * CLIENTS ))
    psql_admin -d "$DB" -q <<SQL >/dev/null
TRUNCATE automation_workflows.workflow_executions, automation.errors;
INSERT INTO automation_workflows.workflow_executions (workflow_name, status, started_at, run_after, metadata)
SELECT 'bench', 'pending', NULL, now() - interval '1 hour' + n * interval '1 ms', jsonb_build_object('n', n)
  FROM generate_series(1, $rows) n;
VACUUM ANALYZE automation_workflows.workflow_executions;
CHECKPOINT;
SQL
    local tps
    tps=$(as_postgres "$PGBENCH" -n -p "$PG_PORT" -c "$CLIENTS" -j 2 -t "$tx" -D batch="$batch" \
            -f "$work/$variant.sql" "$DB" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
    local check
    check=$(psql_admin -d "$DB" -Atc "SELECT count(*) FILTER (WHERE status = 'success') || ' ' || coalesce(max(attempts), 0)
                                        FROM automation_workflows.workflow_executions")
    [ "$check" = "$rows 1" ] || die "$variant batch $batch: expected '$rows 1' (all completed, none claimed twice), got '$check'"
    awk -v t="$tps" -v b="$batch" 'BEGIN { printf "%.0f", t * b }'
}

declare -A result
for batch in 1 100; do
    tx=$([ "$batch" = 1 ] && echo 1500 || echo 40)
    for round in 1 2 3; do
        for variant in runtime bare; do
            eps=$(run "$variant" "$batch" "$tx")
            result[$variant.$batch]+="$eps "
            printf 'batch %-3s round %d  %-8s %8s executions/s\n' "$batch" "$round" "$variant" "$eps" >&2
        done
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "claim + complete, $CLIENTS clients, median of 3 runs (every run checked: all completed, none claimed twice):"
for batch in 1 100; do
    r=$(echo "${result[runtime.$batch]}" | median); b=$(echo "${result[bare.$batch]}" | median)
    awk -v r="$r" -v b="$b" -v n="$batch" 'BEGIN {
        printf "  batch %-3d  runtime %8d/s   bare SQL %8d/s   bare/runtime = %.2f (goal <= 1.5)\n", n, r, b, b / r }'
done
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), PostgreSQL $(psql_admin -Atc 'SHOW server_version')"
psql_admin -qc "DROP DATABASE $DB" >/dev/null
rm -rf "$work"

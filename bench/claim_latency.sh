#!/usr/bin/env bash
# Enqueue-to-claim latency with an idle worker waiting, side by side in one
# run:
#   waiting  claim_executions(..., wait => '10 s'): the enqueuer's commit sets
#            the waiting backend's latch
#   polling  what workers do without it: claim, and when nothing came, sleep
#            100 ms (pg_sleep) before claiming again
# and (0.8.0) the same for the steps of workflows:
#   steps-waiting  claim_steps(..., wait => '10 s'): woken when a step of
#                  the queue is made (the run_workflow's commit)
#   steps-polling  claim_steps every 200 ms, as a worker had to before 0.8.0
# A producer enqueues one execution (or starts one workflow) every 50 ms
# (plus up to 20 ms of jitter), stamped with clock_timestamp(); the worker
# records the time of the claim that got it minus that stamp. Reports p50,
# p95 and max.
#
# Needs the cluster scripts/setup.sh prepared.
# Usage: bash bench/claim_latency.sh [executions]     (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
N=${1:-300}
DB=automation_bench_latency
work=$(mktemp -d /tmp/automation_ext-latency.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
recreate_database "$DB"
psql_admin -d "$DB" -q <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION automation_ext;
CREATE TABLE latency (mode text, ms float8);
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('lat-steps', '{"steps": [{"name": "s", "queue": "lat-steps"}]}');
SQL

# the worker: N claims, each recording its latency (autocommit: one claim per transaction)
for mode in waiting polling steps-waiting steps-polling; do
    {
        for _ in $(seq "$N"); do
            if [ "$mode" = steps-waiting ]; then
                echo "INSERT INTO latency SELECT 'steps-waiting', extract(epoch FROM clock_timestamp() - (input->'input'->>'t')::timestamptz) * 1000
                        FROM automation.claim_steps('lat-steps', 'w', 1, wait => '10 s');"
            elif [ "$mode" = steps-polling ]; then
                echo "DO \$\$ BEGIN
                        LOOP
                          INSERT INTO latency SELECT 'steps-polling', extract(epoch FROM clock_timestamp() - (input->'input'->>'t')::timestamptz) * 1000
                            FROM automation.claim_steps('lat-steps', 'w', 1);
                          EXIT WHEN FOUND;
                          PERFORM pg_sleep(0.2);
                        END LOOP; END \$\$;"
            elif [ "$mode" = waiting ]; then
                echo "INSERT INTO latency SELECT 'waiting', extract(epoch FROM started_at - (metadata->>'t')::timestamptz) * 1000
                        FROM automation.claim_executions('lat', 'w', 1, wait => '10 s');"
            else
                echo "DO \$\$ BEGIN
                        LOOP
                          INSERT INTO latency SELECT 'polling', extract(epoch FROM started_at - (metadata->>'t')::timestamptz) * 1000
                            FROM automation.claim_executions('lat', 'w', 1);
                          EXIT WHEN FOUND;
                          PERFORM pg_sleep(0.1);
                        END LOOP; END \$\$;"
            fi
        done
    } >"$work/$mode.sql"
done
for kind in executions steps; do
    {
        echo "SELECT pg_sleep(1);"
        for _ in $(seq "$N"); do
            if [ "$kind" = steps ]; then
                echo "SELECT automation.run_workflow('lat-steps', jsonb_build_object('t', clock_timestamp()));"
            else
                echo "SELECT automation.enqueue_execution('lat', jsonb_build_object('t', clock_timestamp()));"
            fi
            echo "SELECT pg_sleep(0.05 + random() * 0.02);"
        done
    } >"$work/producer-$kind.sql"
done

for mode in waiting polling steps-waiting steps-polling; do
    kind=executions; [[ $mode == steps-* ]] && kind=steps
    as_postgres psql -X -q -p "$PG_PORT" -d "$DB" -f "$work/$mode.sql" >/dev/null &
    worker=$!
    as_postgres psql -X -q -p "$PG_PORT" -d "$DB" -f "$work/producer-$kind.sql" >/dev/null
    wait "$worker"
done

echo "enqueue-to-claim latency, one idle worker, $N executions (or workflows) started 50-70 ms apart:"
psql_admin -d "$DB" -At -F ' ' -c "
    SELECT format('  %s p50 %s ms   p95 %s ms   max %s ms   (%s claims)', rpad(mode, 13),
                  round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
                  round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 2),
                  round(max(ms)::numeric, 2), count(*))
      FROM latency GROUP BY mode ORDER BY mode LIKE 'steps%', mode DESC"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), PostgreSQL $(psql_admin -Atc 'SHOW server_version')"
psql_admin -qc "DROP DATABASE $DB WITH (FORCE)" >/dev/null

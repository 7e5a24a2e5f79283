#!/usr/bin/env bash
# Benchmark for issue 30 ("fast with a long history"): the console's pages
# with 1,000,000 executions (of 20 workflows; 2% failed), 100,000 job runs
# (of 50 jobs), 20,000 errors and the step runs of 20,000 executions, in a
# database of the cluster scripts/setup.sh prepared. Each page is fetched
# ROUNDS times (default 30) and its server time (curl's time to the last
# byte, on loopback) reported as p50 / p95 — side by side in the same run
# with the same pages over 0.7.0's indexes (the console's three indexes of
# workflow_executions and one of errors dropped), and the plans of the list
# queries.
# Usage: bash bench/console.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root
ROUNDS=${1:-30}
DB=automation_bench_console
PORT=8797
CONSOLE=${CONSOLE:-/usr/local/bin/automation-console}
[ -x "$CONSOLE" ] || die "no $CONSOLE: run scripts/setup.sh first (it installs the console)"

log "database $DB: 1,000,000 executions, 100,000 job runs, 20,000 errors"
recreate_database "$DB"
psql_admin -d "$DB" -q <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION automation_ext;
INSERT INTO automation_workflows.definitions (name, definition)
SELECT 'wf-' || i, '{"steps": [{"name": "extract", "queue": "q"}, {"name": "load", "after": ["extract"], "sql": "SELECT 1"}]}'
  FROM generate_series(1, 20) i;
-- a million executions over 30 days, newest last; 2% failed
INSERT INTO automation_workflows.workflow_executions (id, workflow_name, status, started_at, completed_at, metadata, owner)
SELECT gen_random_uuid(), 'wf-' || (1 + i % 20),
       CASE WHEN i % 50 = 0 THEN 'error' WHEN i % 997 = 0 THEN 'timeout' ELSE 'success' END,
       now() - interval '30 days' + i * interval '2.592 seconds',
       now() - interval '30 days' + i * interval '2.592 seconds' + interval '3 seconds',
       '{"workflow_version": 1}', 'postgres'
  FROM generate_series(1, 1000000) i;
-- the runs and step runs of the latest 20,000
INSERT INTO automation_workflows.workflow_runs (execution_id, workflow_name, version, definition, input, owner, admitted,
                                                run_after, steps_left, open_elements)
SELECT e.id, e.workflow_name, 1, d.definition, '{}', 'postgres', true, e.started_at, 0, '{"extract": 0, "load": 0}'
  FROM (SELECT * FROM automation_workflows.workflow_executions ORDER BY started_at DESC LIMIT 20000) e
  JOIN automation_workflows.definitions d ON d.name = e.workflow_name;
INSERT INTO automation_workflows.step_runs (execution_id, step, status, queue, worker, started_at, completed_at, input, output)
SELECT w.execution_id, s.step, 'success', s.queue, 'w1', w.run_after, w.run_after + interval '1 second', '{}', '{"n": 1}'
  FROM automation_workflows.workflow_runs w CROSS JOIN (VALUES ('extract', 'q'), ('load', NULL)) s(step, queue);
INSERT INTO automation.errors (workflow_name, error_type, error_message, error_time, execution_id, owner)
SELECT workflow_name, 'step_failed', 'boom', started_at, id, 'postgres'
  FROM automation_workflows.workflow_executions WHERE status = 'error' LIMIT 20000;
-- 50 jobs (inactive: the benchmark's runs are made up) and 100,000 runs
SELECT automation.schedule('bench-' || i, '0 3 * * *', 'SELECT 1') FROM generate_series(1, 50) i;
UPDATE automation.job SET active = false WHERE jobname LIKE 'bench-%';
INSERT INTO automation.job_run_details (jobid, database, username, command, status, return_message, start_time, end_time,
                                        scheduled_for, attempt)
SELECT j.jobid, current_database(), 'postgres', 'SELECT 1', 'succeeded', 'SELECT 1',
       now() - r * interval '1 minute' + interval '40 ms', now() - r * interval '1 minute' + interval '90 ms',
       now() - r * interval '1 minute', 1
  FROM automation.job j CROSS JOIN generate_series(1, 2000) r WHERE j.jobname LIKE 'bench-%';
VACUUM ANALYZE;
SQL

pages() {
    local wf jobid exec
    wf=wf-7
    jobid=$(psql_admin -d "$DB" -Atc "SELECT min(jobid) FROM automation.job WHERE jobname LIKE 'bench-%'")
    exec=$(psql_admin -d "$DB" -Atc "SELECT execution_id FROM automation_workflows.workflow_runs LIMIT 1")
    echo "/ /workflows /workflows/$wf /executions /executions?status=failed /executions?workflow=$wf /executions?status=failed&since=24%20hours /executions/$exec /jobs /jobs/$jobid /triggers /errors /errors?state=all /queue"
}

measure() { # label
    setsid runuser -u postgres -- "$CONSOLE" --database "host=/var/run/postgresql port=$PG_PORT dbname=$DB" \
        --listen "127.0.0.1:$PORT" --refresh-seconds 0 >/tmp/automation-console-bench.log 2>&1 < /dev/null &
    local pid=$!
    for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
    for page in $(pages); do
        local times=()
        for _ in $(seq "$ROUNDS"); do
            times+=("$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT$page")")
        done
        printf '%s\n' "${times[@]}" | sort -n | awk -v label="$1" -v page="$page" '{ t[NR] = $1 * 1000 }
            END { printf "  %-8s %-48s p50 %7.1f ms   p95 %7.1f ms\n", label, page, t[int(NR * 0.5 + 0.5)], t[int(NR * 0.95 + 0.5)] }'
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

log "pages, $ROUNDS fetches each (server time on loopback)"
measure "0.8.0"
psql_admin -d "$DB" -q -c "BEGIN" -c "SET LOCAL client_min_messages = warning" \
    -c "DROP INDEX automation_workflows.workflow_executions_recent, automation_workflows.workflow_executions_failed_recent,
                   automation_workflows.workflow_executions_workflow_recent, automation.errors_recent" -c "COMMIT"
measure "0.7.0-ix"

log "plans of the list queries (0.8.0's indexes)"
psql_admin -d "$DB" -q -c "CREATE INDEX workflow_executions_recent ON automation_workflows.workflow_executions (started_at DESC, id DESC)" \
    -c "CREATE INDEX workflow_executions_failed_recent ON automation_workflows.workflow_executions (started_at DESC, id DESC) WHERE status IN ('error', 'timeout', 'cancelled')" \
    -c "CREATE INDEX workflow_executions_workflow_recent ON automation_workflows.workflow_executions (workflow_name, started_at DESC, id DESC)" \
    -c "ANALYZE automation_workflows.workflow_executions"
psql_admin -d "$DB" -c "EXPLAIN (COSTS OFF) SELECT id FROM automation_workflows.workflow_executions e WHERE e.started_at IS NOT NULL AND e.status = ANY ('{error,timeout}') ORDER BY e.started_at DESC, e.id DESC LIMIT 50" \
    -c "EXPLAIN (COSTS OFF) SELECT id FROM automation_workflows.workflow_executions e WHERE e.started_at IS NOT NULL AND e.workflow_name = 'wf-7' ORDER BY e.started_at DESC, e.id DESC LIMIT 50"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), PostgreSQL $(psql_admin -Atc 'SHOW server_version')"
psql_admin -qc "DROP DATABASE $DB WITH (FORCE)" >/dev/null

#!/usr/bin/env bash
# SQL steps (issue 18, 0.7.0): run by the extension's step workers.
#   hand-off  HANDOFFS (default 200) two-step workflows of SELECT 1, one at a
#             time on an otherwise idle cluster: (second step's start - first
#             step's end), p50 / p95 / max. Goal: p95 <= 20 ms.
#   burst     WORKFLOWS (default 1,000) three-step workflows of SELECT 1
#             started in one transaction: the time until all have finished,
#             workflows/s and steps/s, and the most step workers seen at once
#             (automation.step_workers per role). Goal: >= 1,000 steps/s.
#   baseline  the same number of statements (3 x WORKFLOWS SELECT 1) sent by
#             4 pgbench clients with no orchestration at all: the cost of
#             the statements themselves, side by side.
# Needs the cluster scripts/setup.sh prepared.
# Usage: bash bench/sql_steps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
HANDOFFS=${HANDOFFS:-200}
WORKFLOWS=${WORKFLOWS:-1000}
DB=automation_bench_sql
PGBENCH=$PG_BIN/pgbench
work=$(mktemp -d /tmp/automation_ext-bench.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
recreate_database "$DB"
q() { psql_admin -d "$DB" -Atq -c "$1"; }
psql_admin -d "$DB" -q <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION automation_ext;
INSERT INTO automation_workflows.definitions (name, definition) VALUES
  ('pair', '{"steps": [{"name": "first", "sql": "SELECT 1"}, {"name": "second", "after": ["first"], "sql": "SELECT 1"}]}'),
  ('three', '{"steps": [{"name": "one", "sql": "SELECT 1"},
                        {"name": "two", "after": ["one"], "sql": "SELECT 1"},
                        {"name": "three", "after": ["two"], "sql": "SELECT 1"}]}');
-- (polls every 20 ms; the burst's end is read from completed_at, not from here)
CREATE FUNCTION wait_done(name text, n integer, timeout_s integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..timeout_s * 50 LOOP
        IF (SELECT count(*) FROM automation_workflows.workflow_executions
             WHERE workflow_name = wait_done.name AND status NOT IN ('pending', 'running')) >= n THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
    RETURN false;
END $$;
SQL
echo "step workers per role: $(q "SHOW automation.step_workers")" >&2

# hand-off, one workflow at a time
for i in $(seq 1 "$HANDOFFS"); do
    q "SELECT automation.run_workflow('pair')" >/dev/null
    [ "$(q "SELECT wait_done('pair', $i, 30)")" = t ] || die "pair workflow $i did not finish"
done
read -r p50 p95 pmax ok <<<"$(q "
  WITH g AS (SELECT extract(epoch FROM s.started_at - f.completed_at) * 1000 AS ms
               FROM automation_workflows.step_runs f
               JOIN automation_workflows.step_runs s ON s.execution_id = f.execution_id AND s.step = 'second'
              WHERE f.step = 'first')
  SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
         round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 2),
         round(max(ms)::numeric, 2),
         (SELECT count(*) FROM automation_workflows.workflow_executions WHERE workflow_name = 'pair' AND status = 'success')
    FROM g" | tr '|' ' ')"

# burst
q "CHECKPOINT" >/dev/null
sampler() {
    local most=0 n
    while [ ! -e "$work/stop" ]; do
        n=$(q "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'automation_ext step worker'")
        [ "$n" -gt "$most" ] && most=$n
        sleep 0.25
    done
    echo "$most" >"$work/most"
}
sampler &
t0=$(q "SELECT extract(epoch FROM clock_timestamp())")
q "SELECT count(automation.run_workflow('three', jsonb_build_object('i', i))) FROM generate_series(1, $WORKFLOWS) i" >/dev/null
t_started=$(q "SELECT extract(epoch FROM clock_timestamp())")
[ "$(q "SELECT wait_done('three', $WORKFLOWS, 600)")" = t ] || die "the burst did not finish"
t1=$(q "SELECT extract(epoch FROM max(completed_at)) FROM automation_workflows.workflow_executions WHERE workflow_name = 'three'")
touch "$work/stop"
wait
most=$(cat "$work/most")
read -r done_ok steps_ok twice <<<"$(q "
  SELECT (SELECT count(*) FROM automation_workflows.workflow_executions WHERE workflow_name = 'three' AND status = 'success'),
         (SELECT count(*) FROM automation_workflows.step_runs r JOIN automation_workflows.workflow_runs w USING (execution_id)
           WHERE w.workflow_name = 'three' AND r.status = 'success'),
         (SELECT count(*) FROM (SELECT execution_id, step FROM automation_workflows.step_runs GROUP BY 1, 2 HAVING count(*) > 1) x)" | tr '|' ' ')"

# baseline: the statements alone
statements=$((3 * WORKFLOWS))
echo "SELECT 1;" >"$work/one.sql"
b0=$(date +%s.%N)
as_postgres "$PGBENCH" -n -p "$PG_PORT" -c 4 -j 2 -t $((statements / 4)) -f "$work/one.sql" "$DB" >/dev/null 2>&1
b1=$(date +%s.%N)

awk -v p50="$p50" -v p95="$p95" -v pmax="$pmax" -v ok="$ok" -v n="$HANDOFFS" \
    -v t0="$t0" -v ts="$t_started" -v t1="$t1" -v w="$WORKFLOWS" -v done_ok="$done_ok" -v steps_ok="$steps_ok" \
    -v twice="$twice" -v most="$most" -v b0="$b0" -v b1="$b1" -v st="$statements" 'BEGIN {
  printf "hand-off (%d two-step workflows, one at a time, %d succeeded): p50 %s ms, p95 %s ms, max %s ms (goal p95 <= 20 ms)\n", n, ok, p50, p95, pmax
  e = t1 - t0
  printf "burst: %d three-step workflows started in %.2f s, all finished %.2f s after the start: %.0f workflows/s, %.0f steps/s (goal >= 1000); %d succeeded, %d steps succeeded, %d steps run twice; at most %d step workers at once\n", w, ts - t0, e, w / e, steps_ok / e, done_ok, steps_ok, twice, most
  printf "baseline: the same %d SELECT 1 from 4 pgbench clients, no orchestration: %.2f s (%.0f statements/s)\n", st, b1 - b0, st / (b1 - b0)
}'

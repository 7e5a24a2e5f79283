#!/usr/bin/env bash
# The workflow engine's orchestration overhead and fan-out (issue 18), with
# pgbench, side by side in the same run:
#   steps  8 clients work 5-step linear workflows of queue steps: each
#          transaction claims one step (claim_steps), the next completes it
#          (complete_step), which starts the next step of its workflow
#   bare   8 clients claim and complete the same number of plain executions
#          (claim_executions + complete_executions, batch 1) — the queue
#          without orchestration
# Each runs for DURATION seconds (default 20) over a backlog large enough not
# to run dry; items/s = steps (or executions) completed / DURATION. Goal
# (issue 18): steps >= bare / 1.5.
# Then fan-out: one step mapped over FANOUT (default 10,000) elements: the
# time the completing transaction takes to create them, the time 8 clients
# take to work them, the size of the fan-in step's input; then one backend
# that runs fan-outs to their end itself (the last completion gathers every
# output): its time and its memory contexts, which must not grow from one
# fan-out to the next. Last, a TABLE_ROWS-row (default 100,000) INSERT into a
# table without and with a 'table' trigger of the registry.
#
# Needs the cluster scripts/setup.sh prepared.
# Usage: bash bench/workflow.sh [clients]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
CLIENTS=${1:-8}
DURATION=${DURATION:-20}
FANOUT=${FANOUT:-10000}
DB=automation_bench_wf
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
  ('chain', '{"steps": [{"name": "s1", "queue": "chain"},
                        {"name": "s2", "after": ["s1"], "queue": "chain"},
                        {"name": "s3", "after": ["s2"], "queue": "chain"},
                        {"name": "s4", "after": ["s3"], "queue": "chain"},
                        {"name": "s5", "after": ["s4"], "queue": "chain"}]}'),
  ('fan', '{"steps": [{"name": "list", "queue": "fan"},
                      {"name": "each", "after": ["list"], "queue": "fan", "map": "$.list.items"},
                      {"name": "gather", "after": ["each"], "queue": "fan"}]}');
SQL

cat >"$work/steps.sql" <<'SQL'
SELECT coalesce(max(id), 0) AS sid FROM automation.claim_steps('chain', 'w' || :client_id, 1)
\gset
SELECT automation.complete_step(:sid, '{"ok": true}', 'w' || :client_id) WHERE :sid > 0;
SQL
cat >"$work/bare.sql" <<'SQL'
SELECT coalesce(array_agg(id), '{}') AS ids FROM automation.claim_executions('bare', 'w' || :client_id, 1)
\gset
SELECT automation.complete_executions(':ids'::uuid[], NULL, 'w' || :client_id);
SQL

backlog=$((CLIENTS * DURATION * 1500))
echo "backlog: $((backlog / 5)) workflows of 5 steps; $backlog executions" >&2
q "SELECT count(automation.run_workflow('chain', jsonb_build_object('n', n))) FROM generate_series(1, $((backlog / 5))) n" >/dev/null
q "INSERT INTO automation_workflows.execution_queue (workflow_name, run_after, visible_at, metadata)
   SELECT 'bare', now() - interval '1 hour', now() - interval '1 hour', jsonb_build_object('n', n)
     FROM generate_series(1, $backlog) n" >/dev/null
q "VACUUM ANALYZE automation_workflows.step_runs, automation_workflows.workflow_runs,
          automation_workflows.workflow_executions, automation_workflows.execution_queue" >/dev/null
q "CHECKPOINT" >/dev/null

run() { # variant -> items completed in DURATION seconds
    as_postgres "$PGBENCH" -n -p "$PG_PORT" -c "$CLIENTS" -j 2 -T "$DURATION" -f "$work/$1.sql" "$DB" >/dev/null 2>&1
}
run steps
steps=$(q "SELECT count(*) FROM automation_workflows.step_runs WHERE status = 'success'")
workflows=$(q "SELECT count(*) FROM automation_workflows.workflow_executions WHERE workflow_name = 'chain' AND status = 'success'")
run bare
q "SELECT automation.record_executions(1000000)" >/dev/null
bare=$(q "SELECT count(*) FROM automation_workflows.workflow_executions WHERE workflow_name = 'bare' AND status = 'success'")
twice=$(q "SELECT count(*) FROM (SELECT execution_id, step FROM automation_workflows.step_runs GROUP BY 1, 2 HAVING count(*) > 1) x")
[ "$twice" = 0 ] || die "$twice steps ran more than once"

# fan-out
t0=$(date +%s%N)
fan=$(q "SELECT automation.run_workflow('fan')")
q "SELECT automation.complete_step(id, jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, $FANOUT) g)))
     FROM automation.claim_steps('fan', 'lister')" >/dev/null
t1=$(date +%s%N)
created=$(q "SELECT count(*) FROM automation_workflows.step_runs WHERE execution_id = '$fan' AND step = 'each'")
[ "$created" = "$FANOUT" ] || die "the fan-out created $created step runs, not $FANOUT"
cat >"$work/fan.sql" <<'SQL'
SELECT coalesce(max(id), 0) AS sid, coalesce(max((input->>'item')::int), 0) AS item
  FROM automation.claim_steps('fan', 'w' || :client_id, 1)
\gset
SELECT automation.complete_step(:sid, jsonb_build_object('square', :item * :item), 'w' || :client_id) WHERE :sid > 0;
SQL
as_postgres "$PGBENCH" -n -p "$PG_PORT" -c "$CLIENTS" -j 2 -t $((FANOUT / CLIENTS + 20)) -f "$work/fan.sql" "$DB" >/dev/null 2>&1
t2=$(date +%s%N)
gathered=$(q "SELECT jsonb_array_length(input->'steps'->'each') || ' ' || pg_column_size(input)
                FROM automation_workflows.step_runs WHERE execution_id = '$fan' AND step = 'gather'")
[ "${gathered%% *}" = "$FANOUT" ] || die "the fan-in step received '${gathered%% *}' outputs, not $FANOUT"
# memory of a backend that coordinates fan-outs: one session runs a small
# one (warm-up: plan and function caches), then two of FANOUT elements, each
# completed in one statement by this backend (which so also gathers the
# outputs); its memory contexts after each
fan_once() { # elements -> SQL that runs one fan-out workflow to its end in this session
    cat <<SQL
SELECT automation.run_workflow('fan') IS NOT NULL;
SELECT automation.complete_step(id, jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, $1) g)))
  FROM automation.claim_steps('fan', 'one-backend');
SELECT count(automation.complete_step(id, '{"square": 1}')) FROM automation.claim_steps('fan', 'one-backend', 10000);
SELECT count(automation.complete_step(id)) FROM automation.claim_steps('fan', 'one-backend', 10);
SELECT sum(total_bytes) FROM pg_backend_memory_contexts;
SQL
}
mem=$( { fan_once 100; echo '\timing on'; fan_once "$FANOUT"; echo '\timing off'; fan_once "$FANOUT"; } |
       psql_admin -d "$DB" -Atq 2>&1)
mem_warm=$(echo "$mem" | grep -E '^[0-9]{6,}$' | sed -n 1p)
mem_one=$(echo "$mem" | grep -E '^[0-9]{6,}$' | sed -n 2p)
mem_two=$(echo "$mem" | grep -E '^[0-9]{6,}$' | sed -n 3p)
one_ms=$(echo "$mem" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | sed -n 3p)
left=$(q "SELECT count(*) FROM automation_workflows.workflow_executions WHERE workflow_name = 'fan' AND status <> 'success'")
[ "$left" = 0 ] || die "$left fan-out executions did not succeed"

# a table trigger: a TABLE_ROWS-row INSERT into a table without and with a
# 'table' trigger of the registry (one execution per row), best of 3 each
TABLE_ROWS=${TABLE_ROWS:-100000}
insert_ms() { # -> ms of the INSERT, best of 3
    local best= t
    for _ in 1 2 3; do
        q "TRUNCATE bench_orders" >/dev/null
        t=$( { echo '\timing on'; echo "INSERT INTO bench_orders SELECT g, 'c' || g % 100, g FROM generate_series(1, $TABLE_ROWS) g;"; } |
             psql_admin -d "$DB" -Atq | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
        best=$(awk -v a="${best:-$t}" -v b="$t" 'BEGIN { print (b < a) ? b : a }')
    done
    echo "$best"
}
q "CREATE TABLE bench_orders (id int PRIMARY KEY, customer text, total numeric)" >/dev/null
plain_ms=$(insert_ms)
q "INSERT INTO automation_workflows.definitions (name, definition)
   VALUES ('on-order', '{\"steps\": [{\"name\": \"ship\", \"queue\": \"orders\"}]}')" >/dev/null
q "INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
   SELECT 'table', '{\"table\": \"public.bench_orders\", \"events\": [\"INSERT\"]}', id
     FROM automation_workflows.definitions WHERE name = 'on-order'" >/dev/null
triggered_ms=$(insert_ms)
# (0.6.0) the statement appends the rows to the trigger inbox; the scheduler
# starts the executions after the commit: wait for them, then time one more
# INSERT from its start to its last execution started
drained() { # -> executions of on-order, once the inbox is empty
    until [ "$(q "SELECT NOT EXISTS (SELECT FROM automation_workflows.trigger_inbox)")" = t ]; do sleep 0.05; done
    q "SELECT count(*) FROM automation_workflows.workflow_runs WHERE workflow_name = 'on-order'"
}
started=$(drained)
[ "$started" = $((3 * TABLE_ROWS)) ] || die "the table trigger started $started executions, not $((3 * TABLE_ROWS))"
q "TRUNCATE bench_orders" >/dev/null
tt0=$(date +%s%N)
q "INSERT INTO bench_orders SELECT g, 'c' || g % 100, g FROM generate_series(1, $TABLE_ROWS) g" >/dev/null
started=$(drained)
tt1=$(date +%s%N)
[ "$started" = $((4 * TABLE_ROWS)) ] || die "the table trigger started $started executions, not $((4 * TABLE_ROWS))"

echo
echo "orchestration, $CLIENTS clients, ${DURATION} s each (claim in one transaction, complete in the next):"
awk -v s="$steps" -v w="$workflows" -v b="$bare" -v d="$DURATION" 'BEGIN {
    printf "  steps (5-step linear workflows)  %8.0f steps/s  (%.0f workflows/s finished)\n", s / d, w / d
    printf "  bare claim/complete, batch 1     %8.0f items/s\n", b / d
    printf "  steps / bare = %.2f (goal >= %.2f)\n", s / b, 1 / 1.5 }'
echo "fan-out over $FANOUT elements:"
echo "  completing the listing step created the $FANOUT step runs in $(( (t1 - t0) / 1000000 )) ms"
echo "  $CLIENTS clients completed them in $(( (t2 - t1) / 1000000 )) ms (every completion a transaction of its own)"
echo "  the gathering step's input holds ${gathered%% *} outputs (${gathered##* } bytes stored)"
echo "  one backend completing all $FANOUT in one statement (so also gathering): ${one_ms} ms"
echo "  its memory contexts after a 100-element warm-up, then after each of two $FANOUT-element fan-outs: $mem_warm, $mem_one, $mem_two bytes"
echo "a $TABLE_ROWS-row INSERT (best of 3): $plain_ms ms without a trigger, $triggered_ms ms with a 'table' trigger (rows to the trigger inbox)"
echo "  from the start of such an INSERT to its $TABLE_ROWS executions started by the scheduler: $(( (tt1 - tt0) / 1000000 )) ms"
awk -v a="$plain_ms" -v b="$triggered_ms" 'BEGIN { printf "  with / without = %.1f (goal <= 2)\n", b / a }'
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), PostgreSQL $(psql_admin -Atc 'SHOW server_version')"

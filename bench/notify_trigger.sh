#!/usr/bin/env bash
# Benchmark for issue "native completion NOTIFY trigger":
# one UPDATE completing N executions (default 100,000) on three tables of
# workflow_executions' shape and indexes:
#   (a) no trigger, (b) the seed's PL/pgSQL trigger, (c) the native trigger.
# Each round reloads the rows, VACUUM ANALYZEs and CHECKPOINTs, then runs
# EXPLAIN ANALYZE UPDATE (autocommit, so notifications are queued at commit),
# timed with psql's \timing. Variants are interleaved, in an order that
# rotates from round to round. Reported:
#   - wall-clock overhead per round, paired: variant minus "no trigger" in the
#     same round (the UPDATE alone swings by +-20% between rounds, so a
#     difference of medians is mostly noise); the median of the pairs;
#   - the backend's CPU time for the statement, commit included
#     (log_statement_stats), paired the same way: it leaves out the I/O waits
#     that make wall-clock time swing on this machine;
#   - the time EXPLAIN ANALYZE reports inside the trigger (per-row trigger
#     work alone; excludes the commit-time queue writes, the same for both).
#
# Needs the cluster scripts/setup.sh prepared. Usage: bash bench/notify_trigger.sh [rows] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROWS=${1:-100000}
ROUNDS=${2:-9}
DB=automation_bench

recreate_database "$DB"
psql_admin -d "$DB" -q <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION automation_ext;
CREATE TABLE public.bench_template (LIKE automation_workflows.workflow_executions INCLUDING ALL);
CREATE TABLE public.exec_none   (LIKE automation_workflows.workflow_executions INCLUDING ALL);
CREATE TABLE public.exec_seed   (LIKE automation_workflows.workflow_executions INCLUDING ALL);
CREATE TABLE public.exec_native (LIKE automation_workflows.workflow_executions INCLUDING ALL);

-- The seed's trigger, verbatim.
CREATE OR REPLACE FUNCTION public.notify_workflow_completion() RETURNS TRIGGER AS $$
BEGIN
    PERFORM pg_notify(
        'workflow_completed',
        jsonb_build_object(
            'workflow_id', NEW.id,
            'workflow_name', NEW.workflow_name,
            'status', NEW.status,
            'duration', EXTRACT(EPOCH FROM (NEW.completed_at - NEW.started_at))
        )::text
    );
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER trg_notify_workflow_completion AFTER UPDATE OF status ON public.exec_seed
    FOR EACH ROW WHEN (NEW.status IN ('success', 'error', 'timeout'))
    EXECUTE FUNCTION public.notify_workflow_completion();

SELECT automation.attach_completion_notify('public.exec_native', 'workflow_completed');
SQL

time_update() { # table -> "wall_ms trigger_ms cpu_ms" of one UPDATE (autocommit: includes COMMIT)
    local table=$1
    psql_admin -d "$DB" -q <<SQL >/dev/null
TRUNCATE public.$table;
INSERT INTO public.$table (workflow_name, status, started_at, metadata)
SELECT 'wf-' || (i % 50), 'running', now() - interval '1 hour' + i * interval '1 ms', jsonb_build_object('i', i)
  FROM generate_series(1, $ROWS) i;
VACUUM ANALYZE public.$table;
CHECKPOINT;
SQL
    psql_admin -d "$DB" -At 2>&1 <<SQL | awk '
        /^Time: / { wall = $2 }
        /Trigger trg_notify_workflow_completion: time=/ { sub(/.*time=/, ""); trig = $1 + 0 }
        / s user, .* s system, / { cpu = ($2 + $5) * 1000 }
        END { printf "%s %s %s\n", wall, trig + 0, cpu }'
SET log_statement_stats = on;
SET client_min_messages = log;
\\timing on
EXPLAIN (ANALYZE, COSTS OFF) UPDATE public.$table SET status = 'success', completed_at = started_at + interval '1.5 s';
SQL
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

declare -A wall cpu trig
variants=(none seed native)
for round in $(seq 1 "$ROUNDS"); do
    # rotate the order each round: with a fixed order the last slot was
    # measurably favoured
    for i in 0 1 2; do
        variant=${variants[$(( (i + round) % 3 ))]}
        read -r w t c < <(time_update "exec_$variant")
        wall[$variant.$round]=$w
        cpu[$variant.$round]=$c
        trig[$variant]+="$t "
        printf 'round %d  %-6s %9.1f ms wall  %9.1f ms cpu   in trigger %8.1f ms\n' "$round" "$variant" "$w" "$c" "$t" >&2
    done
done
paired() { # array variant -> median over rounds of (variant - none)
    local -n m=$1
    for r in $(seq 1 "$ROUNDS"); do
        awk -v v="${m[$2.$r]}" -v n="${m[none.$r]}" 'BEGIN { print v - n }'
    done | median
}
a=$(for r in $(seq 1 "$ROUNDS"); do echo "${wall[none.$r]}"; done | median)
ob=$(paired wall seed); oc=$(paired wall native)
cb=$(paired cpu seed); cc=$(paired cpu native)
tb=$(echo "${trig[seed]}" | tr ' ' '\n' | grep . | median)
tc=$(echo "${trig[native]}" | tr ' ' '\n' | grep . | median)
echo
echo "UPDATE completing $ROWS executions, $ROUNDS rounds, medians:"
awk -v a="$a" -v ob="$ob" -v oc="$oc" -v cb="$cb" -v cc="$cc" -v tb="$tb" -v tc="$tc" 'BEGIN {
    printf "  (a) no trigger: UPDATE + COMMIT            %9.1f ms\n", a
    printf "  wall-clock overhead, paired per round:  (b) seed %8.1f ms   (c) native %8.1f ms   ratio %.2f (goal <= 0.50)\n", ob, oc, oc / ob
    printf "  CPU-time overhead, paired per round:    (b) seed %8.1f ms   (c) native %8.1f ms   ratio %.2f (goal <= 0.50)\n", cb, cc, cc / cb
    printf "  time inside the trigger (EXPLAIN ANALYZE): (b) seed %8.1f ms   (c) native %8.1f ms   ratio %.2f\n", tb, tc, tc / tb
}'
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), PostgreSQL $(psql_admin -Atc 'SHOW server_version')"
psql_admin -qc "DROP DATABASE $DB" >/dev/null

#!/usr/bin/env bash
# Benchmark for issue "native completion NOTIFY trigger":
# one UPDATE completing N executions (default 100,000) on three tables of
# workflow_executions' shape and indexes:
#   (a) no trigger, (b) the seed's PL/pgSQL trigger, (c) the native trigger.
# Each round reloads the rows, VACUUM ANALYZEs, and times UPDATE + COMMIT
# (notifications are queued at commit) with psql's \timing; variants are
# interleaved so machine noise hits all three alike. Prints medians.
#
# Needs the cluster scripts/setup.sh prepared. Usage: bash bench/notify_trigger.sh [rows] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROWS=${1:-100000}
ROUNDS=${2:-5}
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

time_update() { # table -> milliseconds of UPDATE (autocommit: includes COMMIT)
    local table=$1
    psql_admin -d "$DB" -q <<SQL >/dev/null
TRUNCATE public.$table;
INSERT INTO public.$table (workflow_name, status, started_at, metadata)
SELECT 'wf-' || (i % 50), 'running', now() - interval '1 hour' + i * interval '1 ms', jsonb_build_object('i', i)
  FROM generate_series(1, $ROWS) i;
VACUUM ANALYZE public.$table;
SQL
    psql_admin -d "$DB" -At <<SQL | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'
\\timing on
UPDATE public.$table SET status = 'success', completed_at = started_at + interval '1.5 s';
SQL
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

declare -A samples
for round in $(seq 1 "$ROUNDS"); do
    for variant in none seed native; do
        ms=$(time_update "exec_$variant")
        samples[$variant]+="$ms "
        printf 'round %d  %-6s %10.1f ms\n' "$round" "$variant" "$ms" >&2
    done
done

a=$(echo "${samples[none]}" | tr ' ' '\n' | grep . | median)
b=$(echo "${samples[seed]}" | tr ' ' '\n' | grep . | median)
c=$(echo "${samples[native]}" | tr ' ' '\n' | grep . | median)
echo
echo "UPDATE completing $ROWS executions, median of $ROUNDS rounds (UPDATE + COMMIT):"
awk -v a="$a" -v b="$b" -v c="$c" 'BEGIN {
    printf "  (a) no trigger        %9.1f ms\n", a
    printf "  (b) seed PL/pgSQL     %9.1f ms   overhead %8.1f ms\n", b, b - a
    printf "  (c) native (Rust)     %9.1f ms   overhead %8.1f ms\n", c, c - a
    printf "  native overhead / seed overhead = %.2f (goal <= 0.50)\n", (c - a) / (b - a)
}'
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), PostgreSQL $(psql_admin -Atc 'SHOW server_version')"
psql_admin -qc "DROP DATABASE $DB" >/dev/null

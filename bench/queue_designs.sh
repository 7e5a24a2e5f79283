#!/usr/bin/env bash
# Design exploration for the lean queue hot path (issue 16): bench/claim.sh's
# harness, with candidate designs for the queue built here as plain SQL, so
# that a design is chosen on figures. Variants (VARIANTS="..." picks some):
#   runtime  today's claim_executions + complete_executions (NOTIFY sent)
#   lean     the leanest design (bigint PK only; archive on completion)
#   k        in-flight work in a lean queue table (uuid PK, a claim index on
#            (workflow_name, priority DESC, seq), fillfactor 70, HOT claims);
#            completion deletes it and inserts the finished row into
#            workflow_executions (the seed's indexes), with a NOTIFY per row
#   k2       k without the NOTIFY
#   k3       k's queue, completion into an unindexed log (no history, no NOTIFY)
# Usage: bash bench/queue_designs.sh [clients]   (ROUNDS=3, MODE=quick|held)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
CLIENTS=${1:-8}
MODE=${MODE:-quick}
DB=automation_bench
PGBENCH=$PG_BIN/pgbench
work=$(mktemp -d /tmp/automation_ext-bench.XXXXXX)
chmod 755 "$work"
holder=
cleanup() {
    [ -n "$holder" ] && kill "$holder" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
recreate_database "$DB"
psql_admin -d "$DB" -q <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION automation_ext;
-- prototype K: in-flight work in a lean queue, history inserted at completion
CREATE TABLE k_queue (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq bigint GENERATED ALWAYS AS IDENTITY,
    workflow_name text NOT NULL,
    priority int NOT NULL DEFAULT 0,
    vt timestamptz NOT NULL,
    claimed_by text,
    attempts int NOT NULL DEFAULT 0,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    metadata jsonb
) WITH (fillfactor = 70);
CREATE TABLE k_log (id uuid, workflow_name text, started_at timestamptz, completed_at timestamptz, metadata jsonb, attempts int, claimed_by text);
CREATE INDEX k_queue_claim ON k_queue (workflow_name, priority DESC, seq);
-- the lean design
CREATE TABLE lean_queue (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload jsonb NOT NULL,
    vt      timestamptz NOT NULL DEFAULT now(),
    read_ct integer NOT NULL DEFAULT 0
);
CREATE TABLE lean_archive (
    id          bigint PRIMARY KEY,
    payload     jsonb NOT NULL,
    read_ct     integer NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now()
);
SQL

cat >"$work/runtime.sql" <<'SQL'
SELECT coalesce(array_agg(id), '{}') AS ids FROM automation.claim_executions('bench', 'w' || :client_id, :batch)
\gset
SELECT automation.complete_executions(':ids'::uuid[], NULL, 'w' || :client_id);
SQL
cat >"$work/k.sql" <<'SQL'
WITH claimed AS (
    UPDATE k_queue q SET vt = now() + interval '5 minutes', claimed_by = 'w' || :client_id, attempts = q.attempts + 1, started_at = now()
     WHERE q.id IN (SELECT id FROM k_queue WHERE workflow_name = 'bench' AND vt <= now() ORDER BY priority DESC, seq LIMIT :batch FOR UPDATE SKIP LOCKED)
    RETURNING q.id)
SELECT coalesce(array_agg(id), '{}') AS ids FROM claimed
\gset
WITH done AS (DELETE FROM k_queue WHERE id = ANY(':ids'::uuid[]) AND claimed_by = 'w' || :client_id RETURNING *),
hist AS (INSERT INTO automation_workflows.workflow_executions AS e (id, workflow_name, status, started_at, completed_at, metadata, attempts, claimed_by)
         SELECT id, workflow_name, 'success', started_at, now(), metadata, attempts, claimed_by FROM done RETURNING e.id, e.workflow_name, e.started_at, e.completed_at)
SELECT count(pg_notify('workflow_completed', json_build_object('workflow_id', id, 'workflow_name', workflow_name, 'status', 'success', 'duration', extract(epoch FROM completed_at - started_at))::text)) FROM hist;
SQL
cat >"$work/k2.sql" <<'SQL'
WITH claimed AS (
    UPDATE k_queue q SET vt = now() + interval '5 minutes', claimed_by = 'w' || :client_id, attempts = q.attempts + 1, started_at = now()
     WHERE q.id IN (SELECT id FROM k_queue WHERE workflow_name = 'bench' AND vt <= now() ORDER BY priority DESC, seq LIMIT :batch FOR UPDATE SKIP LOCKED)
    RETURNING q.id)
SELECT coalesce(array_agg(id), '{}') AS ids FROM claimed
\gset
WITH done AS (DELETE FROM k_queue WHERE id = ANY(':ids'::uuid[]) AND claimed_by = 'w' || :client_id RETURNING *),
hist AS (INSERT INTO automation_workflows.workflow_executions AS e (id, workflow_name, status, started_at, completed_at, metadata, attempts, claimed_by)
         SELECT id, workflow_name, 'success', started_at, now(), metadata, attempts, claimed_by FROM done RETURNING e.id, e.workflow_name, e.started_at, e.completed_at)
SELECT count(*) FROM hist;
SQL
cat >"$work/k3.sql" <<'SQL'
WITH claimed AS (
    UPDATE k_queue q SET vt = now() + interval '5 minutes', claimed_by = 'w' || :client_id, attempts = q.attempts + 1, started_at = now()
     WHERE q.id IN (SELECT id FROM k_queue WHERE workflow_name = 'bench' AND vt <= now() ORDER BY priority DESC, seq LIMIT :batch FOR UPDATE SKIP LOCKED)
    RETURNING q.id)
SELECT coalesce(array_agg(id), '{}') AS ids FROM claimed
\gset
WITH done AS (DELETE FROM k_queue WHERE id = ANY(':ids'::uuid[]) AND claimed_by = 'w' || :client_id RETURNING *),
hist AS (INSERT INTO k_log SELECT id, workflow_name, started_at, now(), metadata, attempts, claimed_by FROM done RETURNING 1)
SELECT count(*) FROM hist;
SQL
cat >"$work/lean.sql" <<'SQL'
WITH claimed AS (
    UPDATE lean_queue SET vt = now() + interval '5 minutes', read_ct = read_ct + 1
     WHERE id IN (SELECT id FROM lean_queue WHERE vt <= now() ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED)
    RETURNING id)
SELECT coalesce(array_agg(id), '{}') AS ids FROM claimed
\gset
WITH done AS (DELETE FROM lean_queue WHERE id = ANY(':ids'::bigint[]) RETURNING id, payload, read_ct)
INSERT INTO lean_archive (id, payload, read_ct) SELECT id, payload, read_ct FROM done;
SQL
fill() { # variant rows
    if [ "$1" = k ] || [ "$1" = k2 ] || [ "$1" = k3 ]; then
        psql_admin -d "$DB" -q <<SQL >/dev/null
TRUNCATE k_queue, k_log, automation_workflows.workflow_executions, automation.errors;
INSERT INTO k_queue (workflow_name, vt, metadata) SELECT 'bench', now() - interval '1 hour', jsonb_build_object('n', n) FROM generate_series(1, $2) n;
VACUUM ANALYZE k_queue, automation_workflows.workflow_executions;
CHECKPOINT;
SQL
    elif [ "$1" = runtime ]; then
        psql_admin -d "$DB" -q <<SQL >/dev/null
TRUNCATE automation_workflows.workflow_executions, automation.errors;
INSERT INTO automation_workflows.workflow_executions (workflow_name, status, started_at, run_after, metadata)
SELECT 'bench', 'pending', NULL, now() - interval '1 hour' + n * interval '1 ms', jsonb_build_object('n', n)
  FROM generate_series(1, $2) n;
VACUUM ANALYZE automation_workflows.workflow_executions;
CHECKPOINT;
SQL
    else
        psql_admin -d "$DB" -q <<SQL >/dev/null
TRUNCATE lean_queue, lean_archive;
INSERT INTO lean_queue (payload, vt) SELECT jsonb_build_object('n', n), now() - interval '1 hour' FROM generate_series(1, $2) n;
VACUUM ANALYZE lean_queue;
CHECKPOINT;
SQL
    fi
}

check() { # variant rows: every item completed once, none claimed twice
    local got
    if [ "$1" = k3 ]; then
        got=$(psql_admin -d "$DB" -Atc "SELECT count(*) || ' ' || max(attempts) FROM k_log")
    elif [ "$1" = k ] || [ "$1" = k2 ]; then
        got=$(psql_admin -d "$DB" -Atc "SELECT count(*) FILTER (WHERE status = 'success') || ' ' || coalesce(max(attempts), 0)
                                          FROM automation_workflows.workflow_executions")
    elif [ "$1" = runtime ]; then
        got=$(psql_admin -d "$DB" -Atc "SELECT count(*) FILTER (WHERE status = 'success') || ' ' || coalesce(max(attempts), 0)
                                          FROM automation_workflows.workflow_executions")
    else
        got=$(psql_admin -d "$DB" -Atc "SELECT (SELECT count(*) FROM lean_archive) || ' ' || coalesce((SELECT max(read_ct) FROM lean_archive), 0)
                                          || ' ' || (SELECT count(*) FROM lean_queue)")
        got=${got% 0}
    fi
    [ "$got" = "$2 1" ] || die "$1: expected '$2 1' (all completed, none claimed twice), got '$got'"
}

run() { # variant batch transactions-per-client -> items/s
    local variant=$1 batch=$2 tx=$3 rows=$(( $2 * $3 * CLIENTS ))
    fill "$variant" "$rows"
    local tps
    tps=$(as_postgres "$PGBENCH" -n -p "$PG_PORT" -c "$CLIENTS" -j 2 -t "$tx" -D batch="$batch" \
            -f "$work/$variant.sql" "$DB" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
    check "$variant" "$rows"
    awk -v t="$tps" -v b="$batch" 'BEGIN { printf "%.0f", t * b }'
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
machine() { echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), PostgreSQL $(psql_admin -Atc 'SHOW server_version')"; }

quick() {
    declare -A result
    for batch in 1 50; do
        tx=$([ "$batch" = 1 ] && echo 1500 || echo 60)
        for round in $(seq 1 ${ROUNDS:-3}); do
            for variant in ${VARIANTS:-runtime lean k k2 k3}; do
                eps=$(run "$variant" "$batch" "$tx")
                result[$variant.$batch]+="$eps "
                printf 'batch %-3s round %d  %-8s %8s items/s\n' "$batch" "$round" "$variant" "$eps" >&2
            done
        done
    done
    echo
    echo "claim + complete, $CLIENTS clients, median of ${ROUNDS:-3} runs (every run checked)$1:"
    for batch in 1 50; do
        for variant in ${VARIANTS:-runtime lean k k2 k3}; do
            printf '  batch %-3d %-8s %8d/s\n' "$batch" "$variant" "$(echo "${result[$variant.$batch]}" | median)"
        done
    done
    machine
}

case "$MODE" in
    quick) quick "" ;;
    held)
        # a session with an open transaction and a snapshot, for the whole run
        as_postgres psql -X -q -p "$PG_PORT" -d "$DB" -c "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_class; SELECT pg_sleep(86400);" >/dev/null 2>&1 &
        holder=$!
        sleep 1
        quick " — while another session holds a transaction open"
        ;;
    *) die "MODE is quick or held" ;;
esac
psql_admin -qc "DROP DATABASE $DB WITH (FORCE)" >/dev/null

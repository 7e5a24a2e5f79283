#!/usr/bin/env bash
# Claim-and-complete throughput with pgbench, as workers do it: one
# transaction claims a batch, a second completes it. Side by side, in the same
# run, on the same machine:
#   runtime  automation.claim_executions + automation.complete_executions
#            (0.4.0: the execution queue; the scheduler records finished
#            executions in workflow_executions and sends the completion
#            NOTIFYs, as in production: the run counts as done when they are
#            all recorded, and how long that took after the last completion
#            is reported)
#   errors   the runtime with the queue's history mode 'errors' (0.10.0,
#            automation.set_queue_history): successes are counted and
#            notified, not kept in workflow_executions
#   none     the same with history mode 'none'
#   lean     the leanest queue design, built here: a table (id, payload,
#            visibility time, read count) with its primary key only; claim =
#            UPDATE ... SET vt = now() + lease WHERE id IN (SELECT ... FOR
#            UPDATE SKIP LOCKED), complete = DELETE ... RETURNING into an
#            archive table (no NOTIFY)
# With MODE:
#   MODE=quick     (default) batch 1 and 50, 3 rounds each, medians; and
#                  the scheduler's own CPU for each run of the runtime's
#                  variants (its recordings and NOTIFYs), read from /proc
#   MODE=sustained 10 minutes of continuous claim/complete with enqueueing
#                  clients keeping the queue fed; rate per minute, the
#                  history's size and each of its indexes' every minute, the
#                  table and index sizes at the end; then the history purge
#                  (sizes before and after). The runtime's workers claim with
#                  wait => '1 s' (they sleep when the queue is empty; the
#                  lean design's workers, having no such thing, spin)
#   MODE=held      the quick run while another session holds a transaction
#                  (and its snapshot) open for the whole run: VACUUM can
#                  remove nothing meanwhile
# LOG_PAGES=N (0.13.0) leaves the execution log N empty pages long before
# each run, as a backlog and VACUUM leave it (it never shrinks): recordings
# must read only its pages that hold rows to run as fast as on a fresh log.
# HISTORY_AS=0.13.0 gives the history 0.13.0's console indexes (in
# descending order) after the extension is created: the baseline of
# 0.14.0's index sizes, on the same build. HISTORY_AS=deferred drops the
# seed's four indexes of the history that recording and the console do not
# use: the most that deferring them (issue 33) could give.
# VARIANTS="none bound lean" (0.15.0) adds an upper bound, not a design:
# the runtime's claim, and as completion a plain DELETE from the queue (no
# log, no recording, no count, no NOTIFY): what the queue could give if
# completing cost nothing beyond removing the row (checked: the queue ends
# empty).
# PROTO=prepared runs every client with pgbench's extended protocol and
# prepared statements (default: simple). VARIANTS="runtime raw lean" adds
# the queue's floor: its claim and completion as plain statements, no
# functions (raw).
# After each run, checks that every item was completed once and none was
# claimed twice. (pgbench substitutes :ids textually, also inside quotes.)
# The designs measured on the way to 0.4.0 (history and NOTIFY in the
# completing transaction, and so on) are in the README.
#
# Needs the cluster scripts/setup.sh prepared.
# Usage: bash bench/claim.sh [clients]      (MODE=... in the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
CLIENTS=${1:-8}
MODE=${MODE:-quick}
PROTO=${PROTO:-simple}
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
if [ "${HISTORY_AS:-}" = 0.13.0 ]; then
    psql_admin -d "$DB" -q <<'SQL'
DROP INDEX automation_workflows.workflow_executions_recent;
CREATE INDEX workflow_executions_recent ON automation_workflows.workflow_executions (started_at DESC, id DESC);
DROP INDEX automation_workflows.workflow_executions_failed_recent;
CREATE INDEX workflow_executions_failed_recent ON automation_workflows.workflow_executions (started_at DESC, id DESC)
    WHERE status IN ('error', 'timeout', 'cancelled');
DROP INDEX automation_workflows.workflow_executions_workflow_recent;
CREATE INDEX workflow_executions_workflow_recent
    ON automation_workflows.workflow_executions (workflow_name, started_at DESC, id DESC);
SQL
elif [ "${HISTORY_AS:-}" = deferred ]; then
    # an experiment, not a mode of the extension: the history without the
    # seed's four indexes that recording does not need and the console's
    # lists do not read (GIN on metadata, BRIN on started_at,
    # lower(workflow_name), (workflow_name, status, started_at)): what a
    # history whose newest part carries only the indexes of recording and of
    # the documented look-ups could give at most
    psql_admin -d "$DB" -q <<'SQL'
DROP INDEX automation_workflows.idx_workflow_metadata, automation_workflows.idx_workflow_time_brin,
           automation_workflows.idx_workflow_name_lower, automation_workflows.idx_workflow_status_time;
SQL
elif [ -n "${HISTORY_AS:-}" ]; then
    die "HISTORY_AS: 0.13.0 or deferred"
fi

cat >"$work/runtime.sql" <<'SQL'
SELECT coalesce(array_agg(id), '{}') AS ids FROM automation.claim_executions('bench', 'w' || :client_id, :batch)
\gset
SELECT automation.complete_executions(':ids'::uuid[], NULL, 'w' || :client_id);
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
# the queue's floor: the same claim and completion as plain SQL statements
# (no functions; the completion still logs and wakes the recorder)
cat >"$work/raw.sql" <<'SQL'
WITH taken AS (
    UPDATE automation_workflows.execution_queue q
       SET claimed_by = 'w' || :client_id, visible_at = clock_timestamp() + interval '5 min',
           started_at = clock_timestamp(), attempts = q.attempts + 1
     WHERE q.id IN (SELECT c.id FROM automation_workflows.execution_queue c
                     WHERE c.workflow_name = 'bench' AND c.visible_at <= clock_timestamp()
                     ORDER BY c.priority DESC, c.run_after, c.id LIMIT :batch FOR UPDATE SKIP LOCKED)
    RETURNING q.id)
SELECT coalesce(array_agg(id), '{}') AS ids FROM taken
\gset
WITH finished AS (
    DELETE FROM automation_workflows.execution_queue q
     WHERE q.id = ANY (':ids'::uuid[]) AND q.claimed_by IS NOT NULL AND q.claimed_by = 'w' || :client_id
    RETURNING q.*),
logged AS (
    INSERT INTO automation_workflows.execution_log AS l
           (id, workflow_name, status, started_at, completed_at, metadata, run_after, claimed_by, attempts, retry_of)
    SELECT f.id, f.workflow_name, 'success', f.started_at, GREATEST(now(), f.started_at), f.metadata,
           f.run_after, f.claimed_by, f.attempts, f.retry_of
      FROM finished f
    RETURNING l.id, l.ctid)
SELECT automation.executions_logged(array_agg(id), min(ctid), max(ctid)) FROM logged;
SQL
# the upper bound (bound): the runtime's claim; completing only deletes
cat >"$work/bound.sql" <<'SQL'
SELECT coalesce(array_agg(id), '{}') AS ids FROM automation.claim_executions('bench', 'w' || :client_id, :batch)
\gset
DELETE FROM automation_workflows.execution_queue q WHERE q.id = ANY (':ids'::uuid[]) AND q.claimed_by = 'w' || :client_id;
SQL
# the sustained run's runtime workers wait for work (claim_executions' wait)
# instead of spinning on an empty queue, as workers are meant to run
cat >"$work/runtime_wait.sql" <<'SQL'
SELECT coalesce(array_agg(id), '{}') AS ids FROM automation.claim_executions('bench', 'w' || :client_id, :batch, wait => '1 s')
\gset
SELECT automation.complete_executions(':ids'::uuid[], NULL, 'w' || :client_id);
SQL
# enqueueing clients of the sustained run
cat >"$work/runtime_enqueue.sql" <<'SQL'
SELECT automation.enqueue_execution('bench', jsonb_build_object('n', g)) FROM generate_series(1, :batch) g;
SQL
cat >"$work/lean_enqueue.sql" <<'SQL'
INSERT INTO lean_queue (payload) SELECT jsonb_build_object('n', g) FROM generate_series(1, :batch) g;
SQL

# the history modes run the runtime's script
cp "$work/runtime.sql" "$work/errors.sql"
cp "$work/runtime.sql" "$work/none.sql"
# with the extended protocol, pgbench passes :ids as a parameter (no quotes)
if [ "$PROTO" = prepared ]; then sed -i "s/':ids'/:ids/g" "$work"/*.sql; fi

log_high_water() { # LOG_PAGES: the log's pages, empty, as a burst and VACUUM leave them
    [ "${LOG_PAGES:-0}" -gt 0 ] || return 0
    cat <<SQL
BEGIN;
INSERT INTO automation_workflows.execution_log (id, workflow_name, status, completed_at, attempts)
SELECT automation.uuid_v7(), 'bench-burst', 'success', now(), 1 FROM generate_series(1, $LOG_PAGES * 80);
DELETE FROM automation_workflows.execution_log;
COMMIT;
VACUUM automation_workflows.execution_log;
SQL
}

fill() { # variant rows
    if [ "$1" != lean ]; then
        psql_admin -d "$DB" -q <<SQL >/dev/null
TRUNCATE automation_workflows.execution_queue, automation_workflows.execution_log,
         automation_workflows.workflow_executions, automation.errors, automation.execution_stats;
INSERT INTO automation_workflows.definitions (name, definition) VALUES ('bench', '{}') ON CONFLICT DO NOTHING;
SELECT automation.set_queue_history('bench', '$(case "$1" in (runtime|raw) echo full ;; (bound) echo none ;; (*) echo "$1" ;; esac)');
$(log_high_water)
INSERT INTO automation_workflows.execution_queue (workflow_name, run_after, visible_at, metadata)
SELECT 'bench', now() - interval '1 hour' + n * interval '1 ms', now() - interval '1 hour' + n * interval '1 ms',
       jsonb_build_object('n', n)
  FROM generate_series(1, $2) n;
VACUUM ANALYZE automation_workflows.execution_queue, automation_workflows.execution_log,
               automation_workflows.workflow_executions;
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

# successes of the benchmark's queue, as the counters have them (every
# history mode counts them; a purge does not uncount)
COUNTED="(SELECT coalesce(sum(finished), 0) FROM automation.execution_stats WHERE workflow_name = 'bench' AND status = 'success')"

recorded() { # rows -> ms until the scheduler has recorded every finished execution
    # (the log is empty) and counted all of them (0.15.0: the successes of a
    # 'none' queue never reach the log; the scheduler counts them from
    # shared memory)
    local t0 left
    t0=$(date +%s%N)
    while :; do
        left=$(psql_admin -d "$DB" -Atc "SELECT (SELECT count(*) FROM automation_workflows.execution_log) = 0 AND $COUNTED >= $1")
        [ "$left" = t ] && break
        [ $(( ($(date +%s%N) - t0) / 1000000000 )) -lt 120 ] || die "the scheduler did not record the executions within 120 s"
        sleep 0.05
    done
    echo $(( ($(date +%s%N) - t0) / 1000000 ))
}

check() { # variant rows: every item completed once, none claimed twice
    local got
    if [ "$1" = bound ]; then
        # nothing counts: the queue ends empty
        got="$(psql_admin -d "$DB" -Atc "SELECT $2 - count(*) FROM automation_workflows.execution_queue") 1"
    elif [ "$1" = errors ] || [ "$1" = none ]; then
        # the history keeps no success: the counters count them, and a second
        # claim of an execution would have failed its first claimer's
        # completion (worker_id given), which pgbench reports
        got=$(psql_admin -d "$DB" -Atc "SELECT $COUNTED
                                          || ' ' || (SELECT count(*) FROM automation_workflows.execution_queue)
                                          || ' ' || (SELECT count(*) FROM automation_workflows.workflow_executions)")
        got=${got% 0 0}' 1'
    elif [ "$1" != lean ]; then
        got=$(psql_admin -d "$DB" -Atc "SELECT count(*) FILTER (WHERE status = 'success') || ' ' || coalesce(max(attempts), 0)
                                          FROM automation_workflows.workflow_executions")
    else
        got=$(psql_admin -d "$DB" -Atc "SELECT (SELECT count(*) FROM lean_archive) || ' ' || coalesce((SELECT max(read_ct) FROM lean_archive), 0)
                                          || ' ' || (SELECT count(*) FROM lean_queue)")
        got=${got% 0}
    fi
    [ "$got" = "$2 1" ] || die "$1: expected '$2 1' (all completed, none claimed twice), got '$got'"
}

scheduler_pid() { # the benchmark database's scheduler (empty: none runs)
    psql_admin -Atc "SELECT pid FROM pg_stat_activity WHERE backend_type = 'automation_ext scheduler'
                       AND datname = '$DB'" | head -1
}
cpu_ms() { # pid -> its user + system CPU so far, ms
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] && awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$1/stat" || echo 0
}

run() { # variant batch transactions-per-client -> items/s
    local variant=$1 batch=$2 tx=$3 rows=$(( $2 * $3 * CLIENTS ))
    fill "$variant" "$rows"
    local tps pid0 cpu0 pid1 cpu1
    pid0=$(scheduler_pid)
    cpu0=$(cpu_ms "$pid0")
    tps=$(as_postgres "$PGBENCH" -n -p "$PG_PORT" -c "$CLIENTS" -j 2 -t "$tx" -D batch="$batch" \
            -M "$PROTO" -f "$work/$variant.sql" "$DB" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
    if [ "$variant" != lean ] && [ "$variant" != bound ]; then
        echo "$(recorded "$rows")" >>"$work/recorded_ms"
        # the scheduler's own CPU for the run (the recordings; a scheduler
        # that started during the run: all of its CPU)
        pid1=$(scheduler_pid)
        cpu1=$(cpu_ms "$pid1")
        [ "$pid0" = "$pid1" ] || cpu0=0
        echo "$(( cpu1 - cpu0 ))" >>"$work/scheduler_ms.$variant.$batch"
    fi
    check "$variant" "$rows"
    awk -v t="$tps" -v b="$batch" 'BEGIN { printf "%.0f", t * b }'
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
machine() { echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), PostgreSQL $(psql_admin -Atc 'SHOW server_version')"; }

quick() {
    declare -A result
    local variants=${VARIANTS:-runtime lean} batch tx round variant eps
    for batch in 1 50; do
        # (batch 50: 300 transactions a client since 0.14.0's second
        # library; 60 made runs of half a second, where a scheduler's
        # recording still running when pgbench ended was not counted and the
        # ratios moved by a tenth from one run to the next)
        tx=$([ "$batch" = 1 ] && echo 1500 || echo 300)
        for round in 1 2 3; do
            for variant in $variants; do
                eps=$(run "$variant" "$batch" "$tx")
                result[$variant.$batch]+="$eps "
                printf 'batch %-3s round %d  %-8s %8s items/s\n' "$batch" "$round" "$variant" "$eps" >&2
            done
        done
    done
    echo
    echo "claim + complete, $CLIENTS clients, median of 3 runs (every run checked: all completed, none claimed twice)$1:"
    for batch in 1 50; do
        for variant in $variants; do
            result[$variant.$batch]=$(echo "${result[$variant.$batch]}" | median)
            printf '  batch %-3d %-8s %8d items/s\n' "$batch" "$variant" "${result[$variant.$batch]}"
        done
        for variant in runtime errors none bound; do
            if [ -n "${result[$variant.$batch]:-}" ] && [ -n "${result[lean.$batch]:-}" ]; then
                awk -v r="${result[$variant.$batch]}" -v l="${result[lean.$batch]}" -v n="$batch" -v v="$variant" \
                    -v g="$([ "$variant" = runtime ] && echo 0.85 || echo 1)" \
                    'BEGIN { printf "  batch %-3d %s / lean = %.2f (%s)\n", n, v, r / l, v == "bound" ? "the upper bound: completing only deletes" : "goal >= " g }'
            fi
        done
    done
    for batch in 1 50; do
        for variant in runtime errors none raw; do
            [ -s "$work/scheduler_ms.$variant.$batch" ] || continue
            printf '  batch %-3d %-8s the scheduler'"'"'s CPU for the run (recording, notifying): %s ms (median of %s)\n' \
                "$batch" "$variant" "$(median <"$work/scheduler_ms.$variant.$batch")" "$(wc -l <"$work/scheduler_ms.$variant.$batch")"
        done
    done
    if [ -s "$work/recorded_ms" ]; then
        echo "  the last runtime completion was recorded in workflow_executions (and notified) $(median <"$work/recorded_ms") ms after the run ended (median; max $(sort -n "$work/recorded_ms" | tail -1) ms)"
    fi
    machine
}

completed() { # variant -> items completed so far
    if [ "$1" != lean ]; then
        psql_admin -d "$DB" -Atc "SELECT $COUNTED + (SELECT count(*) FROM automation_workflows.execution_log)"
    else
        psql_admin -d "$DB" -Atc "SELECT count(*) FROM lean_archive"
    fi
}

bounded_history() { # the purge job's work, after the sustained run: sizes before and after
    psql_admin -d "$DB" -Atc "SELECT '  history before the purge: ' || count(*) || ' executions, '
        || pg_size_pretty(pg_table_size('automation_workflows.workflow_executions')) || ' table + '
        || pg_size_pretty(pg_indexes_size('automation_workflows.workflow_executions')) || ' indexes'
        FROM automation_workflows.workflow_executions"
    psql_admin -qc "ALTER SYSTEM SET automation.execution_retention = 1" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 2
    local t0=$(date +%s%N)
    psql_admin -d "$DB" -qc "CALL automation.purge_executions()"
    echo "  purge_executions() with a 1-second retention: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    psql_admin -qc "ALTER SYSTEM RESET automation.execution_retention" -c "SELECT pg_reload_conf()" >/dev/null
    psql_admin -d "$DB" -qc "VACUUM automation_workflows.workflow_executions"
    psql_admin -d "$DB" -Atc "SELECT '  after it and a VACUUM: ' || count(*) || ' executions, '
        || pg_size_pretty(pg_table_size('automation_workflows.workflow_executions')) || ' table + '
        || pg_size_pretty(pg_indexes_size('automation_workflows.workflow_executions'))
        || ' indexes (free space that new history reuses; the hourly job keeps it at the retention''s worth)'
        FROM automation_workflows.workflow_executions"
}

history_size() { # the history's size and rows, for the per-minute lines
    psql_admin -d "$DB" -Atc "SELECT ', history ' || pg_size_pretty(pg_table_size('automation_workflows.workflow_executions'))
        || ' + ' || pg_size_pretty(pg_indexes_size('automation_workflows.workflow_executions')) || ' indexes ('
        || (SELECT count(*) FROM automation_workflows.workflow_executions) || ' rows), queue '
        || pg_size_pretty(pg_total_relation_size('automation_workflows.execution_queue'))"
}

index_sizes() { # each of the history's indexes, for the per-minute lines
    psql_admin -d "$DB" -Atc "SELECT '    indexes: ' || string_agg(c.relname || ' ' || pg_size_pretty(pg_relation_size(c.oid)), ', '
                                                        ORDER BY pg_relation_size(c.oid) DESC)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
       WHERE i.indrelid = 'automation_workflows.workflow_executions'::regclass"
}

sustained() { # MINUTES (10) of continuous load: 2 enqueueing clients, CLIENTS working ones, batch 10
    # VARIANTS (runtime lean): any of runtime, errors, none, lean.
    # RETENTION=seconds: automation.execution_retention for the run, and
    # purge_executions() called every minute (the default job runs hourly):
    # the history's size each minute shows whether it stays flat
    local minutes=${MINUTES:-10} variant m before now
    if [ -n "${RETENTION:-}" ]; then
        psql_admin -qc "ALTER SYSTEM SET automation.execution_retention = ${RETENTION}" -c "SELECT pg_reload_conf()" >/dev/null
    fi
    for variant in ${VARIANTS:-runtime lean}; do
        fill "$variant" 50000
        as_postgres "$PGBENCH" -n -p "$PG_PORT" -c 2 -j 1 -T $(( minutes * 60 )) -D batch=10 \
            -f "$work/${variant}_enqueue.sql" "$DB" >/dev/null 2>&1 &
        local feeder=$!
        local script=$variant
        [ "$variant" != lean ] && script=runtime_wait
        [ "$variant" != lean ] && cp "$work/runtime_enqueue.sql" "$work/${variant}_enqueue.sql" 2>/dev/null || true
        as_postgres "$PGBENCH" -n -p "$PG_PORT" -c "$CLIENTS" -j 2 -T $(( minutes * 60 )) -D batch=10 \
            -f "$work/$script.sql" "$DB" >/dev/null 2>&1 &
        local workers=$!
        before=$(completed "$variant")
        for m in $(seq 1 "$minutes"); do
            sleep 60
            now=$(completed "$variant")
            local sizes=""
            if [ "$variant" != lean ]; then
                [ -n "${RETENTION:-}" ] && psql_admin -d "$DB" -qc "CALL automation.purge_executions()"
                sizes=$(history_size)
            fi
            echo "  $variant minute $m: $(( (now - before) / 60 )) items/s completed$sizes"
            [ "$variant" != lean ] && index_sizes
            before=$now
        done
        wait "$feeder" "$workers" || true
        if [ "$variant" != lean ]; then
            echo "  $variant: recorded $(recorded 0) ms after the end"
            psql_admin -d "$DB" -Atc "SELECT '  $variant at the end: execution_queue ' || pg_size_pretty(pg_total_relation_size('automation_workflows.execution_queue'))
                || ', execution_log ' || pg_size_pretty(pg_total_relation_size('automation_workflows.execution_log'))
                || ', workflow_executions ' || pg_size_pretty(pg_table_size('automation_workflows.workflow_executions'))
                || ' table + ' || pg_size_pretty(pg_indexes_size('automation_workflows.workflow_executions')) || ' indexes, '
                || $COUNTED || ' completed, '
                || (SELECT count(*) FROM automation_workflows.execution_queue) || ' waiting'"
            [ -z "${RETENTION:-}" ] && bounded_history
        else
            psql_admin -d "$DB" -Atc "SELECT '  lean at the end: queue ' || pg_size_pretty(pg_total_relation_size('lean_queue'))
                || ', archive ' || pg_size_pretty(pg_total_relation_size('lean_archive'))
                || ', ' || (SELECT count(*) FROM lean_archive) || ' completed, ' || (SELECT count(*) FROM lean_queue) || ' waiting'"
        fi
    done
    if [ -n "${RETENTION:-}" ]; then
        psql_admin -qc "ALTER SYSTEM RESET automation.execution_retention" -c "SELECT pg_reload_conf()" >/dev/null
    fi
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
    sustained) sustained ;;
    *) die "MODE is quick, held or sustained" ;;
esac
psql_admin -qc "DROP DATABASE $DB WITH (FORCE)" >/dev/null

#!/usr/bin/env bash
# Benchmark for issue 14 ("a hundred databases"): worker slots follow the work,
# not the number of databases. A throw-away cluster (15/automation_manydb,
# port 5435) with max_worker_processes = 16 and the extension's defaults
# (automation.max_workers 8, automation.scheduler_workers 4, clamped to what
# max_worker_processes leaves):
#   1. one database, one 1-second job, for 30 s: start lateness
#      (start_time - scheduled_for) p50/p95 — the single-database figure;
#   2. DBS databases (default 100), each with the extension, its default jobs
#      and a 10-second job, for MINUTES minutes (default 2): every fire of
#      every database, runs that failed (none may fail for want of a slot),
#      start lateness p50/p95/max over all runs, the most automation_ext
#      processes seen at once (sampled every 0.2 s), and WARNING lines logged.
#
# Needs root and scripts/setup.sh's install (it uses the installed library).
# Usage: bash bench/many_databases.sh [minutes, default 2] [databases, default 100]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root
MINUTES=${1:-2}
DBS=${2:-100}
CLUSTER=automation_manydb
PORT=5435

if ! pg_lsclusters -h | awk '{print $2}' | grep -qx "$CLUSTER"; then
    pg_createcluster 15 "$CLUSTER" --port "$PORT" >/dev/null
fi
cat >/etc/postgresql/15/$CLUSTER/conf.d/bench.conf <<EOF
shared_preload_libraries = 'automation_ext'
max_worker_processes = 16
EOF
LOGFILE=/var/log/postgresql/postgresql-15-$CLUSTER.log
pg_ctlcluster 15 "$CLUSTER" restart
q() { runuser -u postgres -- psql -X -q -p "$PORT" -d "${2:-postgres}" -Atc "$1"; }
until q "SELECT 1" >/dev/null 2>&1; do sleep 0.5; done
for d in $(q "SELECT datname FROM pg_database WHERE datname LIKE 'many_%'"); do q "DROP DATABASE $d WITH (FORCE)"; done

stats() { # "p50 p95 max" in ms over the lateness of a database's runs of job 'tick'
    q "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ' ||
              round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ' || round(max(ms)::numeric, 1)
         FROM (SELECT extract(epoch FROM start_time - scheduled_for) * 1000 AS ms FROM automation.job_run_details
                WHERE status = 'succeeded' AND jobid = (SELECT jobid FROM automation.job WHERE jobname = 'tick')) s" "$1"
}

log "1. one database, a 1-second job, 30 s"
q "CREATE DATABASE many_one"
q "CREATE EXTENSION automation_ext; SELECT automation.schedule('tick', '1 second', 'SELECT 1')" many_one >/dev/null
sleep 31
read -r p50 p95 max <<<"$(stats many_one)"
echo "   1-second job, 1 database: start lateness p50 $p50 ms, p95 $p95 ms, max $max ms"
q "DROP DATABASE many_one WITH (FORCE)"

log "2. $DBS databases, a 10-second job each (and the default jobs), $MINUTES min, max_worker_processes = 16"
for i in $(seq -w 1 "$DBS"); do
    q "CREATE DATABASE many_$i"
    q "CREATE EXTENSION automation_ext;
       CREATE TABLE public.ticks (at timestamptz DEFAULT clock_timestamp());
       SELECT automation.schedule('tick', '10 seconds', 'INSERT INTO public.ticks DEFAULT VALUES')" "many_$i" >/dev/null
done
warnings_before=$(grep -c "WARNING" "$LOGFILE" || true)
start=$(q "SELECT now()")
most=0
end=$(( $(date +%s) + MINUTES * 60 ))
while [ "$(date +%s)" -lt "$end" ]; do
    n=$(q "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'automation_ext %'")
    [ "$n" -gt "$most" ] && most=$n
    sleep 0.2
done
sleep 12 # the last fires' runs end and are recorded
stop=$(q "SELECT now()")
fires=0; runs=0; failed=0; starved=0; served=0
rm -f /tmp/many_lateness.txt
for i in $(seq -w 1 "$DBS"); do
    r=$(q "SELECT count(*) FILTER (WHERE status = 'succeeded' AND jobid = (SELECT jobid FROM automation.job WHERE jobname = 'tick')),
                  count(*) FILTER (WHERE status = 'failed'),
                  count(*) FILTER (WHERE return_message LIKE '%worker%slot%')
             FROM automation.job_run_details WHERE scheduled_for >= '$start' AND scheduled_for < '$stop'::timestamptz - interval '12 seconds'" "many_$i")
    IFS='|' read -r ok bad slot <<<"$r"
    expected=$(q "SELECT count(*) FROM generate_series(date_trunc('minute', '$start'::timestamptz), '$stop'::timestamptz - interval '12 seconds', interval '10 seconds') t
                   WHERE t >= '$start'" "many_$i")
    fires=$((fires + expected)); runs=$((runs + ok)); failed=$((failed + bad)); starved=$((starved + slot))
    [ "$ok" -gt 0 ] && served=$((served + 1))
    q "SELECT extract(epoch FROM start_time - scheduled_for) * 1000 FROM automation.job_run_details
        WHERE status = 'succeeded' AND scheduled_for >= '$start'" "many_$i" >>/tmp/many_lateness.txt
done
warnings=$(( $(grep -c "WARNING" "$LOGFILE" || true) - warnings_before ))
lat=$(sort -n /tmp/many_lateness.txt | awk '{a[NR]=$1} END {printf "p50 %.0f ms, p95 %.0f ms, max %.0f ms (n=%d)", a[int(NR*0.5)+1], a[int(NR*0.95)], a[NR], NR}')
echo "   databases served: $served of $DBS"
echo "   10-second fires due: $fires; runs of them that succeeded: $runs"
echo "   runs of any job that failed: $failed ($starved of them for want of a worker slot)"
echo "   start lateness over all runs: $lat"
echo "   most automation_ext processes at once: $most (max_worker_processes = 16)"
echo "   WARNING lines logged meanwhile: $warnings"
for d in $(q "SELECT datname FROM pg_database WHERE datname LIKE 'many_%'"); do q "DROP DATABASE $d WITH (FORCE)"; done
pg_ctlcluster 15 "$CLUSTER" stop

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
#      start lateness p50/p95/max of the 10-second jobs' runs and over all
#      runs (ALIGNED=1: the 10-second jobs on multiples of 10 s, as before
#      0.11.0, for the comparison in the same session), the most automation_ext
#      processes seen at once (sampled every 0.2 s), and WARNING lines logged;
#      meanwhile a 1-second job in one more database (issue 34): the error
#      of the interval between its consecutive runs' starts, p50/p95/max,
#      against the same job alone in section 1; and the CPU of the processes
#      that came and went (the postmaster's reaped children: scheduler
#      visits, run workers), in all and per run;
#   3. the DBS databases idle (their 10-second jobs unscheduled, the default
#      jobs kept): CPU of the launcher, and of the whole machine, over 60 s;
#   4. pg_cron 1.4 (Debian's postgresql-15-cron; it has no second schedules,
#      so both systems get a 1-minute job in each of the DBS databases, pg_cron's
#      spread by cron.schedule_in_database from one database) for 3 minutes:
#      start lateness (start - the minute) p50/p95/max, side by side;
#   5. the floor under any design that starts a process in its database for
#      each fire (ours, pg_cron's): how many fresh backends a second this
#      machine starts (pgbench -C, a new connection for each SELECT 1, 8
#      clients as automation.max_workers), and so how long 95 fires due in
#      the same instant take at least to start.
#
# Needs root and scripts/setup.sh's install (it uses the installed library).
# Usage: bash bench/many_databases.sh [minutes, default 2] [databases, default 100]
#        SECTIONS="1 2" bash bench/many_databases.sh   (only some: 1, 2 (with 3), 4, 5)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root
MINUTES=${1:-2}
DBS=${2:-100}
SECTIONS=" ${SECTIONS:-1 2 4 5} "
want() { [[ "$SECTIONS" == *" $1 "* ]]; }
CLUSTER=automation_manydb
PORT=5435

if ! pg_lsclusters -h | awk '{print $2}' | grep -qx "$CLUSTER"; then
    pg_createcluster 15 "$CLUSTER" --port "$PORT" >/dev/null
fi
dpkg-query -W -f='${Status}' postgresql-15-cron 2>/dev/null | grep -q "install ok installed" \
    || { log "installing postgresql-15-cron"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15-cron >/dev/null; }
cat >/etc/postgresql/15/$CLUSTER/conf.d/bench.conf <<EOF
shared_preload_libraries = 'automation_ext,pg_cron'
max_worker_processes = 16
cron.database_name = 'postgres'
cron.host = '/var/run/postgresql'
cron.max_running_jobs = 8
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

interval_error() { # "p50 p95 max n" in ms: |(start - the previous run's start) - 1 s| of job 'tick'
    q "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY e)::numeric, 1) || ' ' ||
              round(percentile_cont(0.95) WITHIN GROUP (ORDER BY e)::numeric, 1) || ' ' || round(max(e)::numeric, 1) || ' ' || count(*)
         FROM (SELECT abs(extract(epoch FROM start_time - lag(start_time) OVER (ORDER BY scheduled_for)) * 1000 - 1000) AS e
                 FROM automation.job_run_details
                WHERE status = 'succeeded' AND jobid = (SELECT jobid FROM automation.job WHERE jobname = 'tick')
                  AND scheduled_for > now() - interval '$2 seconds') s WHERE e IS NOT NULL" "$1"
}
cpu_ms() { # CPU time (user + system) of process $1 so far, in ms
    awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$1/stat"
}
children_cpu_ms() { # CPU time of the exited children of process $1 (the postmaster: backends, workers), in ms
    awk -v hz="$(getconf CLK_TCK)" '{print int(($16 + $17) * 1000 / hz)}' "/proc/$1/stat"
}
machine_busy_ms() { # busy CPU time of the whole machine so far, in ms (all cores)
    awk -v hz="$(getconf CLK_TCK)" '/^cpu / {print int(($2 + $3 + $4 + $7 + $8) * 1000 / hz)}' /proc/stat
}
q "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS pg_cron" >/dev/null
q "SELECT cron.unschedule(jobid) FROM cron.job" >/dev/null

if want 1; then
log "1. one database, a 1-second job, 30 s"
q "CREATE DATABASE many_one"
q "CREATE EXTENSION automation_ext; SELECT automation.schedule('tick', '1 second', 'SELECT 1')" many_one >/dev/null
sleep 31
read -r p50 p95 max <<<"$(stats many_one)"
echo "   1-second job, 1 database: start lateness p50 $p50 ms, p95 $p95 ms, max $max ms"
read -r p50 p95 max n <<<"$(interval_error many_one 30)"
echo "   1-second job, 1 database: interval error p50 $p50 ms, p95 $p95 ms, max $max ms (n=$n)"
q "DROP DATABASE many_one WITH (FORCE)"
fi

if want 2; then
log "2. $DBS databases, a 10-second job each (and the default jobs), $MINUTES min, max_worker_processes = 16; a 1-second job in one more"
# 0.11.0: an 'N seconds' job's grid starts when it is scheduled (the jobs of
# the databases fall where their CREATE DATABASE put them); ALIGNED=1 puts
# every 10-second job on multiples of 10 s, as 0.10.0 and earlier did (the
# grid follows the next run the job table holds: set in the same transaction,
# before any scheduler sees the job)
aligned=""
if [ "${ALIGNED:-0}" = 1 ]; then
    echo "   ALIGNED=1: every 10-second job due at multiples of 10 s (0.10.0's grid)"
    aligned="UPDATE automation.job SET next_run_at = to_timestamp(ceil(extract(epoch FROM now()) / 10) * 10 + 10)
              WHERE jobname = 'tick'"
fi
q "CREATE DATABASE many_precise"
for i in $(seq -w 1 "$DBS"); do
    q "CREATE DATABASE many_$i"
    q "CREATE EXTENSION automation_ext;
       CREATE TABLE public.ticks (at timestamptz DEFAULT clock_timestamp());
       SELECT automation.schedule('tick', '10 seconds', 'INSERT INTO public.ticks DEFAULT VALUES');
       $aligned" "many_$i" >/dev/null
done
q "CREATE EXTENSION automation_ext; SELECT automation.schedule('tick', '1 second', 'SELECT 1')" many_precise >/dev/null
warnings_before=$(grep -c "WARNING" "$LOGFILE" || true)
postmaster=$(head -1 /var/lib/postgresql/15/$CLUSTER/postmaster.pid)
c0=$(children_cpu_ms "$postmaster")
start=$(q "SELECT now()")
# the most automation_ext processes at once, sampled every 0.2 s from one
# session (a connection per sample would cost a backend start each: its CPU
# would count in the fires' below)
most=$(q "DO \$\$ DECLARE most int := 0; n int; BEGIN
            FOR i IN 1..$((MINUTES * 300)) LOOP
                PERFORM pg_catalog.pg_stat_clear_snapshot();
                SELECT count(*) INTO n FROM pg_catalog.pg_stat_activity WHERE backend_type LIKE 'automation_ext %';
                most := greatest(most, n);
                PERFORM pg_catalog.pg_sleep(0.2);
            END LOOP;
            RAISE NOTICE 'most=%', most;
          END \$\$" 2>&1 | sed -n 's/.*most=\([0-9]*\).*/\1/p')
sleep 12 # the last fires' runs end and are recorded
stop=$(q "SELECT now()")
c1=$(children_cpu_ms "$postmaster")
fires=0; runs=0; failed=0; starved=0; served=0
rm -f /tmp/many_lateness.txt /tmp/many_lateness_tick.txt
for i in $(seq -w 1 "$DBS"); do
    r=$(q "SELECT count(*) FILTER (WHERE status = 'succeeded' AND jobid = (SELECT jobid FROM automation.job WHERE jobname = 'tick')),
                  count(*) FILTER (WHERE status = 'failed'),
                  count(*) FILTER (WHERE return_message LIKE '%worker%slot%')
             FROM automation.job_run_details WHERE scheduled_for >= '$start' AND scheduled_for < '$stop'::timestamptz - interval '12 seconds'" "many_$i")
    IFS='|' read -r ok bad slot <<<"$r"
    # the fires due on the job's grid (from its first run, or its next)
    expected=$(q "SELECT count(*) FROM (SELECT COALESCE((SELECT min(scheduled_for) FROM automation.job_run_details d WHERE d.jobid = j.jobid),
                                                        j.next_run_at) AS anchor
                                          FROM automation.job j WHERE jobname = 'tick') a,
                         generate_series(a.anchor + greatest(0, ceil(extract(epoch FROM '$start'::timestamptz - a.anchor) / 10)) * interval '10 seconds',
                                         '$stop'::timestamptz - interval '12 seconds', interval '10 seconds') t" "many_$i")
    fires=$((fires + expected)); runs=$((runs + ok)); failed=$((failed + bad)); starved=$((starved + slot))
    [ "$ok" -gt 0 ] && served=$((served + 1))
    q "SELECT extract(epoch FROM start_time - scheduled_for) * 1000 FROM automation.job_run_details
        WHERE status = 'succeeded' AND scheduled_for >= '$start'" "many_$i" >>/tmp/many_lateness.txt
    q "SELECT extract(epoch FROM start_time - scheduled_for) * 1000 FROM automation.job_run_details
        WHERE status = 'succeeded' AND scheduled_for >= '$start'
          AND jobid = (SELECT jobid FROM automation.job WHERE jobname = 'tick')" "many_$i" >>/tmp/many_lateness_tick.txt
done
warnings=$(( $(grep -c "WARNING" "$LOGFILE" || true) - warnings_before ))
pct() { sort -n "$1" | awk '{a[NR]=$1} END {printf "p50 %.0f ms, p95 %.0f ms, max %.0f ms (n=%d)", a[int(NR*0.5)+1], a[int(NR*0.95)], a[NR], NR}'; }
lat=$(pct /tmp/many_lateness.txt)
lat_tick=$(pct /tmp/many_lateness_tick.txt)
echo "   databases served: $served of $DBS"
echo "   10-second fires due: $fires; runs of them that succeeded: $runs"
echo "   runs of any job that failed: $failed ($starved of them for want of a worker slot)"
echo "   start lateness of the 10-second jobs' runs: $lat_tick"
echo "   start lateness over all runs (the default jobs' too): $lat"
echo "   most automation_ext processes at once: $most (max_worker_processes = 16)"
runs_all=$(wc -l </tmp/many_lateness.txt)
echo "   CPU of the processes that came and went meanwhile (scheduler visits, run workers): $((c1 - c0)) ms," \
     "$(awk -v ms=$((c1 - c0)) -v n="$runs_all" 'BEGIN {printf "%.1f", (n > 0 ? ms / n : 0)}') ms a run" \
     "(n=$runs_all, the default jobs' runs too)"
echo "   WARNING lines logged meanwhile: $warnings"
read -r p50 p95 max n <<<"$(interval_error many_precise $((MINUTES * 60)))"
echo "   the 1-second job beside them: interval error p50 $p50 ms, p95 $p95 ms, max $max ms (n=$n)"

log "3. the $DBS databases idle (10-second jobs unscheduled, default jobs kept), 60 s"
q "DROP DATABASE many_precise WITH (FORCE)"
for i in $(seq -w 1 "$DBS"); do q "SELECT automation.unschedule('tick')" "many_$i" >/dev/null; done
sleep 15
launcher=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'automation_ext launcher'")
l0=$(cpu_ms "$launcher"); m0=$(machine_busy_ms)
sleep 60
l1=$(cpu_ms "$launcher"); m1=$(machine_busy_ms)
echo "   idle, $DBS databases: launcher $((l1 - l0)) ms CPU in 60 s; the whole machine $((m1 - m0)) ms CPU in 60 s (2 cores: 120,000 ms)"
for d in $(q "SELECT datname FROM pg_database WHERE datname LIKE 'many_%'"); do q "DROP DATABASE $d WITH (FORCE)"; done
fi

if want 4; then
log "4. $DBS databases, a 1-minute job each: automation_ext, then pg_cron 1.4 (schedule_in_database), 3 min each"
for i in $(seq -w 1 "$DBS"); do
    q "CREATE DATABASE many_$i"
    q "CREATE EXTENSION automation_ext; CREATE TABLE public.ticks (at timestamptz DEFAULT clock_timestamp())" "many_$i" >/dev/null
done
for i in $(seq -w 1 "$DBS"); do
    q "SELECT automation.schedule('minute', '* * * * *', 'INSERT INTO public.ticks DEFAULT VALUES')" "many_$i" >/dev/null
done
sleep $(( 60 - $(date +%S | sed 's/^0//') + 2 ))
start=$(q "SELECT date_trunc('minute', now())")
sleep 180
rm -f /tmp/many_minute.txt
for i in $(seq -w 1 "$DBS"); do
    q "SELECT extract(epoch FROM start_time - scheduled_for) * 1000 FROM automation.job_run_details
        WHERE status = 'succeeded' AND jobid = (SELECT jobid FROM automation.job WHERE jobname = 'minute')
          AND scheduled_for >= '$start'" "many_$i" >>/tmp/many_minute.txt
    q "SELECT automation.unschedule('minute')" "many_$i" >/dev/null
done
ours=$(sort -n /tmp/many_minute.txt | awk '{a[NR]=$1} END {printf "p50 %.0f ms, p95 %.0f ms, max %.0f ms (n=%d)", a[int(NR*0.5)+1], a[int(NR*0.95)], a[NR], NR}')
q "TRUNCATE cron.job_run_details"
for i in $(seq -w 1 "$DBS"); do
    q "SELECT cron.schedule_in_database('minute-$i', '* * * * *', 'INSERT INTO public.ticks DEFAULT VALUES', 'many_$i')" >/dev/null
done
sleep $(( 60 - $(date +%S | sed 's/^0//') + 2 ))
start=$(q "SELECT date_trunc('minute', now())")
sleep 180
q "SELECT count(cron.unschedule(jobid)) FROM cron.job" >/dev/null
cron=$(q "SELECT extract(epoch FROM start_time - date_trunc('minute', start_time)) * 1000 FROM cron.job_run_details
           WHERE status = 'succeeded' AND start_time >= '$start'" | sort -n |
       awk '{a[NR]=$1} END {printf "p50 %.0f ms, p95 %.0f ms, max %.0f ms (n=%d)", a[int(NR*0.5)+1], a[int(NR*0.95)], a[NR], NR}')
echo "   1-minute job in each of $DBS databases, start lateness: automation_ext $ours"
echo "   1-minute job in each of $DBS databases, start lateness: pg_cron 1.4     $cron"
for d in $(q "SELECT datname FROM pg_database WHERE datname LIKE 'many_%'"); do q "DROP DATABASE $d WITH (FORCE)"; done
fi
if want 5; then
log "5. fresh backends a second (pgbench -C, 8 clients, SELECT 1, 20 s)"
echo "SELECT 1;" >/tmp/many_select1.sql
chmod 644 /tmp/many_select1.sql
out=$(runuser -u postgres -- /usr/lib/postgresql/15/bin/pgbench -n -C -c 8 -j 2 -T 20 -f /tmp/many_select1.sql \
      -h /var/run/postgresql -p "$PORT" postgres 2>&1)
rate=$(echo "$out" | awk '/^tps/ {print $3; exit}')
conn=$(echo "$out" | awk '/average connection time/ {print $5; exit}')
echo "   fresh backends: $rate a second (a new connection for each SELECT 1, 8 clients; average connection time $conn ms)"
echo "   95 fires due in the same instant, each needing a backend in its database, start over at least" \
     "$(awk -v r="$rate" 'BEGIN {printf "%.0f", 95 / r * 1000}') ms at that rate"
fi
pg_ctlcluster 15 "$CLUSTER" stop

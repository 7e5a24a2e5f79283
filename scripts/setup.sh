#!/usr/bin/env bash
# README command 1: set everything up on a fresh Debian 12 machine and show the
# extension working. Installs what is missing (apt packages, cargo-pgrx),
# builds in release mode, installs into Debian's PostgreSQL 15 cluster with the
# library preloaded, restarts it, creates the database automation_demo with
# the extension, and runs a short demo. Running it again is harmless.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DEMO_DB=${DEMO_DB:-automation_demo}

prepare_machine

log "database $DEMO_DB with the extension"
if [ -z "$(psql_admin -Atc "SELECT 1 FROM pg_database WHERE datname = '$DEMO_DB'")" ]; then
    as_postgres createdb -p "$PG_PORT" "$DEMO_DB"
fi
psql_admin -d "$DEMO_DB" -qc "CREATE EXTENSION IF NOT EXISTS automation_ext"
# An older installed version is brought up to the one just built.
PGOPTIONS="-c client_min_messages=warning" psql_admin -d "$DEMO_DB" -qc "ALTER EXTENSION automation_ext UPDATE"

log "demo (scripts/demo.sql)"
psql_admin -d "$DEMO_DB" -f scripts/demo.sql

log "done: connect with  runuser -u postgres -- psql $DEMO_DB"

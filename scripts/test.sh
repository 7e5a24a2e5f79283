#!/usr/bin/env bash
# README command 2: run every test. Exits non-zero on any failure.
#   1. installs what is missing (apt packages, cargo-pgrx),
#   2. cargo pgrx test: the plain Rust #[test]s and the #[pg_test]s, on a
#      throw-away cluster pgrx starts as the postgres user (initdb refuses root),
#   3. installs the release build into Debian's cluster and restarts it with
#      the library preloaded, as scripts/setup.sh does. This must come after
#      step 2: `cargo pgrx test --runas` copies its debug test build (with the
#      test-only schema) over the system install;
#   4. the SQL regression suite in pg_test/ (pg_regress) against that cluster,
#      with the released versions' install scripts (pg_test/releases/) beside
#      the current one, for the upgrade test;
#   5. the integration tests in pg_test/integration (real LISTEN clients,
#      several sessions), built as root and run as the postgres OS user.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

require_root
ensure_packages
ensure_cargo_pgrx

# cargo pgrx test installs its test build over the system library: a running
# cluster would crash on it
stop_cluster_using_library
log "cargo pgrx test pg$PG_MAJOR (unit tests and #[pg_test]s)"
PGRX_TEST_DATA=/var/tmp/automation_ext-pgrx-test
mkdir -p "$PGRX_TEST_DATA"
chown postgres:postgres "$PGRX_TEST_DATA"
cargo pgrx test "pg$PG_MAJOR" --runas postgres --pgdata "$PGRX_TEST_DATA"

install_extension
install_release_scripts
configure_and_restart_cluster

log "SQL regression suite (pg_test/, pg_regress against port $PG_PORT)"
PG_REGRESS=$(dirname "$("$PG_CONFIG" --pgxs)")/../test/regress/pg_regress
[ -x "$PG_REGRESS" ] || die "pg_regress not found at $PG_REGRESS (package postgresql-server-dev-$PG_MAJOR)"
REGRESS_DB=automation_regress
# pg_regress runs as postgres: give it a private copy of the suite to write into.
work=$(mktemp -d /tmp/automation_ext-regress.XXXXXX)
cp -r pg_test/. "$work/"
chown -R postgres:postgres "$work"
# --use-existing makes pg_regress use the database as it finds it
recreate_database "$REGRESS_DB"
status=0
as_postgres "$PG_REGRESS" \
    --use-existing --bindir="$PG_BIN" --port="$PG_PORT" \
    --dbname="$REGRESS_DB" \
    --inputdir="$work" --outputdir="$work" \
    --schedule="$work/schedule" || status=$?
if [ $status -ne 0 ]; then
    [ -f "$work/regression.diffs" ] && cat "$work/regression.diffs"
    die "SQL regression suite failed (output kept in $work)"
fi
rm -rf "$work"

log "integration tests (pg_test/integration, as the postgres user against port $PG_PORT)"
export CARGO_TARGET_DIR="$PWD/target/integration"
binaries=$(cargo test --manifest-path pg_test/integration/Cargo.toml --no-run --message-format=json \
           | grep -o '"executable":"[^"]*"' | sed 's/"executable":"\(.*\)"/\1/')
[ -n "$binaries" ] || die "no integration test binaries were built"
for bin in $binaries; do
    as_postgres env AUTOMATION_TEST_PORT="$PG_PORT" "$bin"
done
log "all tests passed"

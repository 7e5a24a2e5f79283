#!/usr/bin/env bash
# README command 2: run every test. Exits non-zero on any failure.
#
# The tests leave the machine's own PostgreSQL alone: they run against a
# private installation and a throw-away cluster of their own.
#   1. installs what is missing (apt packages, cargo-pgrx);
#   2. a private copy of Debian's PostgreSQL 15 installation under
#      /var/tmp/automation_ext-test/prefix (PostgreSQL is relocatable: the
#      copy's pg_config and postgres find everything under the prefix), which
#      pgrx is pointed at through a PGRX_HOME of its own;
#   3. cargo pgrx test: the plain Rust #[test]s and the #[pg_test]s, on the
#      cluster pgrx starts itself (as the postgres user: initdb refuses root);
#   4. the release build installed into the private copy (with the released
#      versions' install scripts, for the upgrade test), and a throw-away
#      cluster initdb'd from it in a temporary directory, on a free port, with
#      the library preloaded;
#   5. the SQL regression suite in pg_test/ (pg_regress) against it;
#   6. the integration tests in pg_test/integration (real LISTEN clients,
#      background workers, a SIGKILL, a streaming standby, dump and restore,
#      a hundred databases), built as root and run as the postgres OS user.
# The cluster is stopped and removed at the end, also when a test fails or
# the run is interrupted.
#
# PostgreSQL majors: every test runs on 15 (Debian's), 16 and 18 (pinned PyPI
# wheels, see lib.sh), one after the other, each with its own private
# installation, pgrx home, build directory and throw-away cluster. One major:
#                        bash scripts/test.sh --pg 16 [what]
# (the console's browser test and the alerting rules do not depend on the
# major: they run in the PostgreSQL 15 pass, or with --pg N console.)
#
# One regression file:   bash scripts/test.sh regress <name> [<name> ...]
# The alerting rules:    bash scripts/test.sh monitoring
# The web console:       bash scripts/test.sh console
# One integration test:  bash scripts/test.sh integration <binary> [<test name filter>]
# (both still build and start the throw-away cluster, and skip the other steps)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

MAJORS=()
while [ "${1:-}" = --pg ]; do
    [ -n "${2:-}" ] || die "--pg needs a major version (${SUPPORTED_MAJORS[*]})"
    [[ " ${SUPPORTED_MAJORS[*]} " == *" $2 "* ]] || die "PostgreSQL $2: not supported (majors: ${SUPPORTED_MAJORS[*]})"
    MAJORS+=("$2")
    shift 2
done
[ ${#MAJORS[@]} -gt 0 ] || MAJORS=("${SUPPORTED_MAJORS[@]}")
if [ ${#MAJORS[@]} -gt 1 ]; then
    # one pass per major, each in a process of its own (its own cluster and
    # clean-up); the first failure stops the run
    summary=""
    rest=("${MAJORS[@]:1}")
    for major in "${MAJORS[@]}"; do
        started=$(date +%s)
        # the first pass builds the others' release packages while its
        # integration tests run (mostly waiting on workers), at the lowest
        # CPU priority
        prebuild=""
        [ "$major" = "${MAJORS[0]}" ] && prebuild="${rest[*]}"
        # 16 between 15 and 18: regression and integration suites, without
        # the #[pg_test]s (the same Rust code, run on 15 and 18); and the
        # long soak tests of the scheduler's budgets (the same Rust code on
        # every major) not on every major: progress (60 databases restarted
        # on 4 and 8 worker processes, 133 s) on 15 only, resident_memory
        # (72 s) on 15 and 18 — to keep CI under 30 minutes. `--pg N`
        # alone runs everything.
        skip=""
        leave_out=""
        [ "$major" = 16 ] && { skip=1; leave_out="progress resident_memory"; }
        [ "$major" = 18 ] && leave_out="progress"
        AUTOMATION_TEST_SKIP_PG_TEST=$skip AUTOMATION_TEST_LEAVE_OUT=$leave_out AUTOMATION_TEST_PREBUILD=$prebuild \
            bash "$0" --pg "$major" "$@" \
            || die "the tests failed on PostgreSQL $major"
        summary="$summary  PostgreSQL $major: $(( $(date +%s) - started )) s"
    done
    log "all tests passed on PostgreSQL ${MAJORS[*]} ($summary )"
    exit 0
fi
ONLY=${1:-all}
shift || true

require_root
ensure_packages
ensure_test_packages
ensure_cargo_pgrx
# from here on, PG_MAJOR is the major under test (lib.sh's is Debian's)
PG_MAJOR=${MAJORS[0]}
# 2. its private installation (lib.sh: use_major)
use_major "$PG_MAJOR"
log "PostgreSQL $PG_MAJOR: $("$PPG_CONFIG" --version) at $PBIN"

# the alerting rules: valid, and each alert fires (and only) where it should
# (in the PostgreSQL 15 pass only: they do not depend on the major)
if { [ "$ONLY" = all ] && [ "$PG_MAJOR" = 15 ]; } || [ "$ONLY" = monitoring ]; then
    log "alerting rules: promtool check rules, promtool test rules (monitoring/)"
    promtool check rules monitoring/alerts.yaml
    (cd monitoring && promtool test rules alerts_test.yaml)
    [ "$ONLY" = monitoring ] && { log "all tests passed"; exit 0; }
fi

if [ "$ONLY" = all ] && [ -n "${AUTOMATION_TEST_SKIP_PG_TEST:-}" ]; then
    log "cargo pgrx test pg$PG_MAJOR: left out in this run (they run on 15 and 18; bash scripts/test.sh --pg $PG_MAJOR runs them)"
elif [ "$ONLY" = all ]; then
    log "cargo pgrx test pg$PG_MAJOR (unit tests and #[pg_test]s, on pgrx's own cluster)"
    PGRX_TEST_DATA=$MPRIVATE/pgrx-data
    mkdir -p "$PGRX_TEST_DATA"
    chown postgres:postgres "$PGRX_TEST_DATA"
    cargo pgrx test "pg$PG_MAJOR" --runas postgres --pgdata "$PGRX_TEST_DATA"
fi

# 4. the release build, packaged (scripts/package.sh) and installed from its
# package into the private installation, and a throw-away cluster from it
bash scripts/package.sh --pg "$PG_MAJOR"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
if [ "$PG_MAJOR" = 15 ]; then
    deb=target/packages/postgresql-15-automation-ext_${VERSION}-1_amd64.deb
    log "the .deb: its dependencies resolve (apt-get install --simulate), then unpacked into the private copy"
    apt-get install --simulate "./$deb" >/tmp/automation_ext-deb-simulate.log 2>&1 \
        || { cat /tmp/automation_ext-deb-simulate.log; die "apt cannot install $deb"; }
    grep -q "^Inst postgresql-15-automation-ext" /tmp/automation_ext-deb-simulate.log \
        || { cat /tmp/automation_ext-deb-simulate.log; die "apt would not install $deb"; }
    # the private copy has Debian's layout under $PREFIX: the .deb's paths land there
    dpkg-deb -x "$deb" "$PREFIX"
else
    log "the archive: installed with its install.sh into the private installation"
    unpack=$(mktemp -d)
    tar -C "$unpack" -xzf "target/packages/automation_ext-$VERSION-pg$PG_MAJOR-linux-x86_64.tar.gz"
    PG_CONFIG=$PPG_CONFIG sh "$unpack/automation_ext-$VERSION-pg$PG_MAJOR-linux-x86_64/install.sh"
    rm -rf "$unpack"
fi
cmp -s "$("$PPG_CONFIG" --pkglibdir)/automation_ext.so" "$CARGO_TARGET_DIR/release/libautomation_ext.so" \
    || die "the installed library is not the one just built"
install -m 644 pg_test/releases/automation_ext--*.sql "$("$PPG_CONFIG" --sharedir)/extension/"

free_port() {
    local p
    for p in $(seq 54400 54499); do
        ss -ltnH "sport = :$p" | grep -q . || { echo "$p"; return; }
    done
    die "no free port in 54400-54499"
}
TPORT=$(free_port)
TDATA=$(mktemp -d "$PRIVATE/cluster.XXXXXX")
TSOCK=$TDATA/socket
TLOG=$TDATA/server.log
mkdir -p "$TSOCK"
chown -R postgres:postgres "$TDATA"
# a clean environment: the server must not inherit the caller's (RUST_BACKTRACE
# would add backtraces to every error message the tests compare)
as_postgres_env() {
    runuser -u postgres -- env -i PATH=/usr/bin:/bin LANG=C.UTF-8 PGHOST="$TSOCK" PGPORT="$TPORT" "$@"
}
cleanup() {
    local status=$?
    if [ $status -ne 0 ] && [ -n "${prebuild_pid:-}" ]; then
        kill -- -"$prebuild_pid" 2>/dev/null || true
    fi
    as_postgres_env "$PBIN/pg_ctl" -D "$TDATA/data" -m immediate -w stop >/dev/null 2>&1 || true
    if [ $status -ne 0 ] && [ -f "$TLOG" ]; then
        cp "$TLOG" /tmp/automation_ext-test-server.log
        printf '\n==> the last lines of the test cluster'"'"'s log (all of it: /tmp/automation_ext-test-server.log)\n'
        tail -n 40 "$TLOG"
    fi
    rm -rf "$TDATA" /tmp/automation_ext_it_standby /tmp/automation_ext_it_standby.log
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "throw-away cluster in $TDATA, port $TPORT"
# trust on the socket: the tests log in as the roles they create (a hostile
# runner is tried from its own session, not only through SET ROLE); the
# socket lives in $TDATA, which only the postgres OS user may enter (0700)
as_postgres_env "$PBIN/initdb" -D "$TDATA/data" --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
cat >>"$TDATA/data/postgresql.conf" <<EOF
# scripts/test.sh: a throw-away cluster for the tests
port = $TPORT
listen_addresses = ''
unix_socket_directories = '$TSOCK'
shared_preload_libraries = 'automation_ext'
max_worker_processes = 32
wal_level = replica
max_wal_senders = 5
fsync = off
EOF
as_postgres_env "$PBIN/pg_ctl" -D "$TDATA/data" -l "$TLOG" -w start >/dev/null
tpsql() { as_postgres_env "$PBIN/psql" -X -v ON_ERROR_STOP=1 "$@"; }

if [ "$ONLY" = all ] || [ "$ONLY" = regress ]; then
    log "SQL regression suite (pg_test/, pg_regress against port $TPORT)"
    PG_REGRESS=$(dirname "$("$PPG_CONFIG" --pgxs)")/../test/regress/pg_regress
    [ -x "$PG_REGRESS" ] || die "pg_regress not found at $PG_REGRESS (package postgresql-server-dev-$PG_MAJOR)"
    REGRESS_DB=automation_regress
    work=$(mktemp -d /tmp/automation_ext-regress.XXXXXX)
    cp -r pg_test/. "$work/"
    chown -R postgres:postgres "$work"
    tpsql -q -d postgres -c "DROP DATABASE IF EXISTS $REGRESS_DB" -c "CREATE DATABASE $REGRESS_DB" >/dev/null
    if [ "$ONLY" = regress ] && [ $# -gt 0 ]; then
        # the files after the first expect the extension created by `install`
        tests=("$@")
        [[ " $* " == *" install "* ]] || tests=(install "$@")
    else
        tests=("--schedule=$work/schedule")
    fi
    status=0
    as_postgres_env "$PG_REGRESS" --use-existing --bindir="$PBIN" --host="$TSOCK" --port="$TPORT" \
        --dbname="$REGRESS_DB" --inputdir="$work" --outputdir="$work" "${tests[@]}" || status=$?
    if [ $status -ne 0 ]; then
        [ -f "$work/regression.diffs" ] && cat "$work/regression.diffs"
        die "SQL regression suite failed (output kept in $work)"
    fi
    rm -rf "$work"
fi

prebuild_pid=""
if [ "$ONLY" = all ] && [ -n "${AUTOMATION_TEST_PREBUILD:-}" ]; then
    ensure_venv   # (here, not in both at once: pip downloads the wheels)
    prebuild_args=()
    for m in $AUTOMATION_TEST_PREBUILD; do prebuild_args+=(--pg "$m"); done
    log "meanwhile, at the lowest CPU priority: the release packages for PostgreSQL $AUTOMATION_TEST_PREBUILD (log: $PRIVATE/prebuild.log)"
    # (a failure here shows again, in full, when that major's pass packages)
    # (in a session of its own, so that a failing pass can stop all of it)
    setsid env -u CARGO_TARGET_DIR -u PGRX_HOME nice -n 19 bash scripts/package.sh "${prebuild_args[@]}" \
        >"$PRIVATE/prebuild.log" 2>&1 </dev/null &
    prebuild_pid=$!
fi

if [ "$ONLY" = all ] || [ "$ONLY" = integration ]; then
    log "integration tests (pg_test/integration, as the postgres user against port $TPORT)"
    binaries=$(CARGO_TARGET_DIR="$PWD/target/integration" \
        cargo test --manifest-path pg_test/integration/Cargo.toml --no-run --message-format=json \
        | grep -o '"executable":"[^"]*"' | sed 's/"executable":"\(.*\)"/\1/')
    [ -n "$binaries" ] || die "no integration test binaries were built"
    # (0.8.0) the postgres OS user runs them: from a copy it can reach, so
    # that a checkout it cannot traverse (root's home, 0700) works too
    TBIN=$TDATA/bin
    mkdir -p "$TBIN"
    copied=""
    for bin in $binaries; do
        install -m 755 "$bin" "$TBIN/"
        copied="$copied $TBIN/$(basename "$bin")"
    done
    chown -R postgres:postgres "$TBIN"
    first=$(echo $copied | awk '{print $1}')
    runuser -u postgres -- test -x "$first" \
        || die "the postgres OS user cannot run the integration binaries copied to $TBIN"
    binaries=$copied
    for bin in $binaries; do
        name=$(basename "$bin" | sed 's/-[0-9a-f]*$//')
        if [ "$ONLY" = integration ] && [ $# -gt 0 ] && [ "$name" != "$1" ]; then
            continue
        fi
        if [ "$ONLY" = all ] && [[ " ${AUTOMATION_TEST_LEAVE_OUT:-} " == *" $name "* ]]; then
            log "integration test $name: left out of this pass (it runs on 15; bash scripts/test.sh --pg $PG_MAJOR runs it)"
            continue
        fi
        filter=()
        # one test asked for by name: show what it prints too
        [ "$ONLY" = integration ] && filter=(--nocapture)
        [ "$ONLY" = integration ] && [ $# -gt 1 ] && filter+=("$2")
        runuser -u postgres -- env -i PATH=/usr/bin:/bin LANG=C.UTF-8 AUTOMATION_TEST_HOST="$TSOCK" \
            AUTOMATION_TEST_PORT="$TPORT" AUTOMATION_TEST_BINDIR="$PBIN" AUTOMATION_TEST_LOG="$TLOG" \
            AUTOMATION_PROGRESS_WORKERS="${AUTOMATION_PROGRESS_WORKERS:-}" "$bin" "${filter[@]}"
    done
fi
# the web console: its unit tests, then a real browser (Debian's headless
# Chromium, driven by Playwright from PyPI in a venv of its own) against a
# database of the test cluster; screenshots under target/console-screenshots
if { [ "$ONLY" = all ] && [ "$PG_MAJOR" = 15 ]; } || [ "$ONLY" = console ]; then
    log "console: unit tests (console/)"
    (cd console && CARGO_TARGET_DIR="$PWD/../target/console" cargo test --quiet)
    (cd console && CARGO_TARGET_DIR="$PWD/../target/console" cargo build --quiet)
    ensure_playwright
    log "console: a real browser against the test cluster (pg_test/console/browser_test.py)"
    tpsql -q -d postgres -c "DROP DATABASE IF EXISTS automation_console_test" -c "CREATE DATABASE automation_console_test" >/dev/null
    # (on standard input: psql runs as postgres, which may not read the checkout)
    tpsql -q -d automation_console_test <pg_test/console/fixture.sql >/dev/null
    CPORT=$(free_port)
    CLOG=$(mktemp /tmp/automation_ext-console.XXXXXX)
    target/console/debug/automation-console --database "host=$TSOCK port=$TPORT user=postgres dbname=automation_console_test" \
        --listen "127.0.0.1:$CPORT" --allow-actions --refresh-seconds 2 >"$CLOG" 2>&1 &
    console_pid=$!
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$CPORT/healthz" >/dev/null 2>&1 && break
        kill -0 "$console_pid" 2>/dev/null || { cat "$CLOG"; die "the console did not start"; }
        sleep 0.1
    done
    rm -rf target/console-screenshots
    status=0
    CONSOLE_URL="http://127.0.0.1:$CPORT" PSQL="$PBIN/psql -h $TSOCK -p $TPORT -U postgres -d automation_console_test" \
        CHROMIUM=/usr/bin/chromium SHOTS="$PWD/target/console-screenshots" \
        "$VENV/bin/python" pg_test/console/browser_test.py || status=$?
    kill "$console_pid" 2>/dev/null || true
    wait "$console_pid" 2>/dev/null || true
    if [ $status -ne 0 ]; then
        cat "$CLOG"
        die "the console's browser test failed (screenshots in target/console-screenshots)"
    fi
    rm -f "$CLOG"
fi

if [ -n "$prebuild_pid" ]; then
    log "waiting for the packages built meanwhile"
    wait "$prebuild_pid" || true
fi
log "all tests passed (PostgreSQL $PG_MAJOR)"

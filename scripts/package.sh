#!/usr/bin/env bash
# Packages of automation_ext, one per PostgreSQL major, under target/packages/:
#
#   automation_ext-<version>-pg<N>-linux-x86_64.tar.gz   (15, 16, 18)
#       lib/automation_ext.so
#       extension/automation_ext.control, extension/automation_ext--*.sql
#       install.sh   copies them where `pg_config` says (PG_CONFIG=... to choose)
#   postgresql-15-automation-ext_<version>-1_amd64.deb   (Debian 12's PostgreSQL 15)
#       the same files under /usr/lib/postgresql/15/lib and
#       /usr/share/postgresql/15/extension; depends on postgresql-15 and the
#       shared libraries the library links (found the way dpkg-shlibdeps does:
#       the package owning each, libc6 at the newest GLIBC symbol version used)
#
# Built in release mode against the tests' private installation of each major
# (scripts/lib.sh: use_major), so the build is the one the tests run.
# scripts/test.sh installs each package into that private installation (the
# .deb by unpacking it into the private copy of Debian's tree) and runs the
# suites against it: never into the machine's own PostgreSQL.
#
#   bash scripts/package.sh              all majors
#   bash scripts/package.sh --pg 15      one (repeatable)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

MAJORS=()
while [ "${1:-}" = --pg ]; do
    MAJORS+=("$2")
    shift 2
done
[ $# -eq 0 ] || die "usage: bash scripts/package.sh [--pg N]..."
[ ${#MAJORS[@]} -gt 0 ] || MAJORS=("${SUPPORTED_MAJORS[@]}")

require_root
ensure_packages
ensure_cargo_pgrx

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
OUT=$PWD/target/packages
mkdir -p "$OUT"

# tarball MAJOR STAGE: lib/, extension/ and install.sh from pgrx's package tree
make_tarball() {
    local major=$1 stage=$2 name dir
    name=automation_ext-$VERSION-pg$major-linux-x86_64
    dir=$(mktemp -d)
    mkdir -p "$dir/$name/lib" "$dir/$name/extension"
    find "$stage" -name 'automation_ext.so' -exec install -m 755 {} "$dir/$name/lib/" \;
    find "$stage" \( -name 'automation_ext.control' -o -name 'automation_ext--*.sql' \) \
        -exec install -m 644 {} "$dir/$name/extension/" \;
    [ -f "$dir/$name/lib/automation_ext.so" ] && [ -f "$dir/$name/extension/automation_ext.control" ] \
        && [ -f "$dir/$name/extension/automation_ext--$VERSION.sql" ] \
        || die "pgrx's package tree $stage lacks the library, the control file or automation_ext--$VERSION.sql"
    cat >"$dir/$name/install.sh" <<EOF
#!/bin/sh
# automation_ext $VERSION for PostgreSQL $major: copies the library and the
# extension's files where pg_config says. PG_CONFIG=/path/to/pg_config to
# choose the installation (default: the first pg_config on PATH).
set -eu
cd "\$(dirname "\$0")"
PG_CONFIG=\${PG_CONFIG:-pg_config}
have=\$("\$PG_CONFIG" --version)
case "\$have" in
    "PostgreSQL $major."*) ;;
    *) echo "error: this package is for PostgreSQL $major; \$PG_CONFIG is \$have" >&2; exit 1 ;;
esac
install -m 755 lib/automation_ext.so "\$("\$PG_CONFIG" --pkglibdir)/"
install -m 644 extension/* "\$("\$PG_CONFIG" --sharedir)/extension/"
echo "automation_ext $VERSION installed into \$("\$PG_CONFIG" --pkglibdir) and \$("\$PG_CONFIG" --sharedir)/extension"
echo "next: shared_preload_libraries = 'automation_ext' in postgresql.conf, restart, then CREATE EXTENSION automation_ext"
EOF
    chmod 755 "$dir/$name/install.sh"
    tar -C "$dir" -czf "$OUT/$name.tar.gz" --owner=0 --group=0 "$name"
    rm -rf "$dir"
    log "package: $OUT/$name.tar.gz"
}

# The Debian package of the library for Debian's PostgreSQL 15.
# deb_depends LIB: Depends entries for the shared libraries LIB needs.
deb_depends() {
    local lib=$1 need path pkg glibc deps=()
    for need in $(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        path=$(ldconfig -p | awk -v n="$need" '$1 == n && /x86-64/ {print $NF; exit}')
        [ -n "$path" ] || die "$need (needed by $lib) is not a library of this machine"
        pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1) \
            || pkg=$(dpkg -S "$path" | head -1 | cut -d: -f1)
        [ -n "$pkg" ] || die "no Debian package owns $path"
        case " ${deps[*]} " in *" $pkg "*) ;; *) deps+=("$pkg") ;; esac
    done
    glibc=$(objdump -T "$lib" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
    local out="postgresql-15"
    for pkg in "${deps[@]}"; do
        if [ "$pkg" = libc6 ] && [ -n "$glibc" ]; then
            out="$out, libc6 (>= $glibc)"
        else
            out="$out, $pkg"
        fi
    done
    echo "$out"
}

make_deb() {
    local stage=$1 root pkgdir size deb
    root=$(mktemp -d)
    pkgdir=$root/postgresql-15-automation-ext
    mkdir -p "$pkgdir/DEBIAN" "$pkgdir/usr/lib/postgresql/15/lib" "$pkgdir/usr/share/postgresql/15/extension" \
             "$pkgdir/usr/share/doc/postgresql-15-automation-ext"
    find "$stage" -name 'automation_ext.so' -exec install -m 644 {} "$pkgdir/usr/lib/postgresql/15/lib/" \;
    find "$stage" \( -name 'automation_ext.control' -o -name 'automation_ext--*.sql' \) \
        -exec install -m 644 {} "$pkgdir/usr/share/postgresql/15/extension/" \;
    install -m 644 README.md "$pkgdir/usr/share/doc/postgresql-15-automation-ext/README.md"
    gzip -9n -c CHANGELOG.md >"$pkgdir/usr/share/doc/postgresql-15-automation-ext/changelog.gz"
    size=$(du -sk --exclude=DEBIAN "$pkgdir" | cut -f1)
    cat >"$pkgdir/DEBIAN/control" <<EOF
Package: postgresql-15-automation-ext
Version: $VERSION-1
Architecture: amd64
Maintainer: automation_ext developers <automation-ext@localhost>
Installed-Size: $size
Depends: $(deb_depends "$pkgdir/usr/lib/postgresql/15/lib/automation_ext.so")
Section: database
Priority: optional
Description: workflow and data-pipeline engine for PostgreSQL 15
 automation_ext turns a database into a workflow and data-pipeline engine:
 workflow definitions and executions, a queue, a cron scheduler in
 background workers, metrics and maintenance functions.
 .
 After installing, add automation_ext to shared_preload_libraries, restart
 PostgreSQL, and run CREATE EXTENSION automation_ext in a database.
EOF
    deb=$OUT/postgresql-15-automation-ext_${VERSION}-1_amd64.deb
    dpkg-deb --root-owner-group --build "$pkgdir" "$deb" >/dev/null
    rm -rf "$root"
    log "package: $deb ($(dpkg-deb -f "$deb" Depends))"
}

for major in "${MAJORS[@]}"; do
    (
        use_major "$major"
        stage=$CARGO_TARGET_DIR/release/automation_ext-pg$major
        log "building (release) and packaging automation_ext $VERSION for PostgreSQL $major"
        rm -rf "$stage"
        cargo pgrx package --pg-config "$PPG_CONFIG" --out-dir "$stage" >/dev/null
        make_tarball "$major" "$stage"
        [ "$major" = 15 ] && make_deb "$stage"
        true
    )
done

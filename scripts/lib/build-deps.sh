# shellcheck shell=bash
# Native build dependencies of the workspace: checked (and, as root, apt-get installed) before
# anything compiles. Used by scripts/test and .ci/run (clippy runs the same build scripts).
#
# Sourced, not executed, after scripts/lib/services.sh (for svc_log, die, is_root, apt_install).
#
#   what           why                                                            Debian package
#   cc             a C compiler and linker (rustc links with it; bundled SQLite)  build-essential
#   pkg-config     how openssl-sys and pq-sys find the system libraries           pkg-config
#   libpq          pq-sys links it (pg_config, pkg-config libpq, or libpq-fe.h)   libpq-dev
#   OpenSSL        openssl-sys builds against it (pkg-config openssl)             libssl-dev
#
# SQLite needs nothing: truxe-server builds it from source (its default `bundled-sqlite` feature).
# PQ_LIB_DIR and OPENSSL_DIR, which the -sys crates honour, count as "found".

# Print the Debian packages whose files are missing, one a line (nothing when all is there).
missing_build_deps() {
    local have_pkgconfig=0
    command -v cc >/dev/null 2>&1 || echo build-essential
    if command -v pkg-config >/dev/null 2>&1; then have_pkgconfig=1; else echo pkg-config; fi

    if [ -z "${PQ_LIB_DIR:-}" ] && ! command -v pg_config >/dev/null 2>&1 \
        && ! { [ "$have_pkgconfig" -eq 1 ] && pkg-config --exists libpq; } \
        && [ ! -e /usr/include/postgresql/libpq-fe.h ] && [ ! -e /usr/include/libpq-fe.h ]; then
        echo libpq-dev
    fi

    if [ -z "${OPENSSL_DIR:-}" ]; then
        if [ "$have_pkgconfig" -eq 1 ]; then
            pkg-config --exists openssl || echo libssl-dev
        elif [ ! -e /usr/include/openssl/ssl.h ]; then
            echo libssl-dev
        fi
    fi
}

# Dies (naming the packages) unless everything is there; as root, installs what is missing first.
ensure_build_deps() {
    local missing
    missing=$(missing_build_deps | tr '\n' ' ')
    missing=${missing% }
    [ -n "$missing" ] || return 0
    if ! is_root; then
        die "native build dependencies are missing; install the Debian packages: sudo apt-get install $missing
    (building needs a C compiler 'cc', 'pkg-config', and the libpq and OpenSSL development files)"
    fi
    svc_log "native build dependencies missing: installing $missing"
    # libsqlite3-dev is not needed by the default (bundled SQLite) build, but it is part of the
    # documented set and makes a --no-default-features build work too.
    # shellcheck disable=SC2086 # word splitting intended: one package per word
    apt_install $missing libsqlite3-dev
    missing=$(missing_build_deps | tr '\n' ' ')
    [ -z "${missing% }" ] || die "native build dependencies still missing after apt-get install: ${missing% }"
}

# shellcheck shell=bash
# Helpers for scripts/test: throwaway PostgreSQL and Redis instances for the test suite.
#
# Sourced, not executed. Every service started here is recorded in the TRUXE_SVC_* variables
# below, and `services_cleanup` stops exactly those (never anything the caller did not start).
# Needs bash 4+, and `set -euo pipefail` in the caller is fine: the functions handle their own
# failures and report them with `die`.

# --- state (filled in as services start; read by services_cleanup) -------------------------------
TRUXE_SVC_PG_DIR=""        # temp dir holding data/, the socket and pg.log
TRUXE_SVC_PG_BINDIR=""     # where initdb/pg_ctl/pg_isready/psql were found
TRUXE_SVC_PG_STARTED=0     # 1 once pg_ctl start succeeded
TRUXE_SVC_REDIS_DIR=""     # temp dir holding redis.pid, redis.log
TRUXE_SVC_REDIS_PID=""     # PID of the redis-server we daemonized
TRUXE_SVC_TLS_DIR=""       # temp dir holding the throwaway CA and server certificate (make_test_ca)
TRUXE_SVC_APT_UPDATED=0
TRUXE_SVC_LOG_TAG=scripts/test  # prefix of svc_log/die messages (.ci/run sets its own)

svc_log() { printf '[%s] %s\n' "$TRUXE_SVC_LOG_TAG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$TRUXE_SVC_LOG_TAG" "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Seconds since the epoch with sub-second precision (bash 5 has EPOCHREALTIME).
now() {
    if [ -n "${EPOCHREALTIME:-}" ]; then printf '%s\n' "${EPOCHREALTIME/,/.}"; else date +%s.%N; fi
}
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# Print a URL with any password replaced by ***.
redact_url() { printf '%s\n' "$1" | sed -E 's#^([a-zA-Z][a-zA-Z0-9+.-]*://)([^:/@]*):[^@/]*@#\1\2:***@#'; }

# A TCP port on 127.0.0.1 that is free right now (the kernel picks it). Another process may still
# take it before we bind, so callers retry on "address in use".
free_port() {
    local p=""
    if command -v python3 >/dev/null 2>&1; then
        p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null) || p=""
    fi
    if [ -z "$p" ]; then
        # Fallback without python: random ports in the ephemeral-free range until one refuses connections.
        local i
        for i in $(seq 1 50); do
            p=$(( 20000 + RANDOM % 30000 ))
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then break; fi
            p=""
        done
    fi
    [ -n "$p" ] || die "could not find a free TCP port"
    printf '%s\n' "$p"
}

apt_install() {
    is_root || die "cannot install $* (not root)"
    command -v apt-get >/dev/null 2>&1 || die "cannot install $*: apt-get not found (install it yourself)"
    if [ "$TRUXE_SVC_APT_UPDATED" -eq 0 ]; then
        svc_log "apt-get update"
        apt-get update -qq >&2 || die "apt-get update failed"
        TRUXE_SVC_APT_UPDATED=1
    fi
    svc_log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 \
        || die "apt-get install $* failed"
}

# Is the process alive and not a zombie?
pid_alive() {
    local pid=$1 state
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 0
    [ "$state" != "Z" ]
}

# --- TLS: a throwaway CA ------------------------------------------------------------------------

# Makes a CA and a server certificate for 127.0.0.1 and localhost signed by it (valid 2 days), and
# exports TRUXE_TEST_CA_FILE, TRUXE_TEST_TLS_CERT and TRUXE_TEST_TLS_KEY. Called before
# start_postgres/start_redis, it makes them listen with TLS too (PostgreSQL ssl=on on its one
# port; Redis a tls-port next to its plain one). The CA's key is deleted at once.
make_test_ca() {
    if ! command -v openssl >/dev/null 2>&1; then
        is_root || die "the openssl command is not found (install Debian's 'openssl' package)"
        apt_install openssl
    fi
    TRUXE_SVC_TLS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/truxe-test-tls.XXXXXX")
    local dir=$TRUXE_SVC_TLS_DIR out
    out=$( {
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -subj "/CN=Truxe throwaway test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout "$dir/ca.key" -out "$dir/ca.pem" &&
        openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
            -keyout "$dir/server.key" -out "$dir/server.csr" &&
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$dir/server.ext" &&
        openssl x509 -req -sha256 -days 2 -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
            -CAcreateserial -extfile "$dir/server.ext" -out "$dir/server.pem"
    } 2>&1 ) || { printf '%s\n' "$out" >&2; die "openssl could not make the throwaway test CA (output above)"; }
    rm -f "$dir/ca.key" "$dir/server.csr" "$dir/server.ext" "$dir/ca.srl"
    chmod 0755 "$dir"
    chmod 0644 "$dir/ca.pem" "$dir/server.pem" "$dir/server.key"
    export TRUXE_TEST_CA_FILE="$dir/ca.pem" TRUXE_TEST_TLS_CERT="$dir/server.pem" TRUXE_TEST_TLS_KEY="$dir/server.key"
}

# --- PostgreSQL ----------------------------------------------------------------------------------

pg_major_of_bindir() {
    "$1/postgres" --version 2>/dev/null | sed -nE 's/.*\) ([0-9]+)(\.|beta|rc|devel).*/\1/p' | head -n1
}

# Sets TRUXE_SVC_PG_BINDIR to a directory with initdb/pg_ctl of PostgreSQL >= 14. Order:
# $TRUXE_TEST_PG_BINDIR, the highest /usr/lib/postgresql/*/bin (Debian/Ubuntu), initdb on PATH,
# then (root only) apt-get install postgresql.
find_postgres() {
    local d major best="" best_major=0
    if [ -n "${TRUXE_TEST_PG_BINDIR:-}" ]; then
        [ -x "$TRUXE_TEST_PG_BINDIR/initdb" ] && [ -x "$TRUXE_TEST_PG_BINDIR/pg_ctl" ] \
            || die "TRUXE_TEST_PG_BINDIR=$TRUXE_TEST_PG_BINDIR has no initdb/pg_ctl"
        TRUXE_SVC_PG_BINDIR=$TRUXE_TEST_PG_BINDIR
        return
    fi
    local attempt
    for attempt in 1 2; do
        for d in /usr/lib/postgresql/*/bin; do
            [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] || continue
            major=$(pg_major_of_bindir "$d")
            [ -n "$major" ] && [ "$major" -ge 14 ] && [ "$major" -gt "$best_major" ] || continue
            best=$d best_major=$major
        done
        if [ -z "$best" ] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
            d=$(dirname "$(readlink -f "$(command -v initdb)")")
            major=$(pg_major_of_bindir "$d")
            if [ -n "$major" ] && [ "$major" -ge 14 ]; then best=$d best_major=$major; fi
        fi
        if [ -n "$best" ]; then TRUXE_SVC_PG_BINDIR=$best; return; fi
        [ "$attempt" -eq 1 ] || break
        is_root || die "PostgreSQL >= 14 server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or on PATH.
    Install the PostgreSQL server (e.g. 'sudo apt-get install postgresql'), set TRUXE_TEST_PG_BINDIR,
    or point TRUXE_TEST_DATABASE_URL at a PostgreSQL 14+ role that may CREATE DATABASE."
        apt_install postgresql
    done
    die "PostgreSQL >= 14 still not found after installing the 'postgresql' package"
}

# Run a PostgreSQL tool as the user that owns the cluster (postgres when we are root), from
# inside the temp dir so that the postgres user never needs access to the caller's cwd.
pg_as_owner() {
    if is_root; then
        (cd "$TRUXE_SVC_PG_DIR" && runuser -u postgres -- "$@")
    else
        (cd "$TRUXE_SVC_PG_DIR" && "$@")
    fi
}

# Starts a private cluster and exports TRUXE_TEST_DATABASE_URL.
start_postgres() {
    find_postgres
    local bin=$TRUXE_SVC_PG_BINDIR
    TRUXE_SVC_PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/truxe-test-pg.XXXXXX")
    if is_root; then
        command -v runuser >/dev/null 2>&1 || die "runuser not found (needed to run PostgreSQL as the postgres user)"
        id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to run PostgreSQL as
    (PostgreSQL refuses to run as root): create one, or run scripts/test as a normal user"
        chown postgres: "$TRUXE_SVC_PG_DIR"
        runuser -u postgres -- test -w "$TRUXE_SVC_PG_DIR" \
            || die "the postgres user cannot write $TRUXE_SVC_PG_DIR (check the permissions of TMPDIR=${TMPDIR:-/tmp})"
    fi
    local dir=$TRUXE_SVC_PG_DIR
    pg_as_owner "$bin/initdb" -D "$dir/data" -U truxe --auth=trust -E UTF8 --locale=C \
        --no-sync --no-instructions >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed (log above)"; }
    # Settings for a disposable, fast test cluster. The port goes on the command line, since it
    # may change between attempts.
    pg_as_owner sh -c "cat >> '$dir/data/postgresql.conf'" <<EOF

# --- scripts/test: throwaway test cluster ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
log_checkpoints = off
EOF
    if [ -n "$TRUXE_SVC_TLS_DIR" ]; then
        # The one port serves plain and TLS connections; the key must be the server's own, 0600.
        cp "$TRUXE_SVC_TLS_DIR/server.pem" "$TRUXE_SVC_TLS_DIR/server.key" "$dir/"
        if is_root; then chown postgres: "$dir/server.pem" "$dir/server.key"; fi
        chmod 0600 "$dir/server.key"
        pg_as_owner sh -c "cat >> '$dir/data/postgresql.conf'" <<EOF
ssl = on
ssl_cert_file = '$dir/server.pem'
ssl_key_file = '$dir/server.key'
EOF
    fi
    local attempt port
    for attempt in 1 2 3; do
        port=$(free_port)
        pg_as_owner sh -c ": > '$dir/pg.log'"
        if pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -o "-p $port" -w -t 60 start >"$dir/pg_ctl.out" 2>&1; then
            TRUXE_SVC_PG_STARTED=1
            break
        fi
        if grep -qiE 'could not bind|address already in use|could not create any TCP/IP sockets' "$dir/pg.log" && [ "$attempt" -lt 3 ]; then
            svc_log "PostgreSQL: port $port was taken, retrying with another one"
            continue
        fi
        cat "$dir/pg_ctl.out" >&2
        tail -n 30 "$dir/pg.log" >&2
        die "PostgreSQL did not start (log above, data in $dir)"
    done
    [ "$TRUXE_SVC_PG_STARTED" -eq 1 ] || die "PostgreSQL did not start"
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U truxe -d postgres -t 10 \
        || die "PostgreSQL started but pg_isready fails on 127.0.0.1:$port"
    export TRUXE_TEST_DATABASE_URL="postgres://truxe@127.0.0.1:$port/postgres"
}

stop_postgres() {
    [ "$TRUXE_SVC_PG_STARTED" -eq 1 ] || return 0
    local bin=$TRUXE_SVC_PG_BINDIR dir=$TRUXE_SVC_PG_DIR
    if ! pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
        svc_log "PostgreSQL: fast shutdown failed, using immediate"
        pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
    fi
    TRUXE_SVC_PG_STARTED=0
}

# --- Redis ---------------------------------------------------------------------------------------

find_redis() {
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        is_root || die "redis-server/redis-cli not found. Install Redis (e.g. 'sudo apt-get install redis-server'),
    or point TRUXE_TEST_REDIS_URL at a Redis the tests may use."
        apt_install redis-server
        command -v redis-server >/dev/null 2>&1 || die "redis-server still not found after installing it"
    fi
}

# Starts a private, non-persistent Redis and exports TRUXE_TEST_REDIS_URL (and, after
# make_test_ca, TRUXE_TEST_REDIS_TLS_URL: a tls-port of the same server, no client certificates).
start_redis() {
    find_redis
    TRUXE_SVC_REDIS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/truxe-test-redis.XXXXXX")
    local dir=$TRUXE_SVC_REDIS_DIR attempt port tls_port="" pid i reply
    local -a tls=()
    for attempt in 1 2 3; do
        port=$(free_port)
        if [ -n "$TRUXE_SVC_TLS_DIR" ]; then
            tls_port=$(free_port)
            tls=(--tls-port "$tls_port" --tls-cert-file "$TRUXE_SVC_TLS_DIR/server.pem"
                --tls-key-file "$TRUXE_SVC_TLS_DIR/server.key" --tls-ca-cert-file "$TRUXE_SVC_TLS_DIR/ca.pem"
                --tls-auth-clients no)
        fi
        rm -f "$dir/redis.pid"
        : >"$dir/redis.log"
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no ${tls[@]+"${tls[@]}"} \
            --daemonize yes --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log" \
            >/dev/null 2>&1 || true
        # Redis writes its pidfile once it listens and removes it on shutdown, so take the PID as
        # soon as it appears. Then check that the Redis answering on the port is really ours.
        pid=""
        for i in $(seq 1 100); do
            if [ -z "$pid" ] && [ -s "$dir/redis.pid" ]; then
                pid=$(tr -dc '0-9' <"$dir/redis.pid")
                TRUXE_SVC_REDIS_PID=$pid
            fi
            if [ -n "$pid" ]; then
                reply=$(redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null | tr -d '\r' \
                    | sed -n 's/^process_id://p') || reply=""
                [ "$reply" = "$pid" ] && break
                pid_alive "$pid" || break
            elif grep -qiE 'address already in use|failed listening|aborting' "$dir/redis.log"; then
                break
            fi
            sleep 0.1
        done
        if [ -n "$pid" ] && [ "${reply:-}" = "$pid" ] \
            && [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | tr -d '\r')" = "PONG" ]; then
            export TRUXE_TEST_REDIS_URL="redis://127.0.0.1:$port/"
            [ -z "$tls_port" ] || export TRUXE_TEST_REDIS_TLS_URL="rediss://127.0.0.1:$tls_port/"
            return 0
        fi
        stop_redis
        if grep -qiE 'address already in use' "$dir/redis.log" && [ "$attempt" -lt 3 ]; then
            svc_log "Redis: port $port was taken, retrying with another one"
            continue
        fi
        tail -n 20 "$dir/redis.log" >&2
        die "Redis did not start within 10 s (log above)"
    done
    die "Redis did not start"
}

stop_redis() {
    local pid=$TRUXE_SVC_REDIS_PID i
    [ -n "$pid" ] || return 0
    TRUXE_SVC_REDIS_PID=""
    # Only signal it if that PID is still a redis-server (PIDs get reused).
    if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'redis-server'; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do pid_alive "$pid" || return 0; sleep 0.1; done
        svc_log "Redis (pid $pid) ignored SIGTERM for 5 s, killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

# --- Chromium (browser tests) --------------------------------------------------------------------

ensure_chromium() {
    if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then return 0; fi
    if is_root; then
        apt_install chromium chromium-driver
        [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] \
            || die "chromium/chromedriver still missing after apt-get install"
    else
        die "/usr/bin/chromium or /usr/bin/chromedriver is missing and we are not root: install Debian's 'chromium' and 'chromium-driver' packages"
    fi
}

# --- nginx (tests/e2e/nginx.rs) -------------------------------------------------------------------

# The nginx test runs Debian's nginx binary as a child process with a config of its own; the
# system's nginx service is never used. Exports TRUXE_TEST_NGINX (the binary: /usr/sbin is not on
# every user's PATH). As root it installs the `nginx` package when missing; Debian's postinst would
# start the system nginx on port 80, so a temporary /usr/sbin/policy-rc.d (exit 101: "do not start
# services") is in place during the install unless one already is, and the service is disabled
# afterwards so that it does not start at the next boot either.
ensure_nginx() {
    local bin
    bin=$(command -v nginx 2>/dev/null || true)
    [ -n "$bin" ] || [ ! -x /usr/sbin/nginx ] || bin=/usr/sbin/nginx
    if [ -z "$bin" ]; then
        is_root || die "nginx is missing and we are not root: install Debian's 'nginx' package (its service need not run: the test starts an nginx of its own)"
        local policy=/usr/sbin/policy-rc.d ours=0 rc=0
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\n# scripts/test: no service starts while it installs nginx\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            ours=1
        fi
        (apt_install nginx) || rc=$?
        [ "$ours" -eq 0 ] || rm -f -- "$policy"
        [ "$rc" -eq 0 ] || die "installing nginx failed"
        if command -v systemctl >/dev/null 2>&1; then
            systemctl disable --quiet nginx.service >/dev/null 2>&1 || true
        fi
        if command -v update-rc.d >/dev/null 2>&1; then
            update-rc.d nginx disable >/dev/null 2>&1 || true
        fi
        svc_log "installed nginx; its system service is disabled (the tests start their own)"
        [ -x /usr/sbin/nginx ] || die "nginx still missing after installing the 'nginx' package"
        bin=/usr/sbin/nginx
    fi
    export TRUXE_TEST_NGINX=$bin
}

# --- packaging (tests/e2e/packaging.rs) ---------------------------------------------------------

# The packaging test reads the .deb with dpkg-deb, installs it with dpkg (as root) and checks the
# units with `systemd-analyze verify`, which needs no running systemd. As root it installs the
# `systemd` package when systemd-analyze is missing (a container without systemd as PID 1 is
# fine: nothing is started).
ensure_packaging_tools() {
    command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb is missing: the packaging test needs Debian's dpkg"
    if ! command -v systemd-analyze >/dev/null 2>&1; then
        is_root || die "systemd-analyze is missing and we are not root: install Debian's 'systemd' package (the packaging test runs 'systemd-analyze verify' on the units)"
        apt_install systemd
        command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze still missing after installing the 'systemd' package"
    fi
}

# --- cleanup (trap EXIT) -------------------------------------------------------------------------

services_cleanup() {
    set +e
    stop_redis
    stop_postgres
    [ -n "$TRUXE_SVC_REDIS_DIR" ] && rm -rf -- "$TRUXE_SVC_REDIS_DIR"
    [ -n "$TRUXE_SVC_PG_DIR" ] && rm -rf -- "$TRUXE_SVC_PG_DIR"
    [ -n "$TRUXE_SVC_TLS_DIR" ] && rm -rf -- "$TRUXE_SVC_TLS_DIR"
    TRUXE_SVC_REDIS_DIR="" TRUXE_SVC_PG_DIR="" TRUXE_SVC_TLS_DIR=""
}

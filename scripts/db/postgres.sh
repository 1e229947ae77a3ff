#!/usr/bin/env bash
# Starts/stops a throw-away PostgreSQL 15 server for the storage tests, on
# 127.0.0.1 only, with its cluster, socket and log inside DIR. Installs
# Debian's postgresql-15 first if it is missing.
#   scripts/db/postgres.sh start DIR [PORT]   # prints the URL on its last line
#   scripts/db/postgres.sh stop DIR
#   scripts/db/postgres.sh restart DIR        # same port as the last start
#   scripts/db/postgres.sh status DIR
# start is idempotent; on an initialized but stopped DIR it just starts it.
# PORT is needed on the first start only; later ones reuse it.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

die() { echo "postgres.sh: $*" >&2; exit 1; }
usage() { die "usage: $0 start DIR [PORT] | stop DIR | restart DIR | status DIR"; }

install_postgres() {
    [ -x "$PG_BIN/initdb" ] && return
    [ "$(id -u)" -eq 0 ] || die "postgresql-15 is missing and installing it needs root"
    # One install at a time, even if several tests start servers at once.
    exec 9<"$SELF"
    flock 9
    if [ ! -x "$PG_BIN/initdb" ]; then
        echo "installing Debian's postgresql-15" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends \
            postgresql-15 >&2
        # The package creates and may start a cluster on 5432: stop it and keep
        # it from starting again.
        if [ -f /etc/postgresql/15/main/start.conf ]; then
            pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
            echo manual >/etc/postgresql/15/main/start.conf
        fi
    fi
    exec 9<&-
}

# Runs a command as the postgres user when we are root (initdb refuses root).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# The postmaster of DIR is alive (a killed one can linger as a zombie, which
# pg_ctl status still counts as running).
is_running() {
    local pid
    pid="$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null)" || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ] &&
        ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}
conf_port() { sed -n "s/^port = \([0-9]*\)$/\1/p" "$DATA/test.conf" 2>/dev/null || true; }
url() { echo "postgres://postgres@127.0.0.1:$1/analytics"; }

start() {
    local port="${1:-}"
    port="${port:-$(conf_port)}"
    [ -n "$port" ] || die "the first start of $DIR needs a PORT"
    [[ "$port" =~ ^[0-9]+$ ]] || die "bad port: $port"
    local sock="$DIR/.s.PGSQL.$port"
    [ "${#sock}" -le 100 ] || die "DIR path too long for a unix socket: $DIR"
    install_postgres
    mkdir -p "$DIR"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$DIR"
    as_pg test -w "$DIR" || die "$DIR is not writable by $(as_pg id -un) (check its parent folders)"

    if [ ! -f "$DATA/PG_VERSION" ]; then
        as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C \
            --no-sync >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
        echo "include_if_exists = 'test.conf'" >>"$DATA/postgresql.conf"
    fi

    if is_running && [ "$(conf_port)" = "$port" ]; then
        echo "already running on port $port" >&2
    else
        is_running && as_pg "$PG_BIN/pg_ctl" stop -D "$DATA" -m fast -w >/dev/null
        as_pg tee "$DATA/test.conf" >/dev/null <<EOF
# written by scripts/db/postgres.sh on each start
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
        # Retried: just after a crash the old postmaster's lock and shared
        # memory can still be held for a moment.
        local try
        for try in 1 2 3 4 5 6 7 8 9 10; do
            as_pg "$PG_BIN/pg_ctl" start -D "$DATA" -l "$DIR/postgres.log" -w -t 60 >/dev/null 2>&1 && break
            [ "$try" -lt 10 ] || { tail -n 20 "$DIR/postgres.log" >&2; die "server did not start"; }
            sleep 1
        done
    fi

    local i
    for i in $(seq 1 120); do
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres && break
        [ "$i" -lt 120 ] || die "server not ready after 60 s"
        sleep 0.5
    done
    if [ -z "$("$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atqc \
        "select 1 from pg_database where datname = 'analytics'")" ]; then
        "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres analytics
    fi
    url "$port"
}

stop() {
    if is_running; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >/dev/null
        echo "stopped" >&2
    else
        echo "not running" >&2
    fi
}

[ $# -ge 2 ] || usage
cmd="$1"
[ "$cmd" != start ] || mkdir -p "$2"
[ -d "$2" ] || { echo "not running" >&2; [ "$cmd" = stop ] && exit 0; exit 3; }
DIR="$(cd "$2" && pwd)"
DATA="$DIR/data"
case "$cmd" in
    start) [ $# -le 3 ] || usage; start "${3:-}" ;;
    stop) stop ;;
    restart) [ -f "$DATA/PG_VERSION" ] || die "$DIR holds no cluster: use start"; stop; start ;;
    status)
        if is_running; then url "$(conf_port)"; else echo "not running"; exit 3; fi ;;
    *) usage ;;
esac

#!/usr/bin/env bash
# A throw-away PostgreSQL 15 cluster on 127.0.0.1 for the demo, the tests and
# the benchmark, run by the postgres OS user (initdb refuses root).
#   scripts/pg.sh start DIR PORT [extra postgresql.conf lines...]
#   scripts/pg.sh stop DIR
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin
cmd=$1 dir=$2
as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else sudo -u postgres "$@"; fi; }
case "$cmd" in
start)
    port=$3; shift 3
    if [ ! -s "$dir/PG_VERSION" ]; then
        mkdir -p "$dir" && chown postgres:postgres "$dir" 2>/dev/null || true
        as_pg "$BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
        {
            echo "listen_addresses = '127.0.0.1'"
            echo "port = $port"
            echo "unix_socket_directories = '$dir'"
            echo "max_worker_processes = 16"
            echo "shared_buffers = 512MB"
            echo "max_wal_size = 4GB"
            echo "logging_collector = off"
            for line in "$@"; do echo "$line"; done
        } | as_pg tee -a "$dir/postgresql.conf" >/dev/null
    fi
    as_pg "$BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start >/dev/null
    ;;
stop)
    [ -s "$dir/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
    ;;
*) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac

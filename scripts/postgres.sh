#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on loopback for the tests and print its URL.
# Usage: eval "$(scripts/postgres.sh start)"  -> exports ARBENCH_TEST_PG_URL;  scripts/postgres.sh stop
set -euo pipefail
PGDATA_DIR="${ARBENCH_PGDATA:-/tmp/arbench-pg}"
PORT="${ARBENCH_PGPORT:-54329}"
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/pg_ctl" ]; then
  echo "echo 'PostgreSQL server binaries not found: PostgreSQL tests will skip (apt-get install postgresql)' >&2"
  exit 0
fi
run_as() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
case "${1:-start}" in
  start)
    if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
      mkdir -p "$PGDATA_DIR"; [ "$(id -u)" = 0 ] && chown postgres "$PGDATA_DIR"
      run_as "$bindir/initdb -D $PGDATA_DIR -A trust -U postgres" >/dev/null
    fi
    if ! run_as "$bindir/pg_ctl -D $PGDATA_DIR status" >/dev/null 2>&1; then
      run_as "$bindir/pg_ctl -D $PGDATA_DIR -l $PGDATA_DIR/server.log -w -o \"-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200\" start" >/dev/null
    fi
    echo "export ARBENCH_TEST_PG_URL=postgresql://postgres@127.0.0.1:$PORT/postgres"
    ;;
  stop)
    run_as "$bindir/pg_ctl -D $PGDATA_DIR -m fast stop" >/dev/null 2>&1 || true
    ;;
esac

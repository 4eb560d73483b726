#!/usr/bin/env bash
# Throwaway PostgreSQL and Redis servers on loopback for `make test-pg`.
#   scripts/test-services.sh start DIR   installs (apt) if needed, starts both, prints the env to use
#   scripts/test-services.sh stop DIR
# Data lives under DIR and is deleted by stop; no system service is used.
set -euo pipefail
ACTION=${1:?start|stop}
DIR=$(realpath -m "${2:-/tmp/meiqia-test-services}")
PG_PORT=${MEIQIA_TEST_PG_PORT:-54329}
REDIS_PORT=${MEIQIA_TEST_REDIS_PORT:-63799}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

# PostgreSQL refuses to run as root: run its tools as the postgres user then.
as_pg() {
  if [ "$(id -u)" = "0" ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

case "$ACTION" in
start)
  if [ -z "$(pg_bin)" ] || ! command -v redis-server >/dev/null; then
    SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql redis-server >/dev/null
  fi
  BIN=$(pg_bin)
  mkdir -p "$DIR"
  [ "$(id -u)" = "0" ] && chown postgres "$DIR"
  if [ ! -f "$DIR/pg/PG_VERSION" ]; then
    as_pg "$BIN/initdb -D '$DIR/pg' -A trust -U meiqia -E UTF8 --locale=C.UTF-8 >/dev/null"
  fi
  as_pg "$BIN/pg_ctl -D '$DIR/pg' -l '$DIR/pg.log' -w -o \"-p $PG_PORT -k '$DIR' -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300\" start >/dev/null"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
    --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log"
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "export MEIQIA_TEST_PG_URL=postgresql+psycopg://meiqia@127.0.0.1:$PG_PORT"
  echo "export MEIQIA_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
  ;;
stop)
  BIN=$(pg_bin)
  if [ -n "$BIN" ] && [ -f "$DIR/pg/postmaster.pid" ]; then
    as_pg "$BIN/pg_ctl -D '$DIR/pg' -m fast -w stop >/dev/null" || true
  fi
  if [ -f "$DIR/redis.pid" ]; then kill "$(cat "$DIR/redis.pid")" 2>/dev/null || true; fi
  rm -rf "$DIR"
  ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac

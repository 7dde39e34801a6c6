#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL cluster of Debian's postgresql
# package: initdb in DIR, one server on a free loopback port, trust auth
# for local connections, fsync on (the defaults: synchronous_commit on).
#
#   scripts/postgres.sh start DIR   prints one line: the database's URL
#   scripts/postgres.sh stop DIR    (immediate: like a crash of the server)
#   scripts/postgres.sh restart DIR (a stopped cluster, same port and data)
#
# The binaries are found on PATH or under /usr/lib/postgresql/*/bin. As
# root (initdb refuses root), the cluster belongs to the `postgres` user
# the package creates. The test command and the bench report use this.
set -euo pipefail

cmd=${1:?usage: $0 start|stop DIR}
dir=${2:?usage: $0 start|stop DIR}

bin=""
if command -v pg_ctl >/dev/null 2>&1; then
  bin=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
else
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] && bin=$d
  done
fi
[ -n "$bin" ] || { echo "error: PostgreSQL's pg_ctl not found (install Debian's postgresql package)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
      # The server runs as `postgres`: it must reach DIR (a mktemp -d
      # directory's parent is often 0700).
      chown postgres "$dir"
      chmod o+x "$(dirname "$dir")"
    fi
    as_owner "$bin/initdb" -D "$dir/data" -U idem --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    # A free loopback port: the first that nothing answers on and the
    # server can bind (another process may take a port between the check
    # and the start: then the next one).
    port=""
    for p in $(shuf -i 20000-60000 -n 50); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        continue
      fi
      rm -f "$dir/server.log"
      if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $p -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=128MB" \
        start >/dev/null; then
        port=$p
        break
      fi
      grep -q "could not bind\|Address already in use" "$dir/server.log" 2>/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    done
    [ -n "$port" ] || { echo "error: PostgreSQL found no free loopback port" >&2; cat "$dir/server.log" >&2; exit 1; }
    echo "$port" >"$dir/port"
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U idem idem
    echo "postgres://idem@127.0.0.1:$port/idem"
    ;;
  restart)
    port=$(cat "$dir/port")
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=128MB" \
      start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    ;;
  stop)
    [ -d "$dir/data" ] || exit 0
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine. This is the README's
# test command and what .ci/run calls after fmt and clippy.
#
# Everything the tests need is set up here and torn down at the end; nothing
# is expected to be installed by hand besides the Rust toolchain:
# - Redis (for crates/idemstore-redis): redis-server from PATH, installed with
#   apt-get (Debian's redis-server package) when missing and running as root;
#   started on a free loopback port, stopped at exit. With no way to get it,
#   this script fails: the Redis tests never pass silently.
# - A Redis Cluster of 3 masters and 3 replicas of that redis-server
#   (scripts/redis-cluster.sh), on free loopback ports, stopped at exit.
# - PostgreSQL (for crates/idemstore-postgres): Debian's postgresql package,
#   installed with apt-get when missing and running as root; a throwaway
#   cluster (initdb in a temp dir, scripts/postgres.sh) on a free loopback
#   port, stopped at exit.
# - python3 (the upstream of the idemproxy tests), from Debian's package
#   when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# The crash test kills child processes 20 times by default; set
# IDEMSTORE_CRASH_KILLS for a longer run.
export IDEMSTORE_CRASH_KILLS="${IDEMSTORE_CRASH_KILLS:-20}"

log=$(mktemp)
redis_dir=$(mktemp -d)
redis_port=""
cluster_dir=$(mktemp -d)
pg_dir=$(mktemp -d)
cleanup() {
  scripts/postgres.sh stop "$pg_dir/pg" >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
  scripts/redis-cluster.sh stop "$cluster_dir" >/dev/null 2>&1 || true
  rm -rf "$cluster_dir"
  if [ -n "$redis_port" ]; then
    redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  fi
  rm -rf "$redis_dir" "$log"
}
trap cleanup EXIT

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing redis-server (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null; }
  fi
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "error: redis-server is not installed and cannot be installed here (need root and apt-get);" >&2
  echo "       install Debian's redis-server package, then run this again" >&2
  exit 1
fi

# The idemproxy tests put a small Python service behind the proxy
# (tests/upstream/orders.py): python3, from Debian's python3 when missing.
if ! command -v python3 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing python3 (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 >/dev/null; }
  fi
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "error: python3 is not installed and cannot be installed here (need root and apt-get);" >&2
  echo "       install Debian's python3 package, then run this again" >&2
  exit 1
fi

# A free loopback port: the first that nothing answers on.
for p in $(shuf -i 20000-60000 -n 50); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    redis_port=$p
    break
  fi
done
[ -n "$redis_port" ] || { echo "error: no free loopback port for Redis" >&2; exit 1; }
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$redis_dir" --save '' \
  --appendonly yes --appendfsync always --daemonize yes \
  --pidfile "$redis_dir/redis.pid" --logfile "$redis_dir/redis.log"
for _ in $(seq 1 100); do
  [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done
[ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] \
  || { echo "error: redis-server did not start; log:" >&2; cat "$redis_dir/redis.log" >&2; exit 1; }
export IDEMSTORE_REDIS_URL="redis://127.0.0.1:$redis_port"
echo "== redis-server $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/') on $IDEMSTORE_REDIS_URL"
IDEMSTORE_REDIS_CLUSTER_URLS=$(scripts/redis-cluster.sh start "$cluster_dir")
export IDEMSTORE_REDIS_CLUSTER_URLS
echo "== Redis Cluster (3 masters, 3 replicas) on $IDEMSTORE_REDIS_CLUSTER_URLS"

have_postgres() {
  command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1
}
if ! have_postgres; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing postgresql (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }
  fi
fi
if ! have_postgres; then
  echo "error: PostgreSQL is not installed and cannot be installed here (need root and apt-get);" >&2
  echo "       install Debian's postgresql package, then run this again" >&2
  exit 1
fi
IDEMSTORE_POSTGRES_URL=$(scripts/postgres.sh start "$pg_dir/pg")
export IDEMSTORE_POSTGRES_URL
echo "== PostgreSQL on $IDEMSTORE_POSTGRES_URL"

status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?

# One closing line for the whole run (cargo prints one per test binary).
echo
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($i ~ /^passed/) p += $(i - 1)
         if ($i ~ /^failed/) f += $(i - 1)
       }
     }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"

#!/usr/bin/env bash
# Starts or stops a local Redis Cluster of Debian's redis-server: masters
# with one replica each, on free loopback ports, data in DIR.
#
#   scripts/redis-cluster.sh start DIR [MASTERS]   (default 3 masters + 3 replicas)
#       prints one line: the nodes' URLs, comma-separated, masters first;
#       DIR/PORT.pid holds each node's pid, DIR/PORT.log its log.
#   scripts/redis-cluster.sh restart DIR PORT   (a killed node, same data)
#   scripts/redis-cluster.sh stop DIR
#
# The test command, the tests that kill or reshard a cluster of their own,
# and the bench report all start clusters with this script. Nodes fail over
# after 1 s without their master (cluster-node-timeout 1000).
set -euo pipefail

cmd=${1:?usage: $0 start|stop DIR [MASTERS]}
dir=${2:?usage: $0 start|stop DIR [MASTERS]}
masters=${3:-3}

stop() {
  for f in "$dir"/*.pid; do
    [ -e "$f" ] || continue
    kill -CONT "$(cat "$f")" 2>/dev/null || true
    kill -KILL "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

# One node on port $1, data in $dir/$1; waits until it answers.
node() {
  mkdir -p "$dir/$1"
  redis-server --port "$1" --bind 127.0.0.1 --dir "$dir/$1" --save '' \
    --appendonly yes --appendfsync "${REDIS_CLUSTER_APPENDFSYNC:-no}" \
    --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout 2000 --cluster-replica-validity-factor 0 \
    --enable-debug-command local \
    --daemonize yes --pidfile "$dir/$1.pid" --logfile "$dir/$1.log"
  for _ in $(seq 1 100); do
    [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.05
  done
  echo "error: redis-server on $1 did not start; log:" >&2
  cat "$dir/$1.log" >&2
  return 1
}

if [ "$cmd" = stop ]; then
  stop
  exit 0
fi
if [ "$cmd" = restart ]; then
  node "${3:?usage: $0 restart DIR PORT}"
  exit 0
fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR [MASTERS]" >&2; exit 2; }
command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
  || { echo "error: redis-server and redis-cli are needed (Debian's redis-server package; scripts/test.sh installs it)" >&2; exit 1; }
mkdir -p "$dir"
trap 'stop' ERR

free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=()
# Node ports 10000-19999 (buses 20000-29999): below the ephemeral range, and
# no node port is another node's bus port.
for p in $(shuf -i 10000-19999 -n 400); do
  # The cluster bus listens on PORT + 10000.
  if free "$p" && free $((p + 10000)); then ports+=("$p"); fi
  [ "${#ports[@]}" -ge $((masters * 2)) ] && break
done
[ "${#ports[@]}" -ge $((masters * 2)) ] || { echo "error: not enough free loopback ports" >&2; exit 1; }

for p in "${ports[@]}"; do node "$p"; done

addrs=()
for p in "${ports[@]}"; do addrs+=("127.0.0.1:$p"); done
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
  || { echo "error: redis-cli --cluster create failed:" >&2; cat "$dir/create.log" >&2; exit 1; }

# Ready when every node sees all slots served, sees every other node with its
# role (gossip can lag the create), and every replica is in sync.
for _ in $(seq 1 300); do
  ok=1
  for p in "${ports[@]}"; do
    redis-cli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || { ok=0; break; }
    view=$(redis-cli -p "$p" cluster nodes 2>/dev/null)
    [ "$(awk '$3 ~ /master/' <<<"$view" | wc -l)" = "$masters" ] || { ok=0; break; }
    [ "$(awk '$3 ~ /slave/ && $4 != "-"' <<<"$view" | wc -l)" = "$masters" ] || { ok=0; break; }
    grep -qE 'fail|handshake|noaddr' <<<"$view" && { ok=0; break; }
    if redis-cli -p "$p" info replication 2>/dev/null | grep -q '^role:slave'; then
      redis-cli -p "$p" info replication | grep -q '^master_link_status:up' || { ok=0; break; }
    fi
  done
  [ "$ok" = 1 ] && break
  sleep 0.1
done
[ "$ok" = 1 ] || { echo "error: the cluster did not become ready; see $dir/*.log" >&2; exit 1; }

urls=""
for p in "${ports[@]}"; do urls+="${urls:+,}redis://127.0.0.1:$p"; done
echo "$urls"

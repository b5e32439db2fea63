#!/usr/bin/env bash
# A whole local cluster on loopback for trying edged out: a 3-server NATS JetStream
# core (R3, fsync before ack) and 3 edged PoPs in 3 regions.
#
#   scripts/cluster.sh up       # build if needed, start everything, print the addresses
#   scripts/cluster.sh status   # GET /v1/cluster on each PoP
#   scripts/cluster.sh down     # stop everything (state is kept in $DIR for the next up)
#   scripts/cluster.sh clean    # down, then remove the state
#
# Ports: NATS 4222-4224 (routes 6222-6224); PoP n (0,1,2): data 8080+100n,
# control 8081+100n, peer 8090+100n. State and logs: $EDGED_CLUSTER_DIR (./.cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${EDGED_CLUSTER_DIR:-$PWD/.cluster}"
REGIONS=(eu-west us-east ap-south)
NODES=(pop-eu pop-us pop-ap)

start_nats() {
  local bin="$1" i
  for i in 0 1 2; do
    local routes=()
    for j in 0 1 2; do [ "$j" != "$i" ] && routes+=("\"nats-route://127.0.0.1:$((6222 + j))\""); done
    mkdir -p "$DIR/nats$i"
    cat > "$DIR/nats$i.conf" <<CONF
server_name: core$i
listen: 127.0.0.1:$((4222 + i))
jetstream { store_dir: "$DIR/nats$i", sync_interval: always }
cluster { name: edged-core, listen: 127.0.0.1:$((6222 + i)), routes: [$(IFS=,; echo "${routes[*]}")] }
CONF
    "$bin" -c "$DIR/nats$i.conf" >> "$DIR/nats$i.log" 2>&1 &
    echo $! > "$DIR/nats$i.pid"
  done
}

start_pops() {
  local secret token i
  secret="$(cat "$DIR/cluster-secret")"
  token="$(cat "$DIR/token")"
  for i in 0 1 2; do
    cat > "$DIR/${NODES[$i]}.toml" <<CONF
[server]
listen = "127.0.0.1:$((8080 + 100 * i))"
control_listen = "127.0.0.1:$((8081 + 100 * i))"
data_dir = "$DIR/${NODES[$i]}"
token = "$token"

[cluster]
node_id = "${NODES[$i]}"
region = "${REGIONS[$i]}"
nats = ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://127.0.0.1:4224"]
peer_listen = "127.0.0.1:$((8090 + 100 * i))"
secret = "$secret"
CONF
    target/release/edged serve --config "$DIR/${NODES[$i]}.toml" \
      >> "$DIR/${NODES[$i]}.out" 2>> "$DIR/${NODES[$i]}.log" &
    echo $! > "$DIR/${NODES[$i]}.pid"
  done
}

stop_all() {
  local f
  for f in "$DIR"/*.pid; do
    [ -e "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
  done
  sleep 1
  for f in "$DIR"/*.pid; do
    [ -e "$f" ] || continue
    kill -9 "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

case "${1:-}" in
  up)
    [ -e "$DIR/pop-eu.pid" ] && { echo "already up (scripts/cluster.sh down first)"; exit 1; }
    mkdir -p "$DIR" && chmod 700 "$DIR"
    [ -x target/release/edged ] || { scripts/setup-v8.sh && cargo build --release; }
    nats="$(scripts/setup-nats.sh)"
    [ -s "$DIR/cluster-secret" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/cluster-secret"
    [ -s "$DIR/token" ] || head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/token"
    start_nats "$nats"
    start_pops
    for i in 0 1 2; do
      for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$((8081 + 100 * i))/healthz" 2>/dev/null | grep -q '"ok"' && break
        sleep 0.2
      done
    done
    echo "NATS core:  nats://127.0.0.1:4222 nats://127.0.0.1:4223 nats://127.0.0.1:4224"
    for i in 0 1 2; do
      echo "${NODES[$i]} (${REGIONS[$i]}): data http://127.0.0.1:$((8080 + 100 * i))  control http://127.0.0.1:$((8081 + 100 * i))  peer 127.0.0.1:$((8090 + 100 * i))"
    done
    echo "token: $(cat "$DIR/token")   (export EDGED_TOKEN=\$(cat $DIR/token))"
    echo "logs:  $DIR/*.log"
    ;;
  status)
    for i in 0 1 2; do
      curl -fsS -H "authorization: Bearer $(cat "$DIR/token")" "http://127.0.0.1:$((8081 + 100 * i))/v1/cluster" || echo "${NODES[$i]}: down"
      echo
    done
    ;;
  down) stop_all; echo "stopped" ;;
  clean) stop_all; rm -rf "$DIR"; echo "removed $DIR" ;;
  *) echo "usage: $0 up|status|down|clean" >&2; exit 2 ;;
esac

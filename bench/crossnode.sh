#!/usr/bin/env bash
# Cross-server fan-out: the chat example alone (in-process broker), alone with Redis, and as
# two or three servers sharing one Redis (or one NATS) with the room's members split between
# them (the senders on the first; every message crosses to the others through the broker).
# Same load as the shared
# harness' scenarios (a) and (b), from bench/crossfan; servers and Redis pinned to CPU 0, the
# generator to CPU 1; runs interleaved. Prints a table of medians and writes the JSON of every
# run to bench/results/cross-<timestamp>/.
#
#   bench/crossnode.sh                 3 runs (~3 min)
#   RUNS=1 bench/crossnode.sh
#   MODES="local one two one_rec two_rec" bench/crossnode.sh
#                                      also with recoverable rooms (SWITCHBOARD_RECOVERY=1):
#                                      every message through the stream script (~5 min)
#   MODES="local three rc3 nats3" bench/crossnode.sh
#                                      three servers on one Redis, on a Redis Cluster of three
#                                      shards (sharded pub/sub), and on one NATS (modes ending
#                                      in _rec: recoverable rooms, NATS through JetStream); the
#                                      broker's CPU per message is a column, measured in (c):
#                                      30 members, 10 senders x 5,000 messages at 2,000/s each
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
MODES="${MODES:-local one two}"
SCENARIOS="${SCENARIOS:-a b c}"
OUT="$ROOT/bench/results/cross-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
command -v redis-server >/dev/null || { log "redis-server is missing (Debian: apt-get install redis-server)"; exit 1; }
if [[ " $MODES " == *" nats"* ]]; then
  command -v nats-server >/dev/null || { log "nats-server is missing (Debian: apt-get install nats-server)"; exit 1; }
fi

log "building the chat example and crossfan (release)"
(cd "$ROOT" && cargo build --release --quiet -p switchboard-examples --example chat)
(cd "$ROOT/bench/crossfan" && cargo build --release --quiet)
TARGET="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
CHAT="$TARGET/release/examples/chat"
CROSSFAN="$ROOT/bench/crossfan/target/release/crossfan"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

REDIS_PORT="$(free_port)"
taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_port "$REDIS_PORT" || { log "redis-server did not start"; exit 1; }

# A Redis Cluster of three shards (for the rc3 modes), pinned to CPU 0 like the rest.
RC_PIDS=()
RC_URL=""
if [[ " $MODES " == *" rc3"* ]]; then
  command -v redis-cli >/dev/null || { log "redis-cli is missing (Debian: apt-get install redis-tools)"; exit 1; }
  rc_nodes=()
  for shard in 1 2 3; do
    while :; do
      port="$(free_port)"
      [ "$port" -lt 55000 ] && ! (exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null && break
    done
    mkdir -p "$OUT/rc$shard"
    taskset -c 0 redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-require-full-coverage no --save "" \
      --appendonly no --dir "$OUT/rc$shard" >"$OUT/rc$shard.log" 2>&1 &
    RC_PIDS+=($!)
    PIDS+=($!)
    wait_port "$port" || { log "a Redis Cluster shard did not start"; exit 1; }
    rc_nodes+=("127.0.0.1:$port")
  done
  redis-cli --cluster create "${rc_nodes[@]}" --cluster-replicas 0 --cluster-yes >"$OUT/rc-create.log" 2>&1
  for node in "${rc_nodes[@]}"; do
    for _ in $(seq 1 100); do
      redis-cli -h 127.0.0.1 -p "${node#*:}" cluster info | grep -q cluster_state:ok && break
      sleep 0.1
    done
  done
  RC_URL="redis+cluster://$(IFS=,; echo "${rc_nodes[*]}")"
fi

NATS_PID=""
NATS_PORT=""
if [[ " $MODES " == *" nats"* ]]; then
  NATS_PORT="$(free_port)"
  taskset -c 0 nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$OUT/nats-store" \
    >"$OUT/nats.log" 2>&1 &
  NATS_PID=$!
  PIDS+=("$NATS_PID")
  wait_port "$NATS_PORT" || { log "nats-server did not start"; exit 1; }
fi

# start_chat PORT BROKER_URL RECOVERY: prints the pid. Modes without _rec have plain rooms (one
# publish per message, as measured before recoverable rooms became the cluster default).
start_chat() {
  SWITCHBOARD_RECOVERY="$3" SWITCHBOARD_ADDR="127.0.0.1:$1" SWITCHBOARD_BROKER_URL="$2" taskset -c 0 "$CHAT" \
    >>"$OUT/chat-$1.log" 2>&1 &
  echo $!
}

run_mode() { # mode run
  local mode="$1" run="$2" port pid servers=1 urls=() pids=() url="" recovery=0
  local broker_pids=()
  case "$mode" in
    local) ;;
    nats*) url="nats://127.0.0.1:$NATS_PORT"; broker_pids=("$NATS_PID") ;;
    rc3*) url="$RC_URL"; broker_pids=("${RC_PIDS[@]}") ;;
    *) url="redis://127.0.0.1:$REDIS_PORT/"; broker_pids=("$REDIS_PID") ;;
  esac
  case "$mode" in
    two*) servers=2 ;;
    three*|nats3*|rc3*) servers=3 ;;
  esac
  [[ "$mode" == *_rec ]] && recovery=1
  local started=()
  for _ in $(seq 1 "$servers"); do
    port="$(free_port)"
    pid="$(start_chat "$port" "$url" "$recovery")"; PIDS+=("$pid"); started+=("$pid")
    wait_port "$port"
    urls+=(--url "ws://127.0.0.1:$port/chat/r"); pids+=(--server-pid "$pid")
  done
  for broker_pid in "${broker_pids[@]}"; do pids+=(--broker-pid "$broker_pid"); done
  sleep 0.3
  for scenario in $SCENARIOS; do
    # (c) measures the broker's CPU per message at a rate every setup sustains (20,000
    # messages a second); recoverable rooms are measured in (a) and (b).
    [[ "$mode" == *_rec && "$scenario" == c ]] && continue
    local args
    case "$scenario" in
      a) args=(--subscribers 1000 --senders 10 --messages 200 --rate 0) ;;
      b) args=(--subscribers 1000 --senders 1 --messages 500 --rate 100) ;;
      c) args=(--subscribers 30 --senders 10 --messages 5000 --rate 2000) ;;
    esac
    timeout 120 taskset -c 1 "$CROSSFAN" "${urls[@]}" "${pids[@]}" "${args[@]}" --label "$mode" \
      >"$OUT/${mode}__${scenario}__r${run}.json" || true
    log "$mode $scenario r$run: $(cut -c1-160 "$OUT/${mode}__${scenario}__r${run}.json")"
    sleep 0.5
  done
  kill "${started[@]}" 2>/dev/null || true
  wait "${started[@]}" 2>/dev/null || true
  sleep 0.5
}

for run in $(seq 1 "$RUNS"); do
  for mode in $MODES; do
    run_mode "$mode" "$run"
  done
done

python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
rows = {}
for f in glob.glob(os.path.join(out, "*__*__r*.json")):
    mode, scenario, _ = os.path.basename(f)[:-5].split("__")
    try:
        rows.setdefault((mode, scenario), []).append(json.load(open(f)))
    except ValueError:
        pass
def med(mode, scenario, get):
    vals = [get(o) for o in rows.get((mode, scenario), []) if "error" not in o]
    vals = [v for v in vals if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None
names = {"local": "one server, in-process broker", "one": "one server, Redis broker",
         "two": "two servers, one Redis (half the members on each)",
         "three": "three servers, one Redis (a third of the members on each)",
         "rc3": "three servers, a Redis Cluster of three shards (sharded pub/sub)",
         "nats3": "three servers, one NATS (a third of the members on each)",
         "one_rec": "one server, Redis, recoverable room",
         "two_rec": "two servers, one Redis, recoverable room",
         "three_rec": "three servers, one Redis, recoverable room",
         "rc3_rec": "three servers, a Redis Cluster, recoverable room",
         "nats3_rec": "three servers, one NATS (JetStream), recoverable room"}
print("| setup | (a) deliveries/s | (a) p99 ms | (a) CPU us/delivery (servers + broker) | (c) broker CPU us/message | (b) p50 ms | (b) p99 ms | lost / reordered |")
print("|---|---|---|---|---|---|---|---|")
base = {"rate": None, "b99": None}
for mode in [m for m in names if any(rows.get((m, s)) for s in "abc")]:
    a_rate = med(mode, "a", lambda o: o["deliveries_per_sec"])
    a_p99 = med(mode, "a", lambda o: o["lat_ms"]["p99"])
    a_cpu = med(mode, "a", lambda o: o["server_cpu_us_per_delivery"])
    b_p50 = med(mode, "b", lambda o: o["lat_ms"]["p50"])
    b_p99 = med(mode, "b", lambda o: o["lat_ms"]["p99"])
    broker = med(mode, "c", lambda o: o.get("broker_cpu_us_per_message"))
    if mode == "local":
        base = {"rate": a_rate, "b99": b_p99}
    lost = sum(o.get("lost", 0) for s in "abc" for o in rows.get((mode, s), []))
    reordered = sum(o.get("reordered", 0) for s in "abc" for o in rows.get((mode, s), []))
    def r(v, b):
        return f" ({v / b:.2f}x)" if v and b and mode != "local" else ""
    fmt = lambda v, f: "n/a" if v is None else f.format(v)
    print(f"| {names[mode]} | {fmt(a_rate and a_rate / 1e6, '{:.2f}M')}{r(a_rate, base['rate'])} | {fmt(a_p99, '{:.0f}')} | {fmt(a_cpu, '{:.3f}')} | {fmt(broker, '{:.1f}')} | {fmt(b_p50, '{:.2f}')} | {fmt(b_p99, '{:.2f}')}{r(b_p99, base['b99'])} | {lost} / {reordered} |")
print(f"\nmedians of {max((len(v) for v in rows.values()), default=0)} runs; results in {out}")
PY

#!/usr/bin/env bash
# Recovery latency across a cluster: two chat servers sharing one Redis of this script's own;
# a member leaves server A, misses messages, and comes back on server B with its position
# (bench/recovery). Servers and Redis pinned to CPU 0, the client to CPU 1. Prints one JSON
# line per run.
#
#   bench/recovery.sh              3 runs of 50 rounds, 100 missed messages each
#   MISSED=1000 ROUNDS=20 bench/recovery.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
MISSED="${MISSED:-100}"
ROUNDS="${ROUNDS:-50}"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
command -v redis-server >/dev/null || { log "redis-server is missing (Debian: apt-get install redis-server)"; exit 1; }

log "building the chat example and the recovery client (release)"
(cd "$ROOT" && cargo build --release --quiet -p switchboard-examples --example chat)
(cd "$ROOT/bench/recovery" && cargo build --release --quiet)
TARGET="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
CHAT="$TARGET/release/examples/chat"
CLIENT="$ROOT/bench/recovery/target/release/recovery"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

for run in $(seq 1 "$RUNS"); do
  REDIS_PORT="$(free_port)"
  taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
  PIDS+=($!)
  wait_port "$REDIS_PORT"
  A_PORT="$(free_port)"; B_PORT="$(free_port)"
  for port in "$A_PORT" "$B_PORT"; do
    SWITCHBOARD_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/" SWITCHBOARD_ADDR="127.0.0.1:$port" \
      SWITCHBOARD_RECOVERY=1 RUST_LOG=warn taskset -c 0 "$CHAT" >/dev/null 2>&1 &
    PIDS+=($!)
    wait_port "$port"
  done
  taskset -c 1 "$CLIENT" --a "ws://127.0.0.1:$A_PORT/chat/r" --b "ws://127.0.0.1:$B_PORT/chat/r" \
    --missed "$MISSED" --rounds "$ROUNDS"
  cleanup
  PIDS=()
done

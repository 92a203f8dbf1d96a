#!/usr/bin/env bash
# The harness's scenario (a) (1000 members, 10 senders, 64-byte messages as fast as they go)
# with ten times its messages: 20M deliveries, so that the server's CPU per delivery is read
# over seconds rather than the harness's 0.7 s (tens of 10 ms ticks, where one tick and how
# writes happened to batch move the figure by 20%). Server on CPU 0, load generator on CPU 1,
# a fresh server per run, servers interleaved within each round.
#
#   bench/steady.sh                                  switchboard, fws_limit, axum_limit, 3 rounds
#   SERVERS="switchboard old fws_limit" SERVER_CMD_old=/tmp/chat-old RUNS=5 bench/steady.sh
#
# Needs the shared harness built (bench/fanout.sh builds it into /tmp/switchboard-bench) and
# builds the chat example (release). Prints each run and the median per server.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${BENCH_WORK:-/tmp/switchboard-bench}"
RUNS="${RUNS:-3}"
MESSAGES="${MESSAGES:-2000}"
SERVERS="${SERVERS:-switchboard fws_limit axum_limit}"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
[ -x "$WORK/target/release/wsfan" ] || { log "no harness in $WORK: run bench/fanout.sh once"; exit 1; }

(cd "$ROOT" && cargo build --release --quiet -p switchboard-examples --example chat)
CHAT="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/chat"
OUT="$(mktemp -d)"
SPID=""
trap '[ -z "$SPID" ] || kill -KILL "$SPID" 2>/dev/null || true' EXIT

start() { # $1 = server name, $2 = port
  local cmd
  case "$1" in
    switchboard) cmd="$CHAT" ;;
    fws_limit | axum_limit) cmd="$WORK/target/release/$1" ;;
    *) local var="SERVER_CMD_$1"; cmd="${!var:?set SERVER_CMD_$1}" ;;
  esac
  PORT="$2" SWITCHBOARD_ADDR="127.0.0.1:$2" RUST_LOG=warn taskset -c 0 "$cmd" >/dev/null 2>&1 &
  SPID=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && { sleep 0.3; return 0; }
    sleep 0.1
  done
  log "$1 did not start"; return 1
}

for run in $(seq 1 "$RUNS"); do
  for server in $SERVERS; do
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    start "$server" "$port"
    taskset -c 1 "$WORK/target/release/wsfan" fanout --url "ws://127.0.0.1:$port/chat/steady" \
      --subscribers 1000 --senders 10 --messages "$MESSAGES" --rate 0 --size 64 \
      --timeout 300 --idle-timeout 20 --server-pid "$SPID" --label "$server" \
      >"$OUT/$server-$run.json" 2>/dev/null || true
    kill -INT "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=""
    sleep 0.5
    log "$server r$run: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["server_cpu_us_per_delivery"], "us/delivery,", round(r["deliveries_per_sec"]/1e6,2), "M/s, lost", r["lost"], "reordered", r["reordered"])' "$OUT/$server-$run.json")"
  done
done

python3 - "$OUT" $SERVERS <<'PY'
import json, statistics, sys, glob
out, servers = sys.argv[1], sys.argv[2:]
rows = {}
for s in servers:
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{s}-*.json"))]
    cpu = [r["server_cpu_us_per_delivery"] for r in runs]
    rate = [r["deliveries_per_sec"] for r in runs]
    rows[s] = statistics.median(cpu)
    print(f"{s:14} CPU us/delivery median {statistics.median(cpu):.4f} ({min(cpu)}-{max(cpu)}), "
          f"deliveries/s {statistics.median(rate)/1e6:.2f}M, lost {sum(r['lost'] for r in runs)}, "
          f"reordered {sum(r['reordered'] for r in runs)}")
if "fws_limit" in rows:
    for s in servers:
        print(f"{s:14} / fws_limit: {rows[s] / rows['fws_limit']:.2f}x")
PY

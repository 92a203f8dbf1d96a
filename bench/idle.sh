#!/usr/bin/env bash
# Many idle WebSocket connections to the chat example (release): the server's memory per
# connection, and the CPU its keep-alive pings cost while they sit idle. The connections come
# from several loopback source addresses (wsfan --src-ips), the server is pinned to CPU 0 and
# the client to CPU 1.
#
#   bench/idle.sh                      100,000 connections, 60 s idle, in as few server
#                                      processes as the open-file limit allows
#   CONNECTIONS=18000 HOLD=60 bench/idle.sh
#   PROCESSES=6 bench/idle.sh           spread over 6 servers (RSS and CPU summed)
#
# Needs the shared harness built (bench/fanout.sh builds it into /tmp/switchboard-bench).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${CONNECTIONS:-100000}"
HOLD="${HOLD:-60}"
PING_S="${PING_S:-25}"
WSFAN="${BENCH_WORK:-/tmp/switchboard-bench}/target/release/wsfan"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
[ -x "$WSFAN" ] || { log "no $WSFAN: run bench/fanout.sh once (it builds the harness)"; exit 1; }

# Each connection is one descriptor in a server and one in a client. A process may hold at
# most the hard limit of open files; past it the connections are spread over PROCESSES
# servers (each with its own client, on ports of their own), and the RSS and CPU figures are
# their sums. The default is as few processes as the limit allows.
HARD="$(ulimit -Hn)"
PER_MAX=$(( HARD > 2048 ? HARD - 1024 : HARD / 2 ))
P="${PROCESSES:-$(( (N + PER_MAX - 1) / PER_MAX ))}"
PER=$(( (N + P - 1) / P ))
if [ "$PER" -gt "$PER_MAX" ]; then
  log "$PER connections per process is over what the open-file limit allows ($HARD): set PROCESSES"
  exit 1
fi
ulimit -n "$HARD"
if [ "$P" -gt 1 ]; then
  log "the open-file limit ($HARD per process, hard) holds at most $PER_MAX connections per process: $P servers of $PER connections each, figures summed"
fi

log "building the chat example (release)"
(cd "$ROOT" && cargo build --release --quiet -p switchboard-examples --example chat)
CHAT="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/chat"

SPIDS=() WPIDS=() PORTS=() OUTS=()
trap 'kill ${SPIDS[*]:-} ${WPIDS[*]:-} 2>/dev/null || true' EXIT
for i in $(seq 1 "$P"); do
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  SWITCHBOARD_ADDR="127.0.0.1:$port" SWITCHBOARD_MAX_CONNECTIONS=$((PER + 100)) RUST_LOG=warn \
    taskset -c 0 "$CHAT" >/dev/null 2>&1 &
  SPIDS+=($!) PORTS+=("$port")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done

rss() { local t=0 p; for p in "${SPIDS[@]}"; do t=$((t + $(awk '/^VmRSS:/{print $2}' "/proc/$p/status"))); done; echo "$t"; }
ticks() {
  local t=0 p s
  for p in "${SPIDS[@]}"; do
    s=$(cat "/proc/$p/stat"); s="${s##*) }"; set -- $s; t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
sleep 1
rss0="$(rss)"
log "opening $N connections"
for i in $(seq 0 $((P - 1))); do
  OUTS+=("$(mktemp)")
  taskset -c 1 "$WSFAN" idle --url "ws://127.0.0.1:${PORTS[$i]}/chat/idle" --connections "$PER" \
    --hold $((HOLD + 60)) --connect-concurrency 256 --label switchboard >"${OUTS[$i]}" 2>&1 &
  WPIDS+=($!)
done
for i in $(seq 0 $((P - 1))); do
  for _ in $(seq 1 3000); do
    grep -q ALL_OPEN "${OUTS[$i]}" && break
    kill -0 "${WPIDS[$i]}" 2>/dev/null || { log "a client ended early: $(tail -3 "${OUTS[$i]}")"; exit 1; }
    sleep 0.1
  done
  grep -q ALL_OPEN "${OUTS[$i]}" || { log "not all open: $(tail -3 "${OUTS[$i]}")"; exit 1; }
  grep -q '"failed":0' "${OUTS[$i]}" || { log "some connections failed: $(grep ALL_OPEN "${OUTS[$i]}")"; exit 1; }
done
sleep 2
rss1="$(rss)"
log "all open; idle for $HOLD s (pings every $PING_S s)"
t0="$(ticks)"
sleep "$HOLD"
t1="$(ticks)"
hz="$(getconf CLK_TCK)"
python3 - "$((PER * P))" "$rss0" "$rss1" "$t0" "$t1" "$hz" "$HOLD" "$PING_S" "$P" <<'PY'
import json, sys
n, rss0, rss1, t0, t1, hz, hold, ping, procs = map(float, sys.argv[1:])
cpu = (t1 - t0) / hz
print(json.dumps({
    "connections": int(n),
    "server_processes": int(procs),
    "server_rss_mib": round(rss1 / 1024, 1),
    "kib_per_connection": round((rss1 - rss0) / n, 2),
    "idle_cpu_s": cpu,
    "idle_cpu_percent_of_one_core": round(100 * cpu / hold, 2),
    "pings": int(n * hold // ping),
}))
PY

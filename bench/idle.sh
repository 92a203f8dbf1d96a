#!/usr/bin/env bash
# Many idle WebSocket connections to the chat example (release): the server's memory per
# connection, and the CPU its keep-alive pings cost while they sit idle. The connections come
# from several loopback source addresses (wsfan --src-ips), the server is pinned to CPU 0 and
# the client to CPU 1.
#
#   bench/idle.sh                      100,000 connections, 60 s idle (raises the open-file
#                                      limit to what that needs, and says so when it cannot)
#   CONNECTIONS=18000 HOLD=60 bench/idle.sh
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

# Each connection is one descriptor in the server and one in the client (two processes, each
# with this limit), and some room.
want=$((N + 1024))
if [ "$(ulimit -n)" -lt "$want" ] && ! ulimit -n "$want" 2>/dev/null; then
  log "cannot raise the open-file limit to $want (hard limit $(ulimit -Hn)): this machine holds at most about $(( $(ulimit -Hn) - 1024 )) connections per process; set CONNECTIONS"
  exit 1
fi

log "building the chat example (release)"
(cd "$ROOT" && cargo build --release --quiet -p switchboard-examples --example chat)
CHAT="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/chat"

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
SWITCHBOARD_ADDR="127.0.0.1:$PORT" SWITCHBOARD_MAX_CONNECTIONS=$((N + 100)) RUST_LOG=warn \
  taskset -c 0 "$CHAT" >/dev/null 2>&1 &
SPID=$!
trap 'kill $SPID 2>/dev/null || true; kill ${WPID:-0} 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

rss() { awk '/^VmRSS:/{print $2}' "/proc/$SPID/status"; }
ticks() { local s; s=$(cat "/proc/$SPID/stat"); s="${s##*) }"; set -- $s; echo $(( ${12} + ${13} )); }
sleep 1
rss0="$(rss)"
OUT="$(mktemp)"
log "opening $N connections"
taskset -c 1 "$WSFAN" idle --url "ws://127.0.0.1:$PORT/chat/idle" --connections "$N" \
  --hold $((HOLD + 60)) --connect-concurrency 256 --label switchboard >"$OUT" 2>&1 &
WPID=$!
for _ in $(seq 1 3000); do
  grep -q ALL_OPEN "$OUT" && break
  kill -0 "$WPID" 2>/dev/null || { log "the client ended early: $(tail -3 "$OUT")"; exit 1; }
  sleep 0.1
done
grep -q ALL_OPEN "$OUT" || { log "not all open: $(tail -3 "$OUT")"; exit 1; }
sleep 2
rss1="$(rss)"
log "all open; idle for $HOLD s (pings every $PING_S s)"
t0="$(ticks)"
sleep "$HOLD"
t1="$(ticks)"
hz="$(getconf CLK_TCK)"
python3 - "$N" "$rss0" "$rss1" "$t0" "$t1" "$hz" "$HOLD" "$PING_S" <<'PY'
import json, sys
n, rss0, rss1, t0, t1, hz, hold, ping = map(float, sys.argv[1:])
cpu = (t1 - t0) / hz
print(json.dumps({
    "connections": int(n),
    "server_rss_mib": round(rss1 / 1024, 1),
    "kib_per_connection": round((rss1 - rss0) / n, 2),
    "idle_cpu_s": cpu,
    "idle_cpu_percent_of_one_core": round(100 * cpu / hold, 2),
    "pings": int(n * hold // ping),
}))
PY

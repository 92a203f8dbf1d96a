#!/usr/bin/env bash
# Connection churn soak: the release chat example and the shared harness' hand-written axum
# server (axum_limit), each under rounds of connection churn (bench/churn: every client joins
# one of 200 rooms, sends one message, reads one broadcast, and closes; or, with the `silent`
# load, just connects and closes). After a warm-up, the server's RSS growth divided by the
# connections churned since is the memory each churned connection left behind.
#
#   bench/soak.sh                          warm-up 10 rounds, then 40 rounds of 2000 (80,000)
#   WARMUP=5 ROUNDS=30 CLIENTS=2000 bench/soak.sh
#   SERVERS="switchboard" LOADS="message" bench/soak.sh
#
# Env: WARMUP, ROUNDS (measured rounds), CLIENTS (per round), SERVERS (switchboard
# axum_limit), LOADS (message silent), BENCH_HARNESS / BENCH_WORK as for bench/fanout.sh.
# Results: bench/results/soak-<timestamp>/ (git-ignored).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="${BENCH_HARNESS:-$ROOT/../shared/bench}"
WORK="${BENCH_WORK:-/tmp/switchboard-bench}"
WARMUP="${WARMUP:-10}"
ROUNDS="${ROUNDS:-40}"
CLIENTS="${CLIENTS:-2000}"
SERVERS="${SERVERS:-switchboard axum_limit}"
LOADS="${LOADS:-message silent}"
OUT="$ROOT/bench/results/soak-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

log "building the chat example and churn (release)"
(cd "$ROOT" && cargo build --release --quiet -p switchboard-examples --example chat)
(cd "$ROOT/bench/churn" && cargo build --release --quiet)
TARGET="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
CHURN="$ROOT/bench/churn/target/release/churn"
if [[ " $SERVERS " == *" axum_limit "* ]]; then
  log "building axum_limit from the harness ($WORK)"
  mkdir -p "$WORK" && cp -r "$HARNESS"/. "$WORK"/ && chmod -R u+w "$WORK"
  (cd "$WORK" && cargo build --release --quiet -p axum_limit)
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

for load in $LOADS; do
  for server in $SERVERS; do
    port="$(free_port)"
    case "$server" in
      switchboard) cmd=("$TARGET/release/examples/chat") ;;
      axum_limit) cmd=("$WORK/target/release/axum_limit") ;;
      *) log "unknown server $server"; exit 1 ;;
    esac
    PORT="$port" SWITCHBOARD_ADDR="127.0.0.1:$port" taskset -c 0 "${cmd[@]}" \
      >"$OUT/$server-$load.log" 2>&1 &
    pid=$!
    wait_port "$port" || { log "$server did not start"; kill "$pid"; exit 1; }
    flag=""
    [ "$load" = silent ] && flag="--silent"
    log "$server, $load load: $WARMUP + $ROUNDS rounds of $CLIENTS"
    # shellcheck disable=SC2086
    taskset -c 1 "$CHURN" --url "ws://127.0.0.1:$port/chat" --server-pid "$pid" \
      --rounds $((WARMUP + ROUNDS)) --clients "$CLIENTS" --label "$server-$load" $flag \
      >"$OUT/$server-$load.jsonl"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  done
done

python3 - "$OUT" "$WARMUP" <<'PY'
import json, sys, pathlib
out, warmup = pathlib.Path(sys.argv[1]), int(sys.argv[2])
print(f"\n| server, load | connections measured | RSS after warm-up MiB | RSS at end MiB | bytes per churned connection | failed clients |")
print("|---|---|---|---|---|---|")
for f in sorted(out.glob("*.jsonl")):
    rows = [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    base, end = rows[warmup - 1], rows[-1]
    n = end["connections"] - base["connections"]
    growth = (end["rss_kib"] - base["rss_kib"]) * 1024 / n if n else float("nan")
    print(f"| {f.stem} | {n:,} | {base['rss_kib']/1024:.1f} | {end['rss_kib']/1024:.1f} | {growth:.1f} | {end['failed']} |")
PY
log "results in $OUT"

#!/usr/bin/env bash
# Switchboard's chat example against the shared fan-out harness (../shared/bench): builds the
# example in release mode, runs the harness with it beside axum_limit (the yardstick),
# socketioxide and Nexios (when its virtualenv can be installed), then prints the harness'
# table and one table of ratios to axum_limit (bench/ratios.py).
#
#   bench/fanout.sh                        3 interleaved runs of scenarios a-e (~10 min)
#   RUNS=1 SCENARIOS="a c" bench/fanout.sh a subset
#   SERVERS="switchboard axum_limit" bench/fanout.sh
#
# Env: BENCH_HARNESS (the harness folder, default ../shared/bench beside this checkout),
# BENCH_WORK (where it is copied to and built, default /tmp/switchboard-bench), RUNS,
# SERVERS, SCENARIOS, and every other knob of the harness' run.sh. Results go to
# bench/results/<timestamp>/ (git-ignored).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="${BENCH_HARNESS:-$ROOT/../shared/bench}"
WORK="${BENCH_WORK:-/tmp/switchboard-bench}"
export RUNS="${RUNS:-3}"
SERVERS="${SERVERS:-switchboard axum_limit socketioxide nexios}"
OUT="$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

[ -x "$HARNESS/run.sh" ] || { log "no harness at $HARNESS (set BENCH_HARNESS)"; exit 1; }
command -v taskset >/dev/null || { log "taskset is missing (Debian package util-linux)"; exit 1; }

log "building the chat example (release)"
(cd "$ROOT" && cargo build --release --quiet -p switchboard-examples --example chat)
CHAT="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/chat"

log "copying the harness to $WORK and building it (wsfan, axum_limit, socketio_chat)"
mkdir -p "$WORK" && cp -r "$HARNESS"/. "$WORK"/ && chmod -R u+w "$WORK"
(cd "$WORK" && cargo build --release --quiet)

if [[ " $SERVERS " == *" nexios "* ]] && [ ! -x "$WORK/nexios_chat/.venv/bin/uvicorn" ]; then
  log "installing Nexios into $WORK/nexios_chat/.venv"
  if ! (python3 -m venv "$WORK/nexios_chat/.venv" &&
    "$WORK/nexios_chat/.venv/bin/pip" install -q -r "$WORK/nexios_chat/requirements.txt"); then
    log "Nexios could not be installed: measuring without it"
    rm -rf "$WORK/nexios_chat/.venv"
    SERVERS="${SERVERS//nexios/}"
  fi
fi

log "servers: $SERVERS; results in $OUT"
(cd "$WORK" && BENCH_COPIED=1 SKIP_BUILD=1 OUT="$OUT" SERVERS="$SERVERS" \
  SERVER_CMD_switchboard="$CHAT" ./run.sh)
echo
python3 "$ROOT/bench/ratios.py" "$OUT" switchboard axum_limit

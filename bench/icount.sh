#!/usr/bin/env bash
# Instruction counts of the hot paths under valgrind's callgrind, the one figure a noisy
# machine cannot blur: one emit to one listener, one group_send to 10 and to 1000 members
# through real writers, a burst of 50 group sends to 100 members, and the server reading 100 client
# messages (runtime/benches/icount.rs). Only the instructions inside the
# benchmark's `measured` function are collected (`--toggle-collect`), the set-up left out, and
# divided by the iterations: repeat runs give the same counts.
#
#   bench/icount.sh            print the counts
#   bench/icount.sh --check    fail when a count is more than TOLERANCE percent (default 5)
#                              above the committed one (bench/icount.txt)
#   bench/icount.sh --update   write the counts to bench/icount.txt
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${1:-print}"
TOLERANCE="${TOLERANCE:-5}"
COMMITTED="$ROOT/bench/icount.txt"
WORKLOADS="emit_1:20000 group_send_10:1000 group_send_1000:20 group_burst_100:4 read_burst_100:100 read_one_100:100"
command -v valgrind >/dev/null || { echo "valgrind is missing (Debian: apt-get install valgrind)" >&2; exit 1; }

EXE="$(cd "$ROOT" && cargo bench -q -p switchboard --bench icount --no-run --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "icount" and m.get("executable"):
        print(m["executable"])
')"
[ -x "$EXE" ] || { echo "cannot find the icount benchmark binary" >&2; exit 1; }

count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null --collect-atstart=no \
    '--toggle-collect=*icount*measured*' "$EXE" "$1" "$2" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

declare -A MEASURED
for entry in $WORKLOADS; do
  workload="${entry%%:*}"; n="${entry##*:}"
  collected="$(count "$workload" "$n")"
  [ -n "$collected" ] || { echo "callgrind gave no count for $workload" >&2; exit 1; }
  MEASURED[$workload]=$((collected / n))
  printf '%-16s %10d instructions per iteration\n' "$workload" "${MEASURED[$workload]}"
done

case "$MODE" in
  print) ;;
  --update)
    { echo "# bench/icount.sh: instructions per iteration (rustc $(rustc --version | cut -d' ' -f2), $(valgrind --version))"
      for entry in $WORKLOADS; do w="${entry%%:*}"; echo "$w ${MEASURED[$w]}"; done; } >"$COMMITTED"
    echo "wrote $COMMITTED" ;;
  --check)
    failed=0
    while read -r workload committed; do
      [[ "$workload" == \#* || -z "$workload" ]] && continue
      now="${MEASURED[$workload]:-}"
      [ -n "$now" ] || { echo "no measurement for $workload" >&2; failed=1; continue; }
      limit=$((committed * (100 + TOLERANCE) / 100))
      if [ "$now" -gt "$limit" ]; then
        echo "FAILED: $workload takes $now instructions, more than $committed + ${TOLERANCE}% ($limit)" >&2
        failed=1
      elif [ "$now" -lt $((committed * (100 - TOLERANCE) / 100)) ]; then
        echo "$workload takes $now instructions, below $committed - ${TOLERANCE}%: record it with bench/icount.sh --update"
      fi
    done <"$COMMITTED"
    exit "$failed" ;;
  *) echo "unknown mode $MODE: --check or --update" >&2; exit 2 ;;
esac

#!/usr/bin/env python3
"""Ratio table for a results folder of the shared harness (../shared/bench/run.sh).

Every figure is the median over the runs found; every ratio is that median divided by the
median of the baseline server (axum_limit) from the same folder, i.e. the same run of the
script. The "target" column holds issue 5's bounds for the first server (switchboard).

Usage: python3 bench/ratios.py <results folder> [first server] [baseline]
"""

import glob
import json
import os
import statistics
import sys

# (scenario, label, json path, better, target ratio for the first server)
METRICS = [
    ("a", "(a) 1000 members: server CPU us/delivery", "server_cpu_us_per_delivery", "lower", 1.1),
    ("a", "(a) 1000 members: deliveries/s", "deliveries_per_sec", "higher", 0.9),
    ("a", "(a) 1000 members: latency p99 ms", "lat_ms.p99", "lower", None),
    ("b", "(b) 100 msg/s to 1000: latency p99 ms", "lat_ms.p99", "lower", 1.2),
    ("b", "(b) 100 msg/s to 1000: latency p50 ms", "lat_ms.p50", "lower", None),
    ("b", "(b) 100 msg/s to 1000: server CPU us/delivery", "server_cpu_us_per_delivery", "lower", None),
    ("c", "(c) 10 members: server CPU us/delivery", "server_cpu_us_per_delivery", "lower", 2.0),
    ("c", "(c) 10 members: deliveries/s", "deliveries_per_sec", "higher", 0.9),
    ("d", "(d) idle connection: KiB", "kib_per_conn", "lower", 1.5),
    ("e", "(e) 20 msg/s to 1000: latency p99 ms", "lat_ms.p99", "lower", None),
]


def get(o, path):
    if path == "server_cpu_us_per_delivery" and o.get("server_cpu_s") and o.get("delivered"):
        # wsfan rounds its own figure to 0.1 us; CPU seconds have 10 ms resolution
        return o["server_cpu_s"] * 1e6 / o["delivered"]
    for key in path.split("."):
        if not isinstance(o, dict) or o.get(key) is None:
            return None
        o = o[key]
    return o if isinstance(o, (int, float)) else None


def load(folder):
    runs = {}
    for f in sorted(glob.glob(os.path.join(folder, "*__*__r*.json"))):
        server, scenario, _ = os.path.basename(f)[: -len(".json")].split("__")
        try:
            with open(f) as fh:
                o = json.loads(fh.readline())
        except (OSError, ValueError) as e:
            o = {"error": f"unreadable: {e}"}
        runs.setdefault((server, scenario), []).append(o)
    return runs


def fmt(v):
    if v is None:
        return "n/a"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    return f"{v:.3g}"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    folder = sys.argv[1]
    first = sys.argv[2] if len(sys.argv) > 2 else "switchboard"
    base = sys.argv[3] if len(sys.argv) > 3 else "axum_limit"
    runs = load(folder)
    servers = sorted({s for s, _ in runs}, key=lambda s: (s != first, s != base, s))

    def median(server, scenario, path):
        vals = [get(o, path) for o in runs.get((server, scenario), [])]
        vals = [v for v in vals if v is not None]
        return (statistics.median(vals), len(vals)) if vals else (None, 0)

    head = ["metric (median of runs; ratio to " + base + ")"] + servers + ["target", ""]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    missed = 0
    for scenario, label, path, better, target in METRICS:
        b, _ = median(base, scenario, path)
        if b is None and all(median(s, scenario, path)[0] is None for s in servers):
            continue
        cells, verdict = [], ""
        for s in servers:
            v, n = median(s, scenario, path)
            if v is None:
                cells.append("n/a")
                continue
            text = f"{fmt(v)} (n={n})"
            if s != base and b:
                ratio = v / b
                text += f" {ratio:.2f}x"
                if s == first and target is not None:
                    ok = ratio <= target if better == "lower" else ratio >= target
                    verdict = "ok" if ok else "MISSED"
                    missed += not ok
            cells.append(text)
        bound = "" if target is None else ("<= " if better == "lower" else ">= ") + f"{target}x"
        print("| " + " | ".join([label] + cells + [bound, verdict]) + " |")

    print()
    print("| lost / reordered / extra (sum over all runs) | " + " | ".join(servers) + " |")
    print("|---|" + "---|" * len(servers))
    for scenario in "abce":
        row = []
        for s in servers:
            rs = runs.get((s, scenario), [])
            if not rs:
                row.append("n/a")
                continue
            errors = sum(1 for o in rs if "error" in o or o.get("end_reason") not in ("complete", None))
            totals = [sum(o.get(k) or 0 for o in rs) for k in ("lost", "reordered", "extra")]
            row.append(" / ".join(map(str, totals)) + (f" ({errors} incomplete)" if errors else ""))
            if s == first and (any(totals) or errors):
                missed += 1
        print(f"| ({scenario}) | " + " | ".join(row) + " |")
    if missed:
        print(f"\n{first}: {missed} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

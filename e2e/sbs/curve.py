#!/usr/bin/env python3
"""The HTTP-FLV CPU-versus-delay curve of a side-by-side run: livefuse at each
flv_coalesce point next to SRS's two configurations, medians over rounds, and
the CPU ratio to SRS realtime.conf taken per round (same sitting) then medianed.
Usage: curve.py OUTDIR   (OUTDIR as sbs.sh wrote it: OUTDIR/rN/TARGET/fanout.jsonl)"""
import json
import os
import statistics as st
import sys

OUT = sys.argv[1]
POINTS = [("livefuse_nocoalesce", "livefuse, flv_coalesce 0s"),
          ("livefuse", "livefuse, flv_coalesce 40ms (default)"),
          ("livefuse_c100", "livefuse, flv_coalesce 100ms"),
          ("livefuse_c200", "livefuse, flv_coalesce 200ms"),
          ("srs_realtime", "SRS realtime.conf"),
          ("srs", "SRS default")]


def row(rd, target):
    path = os.path.join(OUT, rd, target, "fanout.jsonl")
    if not os.path.exists(path):
        return None
    for line in open(path):
        line = line.strip()
        if line:
            r = json.loads(line)
            if r.get("proto") == "httpflv":
                return r
    return None


def med(vals):
    vals = [v for v in vals if v is not None]
    return st.median(vals) if vals else None


def f(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


rounds = sorted(d for d in os.listdir(OUT) if d.startswith("r") and os.path.isdir(os.path.join(OUT, d)))
print(f"HTTP-FLV, 1000 players, rounds {' '.join(rounds)}: medians; CPU ratio to SRS realtime.conf per round, then medianed\n")
print("| server | CPU % of a core | RSS MB | e2e p50 / p99 ms | CPU / SRS realtime |")
print("|---|---|---|---|---|")
for target, name in POINTS:
    rows = {rd: row(rd, target) for rd in rounds}
    rows = {rd: r for rd, r in rows.items() if r}
    if not rows:
        continue
    cpu = med([r.get("server_cpu_pct") for r in rows.values()])
    rss = med([r.get("server_rss_mb_max") for r in rows.values()])
    p50 = med([r.get("e2e_latency_ms", {}).get("p50") for r in rows.values()])
    p99 = med([r.get("e2e_latency_ms", {}).get("p99") for r in rows.values()])
    ratios = []
    for rd, r in rows.items():
        ref = row(rd, "srs_realtime")
        if ref and ref.get("server_cpu_pct"):
            ratios.append(r["server_cpu_pct"] / ref["server_cpu_pct"])
    print(f"| {name} | {f(cpu)} | {f(rss, 0)} | {f(p50)} / {f(p99)} | {f(med(ratios), 2)} |")

#!/usr/bin/env python3
"""bench/run's table: merges the rows one run measured (JSON lines) into the
results file (rows of figures not run this time are kept) and prints it.
`results.py --markdown bench/results.json` prints the table as Markdown."""
import json
import os
import platform
import sys
import time


def passes(r):
    if r["value"] is None or r["target"] is None or not r["op"]:
        return None
    return r["value"] <= r["target"] if r["op"] == "<=" else r["value"] >= r["target"]


def markdown(path):
    """The table of a results file as Markdown (for bench/README.md)."""
    print("| # | figure | value | target | | method |")
    print("|---|---|---|---|---|---|")
    for r in json.load(open(path))["rows"]:
        v = "–" if r["value"] is None else f"{r['value']:g} {r['unit']}"
        t = f"{r['op']} {r['target']:g} {r['unit']}" if r["target"] is not None else ""
        ok = {True: "met", False: "**missed**", None: ""}[r["pass"]]
        print(f"| {r['id']} | {r['name']} | {v} | {t} | {ok} | {r['method']} |")


def main():
    if sys.argv[1] == "--markdown":
        markdown(sys.argv[2])
        return
    rows_path, out_path = sys.argv[1], sys.argv[2]
    is_smoke = "--smoke" in sys.argv[3:]
    new = [json.loads(line) for line in open(rows_path) if line.strip()]
    rows = {}
    if os.path.exists(out_path) and not is_smoke:
        rows = {r["id"]: r for r in json.load(open(out_path)).get("rows", [])}
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for r in new:
        r["pass"] = passes(r)
        r["measured_at"] = stamp
        rows[r["id"]] = r
    ordered = [rows[k] for k in sorted(rows)]
    doc = {
        "smoke": is_smoke,
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "rows": ordered,
    }
    with open(out_path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(out_path + ".tmp", out_path)

    print(f"{'#':3} {'figure':36} {'value':>10} {'unit':5} {'target':>8}  {'':4}")
    for r in ordered:
        v = "-" if r["value"] is None else f"{r['value']:g}"
        t = f"{r['op']} {r['target']:g}" if r["target"] is not None else ""
        ok = {True: "ok", False: "MISS", None: ""}[r["pass"]]
        print(f"{r['id']:3} {r['name'][:36]:36} {v:>10} {r['unit']:5} {t:>8}  {ok:4}")
    for r in ordered:
        print(f"  {r['id']}: {r['method']}")
    print(f"written to {out_path}" + ("  (smoke sizes: not the figures)" if is_smoke else ""))


if __name__ == "__main__":
    main()

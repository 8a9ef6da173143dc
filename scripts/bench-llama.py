#!/usr/bin/env python3
"""`decache bench` beside llama.cpp's own `llama-bench`, in the same run.

For every model, depth and flash-attention setting, both programs run the same
tests (pp and tg, same threads, same depth, same repetitions) one after the
other, several rounds, the order swapped each round so that drift in the
machine's speed hits both alike. The ratio is decache's mean over llama-bench's
mean, all rounds pooled.

Flash-attention settings (--fa):
  default   neither program gets -fa: each uses its own default (auto)
  0, 1      both get -fa off / -fa on (settings matched)

Prints a Markdown table (and writes it with --md, the raw samples with --json).
Python standard library only.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

from benchlib import report, cpu_name


def run_json(cmd):
    """Runs a benchmark that prints a JSON list on stdout; returns the list."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"bench-llama: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    out = p.stdout
    start = out.find("[")
    try:
        return json.loads(out[start:])
    except (ValueError, IndexError) as e:
        sys.exit(f"bench-llama: {' '.join(cmd)} printed no JSON list ({e}):\n{out[-2000:]}")


def test_name(kind, n, depth):
    t = f"{kind}{n}"
    return f"{t} @ d{depth}" if depth else t


def llama_samples(rows):
    """llama-bench JSON -> {test name: samples}."""
    out = {}
    for r in rows:
        if r.get("n_gen", 0) > 0:
            name = test_name("tg", r["n_gen"], r.get("n_depth", 0))
        else:
            name = test_name("pp", r["n_prompt"], r.get("n_depth", 0))
        out[name] = list(r["samples_ts"])
    return out


def llama_build(rows):
    r = rows[0] if rows else {}
    return f"{r.get('build_commit', '?')} (build {r.get('build_number', '?')})"


def decache_samples(rows):
    return {r["test"]: list(r["samples_ts"]) for r in rows if r.get("engine") == "decache"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decache", required=True, help="the decache binary")
    ap.add_argument("--llama-bench", required=True, help="llama.cpp's llama-bench binary")
    ap.add_argument("--model", action="append", required=True, metavar="GGUF[:DEPTHS]",
                    help="a model, optionally with its own depths (path:0,4096); repeatable")
    ap.add_argument("-d", "--depths", default="0,4096,16384", help="depths for models given without their own")
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("-r", "--repetitions", type=int, default=3, help="repetitions per program per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--fa", default="default,1", help="flash-attention settings: default, 0, 1 (comma-separated)")
    ap.add_argument("--md", help="also write the Markdown here")
    ap.add_argument("--json", help="write every sample here")
    a = ap.parse_args()

    version = subprocess.run([a.decache, "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()
    results = []
    build = "?"
    for spec in a.model:
        path, _, depths = spec.partition(":")
        depths = [int(d) for d in (depths or a.depths).split(",")]
        if not os.path.exists(path):
            sys.exit(f"bench-llama: {path}: no such model file (make models)")
        for fa in a.fa.split(","):
            if fa not in ("default", "0", "1"):
                sys.exit(f"bench-llama: --fa {fa}: use default, 0 or 1")
            for depth in depths:
                common = ["-m", path, "-t", str(a.threads), "-d", str(depth), "-p", str(a.n_prompt),
                          "-n", str(a.n_gen), "-r", str(a.repetitions), "-o", "json"]
                fa_args = [] if fa == "default" else ["-fa", {"0": "off", "1": "on"}[fa]]
                ours, theirs = {}, {}
                for rnd in range(a.rounds):
                    steps = ["llama", "decache"] if rnd % 2 == 0 else ["decache", "llama"]
                    for who in steps:
                        print(f"bench-llama: {os.path.basename(path)} fa={fa} d={depth} round {rnd + 1}: {who}",
                              file=sys.stderr, flush=True)
                        if who == "llama":
                            rows = run_json([a.llama_bench] + common + fa_args)
                            build = llama_build(rows)
                            for k, v in llama_samples(rows).items():
                                theirs.setdefault(k, []).extend(v)
                        else:
                            rows = run_json([a.decache, "bench"] + common + fa_args)
                            for k, v in decache_samples(rows).items():
                                ours.setdefault(k, []).extend(v)
                for test in sorted(ours, key=lambda k: (not k.startswith("pp"), k)):
                    if test not in theirs:
                        sys.exit(f"bench-llama: llama-bench reported no {test}")
                    results.append({"model": os.path.basename(path), "fa": fa, "test": test,
                                    "decache": ours[test], "llama": theirs[test]})

    lines = [
        f"`{' '.join(sys.argv)}`",
        "",
        f"{datetime.date.today()}, {cpu_name()}, {a.threads} threads; {version} "
        f"(ggml from llama-cpp-sys-2) against llama-bench {build}; "
        f"{a.rounds} rounds x {a.repetitions} repetitions per program, order swapped each round.",
        "",
        "| model | -fa | test | decache t/s | llama-bench t/s | decache / llama-bench |",
        "| ----- | --- | ---- | ----------: | --------------: | --------------------: |",
    ]
    for r in results:
        o, l = statistics.mean(r["decache"]), statistics.mean(r["llama"])
        so = statistics.stdev(r["decache"]) if len(r["decache"]) > 1 else 0.0
        sl = statistics.stdev(r["llama"]) if len(r["llama"]) > 1 else 0.0
        r["ratio"] = o / l
        fa = "defaults" if r["fa"] == "default" else f"{r['fa']} (both)"
        lines.append(f"| {r['model']} | {fa} | {r['test']} | {o:.2f} ± {so:.2f} | {l:.2f} ± {sl:.2f} | {o / l:.3f} |")
    report(lines, a.md, a.json, results)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""`decache bench` beside llama.cpp's own `llama-bench`, in the same run.

For every model, depth and flash-attention setting, both programs run the same
tests (pp and tg, same threads, same depth, same repetitions) one after the
other, several rounds, the order swapped each round so that drift in the
machine's speed hits both alike. The ratio is decache's mean over llama-bench's
mean, all rounds pooled; beside it the median (and range) of the rounds' own
ratios, each from runs minutes apart.

Flash-attention settings (--fa):
  default   neither program gets -fa: each uses its own default (auto)
  0, 1      both get -fa off / -fa on (settings matched)

With --llama-bench-same (a llama-bench built on the llama.cpp that decache's
ggml comes from: `make llama-bench-same`), it runs too, in the same rotation,
and the table gets its column and decache's ratio to it: both then run the same
ggml and llama.cpp source, so that ratio is the engine's alone.

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


def flat(rounds):
    """Per-round sample lists -> one list."""
    return [x for r in rounds for x in r]


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
    ap.add_argument("--llama-bench-same", help="llama-bench built on decache's own llama.cpp (make llama-bench-same)")
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
                programs = ["llama", "decache"] + (["same"] if a.llama_bench_same else [])
                samples = {who: {} for who in programs}
                for rnd in range(a.rounds):
                    # Every other round reversed, and rotated every two rounds: two
                    # programs alternate, three go through all six orders.
                    k = (rnd // 2) % len(programs)
                    steps = programs[k:] + programs[:k]
                    if rnd % 2:
                        steps.reverse()
                    for who in steps:
                        print(f"bench-llama: {os.path.basename(path)} fa={fa} d={depth} round {rnd + 1}: {who}",
                              file=sys.stderr, flush=True)
                        if who == "decache":
                            got = decache_samples(run_json([a.decache, "bench"] + common + fa_args))
                        else:
                            rows = run_json([a.llama_bench if who == "llama" else a.llama_bench_same]
                                            + common + fa_args)
                            if who == "llama":
                                build = llama_build(rows)
                            got = llama_samples(rows)
                        for t, v in got.items():
                            samples[who].setdefault(t, []).append(list(v))
                ours = samples["decache"]
                for test in sorted(ours, key=lambda k: (not k.startswith("pp"), k)):
                    for who in (w for w in programs if w != "decache"):
                        if test not in samples[who]:
                            sys.exit(f"bench-llama: {who} llama-bench reported no {test}")
                    row = {"model": os.path.basename(path), "fa": fa, "test": test,
                           "decache": flat(ours[test]), "llama": flat(samples["llama"][test]),
                           # decache's mean over llama-bench's within each round: the
                           # two ran minutes apart, so drift in the machine's speed
                           # between rounds cancels out of these.
                           "round_ratios": [statistics.mean(o) / statistics.mean(l)
                                            for o, l in zip(ours[test], samples["llama"][test])]}
                    if a.llama_bench_same:
                        row["llama_same"] = flat(samples["same"][test])
                    results.append(row)

    same = " and llama-bench on decache's own llama.cpp (`make llama-bench-same`)" if a.llama_bench_same else ""
    lines = [
        f"`{' '.join(sys.argv)}`",
        "",
        f"{datetime.date.today()}, {cpu_name()}, {a.threads} threads; {version} "
        f"(ggml from llama-cpp-sys-2) against llama-bench {build}{same}; "
        f"{a.rounds} rounds x {a.repetitions} repetitions per program, order rotated each round.",
        "",
    ]
    head = ["model", "-fa", "test", "decache t/s", "llama-bench t/s"]
    if a.llama_bench_same:
        head += ["same-llama.cpp llama-bench t/s"]
    head += ["decache / llama-bench", "per round: median (min-max)"]
    if a.llama_bench_same:
        head += ["decache / same-llama.cpp llama-bench"]
    lines += ["| " + " | ".join(head) + " |", "| " + " | ".join("---" if i < 3 else "---:" for i in range(len(head))) + " |"]

    def cell(xs):
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.mean(xs):.2f} ± {sd:.2f}"

    for r in results:
        o, l = statistics.mean(r["decache"]), statistics.mean(r["llama"])
        r["ratio"] = o / l
        fa = "defaults" if r["fa"] == "default" else f"{r['fa']} (both)"
        cells = [r["model"], fa, r["test"], cell(r["decache"]), cell(r["llama"])]
        if a.llama_bench_same:
            cells.append(cell(r["llama_same"]))
        cells.append(f"{o / l:.3f}")
        rr = r["round_ratios"]
        cells.append(f"{statistics.median(rr):.3f} ({min(rr):.3f}-{max(rr):.3f})")
        if a.llama_bench_same:
            r["ratio_same"] = o / statistics.mean(r["llama_same"])
            cells.append(f"{r['ratio_same']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    report(lines, a.md, a.json, results)


if __name__ == "__main__":
    main()

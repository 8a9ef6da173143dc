#!/usr/bin/env python3
"""Two decache builds against each other, interleaved: `decache bench` of
each (its own rows only) for every flash-attention setting and depth, the
builds alternating and their order swapped every round so that drift in the
machine's speed hits both alike. Prints a Markdown table of the means and
the ratio A / B. Python standard library only.

  scripts/bench-ab.py --a target/decache-omp --b target/decache-pool \\
      --model ~/.cache/decache/models/SmolLM2-135M-Instruct.Q4_1.gguf --fa 1,0 --depths 0,4096
"""
import argparse
import json
import statistics
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="the first decache binary")
    ap.add_argument("--b", required=True, help="the second decache binary")
    ap.add_argument("--model", required=True)
    ap.add_argument("--fa", default="1,0", help="flash-attention settings (comma-separated)")
    ap.add_argument("--depths", default="0,4096")
    ap.add_argument("-t", "--threads", default="2")
    ap.add_argument("-r", "--repetitions", default="2", help="repetitions per call")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    bins = {"A": a.a, "B": a.b}
    samples = {}
    for r in range(a.rounds):
        for fa in a.fa.split(","):
            for d in a.depths.split(","):
                order = ["A", "B"] if r % 2 == 0 else ["B", "A"]
                for which in order:
                    cmd = [bins[which], "bench", "-m", a.model, "-t", a.threads, "-fa", fa, "-d", d,
                           "-r", a.repetitions, "-o", "json"]
                    p = subprocess.run(cmd, capture_output=True, text=True)
                    if p.returncode != 0:
                        sys.exit(f"bench-ab: {' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
                    rows = json.loads(p.stdout[p.stdout.find("["):])
                    for row in rows:
                        if row.get("engine") == "decache":
                            samples.setdefault((f"{row['test']} fa={fa}", which), []).extend(row["samples_ts"])
                print(f"bench-ab: round {r + 1} fa={fa} d={d}", file=sys.stderr, flush=True)
    print(f"| test | A t/s | B t/s | A / B |\n| --- | ---: | ---: | ---: |")
    for test in sorted({t for t, _ in samples}):
        x, y = statistics.mean(samples[(test, "A")]), statistics.mean(samples[(test, "B")])
        print(f"| {test} | {x:.2f} | {y:.2f} | {x / y:.3f} |")


if __name__ == "__main__":
    main()

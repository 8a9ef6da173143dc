#!/usr/bin/env python3
"""Replay a pruned agent history on a hybrid model through decache serve and
llama-server (issue 20, "hybrid reuse").

The prompts are those of `decache bench --replay` (an agent client that keeps
only the newest todo reminder and the file reads of its last turns), written
by `decache bench --replay --write-prompts`, rendered by the model's
template. Each is sent to both servers in turn as one /v1/completions
request (temperature 0, one token), one server running at a time. Per turn:
the prompt tokens each server evaluated (`timings.prompt_n`) and the
request's wall time. llama.cpp keeps a hybrid model's recurrent state only
for a prefix the cache still holds, so where the client pruned its history
it evaluates the prompt again from the divergence (or from one of its
context checkpoints); decache deletes the pruned spans in place and keeps
the recurrent state (docs/DESIGN-hybrid.md).
"""

import datetime
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from benchlib import Server, cpu_name, free_port, loadavg, report, server_bench_args  # noqa: E402


def post(server, body):
    t0 = time.monotonic()
    st, raw = server.request("POST", "/v1/completions", body, timeout=3600)
    dt = time.monotonic() - t0
    if st != 200:
        raise RuntimeError(f"{server.name}: HTTP {st}: {raw[:500]!r}")
    r = json.loads(raw)
    return r.get("timings", {}).get("prompt_n"), dt


def main():
    ap = server_bench_args(__doc__)
    ap.add_argument("-c", "--ctx", type=int, default=16384)
    ap.add_argument("--turns", type=int, default=16)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--logs", default="target/bench-hybrid-logs")
    ap.add_argument("--md", help="also write the Markdown here")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    os.makedirs(a.logs, exist_ok=True)
    prompts_path = os.path.join(a.logs, "prompts.json")
    subprocess.run([a.decache, "bench", "-m", a.model, "--replay", "--turns", str(a.turns), "--window",
                    str(a.window), "--write-prompts", prompts_path], check=True, stdout=subprocess.DEVNULL)
    with open(prompts_path) as f:
        prompts = json.load(f)
    common = ["-m", a.model, "-c", str(a.ctx), "-t", str(a.threads), "-np", "1", "--host", "127.0.0.1"]
    servers = [("decache", [a.decache, "serve"]), ("llama-server", [a.llama_server])]
    body = {"temperature": 0, "max_tokens": 1, "stream": False, "top_k": 1, "seed": 1}
    rows = {}
    for name, argv in servers:
        port = free_port()
        log = os.path.join(a.logs, f"{name}.log")
        print(f"bench-hybrid-replay: {name}", file=sys.stderr, flush=True)
        s = Server(name, argv + common + ["--port", str(port)], log)
        try:
            rows[name] = [post(s, dict(body, prompt=p)) for p in prompts]
        finally:
            s.stop()
    with open(os.path.join(a.logs, "llama-server.log"), errors="replace") as f:
        llama_log = f.read()
    checkpoints = llama_log.count("restored context checkpoint")
    lines = [
        f"`{' '.join(sys.argv)}`",
        "",
        f"{datetime.date.today()}, {cpu_name()}, {a.threads} threads, load before: {loadavg()}; "
        f"{len(prompts)} turns, the client keeps file reads of its last {a.window} turns and the newest reminder; "
        "one /v1/completions request per turn (1 token, temperature 0), -np 1, each server alone.",
        "",
        "| turn | prompt chars | decache prefilled | decache s | llama-server prefilled | llama-server s |",
        "| ---: | -----------: | ----------------: | --------: | ---------------------: | -------------: |",
    ]
    data = []
    for i, p in enumerate(prompts):
        (dn, dt), (ln, lt) = rows["decache"][i], rows["llama-server"][i]
        lines.append(f"| {i + 1} | {len(p)} | {dn} | {dt:.2f} | {ln} | {lt:.2f} |")
        data.append({"turn": i + 1, "chars": len(p), "decache_prefilled": dn, "decache_s": dt,
                     "llama_prefilled": ln, "llama_s": lt})
    tot = lambda k: sum(d[k] or 0 for d in data)  # noqa: E731
    lines += [
        "",
        f"In all: decache prefilled {tot('decache_prefilled')} tokens in {tot('decache_s'):.1f} s; llama-server "
        f"{tot('llama_prefilled')} tokens in {tot('llama_s'):.1f} s ({checkpoints} context checkpoints restored, "
        "from its log).",
    ]
    report(lines, a.md, a.json, data)


if __name__ == "__main__":
    main()

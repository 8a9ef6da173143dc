#!/usr/bin/env python3
"""Concurrent clients against `decache serve -np N` and `llama-server -np N`.

Clients: N threads, each a multi-turn conversation (TURNS turns) that shares
one long system prompt with the others and asks its own questions, streaming,
temperature 0, --max-tokens per answer. All start together.

Reported per server: generated tokens per second over the whole run (all
clients), p50 and p99 of the request latency (send to last byte), prompt
tokens sent and prefilled (the servers' own `timings.prompt_n`: what the shared
prefix cost), and the longest gap between two streamed pieces of any answer.

--long-prefill P adds a second scenario: one client streams an answer while,
once it has begun, another sends a prompt of P tokens; reported: the
streaming client's longest gap between pieces while the long prompt was being
prefilled, and how long that prefill took.

Python standard library only.
"""

import datetime
import http.client
import json
import os
import statistics
import sys
import threading
import time

from benchlib import report, server_bench_args, Server, cpu_name, free_port, loadavg

TOPICS = ["rivers", "volcanoes", "bridges", "forests", "deserts", "glaciers", "islands", "canals",
          "lighthouses", "harbours", "mountains", "caves", "lakes", "reefs", "valleys", "plains"]


def system_prompt(n_tools=24):
    tools = []
    for i in range(n_tools):
        tools.append(f"- tool_{i}(path: string, mode: string) -> string: reads or writes the file at path; "
                     f"mode is one of read, write, append; returns the file's text or an error line.")
    return ("You are a coding assistant working in a repository. Answer briefly. You can call these tools:\n"
            + "\n".join(tools) + "\nAlways explain what you are about to do before you do it.")


def stream(port, body, on_piece=None, timeout=3600):
    """POST a streaming chat request; returns (text, timings, piece times)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
              headers={"content-type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
    text, timings, times = [], {}, []
    buf = b""
    while True:
        chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                continue
            ev = json.loads(data)
            if ev.get("timings"):
                timings = ev["timings"]
            for ch in ev.get("choices", []):
                piece = (ch.get("delta") or {}).get("content")
                if piece:
                    now = time.time()
                    times.append(now)
                    text.append(piece)
                    if on_piece:
                        on_piece(now)
    c.close()
    return "".join(text), timings, times


def longest_gap(times):
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def clients_run(port, n, turns, max_tokens):
    sys_p = system_prompt()
    results, errors = [], []
    lock = threading.Lock()

    def client(i):
        msgs = [{"role": "system", "content": sys_p}]
        try:
            for t in range(turns):
                topic = TOPICS[(i * turns + t) % len(TOPICS)]
                msgs.append({"role": "user", "content": f"Client {i}, turn {t}: tell me three facts about {topic}."})
                body = {"messages": msgs, "temperature": 0, "max_tokens": max_tokens, "stream": True}
                t0 = time.time()
                text, timings, times = stream(port, body)
                with lock:
                    results.append({"latency": time.time() - t0, "timings": timings, "gap": longest_gap(times),
                                    "pieces": len(times)})
                msgs.append({"role": "assistant", "content": text})
        except Exception as e:  # reported after the run
            with lock:
                errors.append(f"client {i}: {e}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    if errors:
        raise RuntimeError("; ".join(errors))
    gen = sum(r["timings"].get("predicted_n", r["pieces"]) for r in results)
    lat = sorted(r["latency"] for r in results)
    return {
        "wall": wall,
        "generated": gen,
        "tps": gen / wall,
        "p50": statistics.median(lat),
        "p99": lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))],
        "prompt_n": sum(r["timings"].get("prompt_n", 0) for r in results),
        "cache_n": sum(r["timings"].get("cache_n", 0) for r in results),
        "gap": max(r["gap"] for r in results),
    }


def filler_text(port, n_tokens):
    """Text of about n_tokens tokens on the server's model (its /tokenize)."""
    sample = " ".join(f"item{i % 97}" for i in range(1000))
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/tokenize", body=json.dumps({"content": sample}).encode(),
              headers={"content-type": "application/json"})
    per_word = len(json.loads(c.getresponse().read())["tokens"]) / 1000
    c.close()
    return " ".join(f"item{i % 97}" for i in range(int(n_tokens / per_word)))


def long_prefill_run(port, n_tokens, max_tokens):
    filler = filler_text(port, n_tokens - 64)
    started = threading.Event()
    times, prefill = [], {}

    def streamer():
        body = {"messages": [{"role": "user", "content": "Count slowly from one to five hundred, one number per line."}],
                "temperature": 0, "max_tokens": max_tokens, "stream": True}
        _, _, ts = stream(port, body, on_piece=lambda _t: started.set())
        times.extend(ts)

    def prefiller():
        started.wait()
        time.sleep(0.5)
        body = {"messages": [{"role": "user", "content": filler + "\nSay OK."}], "temperature": 0,
                "max_tokens": 1, "stream": True}
        t0 = time.time()
        try:
            _, timings, _ = stream(port, body)
        except RuntimeError as e:
            prefill["error"] = str(e)
            return
        prefill.update({"start": t0, "end": time.time(), "prompt_n": timings.get("prompt_n", 0),
                        "prompt_ms": timings.get("prompt_ms", 0.0)})

    a, b = threading.Thread(target=streamer), threading.Thread(target=prefiller)
    a.start()
    b.start()
    a.join()
    b.join()
    if "error" in prefill:
        raise RuntimeError(prefill["error"])
    during = [t for t in times if prefill["start"] <= t <= prefill["end"]]
    # Gaps that overlap the prefill: between consecutive pieces, one of which lies inside it.
    gaps = [y - x for x, y in zip(times, times[1:]) if y >= prefill["start"] and x <= prefill["end"]]
    return {"prefill_s": prefill["end"] - prefill["start"], "prompt_n": prefill["prompt_n"],
            "pieces_during": len(during), "gap": max(gaps, default=float("nan")),
            "stream_outlived_prefill": bool(times) and times[-1] > prefill["end"]}


def main():
    ap = server_bench_args(__doc__)
    ap.add_argument("--clients", default="4,8")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--ctx", type=int, default=4096, help="cells per sequence")
    ap.add_argument("--servers", default="decache,llama", help="which servers to run (decache, llama)")
    ap.add_argument("--long-prefill", type=int, default=0)
    ap.add_argument("--logs", default="target/bench-concurrency-logs")
    ap.add_argument("--md")
    ap.add_argument("--json")
    a = ap.parse_args()
    os.makedirs(a.logs, exist_ok=True)

    def servers(n, ctx):
        # Both hold one cache of ctx cells per slot in all: decache's slots
        # share theirs; llama-server divides -c among its slots unless its
        # cache is unified.
        both = [("decache serve", [a.decache, "serve", "-np", str(n), "-c", str(ctx * n)]),
                ("llama-server", [a.llama_server, "-np", str(n), "-c", str(ctx * n)])]
        wanted = a.servers.split(",")
        return [s for s in both if s[0].split()[0].split("-")[0] in wanted]

    rows, longs = [], []
    for n in [int(x) for x in a.clients.split(",") if x]:
        for name, argv in servers(n, a.ctx):
            port = free_port()
            print(f"bench-concurrency: {n} clients: {name}", file=sys.stderr, flush=True)
            s = Server(name, argv + ["-m", a.model, "-t", str(a.threads), "--host", "127.0.0.1", "--port", str(port)],
                       os.path.join(a.logs, f"{name.split()[0]}-np{n}.log"))
            try:
                r = clients_run(port, n, a.turns, a.max_tokens)
            finally:
                s.stop()
            r.update({"server": name, "clients": n})
            rows.append(r)
    if a.long_prefill:
        ctx = a.long_prefill + 2048
        for name, argv in servers(2, ctx):
            port = free_port()
            print(f"bench-concurrency: long prefill: {name}", file=sys.stderr, flush=True)
            s = Server(name, argv + ["-m", a.model, "-t", str(a.threads), "--host", "127.0.0.1", "--port", str(port)],
                       os.path.join(a.logs, f"{name.split()[0]}-long.log"))
            try:
                r = long_prefill_run(port, a.long_prefill, 2000)
            except RuntimeError as e:
                # llama-server caps a slot at the model's trained context.
                r = {"error": str(e)}
            finally:
                s.stop()
            r["server"] = name
            longs.append(r)

    lines = [f"`{' '.join(sys.argv)}`", "",
             f"{datetime.date.today()}, {cpu_name()}, {a.threads} threads, load before: {loadavg()}; "
             f"{a.turns} turns per client, {a.max_tokens} tokens per answer, temperature 0, streamed.", "",
             "| clients | server | generated t/s (all) | p50 latency s | p99 latency s | longest gap s | "
             "prompt tokens prefilled | reused |",
             "| ------: | ------ | ------------------: | ------------: | ------------: | ------------: | "
             "----------------------: | -----: |"]
    for r in rows:
        lines.append(f"| {r['clients']} | {r['server']} | {r['tps']:.2f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                     f"{r['gap']:.2f} | {r['prompt_n']} | {r['cache_n']} |")
    lines += ["", "| clients | decache / llama-server throughput |", "| ------: | ------------------------------: |"]
    for n in sorted({r["clients"] for r in rows}):
        d = next((r for r in rows if r["clients"] == n and r["server"] == "decache serve"), None)
        ll = next((r for r in rows if r["clients"] == n and r["server"] == "llama-server"), None)
        if d and ll:
            lines.append(f"| {n} | {d['tps'] / ll['tps']:.2f}x |")
    if longs:
        lines += ["", f"Long prefill ({a.long_prefill} tokens asked) beside a streaming answer:", "",
                  "| server | prompt tokens | prefill s | pieces streamed during it | longest gap s | "
                  "stream outlived the prefill |",
                  "| ------ | ------------: | --------: | ------------------------: | ------------: | "
                  ":-------------------------: |"]
        for r in longs:
            if "error" in r:
                lines.append(f"| {r['server']} | refused: {r['error'][:160]} | | | | |")
                continue
            lines.append(f"| {r['server']} | {r['prompt_n']} | {r['prefill_s']:.1f} | {r['pieces_during']} | "
                         f"{r['gap']:.2f} | {'yes' if r['stream_outlived_prefill'] else 'no'} |")
    report(lines, a.md, a.json, {"clients": rows, "long_prefill": longs})


if __name__ == "__main__":
    main()

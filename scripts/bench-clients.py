#!/usr/bin/env python3
"""Agent harness requests: `decache serve` vs llama.cpp's `llama-server`.

Replays, per harness, its recorded first request and a later turn (the history
of the earlier turns plus tool results) against fresh server processes, one
after the other: the first request, then the later one, to the same process,
so that the later turn meets the cache the first one left. Every body gets
`max_tokens` (or `max_output_tokens`) = --max-tokens, temperature 0 and
stream: true.

Captures: DIR/<client>-first.json and DIR/<client>-later.json, each
{"path": "/v1/...", "body": {...}} as a harness sent it.

Servers (each a fresh process per client, -c CTX -t THREADS, defaults otherwise):
  decache             decache serve
  llama-server        llama-server
  llama-server cr16   llama-server --cache-reuse 16
  llama-server text   llama-server /completion, given the prompt text decache
                      renders for the same body (same tokens on both engines)
  decache -fa on      (only with --rows ...,decache-fa-on) decache serve -fa on:
                      llama-server's `-fa auto` means on for the CPU, decache's off

Where llama-server refuses a body (probed first on its token-count endpoints),
the body is converted to the equivalent chat completions request and the
converted body goes to every server, so the comparison stays like for like.

Measured per request: prompt tokens, prefilled tokens (prompt_n) and reused
ones (cache_n) with the prefill time (prompt_ms), all as the server reports
them (`timings`; llama-server's Anthropic stream carries none, so its log's
`prompt eval time` line is read instead), and TTFT: from sending the request
to the first streamed event that carries generated output (text, reasoning
or a tool call piece).

Python standard library only.
"""

import argparse
import copy
import datetime
import http.client
import json
import os
import platform
import re
import struct
import sys
import threading
import time

from benchlib import Server, free_port, loadavg, sh

CLIENTS = ["claude-code", "codex", "opencode", "qwen-code", "aider"]
COUNT_ENDPOINTS = {
    "/v1/messages": "/v1/messages/count_tokens",
    "/v1/responses": "/v1/responses/input_tokens",
    "/v1/chat/completions": "/v1/chat/completions/input_tokens",
}


# ---------------------------------------------------------------- GGUF header


def gguf_meta(path, wanted):
    """The values of the `wanted` keys from a GGUF file's header (scalars and strings)."""
    out = {}
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            return out
        (version,) = struct.unpack("<I", f.read(4))
        if version < 2:
            return out
        _, n_kv = struct.unpack("<QQ", f.read(16))
        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
        fmts = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

        def string():
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8", "replace")

        def value(t):
            if t == 8:
                return string()
            if t == 9:
                (et,) = struct.unpack("<I", f.read(4))
                (n,) = struct.unpack("<Q", f.read(8))
                if et in sizes:
                    f.seek(sizes[et] * n, 1)
                else:
                    for _ in range(n):
                        value(et)
                return None
            return struct.unpack(fmts[t], f.read(sizes[t]))[0]

        for _ in range(n_kv):
            key = string()
            (t,) = struct.unpack("<I", f.read(4))
            v = value(t)
            if key in wanted:
                out[key] = v
            if key == "general.architecture":
                wanted = set(wanted) | {f"{v}.context_length"}
            if wanted and all(k in out for k in wanted):
                break
    return out


# ------------------------------------------------------- body -> chat body


def _text_of(content):
    """Text of Anthropic/Responses content: a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for p in content:
        if isinstance(p, str):
            parts.append(p)
        elif p.get("type") in ("text", "input_text", "output_text"):
            parts.append(p.get("text", ""))
        elif p.get("type") in ("image", "input_image", "image_url"):
            parts.append("[image]")
        elif p.get("type") == "tool_result":  # nested, rare
            parts.append(_text_of(p.get("content")))
    return "\n".join(x for x in parts if x)


def anthropic_to_chat(b):
    msgs = []
    system = b.get("system")
    if system:
        msgs.append({"role": "system", "content": _text_of(system)})
    for m in b.get("messages", []):
        content = m.get("content")
        if isinstance(content, str):
            msgs.append({"role": m["role"], "content": content})
            continue
        if m["role"] == "assistant":
            text = _text_of([p for p in content if p.get("type") == "text"])
            calls = [
                {"id": p["id"], "type": "function",
                 "function": {"name": p["name"], "arguments": json.dumps(p.get("input", {}))}}
                for p in content if p.get("type") == "tool_use"
            ]
            msg = {"role": "assistant", "content": text or None}
            if calls:
                msg["tool_calls"] = calls
            msgs.append(msg)
            continue
        # user: tool results become tool messages, in order, then the rest as one user message
        rest = []
        for p in content:
            if p.get("type") == "tool_result":
                out = _text_of(p.get("content"))
                if p.get("is_error"):
                    out = "Error: " + out
                msgs.append({"role": "tool", "tool_call_id": p["tool_use_id"], "content": out})
            else:
                rest.append(p)
        text = _text_of(rest)
        if text:
            msgs.append({"role": "user", "content": text})
    tools = [
        {"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                          "parameters": t["input_schema"]}}
        for t in b.get("tools", []) if "input_schema" in t
    ]
    out = {"model": b.get("model", "model"), "messages": msgs}
    if tools:
        out["tools"] = tools
        tc = b.get("tool_choice") or {}
        kind = tc.get("type")
        if kind == "any":
            out["tool_choice"] = "required"
        elif kind == "none":
            out["tool_choice"] = "none"
        elif kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": tc["name"]}}
    return out


def responses_to_chat(b):
    msgs = []
    if b.get("instructions"):
        msgs.append({"role": "system", "content": b["instructions"]})
    items = b.get("input", [])
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    roles = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant"}
    for it in items:
        kind = it.get("type", "message")
        if kind == "message":
            msgs.append({"role": roles.get(it.get("role"), "user"), "content": _text_of(it.get("content"))})
        elif kind in ("function_call", "custom_tool_call"):
            args = it.get("arguments", "{}") if kind == "function_call" else json.dumps({"input": it.get("input", "")})
            call = {"id": it["call_id"], "type": "function", "function": {"name": it["name"], "arguments": args}}
            last = msgs[-1] if msgs else None
            if last and last["role"] == "assistant" and (last.get("tool_calls") or not last.get("content")):
                last.setdefault("tool_calls", []).append(call)
            else:
                msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            out = it.get("output", "")
            msgs.append({"role": "tool", "tool_call_id": it["call_id"],
                         "content": out if isinstance(out, str) else _text_of(out)})
        # reasoning and other items carry no prompt text for a chat model
    tools = []
    for t in b.get("tools", []):
        if t.get("type") == "function":
            tools.append({"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                                           "parameters": t.get("parameters") or {"type": "object"}}})
        elif t.get("type") == "custom":
            tools.append({"type": "function", "function": {
                "name": t["name"], "description": t.get("description", ""),
                "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}}})
    out = {"model": b.get("model", "model"), "messages": msgs}
    if tools:
        out["tools"] = tools
        if b.get("tool_choice") in ("auto", "required", "none"):
            out["tool_choice"] = b["tool_choice"]
    return out


def to_chat(path, body):
    if path == "/v1/messages":
        return anthropic_to_chat(body)
    if path == "/v1/responses":
        return responses_to_chat(body)
    return copy.deepcopy(body)


def prepared(path, body, max_tokens):
    """The body as replayed: small fixed output, greedy, streamed."""
    b = copy.deepcopy(body)
    b["stream"] = True
    b["temperature"] = 0
    if path == "/v1/responses":
        b["max_output_tokens"] = max_tokens
    else:
        b["max_tokens"] = max_tokens
        b.pop("max_completion_tokens", None)
    if path == "/v1/chat/completions":
        b["stream_options"] = {"include_usage": True}
    return b


# ------------------------------------------------------------------ servers


def has_output(ev):
    """Whether a streamed event carries generated output (text, reasoning, a tool call piece)."""
    if not isinstance(ev, dict):
        return False
    for ch in ev.get("choices") or []:  # chat completions / completions
        d = ch.get("delta") or {}
        if d.get("content") or d.get("reasoning_content") or d.get("tool_calls") or ch.get("text"):
            return True
    t = ev.get("type", "")
    if t == "content_block_delta":  # Anthropic
        d = ev.get("delta") or {}
        return bool(d.get("text") or d.get("thinking") or d.get("partial_json"))
    if t == "content_block_start":
        return (ev.get("content_block") or {}).get("type") == "tool_use"
    if t.startswith("response.") and t.endswith(".delta"):  # Responses
        return bool(ev.get("delta"))
    if t == "response.output_item.added":
        return (ev.get("item") or {}).get("type") in ("function_call", "custom_tool_call")
    if "content" in ev and "stop" in ev and isinstance(ev["content"], str):  # llama-server /completion
        return bool(ev["content"])
    return False


def find_key(v, pred):
    """The last dict inside v (depth first) for which pred holds."""
    found = None
    if isinstance(v, dict):
        if pred(v):
            found = v
        for x in v.values():
            f = find_key(x, pred)
            if f is not None:
                found = f
    elif isinstance(v, list):
        for x in v:
            f = find_key(x, pred)
            if f is not None:
                found = f
    return found


PROMPT_EVAL = re.compile(r"prompt eval time =\s*([0-9.]+) ms /\s*(\d+) tokens")


def replay(server, path, body):
    """One streamed request; returns the measurements."""
    pos = server.log_size()
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=1800)
    t0 = time.perf_counter()
    c.request("POST", path, body=json.dumps(body).encode(), headers={"content-type": "application/json"})
    r = c.getresponse()
    res = {"status": r.status}
    if r.status != 200:
        res["error"] = r.read().decode("utf-8", "replace")[:300]
        c.close()
        return res
    ttft = None
    events = []
    for raw in r:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            continue
        try:
            ev = json.loads(data)
        except ValueError:
            continue
        events.append(ev)
        if ttft is None and has_output(ev):
            ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    c.close()
    res["total_ms"] = total * 1e3
    res["ttft_ms"] = (ttft if ttft is not None else total) * 1e3
    res["no_output"] = ttft is None
    tm = find_key(events, lambda d: "prompt_n" in d and "prompt_ms" in d)
    if tm is not None:
        res.update(prompt_n=tm["prompt_n"], prompt_ms=tm["prompt_ms"], cache_n=tm.get("cache_n"),
                   predicted_n=tm.get("predicted_n"), source="timings")
    else:  # llama-server's Anthropic stream: no timings; its log has them
        time.sleep(0.3)
        m = PROMPT_EVAL.findall(server.log_since(pos))
        if m:
            res.update(prompt_ms=float(m[-1][0]), prompt_n=int(m[-1][1]), source="log")
        u = find_key(events, lambda d: "cache_read_input_tokens" in d)
        if u is not None:
            res["cache_n"] = u["cache_read_input_tokens"]
    if res.get("prompt_n") is not None and res.get("cache_n") is not None:
        res["prompt_tokens"] = res["prompt_n"] + res["cache_n"]
    return res


# -------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decache", required=True, help="decache binary")
    ap.add_argument("--llama-server", required=True, help="llama.cpp's llama-server binary")
    ap.add_argument("--model", required=True, help="the .gguf both servers load")
    ap.add_argument("--captures", required=True, help="folder of <client>-first.json / <client>-later.json")
    ap.add_argument("--out", required=True, help="markdown report to write")
    ap.add_argument("--json", help="also write the raw measurements here")
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-c", "--ctx", type=int, default=32768)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--rows", default="decache,llama-server,llama-server-cr16,llama-server-text",
                    help="servers to run, in order: decache, llama-server, llama-server-cr16 (--cache-reuse 16), "
                         "llama-server-text (/completion with decache's prompt text), decache-fa-on (-fa on)")
    ap.add_argument("--logs", default=None, help="folder for the servers' logs (default: next to --out)")
    a = ap.parse_args()

    load_start = loadavg()
    here = os.path.dirname(os.path.abspath(__file__))
    commit = sh(["git", "-C", here, "rev-parse", "--short", "HEAD"])  # at the start: others may commit meanwhile
    built = datetime.datetime.fromtimestamp(os.path.getmtime(a.decache), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    samples = []  # the 1-minute load average every 15 s, for the report

    def sample():
        while True:
            try:
                samples.append(float(open("/proc/loadavg").read().split()[0]))
            except (OSError, ValueError):
                pass
            time.sleep(15)

    threading.Thread(target=sample, daemon=True).start()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    logs = a.logs or os.path.splitext(a.out)[0] + "-logs"
    os.makedirs(logs, exist_ok=True)
    clients = [c for c in a.clients.split(",") if c]

    # llama-server caps a slot's context at the model's training context; to
    # give it the same -c as decache, the header's value is overridden.
    meta = gguf_meta(a.model, {"general.architecture"})
    arch = meta.get("general.architecture")
    n_ctx_train = meta.get(f"{arch}.context_length") if arch else None
    llama_extra = []
    if n_ctx_train and n_ctx_train < a.ctx:
        llama_extra = ["--override-kv", f"{arch}.context_length=int:{a.ctx}"]

    def llama_argv(port, extra=()):
        return [a.llama_server, "-m", a.model, "-c", str(a.ctx), "-t", str(a.threads), "--port", str(port),
                *llama_extra, *extra]

    def decache_argv(port):
        return [a.decache, "serve", "-m", a.model, "-c", str(a.ctx), "-t", str(a.threads), "--port", str(port)]

    caps = {}
    for c in clients:
        caps[c] = {}
        for turn in ("first", "later"):
            d = json.load(open(os.path.join(a.captures, f"{c}-{turn}.json")))
            caps[c][turn] = (d["path"].split("?")[0], d["body"])

    # Probe: which native bodies llama-server takes (its token-count
    # endpoints parse a body as its completion endpoints do, without a prefill).
    mode, notes = {}, {}
    srv = Server("llama-server", llama_argv(free_port()), os.path.join(logs, "probe-llama-server.log"))
    try:
        for c in clients:
            mode[c] = "native"
            for turn in ("first", "later"):
                path, body = caps[c][turn]
                st, out = srv.request("POST", COUNT_ENDPOINTS[path], prepared(path, body, a.max_tokens))
                if st != 200 and path != "/v1/chat/completions":
                    mode[c] = "chat"
                    msg = out.decode("utf-8", "replace")
                    try:
                        msg = json.loads(msg)["error"]["message"]
                    except (ValueError, KeyError, TypeError):
                        pass
                    notes[c] = f"llama-server refuses the {turn} {path} body ({st}: {msg[:120]})"
    finally:
        srv.stop()

    bodies = {}
    for c in clients:
        bodies[c] = {}
        for turn in ("first", "later"):
            path, body = caps[c][turn]
            if mode[c] == "chat":
                path, body = "/v1/chat/completions", to_chat(path, body)
            bodies[c][turn] = (path, prepared(path, body, a.max_tokens))

    # The prompt text decache renders for each body (for the same-tokens row).
    texts = {}
    srv = Server("decache", decache_argv(free_port()), os.path.join(logs, "probe-decache.log"))
    try:
        for c in clients:
            texts[c] = {}
            for turn in ("first", "later"):
                path, body = bodies[c][turn]
                ep = "/v1/messages/apply-template" if path == "/v1/messages" else "/apply-template"
                st, out = srv.request("POST", ep, body)
                texts[c][turn] = json.loads(out)["prompt"] if st == 200 else None
    finally:
        srv.stop()

    all_rows = {
        "decache": ("decache", lambda p: decache_argv(p), "api"),
        "llama-server": ("llama-server", lambda p: llama_argv(p), "api"),
        "llama-server-cr16": ("llama-server --cache-reuse 16", lambda p: llama_argv(p, ["--cache-reuse", "16"]), "api"),
        "llama-server-text": ("llama-server, decache's prompt text", lambda p: llama_argv(p), "text"),
        "decache-fa-on": ("decache -fa on", lambda p: decache_argv(p) + ["-fa", "on"], "api"),
    }
    configs = [all_rows[k] for k in a.rows.split(",") if k]
    results = []
    for c in clients:
        for name, argv, kind in configs:
            row = {"client": c, "server": name, "mode": mode[c], "path": bodies[c]["first"][0]}
            if kind == "text":
                if not texts[c]["first"] or not texts[c]["later"]:
                    continue
                row["path"] = "/completion"
            tag = re.sub(r"[^a-z0-9]+", "-", f"{c}-{name}".lower()).strip("-")
            print(f"[{time.strftime('%H:%M:%S')}] {c}: {name}", file=sys.stderr, flush=True)
            row["load_before"] = loadavg()
            srv = None
            try:
                srv = Server(name, argv(free_port()), os.path.join(logs, f"{tag}.log"))
                for turn in ("first", "later"):
                    if kind == "text":
                        path = "/completion"
                        body = {"prompt": texts[c][turn], "n_predict": a.max_tokens, "temperature": 0,
                                "stream": True, "cache_prompt": True}
                    else:
                        path, body = bodies[c][turn]
                    row[turn] = replay(srv, path, body)
                    print(f"    {turn}: {row[turn]}", file=sys.stderr, flush=True)
            except (OSError, RuntimeError, http.client.HTTPException) as e:
                for turn in ("first", "later"):
                    row.setdefault(turn, {"status": 0, "error": str(e)})
            finally:
                if srv is not None:
                    srv.stop()
            results.append(row)
            if a.json:  # after every row, so that a long run interrupted keeps what it measured
                with open(a.json, "w") as f:
                    json.dump({"results": results, "mode": mode, "notes": notes}, f, indent=1)

    load_end = loadavg()
    finished = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M UTC")

    # ---------------------------------------------------------- the report
    cpu = "?"
    for line in sh(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    ncpu = os.cpu_count()
    dver = sh([a.decache, "--version"])
    lver = " ".join(l.strip() for l in sh([a.llama_server, "--version"]).splitlines() if l.strip())

    def f0(x):
        return "–" if x is None else f"{x:,.0f}"

    def tok(r, k):
        return "–" if r.get(k) is None else f"{r[k]:,}"

    def cell_err(r):
        return f"error {r['status']}: {r.get('error', '')[:60]}"

    L = []
    cmd = " ".join(["scripts/bench-clients.py"] + [x if " " not in x else repr(x) for x in sys.argv[1:]])
    L.append(f"Run {started} to {finished}: `{cmd}`")
    L.append("")
    L.append(f"* CPU: {cpu}, {ncpu} cores ({platform.machine()}); load average at start {load_start}, at end {load_end}; "
             f"1-minute load sampled every 15 s during the run: mean {sum(samples) / max(len(samples), 1):.1f}, "
             f"min {min(samples, default=0):.1f}, max {max(samples, default=0):.1f}")
    L.append(f"* decache: {dver}, binary dated {built}, repository at {commit} when the run started; llama.cpp: {lver}")
    L.append(f"* model: {os.path.basename(a.model)} (training context {n_ctx_train}); every server `-c {a.ctx} -t {a.threads}`, "
             f"defaults otherwise{'; llama-server also gets `' + ' '.join(llama_extra) + '`, or it caps a slot at the training context' if llama_extra else ''}")
    L.append(f"* every body: max_tokens {a.max_tokens}, temperature 0, stream; a fresh server process per client and row, "
             "first request then later request")
    L.append("")
    L.append("| client | sent as | server | 1st: prompt tok | 1st: prefill ms | 1st: TTFT ms | later: prompt tok "
             "| later: prefilled (prompt_n) | later: reused (cache_n) | later: prefill ms | later: TTFT ms |")
    L.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        f, l = r["first"], r["later"]
        sent = r["path"] + (" (converted)" if r["mode"] == "chat" and r["path"] != "/completion" else "")
        cells = [r["client"], f"`{sent}`", r["server"]]
        for x, cols in ((f, ("prompt_tokens", "prompt_ms", "ttft_ms")),
                        (l, ("prompt_tokens", "prompt_n", "cache_n", "prompt_ms", "ttft_ms"))):
            if x.get("status") != 200:
                cells += [cell_err(x)] + [""] * (len(cols) - 1)
                continue
            for k in cols:
                if k.endswith("_ms"):
                    v = f0(x.get(k))
                    if k == "ttft_ms" and x.get("no_output"):
                        v += "†"
                    cells.append(v)
                else:
                    cells.append(tok(x, k))
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    L.append("Prompt tokens = prompt_n + cache_n as the server reports them. TTFT: client-side, send to the first "
             "streamed event carrying generated text, reasoning or a tool call piece"
             " (†: no output at all; the time is to the end of the stream).")
    for c in clients:
        if c in notes:
            L.append(f"* {c}: sent as the equivalent chat completions request to every server: {notes[c]}.")
    with open(a.out, "w") as f:
        f.write("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()

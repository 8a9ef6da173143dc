"""(The server runs with --temp 0: this SDK has no temperature argument.)
The official `anthropic` package sends Messages content blocks annotated
with decache's extensions: a pasted log block marked "decache": true in a
full history, then a replayed conversation whose log block carries
"decached_from": 2 (kept in the first turn, out from the second). The
server's `decache` report on each response shows the annotated tokens
removed in place and the rest reused. Prints one JSON line."""
import json
import sys

import anthropic

client = anthropic.Anthropic(base_url=sys.argv[1], api_key="test-key")


def ask(system, messages):
    m = client.messages.create(model="decache", max_tokens=4, system=system, messages=messages)
    d = m.model_extra["decache"]
    return m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0), d


log = {"type": "text", "text": "a very long log line " * 30}
msgs = [{"role": "user", "content": [log, {"type": "text", "text": "Remember it."}]},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "What failed?"}]
before, _ = ask("You are brief.", msgs)
log["decache"] = True
after, d = ask("You are brief.", msgs)
trace = {"type": "text", "text": "another long stack trace line " * 30, "decached_from": 2}
replay = [{"role": "user", "content": [trace, {"type": "text", "text": "Keep it in mind."}]}]
t1, _ = ask("You are terse.", replay)
replay += [{"role": "assistant", "content": "Seen."}, {"role": "user", "content": "Which frame?"}]
t2, d2 = ask("You are terse.", replay)
print(json.dumps({"prompt_before": before, "prompt_after": after, "hit": d["hit"],
                  "removed": d["tokens_removed"], "reused": d["tokens_reused"],
                  "from_turn1": t1, "from_turn2": t2, "from_removed": d2["tokens_removed"]}))

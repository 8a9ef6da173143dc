"""The official `openai` package sends a message annotated "decache": true
(a decache extension: keep it out of the cache from now on) in a full
history; the server answers, and its `decache` report shows the annotated
message's tokens removed in place and the rest reused. Then a second
conversation whose log carries "decached_from": 2: kept in its first turn,
removed in place in the second. Prints one JSON line."""
import json
import sys

import openai

client = openai.OpenAI(base_url=f"{sys.argv[1]}/v1", api_key="x")
model = client.models.list().data[0].id
msgs = [{"role": "system", "content": "You are brief."},
        {"role": "user", "content": "a very long log line " * 30},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "What failed?"}]
r1 = client.chat.completions.create(model=model, messages=msgs, max_tokens=4, temperature=0)
msgs[1]["decache"] = True
r2 = client.chat.completions.create(model=model, messages=msgs, max_tokens=4, temperature=0)
d = r2.model_extra["decache"]
replay = [{"role": "system", "content": "You are terse."},
          {"role": "user", "content": "another long stack trace line " * 30, "decached_from": 2}]
r3 = client.chat.completions.create(model=model, messages=replay, max_tokens=4, temperature=0)
replay += [{"role": "assistant", "content": "Seen."}, {"role": "user", "content": "Which frame?"}]
r4 = client.chat.completions.create(model=model, messages=replay, max_tokens=4, temperature=0)
d4 = r4.model_extra["decache"]
print(json.dumps({"prompt_before": r1.usage.prompt_tokens, "prompt_after": r2.usage.prompt_tokens,
                  "hit": d["hit"], "removed": d["tokens_removed"], "reused": d["tokens_reused"],
                  "from_turn1": r3.usage.prompt_tokens, "from_turn2": r4.usage.prompt_tokens,
                  "from_removed": d4["tokens_removed"]}))

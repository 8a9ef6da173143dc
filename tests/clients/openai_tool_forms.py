"""The official `openai` package reads the tool calls of the 2026 families'
own forms (Qwen3.5's XML, Gemma 4's <|tool_call>) from `decache serve
--script`, plain and streamed. Prints one JSON line; exits non-zero on the
first mismatch."""
import json
import sys

import openai

client = openai.OpenAI(base_url=f"{sys.argv[1]}/v1", api_key="x")
model = client.models.list().data[0].id
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]
msgs = [{"role": "user", "content": "Weather in Paris?"}]
out = {}
# Qwen3.5's XML form, whole.
r = client.chat.completions.create(model=model, messages=msgs, tools=tools, max_tokens=200)
assert r.choices[0].finish_reason == "tool_calls", r
c = r.choices[0].message.tool_calls[0]
out["xml"] = {"name": c.function.name, "arguments": json.loads(c.function.arguments),
              "content": r.choices[0].message.content}
# Gemma 4's form, streamed: no call text leaks into the content deltas.
name, args, text, finish = None, "", "", None
for ch in client.chat.completions.create(model=model, messages=msgs, tools=tools, max_tokens=200, stream=True):
    if not ch.choices:
        continue
    d = ch.choices[0].delta
    text += d.content or ""
    for t in d.tool_calls or []:
        name = t.function.name or name
        args += t.function.arguments or ""
    finish = ch.choices[0].finish_reason or finish
assert finish == "tool_calls", finish
out["gemma4"] = {"name": name, "arguments": json.loads(args), "content": text}
print(json.dumps(out))

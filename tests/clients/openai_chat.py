"""The official `openai` package against `decache serve`: a chat, a streamed
chat with usage, and a text completion. Prints one JSON line of findings;
exits non-zero on the first mismatch."""
import json
import sys

import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=f"{base}/v1", api_key="test-key")
model = client.models.list().data[0].id

r = client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital of France?"}],
    temperature=0,
    max_tokens=16,
)
assert r.object == "chat.completion", r
text = r.choices[0].message.content
assert isinstance(text, str) and text, r
assert r.choices[0].finish_reason in ("stop", "length"), r
assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage
assert r.usage.prompt_tokens_details.cached_tokens == 0, r.usage

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital of France?"}],
    temperature=0,
    max_tokens=16,
    stream=True,
    stream_options={"include_usage": True},
)
parts, usage, finish = [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            parts.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
streamed = "".join(parts)
assert streamed == text, (streamed, text)
assert finish in ("stop", "length"), finish
assert usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage
assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1, usage

c = client.completions.create(model=model, prompt="The capital of France is", max_tokens=4, temperature=0)
assert "Paris" in c.choices[0].text, c

try:
    client.chat.completions.create(model=model, messages=[], max_tokens=4)
    raise AssertionError("an empty message list was accepted")
except openai.BadRequestError as e:
    assert "messages" in str(e), e

# Tool calls: the model is shown one call and its result, then asked again.
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
history = [
    {"role": "system", "content": "You are a helpful assistant with tools."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    {"role": "assistant", "content": "It is sunny and 21 C in Paris."},
    {"role": "user", "content": "What is the weather in Berlin?"},
]
t = client.chat.completions.create(model=model, messages=history, tools=tools, temperature=0, max_tokens=40)
call = t.choices[0].message.tool_calls[0]
assert t.choices[0].finish_reason == "tool_calls", t
assert call.type == "function" and call.function.name == "get_weather", call
assert json.loads(call.function.arguments) == {"city": "Berlin"}, call.function.arguments

streamed_calls = {}
finish = None
for chunk in client.chat.completions.create(model=model, messages=history, tools=tools, temperature=0, max_tokens=40, stream=True):
    for c in chunk.choices:
        for d in c.delta.tool_calls or []:
            entry = streamed_calls.setdefault(d.index, {"name": "", "arguments": ""})
            entry["name"] += d.function.name or ""
            entry["arguments"] += d.function.arguments or ""
        finish = c.finish_reason or finish
assert finish == "tool_calls", finish
assert streamed_calls[0]["name"] == "get_weather" and json.loads(streamed_calls[0]["arguments"]) == {"city": "Berlin"}, streamed_calls

# The round trip: the call goes back with its result; the model answers in text.
history += [t.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "rainy, 12 C"}]
a = client.chat.completions.create(model=model, messages=history, tools=tools, temperature=0, max_tokens=24)
assert a.choices[0].message.content, a
assert a.usage.prompt_tokens_details.cached_tokens > 0, a.usage

print(json.dumps({"chat": text, "tool_call": json.loads(call.function.arguments), "after_tool": a.choices[0].message.content, "streamed_chunks": len(parts), "cached_tokens": usage.prompt_tokens_details.cached_tokens}))

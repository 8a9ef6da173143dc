"""(The server runs with --temp 0: this SDK has no temperature argument.)
The official `anthropic` package against `decache serve`'s /v1/messages:
a message with a system prompt, the same message streamed, a conversation
that carries a tool result as text, and an error. Prints one JSON line."""
import json
import sys

import anthropic

base = sys.argv[1]
client = anthropic.Anthropic(base_url=base, api_key="test-key")
question = [{"role": "user", "content": "What is the capital of France?"}]

m = client.messages.create(model="claude-sonnet-4-5", max_tokens=16, system="Answer briefly.", messages=question)
assert m.type == "message" and m.role == "assistant", m
assert m.content[0].type == "text" and m.content[0].text, m
assert m.stop_reason in ("end_turn", "max_tokens"), m
assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0, m.usage

with client.messages.stream(model="claude-sonnet-4-5", max_tokens=16, system="Answer briefly.", messages=question) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
assert streamed == m.content[0].text, (streamed, m.content[0].text)
assert final.usage.output_tokens == m.usage.output_tokens, final.usage
assert final.usage.cache_read_input_tokens > 0, final.usage
assert final.stop_reason == m.stop_reason, final

# History with content blocks and a tool result carried as text.
history = [
    {"role": "user", "content": [{"type": "text", "text": "Read the file notes.txt."}]},
    {"role": "assistant", "content": [{"type": "text", "text": "I read it."}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "notes.txt: the meeting is at noon"}]},
    {"role": "user", "content": "When is the meeting?"},
]
r = client.messages.create(model="any-name", max_tokens=12, messages=history)
assert r.content[0].text, r

n = client.messages.count_tokens(model="any-name", messages=question, system="Answer briefly.")
assert n.input_tokens > 5, n

try:
    client.messages.create(model="x", max_tokens=8, messages=[])
    raise AssertionError("an empty message list was accepted")
except anthropic.BadRequestError as e:
    assert e.body["error"]["type"] == "invalid_request_error", e.body
    assert "messages" in e.body["error"]["message"], e.body

# A tool_use round trip.
tools = [{"name": "get_weather", "description": "Current weather in a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
convo = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny, 21 C"}]},
    {"role": "assistant", "content": "It is sunny and 21 C in Paris."},
    {"role": "user", "content": "What is the weather in Berlin?"},
]
system = "You are a helpful assistant with tools."
t = client.messages.create(model="m", max_tokens=40, system=system, messages=convo, tools=tools)
assert t.stop_reason == "tool_use", t
use = [b for b in t.content if b.type == "tool_use"][0]
assert use.name == "get_weather" and use.input == {"city": "Berlin"}, use
with client.messages.stream(model="m", max_tokens=40, system=system, messages=convo, tools=tools) as s:
    final = s.get_final_message()
uses = [b for b in final.content if b.type == "tool_use"]
assert final.stop_reason == "tool_use" and uses and uses[0].input == {"city": "Berlin"}, final
convo += [{"role": "assistant", "content": [b.model_dump() for b in t.content]},
          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "rainy, 12 C"}]}]
r = client.messages.create(model="m", max_tokens=24, system=system, messages=convo, tools=tools)
assert r.content and r.content[0].type == "text" and r.content[0].text, r

print(json.dumps({"tool_use": use.input, "after_tool": r.content[0].text, "text": m.content[0].text, "cache_read": final.usage.cache_read_input_tokens, "count": n.input_tokens}))

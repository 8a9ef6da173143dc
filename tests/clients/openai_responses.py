"""The official `openai` package's Responses API against `decache serve`:
a response, the same one streamed, a continuation by previous_response_id,
retrieval, a function call (whole and streamed) and its round trip, an input
token count and errors. Prints one JSON line of findings; exits non-zero on
the first mismatch."""
import json
import sys

import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=f"{base}/v1", api_key="test-key")
model = "gpt-5-codex"  # any name is answered by the loaded model

ask = dict(model=model, instructions="Answer briefly.", input="What is the capital of France?", temperature=0, max_output_tokens=16)
r = client.responses.create(**ask)
assert r.object == "response" and r.id.startswith("resp_"), r
assert r.status in ("completed", "incomplete"), r
assert r.output_text, r
assert r.output[0].type == "message" and r.output[0].content[0].type == "output_text", r.output
assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage
assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens, r.usage
assert r.usage.input_tokens_details.cached_tokens == 0, r.usage
if r.status == "incomplete":
    assert r.incomplete_details.reason == "max_output_tokens", r

deltas, final, kinds = [], None, []
for event in client.responses.create(**ask, stream=True):
    kinds.append(event.type)
    if event.type == "response.output_text.delta":
        deltas.append(event.delta)
    elif event.type in ("response.completed", "response.incomplete"):
        final = event.response
assert kinds[:2] == ["response.created", "response.in_progress"], kinds
assert final is not None, kinds
streamed = "".join(deltas)
assert streamed == r.output_text == final.output_text, (streamed, r.output_text, final.output_text)
assert final.usage.input_tokens_details.cached_tokens == final.usage.input_tokens - 1, final.usage

follow = client.responses.create(model=model, instructions="Answer briefly.", previous_response_id=final.id,
                                 input="And of Germany?", temperature=0, max_output_tokens=16)
assert follow.previous_response_id == final.id, follow
assert follow.usage.input_tokens_details.cached_tokens > final.usage.input_tokens - 2, follow.usage

got = client.responses.retrieve(final.id)
assert got.id == final.id and got.output_text == final.output_text, got

n = client.responses.input_tokens.count(model=model, instructions="Answer briefly.", input="What is the capital of France?")
assert n.input_tokens == r.usage.input_tokens, (n, r.usage)

# Function calls: one call and its result in the history, then asked again.
tools = [{"type": "function", "name": "get_weather", "description": "Current weather in a city", "strict": False,
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
         {"type": "web_search"}]
history = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"},
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"},
    {"role": "assistant", "content": "It is sunny and 21 C in Paris."},
    {"role": "user", "content": "What is the weather in Berlin?"},
]
sys_prompt = "You are a helpful assistant with tools."
t = client.responses.create(model=model, instructions=sys_prompt, input=history, tools=tools, temperature=0, max_output_tokens=40)
calls = [o for o in t.output if o.type == "function_call"]
assert len(calls) == 1 and calls[0].name == "get_weather", t.output
assert json.loads(calls[0].arguments) == {"city": "Berlin"}, calls[0].arguments
assert calls[0].call_id.startswith("call_"), calls[0]

args_done = None
for event in client.responses.create(model=model, instructions=sys_prompt, input=history, tools=tools,
                                     temperature=0, max_output_tokens=40, stream=True):
    if event.type == "response.function_call_arguments.done":
        args_done = event.arguments
assert args_done is not None and json.loads(args_done) == {"city": "Berlin"}, args_done

history += [calls[0].model_dump(exclude_none=True), {"type": "function_call_output", "call_id": calls[0].call_id, "output": "rainy, 12 C"}]
a = client.responses.create(model=model, instructions=sys_prompt, input=history, tools=tools, temperature=0, max_output_tokens=24)
assert a.output_text, a
assert a.usage.input_tokens_details.cached_tokens > 0, a.usage

try:
    client.responses.create(model=model, input=[], max_output_tokens=4)
    raise AssertionError("an empty input was accepted")
except openai.BadRequestError as e:
    assert "input" in str(e), e
try:
    client.responses.create(model=model, input="hi", previous_response_id="resp_nope")
    raise AssertionError("an unknown previous_response_id was accepted")
except openai.NotFoundError as e:
    assert e.body["code"] == "previous_response_not_found", e.body

print(json.dumps({"text": r.output_text, "streamed_deltas": len(deltas), "follow_cached": follow.usage.input_tokens_details.cached_tokens,
                  "tool_call": json.loads(calls[0].arguments), "after_tool": a.output_text}))

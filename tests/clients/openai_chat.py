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

print(json.dumps({"chat": text, "streamed_chunks": len(parts), "cached_tokens": usage.prompt_tokens_details.cached_tokens}))

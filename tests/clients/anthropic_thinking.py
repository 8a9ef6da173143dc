"""(The server runs with --temp 0: this SDK has no temperature argument.)
The official `anthropic` package's beta client against `decache serve`
with a template whose generation prompt opens a thinking block: a
Claude-Code-shaped request (thinking, context management, a deferred and a
server tool, cache_control, metadata, thinking and an image in the history)
comes back with a signed thinking block, whole and streamed (the SDK
accumulates thinking_delta and signature_delta), and with the applied
edits. Prints one JSON line."""
import json
import sys

import anthropic

base = sys.argv[1]
client = anthropic.Anthropic(base_url=base, api_key="test-key")
eph = {"type": "ephemeral"}
kw = dict(
    model="claude-opus-4-5",
    max_tokens=6,
    betas=["context-management-2025-06-27", "advanced-tool-use-2025-11-20", "interleaved-thinking-2025-05-14"],
    thinking={"type": "enabled", "budget_tokens": 1024},
    metadata={"user_id": "user_1"},
    system=[{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.3; cch=1a2b3;"},
            {"type": "text", "text": "You are a coding agent.", "cache_control": eph}],
    context_management={"edits": [
        {"type": "clear_thinking_20251015", "keep": {"type": "thinking_turns", "value": 1}},
        {"type": "clear_tool_uses_20250919", "trigger": {"type": "input_tokens", "value": 10},
         "keep": {"type": "tool_uses", "value": 0}}]},
    tools=[{"name": "Read", "input_schema": {"type": "object"}, "cache_control": eph},
           {"name": "mcp__docs__search", "input_schema": {"type": "object"}, "defer_loading": True},
           {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
    messages=[
        {"role": "user", "content": [{"type": "text", "text": "Read a.rs.", "cache_control": eph}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Read it.", "signature": "sig"},
            {"type": "redacted_thinking", "data": "abc"},
            {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "a.rs"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "text", "text": "fn main() {}"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "It is short.", "signature": "sig"},
                                          {"type": "text", "text": "It holds an empty main."}]},
        {"role": "user", "content": "What next?"},
    ],
)
m = client.beta.messages.create(**kw)
assert m.content and m.content[0].type == "thinking" and m.content[0].signature, m
edits = {e.type: e for e in m.context_management.applied_edits}
assert edits["clear_tool_uses_20250919"].cleared_tool_uses == 1, m.context_management
assert edits["clear_thinking_20251015"].cleared_thinking_turns == 1, m.context_management
with client.beta.messages.stream(**kw) as s:
    final = s.get_final_message()
# (A random-weight model: the streamed reply may differ from the whole one
# by a token, since the prompt is prefilled in other batches.)
assert final.content[0].type == "thinking" and final.content[0].signature, final
assert final.context_management is not None, final
n = client.beta.messages.count_tokens(**{k: v for k, v in kw.items() if k not in ("max_tokens", "metadata")})
assert n.input_tokens > 10, n
print(json.dumps({"thinking": m.content[0].thinking, "count": n.input_tokens,
                  "edits": [e.type for e in m.context_management.applied_edits]}))

//! Earlier assistant turns as a harmony chat template reads them. The
//! server keeps a turn as text (its calls written the Hermes way, see
//! `toolcall::render_calls`); gpt-oss's template wants the calls in a
//! `tool_calls` field (it renders them as `to=functions.NAME` messages, and
//! names each tool message after the call before it, refusing a tool
//! message without one), the reasoning in `thinking`, and no channel
//! markers in `content`.
use super::{parse, CHANNEL, MESSAGE};
use crate::tokenizer::ChatMessage;
use crate::toolcall::{self, ToolCall};
use serde_json::{json, Value};

/// `msgs` as the template's `messages`: an assistant turn's calls (Hermes
/// blocks, or a raw harmony reply's) in `tool_calls`, its reasoning in
/// `thinking`; other messages as they are.
pub fn template_messages(msgs: &[ChatMessage]) -> Vec<Value> {
    msgs.iter()
        .map(|m| match m.role.as_str() {
            "assistant" => assistant(&m.content),
            _ => json!({"role": m.role, "content": m.content}),
        })
        .collect()
}

fn assistant(content: &str) -> Value {
    let (text, thinking, calls) = if content.contains(CHANNEL) || content.contains(MESSAGE) {
        let r = parse(content);
        (r.parsed.text, r.reasoning.filter(|t| !t.is_empty()), r.parsed.calls)
    } else if content.contains("<tool_call>") {
        let p = toolcall::parse(content);
        if p.calls.is_empty() {
            (content.to_string(), None, Vec::new())
        } else {
            (p.text, None, p.calls)
        }
    } else {
        (content.to_string(), None, Vec::new())
    };
    let mut v = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        v["tool_calls"] = calls.iter().map(openai_call).collect();
    }
    // With calls, the template reads the reasoning from `content` or
    // `thinking` and refuses both.
    if let Some(t) = thinking.filter(|_| calls.is_empty() || text.is_empty()) {
        v["thinking"] = json!(t);
    }
    v
}

/// `tools` as the template's `tools`: each with a `description` (empty
/// where the request gave none), which gpt-oss's template writes as a
/// comment and fails without.
pub fn template_tools(tools: &[Value]) -> Vec<Value> {
    tools
        .iter()
        .map(|t| {
            let mut t = t.clone();
            if let Some(f) = t.get_mut("function").and_then(Value::as_object_mut) {
                if f.get("description").is_none_or(Value::is_null) {
                    f.insert("description".into(), json!(""));
                }
            }
            t
        })
        .collect()
}

/// A call in the shape chat templates read (arguments as an object).
fn openai_call(c: &ToolCall) -> Value {
    json!({"type": "function", "function": {"name": c.name, "arguments": c.arguments}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_reasoning_move_to_their_fields() {
        let msgs = [
            ChatMessage::new("user", "Weather in Paris?"),
            ChatMessage::new(
                "assistant",
                "Checking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
            ),
            ChatMessage::new("tool", "sunny"),
            ChatMessage::new("assistant", "<|channel|>analysis<|message|>It is sunny.<|end|><|start|>assistant<|channel|>final<|message|>Sunny."),
            ChatMessage::new("assistant", "No calls here: <tool_call>{broken</tool_call>"),
        ];
        let v = template_messages(&msgs);
        assert_eq!(v[0], json!({"role": "user", "content": "Weather in Paris?"}));
        assert_eq!(v[1]["content"], "Checking.");
        assert_eq!(v[1]["tool_calls"][0]["function"], json!({"name": "get_weather", "arguments": {"city": "Paris"}}));
        assert!(v[1].get("thinking").is_none());
        assert_eq!(v[2], json!({"role": "tool", "content": "sunny"}));
        assert_eq!(v[3], json!({"role": "assistant", "content": "Sunny.", "thinking": "It is sunny."}));
        assert_eq!(v[4], json!({"role": "assistant", "content": "No calls here: <tool_call>{broken</tool_call>"}));
        // A raw call with reasoning and no text: the reasoning goes to `thinking`.
        let raw = ChatMessage::new(
            "assistant",
            "<|channel|>analysis<|message|>Need it.<|end|><|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{}",
        );
        let v = template_messages(&[raw]);
        assert_eq!(v[0]["thinking"], "Need it.");
        assert_eq!(v[0]["tool_calls"][0]["function"]["name"], "f");
    }

    #[test]
    fn tools_get_a_description() {
        let tools = [
            json!({"type": "function", "function": {"name": "a", "parameters": {}}}),
            json!({"type": "function", "function": {"name": "b", "description": null}}),
            json!({"type": "function", "function": {"name": "c", "description": "Cee"}}),
        ];
        let d: Vec<Value> = template_tools(&tools).iter().map(|t| t["function"]["description"].clone()).collect();
        assert_eq!(d, [json!(""), json!(""), json!("Cee")]);
    }
}

//! Tool calls: how the tools a request offers reach the model, and how calls
//! in the model's text come back as structured calls. Conventions:
//! Hermes/Qwen (`<tool_call>{"name": …, "arguments": …}</tool_call>`, any
//! number of them), the XML form Qwen3.5 and Qwen3-Coder write inside the
//! same tags (`<function=NAME><parameter=P>…`, see `xml`), Gemma 4's
//! `<|tool_call>call:NAME{…}<tool_call|>` (see `gemma4`), and, failing
//! that, a reply that is one JSON object naming a function (`{"name": …,
//! "arguments"|"parameters": …}`, bare or fenced).
mod gemma4;
mod xml;

use serde_json::{json, Value};

/// One call parsed from the model's text.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments as a JSON object.
    pub arguments: Value,
}

/// The model's reply split into plain text and calls.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Parsed {
    pub text: String,
    pub calls: Vec<ToolCall>,
    /// What was wrong with each `<tool_call>` block that was no call (kept
    /// in `text`): for an agent to tell the model.
    pub malformed: Vec<String>,
}

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// A call object: `{"name", "arguments"}` (arguments may be a JSON string),
/// or `{"function": {"name", "arguments"}}`, or `{"name", "parameters"}`.
fn call_of(v: &Value) -> Option<ToolCall> {
    let f = v.get("function").filter(|f| f.is_object()).unwrap_or(v);
    let name = f.get("name")?.as_str()?.to_string();
    let args = f.get("arguments").or_else(|| f.get("parameters")).cloned().unwrap_or_else(|| json!({}));
    let arguments = match args {
        // Clients send `""` for a call without arguments (OpenAI's SDKs do).
        Value::String(s) if s.trim().is_empty() => json!({}),
        Value::String(s) => serde_json::from_str(&s).ok().filter(Value::is_object)?,
        a if a.is_object() => a,
        _ => return None,
    };
    Some(ToolCall { name, arguments })
}

/// Reads one call's body (between its tags).
type BodyParser = fn(&str) -> Result<ToolCall, String>;

/// A Hermes `<tool_call>` body: JSON, or Qwen3.5's XML form.
fn hermes_call(body: &str) -> Result<ToolCall, String> {
    if xml::is_xml(body) {
        return xml::call(body);
    }
    match serde_json::from_str::<Value>(body.trim()) {
        Ok(v) => call_of(&v)
            .ok_or_else(|| format!("needs {{\"name\": string, \"arguments\": object}}, got {}", cut(body.trim(), 200))),
        Err(e) => Err(format!("its body is not valid JSON ({e}): {}", cut(body.trim(), 200))),
    }
}

/// Split `text` into prose and tool calls. Text that holds no well-formed
/// call comes back whole as text.
pub fn parse(text: &str) -> Parsed {
    // Gemma 4 writes its own tags; everything else the Hermes ones.
    let (open, close, body_call): (&str, &str, BodyParser) = if text.contains(gemma4::OPEN) {
        (gemma4::OPEN, gemma4::CLOSE, gemma4::call)
    } else {
        (OPEN, CLOSE, hermes_call)
    };
    let mut out = Parsed::default();
    let mut rest = text;
    while let Some(a) = rest.find(open) {
        let body_start = a + open.len();
        let (body, next) = match rest[body_start..].find(close) {
            Some(b) => (&rest[body_start..body_start + b], body_start + b + close.len()),
            None => (&rest[body_start..], rest.len()),
        };
        match body_call(body) {
            Ok(c) => {
                out.text.push_str(&rest[..a]);
                out.calls.push(c);
            }
            Err(e) => {
                let n = out.calls.len() + out.malformed.len() + 1;
                out.malformed.push(format!("tool call {n}: {e}"));
                out.text.push_str(&rest[..next]);
            }
        }
        rest = &rest[next..];
    }
    // Gemma 4 ends its calls with the token that opens the runtime's answer.
    let rest = if out.calls.is_empty() { rest } else { rest.strip_suffix("<|tool_response>").unwrap_or(rest) };
    out.text.push_str(rest);
    if out.calls.is_empty() {
        // The generic fallback: the whole reply is one call object.
        let t = text.trim();
        let t = t
            .strip_prefix("```json")
            .or_else(|| t.strip_prefix("```"))
            .and_then(|s| s.strip_suffix("```"))
            .unwrap_or(t);
        if let Some(c) = serde_json::from_str::<Value>(t.trim()).ok().as_ref().and_then(call_of) {
            return Parsed { text: String::new(), calls: vec![c], malformed: Vec::new() };
        }
    }
    out.text = out.text.trim().to_string();
    out
}

/// At most `n` bytes of `s` (cut at a character boundary, `…` added).
pub(crate) fn cut(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Whether streamed text may be (the start of) a tool call, so it must be
/// held back until the reply ends: it contains `<tool_call>` or a prefix of
/// it at its end, or the reply so far starts like a JSON object or fence.
pub fn may_be_call(reply_so_far: &str) -> bool {
    let t = reply_so_far.trim_start();
    if t.starts_with('{') || t.starts_with("```") || (!t.is_empty() && "```".starts_with(t)) {
        return true;
    }
    [OPEN, gemma4::OPEN]
        .iter()
        .any(|open| reply_so_far.contains(open) || (1..open.len()).any(|n| reply_so_far.ends_with(&open[..n])))
}

/// The system-prompt text that offers `tools` to a model whose chat template
/// does not render tools itself (Hermes convention).
pub fn offer(tools: &[Value]) -> String {
    let list: Vec<String> = tools.iter().map(|t| t.get("function").unwrap_or(t).to_string()).collect();
    format!(
        "You can call functions. The available tools, one JSON object a line:\n<tools>\n{}\n</tools>\n\
         To call one, reply with nothing but:\n<tool_call>\n{{\"name\": \"TOOL_NAME\", \"arguments\": {{...}}}}\n</tool_call>",
        list.join("\n")
    )
}

/// The text of an assistant message's earlier calls, in the same convention
/// (for templates that do not render `tool_calls`), written as `offer` asks
/// the model to write them: `name` first, a space after each `:` and `,`,
/// the arguments in the order they came (the client echoes what the server
/// parsed from the model's text), so that a call rendered back into the
/// prompt is the text the model generated and the cache meets it.
pub fn render_calls(calls: &[ToolCall]) -> String {
    calls
        .iter()
        .map(|c| {
            format!(
                "{OPEN}\n{{\"name\": {}, \"arguments\": {}}}\n{CLOSE}",
                spaced_json(&json!(c.name)),
                spaced_json(&c.arguments)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// JSON with a space after each `:` and `,` (as Python's `json.dumps` and
/// the chat templates' `tojson` write it).
pub fn spaced_json(v: &Value) -> String {
    use std::io::{Result, Write};
    struct Spaced;
    impl serde_json::ser::Formatter for Spaced {
        fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Spaced);
    // Writing a Value into memory cannot fail.
    let _ = serde::Serialize::serialize(v, &mut ser);
    String::from_utf8(out).unwrap_or_default()
}

/// Calls as they arrive in an OpenAI request's `tool_calls` (arguments as a JSON string).
pub fn from_openai(v: &[Value]) -> Result<Vec<ToolCall>, String> {
    v.iter()
        .enumerate()
        .map(|(i, c)| {
            call_of(c).ok_or_else(|| format!("tool_calls[{i}]: needs function.name and JSON-object arguments"))
        })
        .collect()
}

/// Streamed text with tool calls in mind: prose goes out as it comes, text
/// that may be a call is held until the reply ends, then parsed.
#[derive(Debug, Default)]
pub struct CallFilter {
    active: bool,
    reply: String,
    emitted: usize,
}

impl CallFilter {
    /// `active`: the request offered tools (otherwise everything is prose).
    pub fn new(active: bool) -> CallFilter {
        CallFilter { active, ..CallFilter::default() }
    }

    /// Add streamed text; returns what can be shown now.
    pub fn push(&mut self, text: &str) -> String {
        self.reply.push_str(text);
        if self.active && may_be_call(&self.reply) {
            return String::new();
        }
        let out = self.reply[self.emitted..].to_string();
        self.emitted = self.reply.len();
        out
    }

    /// At the end: the prose not shown yet, and the calls.
    pub fn finish(&mut self) -> (String, Vec<ToolCall>) {
        if !self.active {
            return (self.reply[self.emitted..].to_string(), Vec::new());
        }
        let p = parse(&self.reply);
        if p.calls.is_empty() {
            return (self.reply[self.emitted..].to_string(), Vec::new());
        }
        // Prose shown before the call began is not shown again.
        let shown = self.reply[..self.emitted].trim();
        let rest = p.text.strip_prefix(shown).unwrap_or(&p.text).trim().to_string();
        (rest, p.calls)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn empty_arguments_are_an_empty_object() {
        let calls = from_openai(&[json!({"function": {"name": "ls", "arguments": ""}})]).unwrap();
        assert_eq!((calls[0].name.as_str(), &calls[0].arguments), ("ls", &json!({})));
        assert!(from_openai(&[json!({"function": {"name": "ls", "arguments": "[1"}})]).is_err());
    }

    use super::*;

    #[test]
    fn gemma4_calls_are_parsed_and_held_back_while_streaming() {
        let p = parse(
            "Checking.<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>}<tool_call|><|tool_call>call:ls{}<tool_call|><|tool_response>",
        );
        assert_eq!(p.text, "Checking.");
        assert_eq!(p.calls[0], ToolCall { name: "get_weather".into(), arguments: json!({"city": "Paris"}) });
        assert_eq!(p.calls[1].name, "ls");
        assert!(may_be_call("Checking.<|tool_ca") && may_be_call("x <|tool_call>call:ls"));
        let p = parse("<|tool_call>call:ls{path:src}<tool_call|>");
        assert!(p.calls.is_empty() && p.malformed[0].contains("not a value"), "{p:?}");
    }

    #[test]
    fn qwen35_xml_calls_are_parsed_beside_hermes_ones() {
        let p = parse(
            "Let me look.\n<tool_call>\n<function=read_file>\n<parameter=path>\nsrc/a.rs\n</parameter>\n</function>\n</tool_call>\n\
             <tool_call>\n{\"name\": \"ls\", \"arguments\": {}}\n</tool_call>",
        );
        assert_eq!(p.text, "Let me look.");
        assert_eq!(p.calls[0], ToolCall { name: "read_file".into(), arguments: json!({"path": "src/a.rs"}) });
        assert_eq!(p.calls[1].name, "ls");
        let p = parse("<tool_call>\n<function=read_file>\n<parameter=path>\nx\n</tool_call>");
        assert!(p.calls.is_empty() && p.malformed[0].contains("not closed"), "{p:?}");
    }

    #[test]
    fn hermes_calls_are_parsed_and_prose_kept() {
        let p = parse("Let me look.\n<tool_call>\n{\"name\": \"read\", \"arguments\": {\"path\": \"a.rs\"}}\n</tool_call>\n<tool_call>{\"name\":\"grep\",\"arguments\":\"{\\\"q\\\": \\\"fn\\\"}\"}</tool_call>");
        assert_eq!(p.text, "Let me look.");
        assert_eq!(p.calls.len(), 2);
        assert_eq!(p.calls[0], ToolCall { name: "read".into(), arguments: json!({"path": "a.rs"}) });
        assert_eq!(p.calls[1].arguments, json!({"q": "fn"}), "arguments given as a JSON string");
    }

    #[test]
    fn broken_calls_stay_text_and_the_json_fallback_works() {
        let p = parse("<tool_call>{not json}</tool_call> ok");
        assert!(p.calls.is_empty());
        assert!(p.malformed[0].starts_with("tool call 1: its body is not valid JSON"), "{:?}", p.malformed);
        assert_eq!(p.text, "<tool_call>{not json}</tool_call> ok");
        let q = parse("<tool_call>{\"arguments\": {}}</tool_call>");
        assert!(q.malformed[0].contains("needs {\"name\""), "{:?}", q.malformed);
        let p = parse("```json\n{\"name\": \"weather\", \"parameters\": {\"city\": \"Paris\"}}\n```");
        assert_eq!(p.calls, vec![ToolCall { name: "weather".into(), arguments: json!({"city": "Paris"}) }]);
        let p = parse("{\"function\": {\"name\": \"f\", \"arguments\": {}}}");
        assert_eq!(p.calls[0].name, "f");
        assert!(parse("{\"answer\": 42}").calls.is_empty(), "an object without a name is not a call");
        let p = parse("<tool_call>{\"name\": \"cut\", \"arguments\": {}}");
        assert_eq!(p.calls.len(), 1, "an unclosed call at the end still counts");
    }

    #[test]
    fn the_filter_shows_prose_and_holds_calls() {
        let mut f = CallFilter::new(true);
        let shown: String =
            ["Let me", " check. ", "<tool", "_call>{\"name\": \"read\", ", "\"arguments\": {}}</tool_call>"]
                .iter()
                .map(|t| f.push(t))
                .collect();
        assert_eq!(shown, "Let me check. ");
        let (rest, calls) = f.finish();
        assert_eq!((rest.as_str(), calls.len()), ("", 1));
        let mut f = CallFilter::new(true);
        assert_eq!(f.push("{"), "");
        assert_eq!(f.push("\"a\": 1}"), "");
        assert_eq!(f.finish(), ("{\"a\": 1}".to_string(), vec![]), "held text that was no call comes out at the end");
        let mut f = CallFilter::new(false);
        assert_eq!(f.push("<tool_call>"), "<tool_call>");
    }

    #[test]
    fn streaming_holds_what_may_become_a_call() {
        assert!(may_be_call("Sure. <tool_"));
        assert!(may_be_call("  {\"name\""));
        assert!(may_be_call("`"));
        assert!(!may_be_call("Sure, the answer is 4."));
        let offer = offer(&[json!({"type": "function", "function": {"name": "read", "parameters": {}}})]);
        assert!(offer.contains("{\"name\":\"read\",\"parameters\":{}}") && offer.contains("<tool_call>"));
        let calls = from_openai(&[
            json!({"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{\"path\":\"x\"}"}}),
        ])
        .unwrap();
        assert_eq!(
            render_calls(&calls),
            "<tool_call>\n{\"name\": \"read\", \"arguments\": {\"path\": \"x\"}}\n</tool_call>"
        );
        assert!(from_openai(&[json!({"function": {"arguments": "{}"}})]).is_err());
        // What the model wrote comes back the same: arguments in its order.
        let text = "<tool_call>\n{\"name\": \"edit\", \"arguments\": {\"path\": \"a\", \"old\": [1, 2], \"new\": {\"z\": 1, \"a\": null}}}\n</tool_call>";
        assert_eq!(render_calls(&parse(text).calls), text);
    }
}

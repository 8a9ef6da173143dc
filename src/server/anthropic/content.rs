//! A Messages API request's content as a conversation: every block checked
//! (a problem is a 400 naming `messages[i].content[j]...`), what this server
//! cannot use set aside (redacted thinking, server tools' blocks, images
//! inside tool results become a note), then rendered as the chat template's
//! messages. Context editing (`edits.rs`) works on the conversation between
//! the two.
use super::super::error::{ApiError, Dialect};
use super::super::request::unreadable;
use super::super::tools::{render_calls, ToolCall};
use crate::tokenizer::ChatMessage;
use serde_json::{Map, Value};
use std::collections::HashSet;

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg).dialect(Dialect::Anthropic)
}

/// A 400 naming the field at `at`.
pub(crate) fn bad_at(at: &str, msg: impl std::fmt::Display) -> ApiError {
    bad(format!("{at}: {msg}")).param(at)
}

/// One block of a turn, as the model will read it.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    /// An assistant's thinking (rendered where the template reads
    /// `<think>`, else dropped).
    Thinking(String),
    /// A call; `cleared`: its input was cleared by context editing.
    ToolUse {
        id: String,
        name: String,
        input: Value,
        cleared: bool,
    },
    /// A tool's result, as text; `cleared`: replaced by context editing.
    ToolResult {
        id: String,
        text: String,
        is_error: bool,
        cleared: bool,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub parts: Vec<Part>,
}

/// The note a cleared tool result reads as.
pub const CLEARED_RESULT: &str = "[tool result cleared to save context]";
/// The arguments a cleared tool input reads as.
pub const CLEARED_INPUT: &str = "[tool input cleared to save context]";

/// A request's conversation, checked, before rendering.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conversation {
    /// The system prompt, its per-request header lines stripped.
    pub system: Option<String>,
    pub turns: Vec<Turn>,
}

/// Whether a line at the head of the system prompt is a per-request header
/// rather than an instruction: `x-NAME: value`, as Claude Code's
/// `x-anthropic-billing-header: cc_version=...; cch=...` line, whose hash
/// changes on every request.
fn header_line(line: &str) -> bool {
    let Some((name, _)) = line.split_once(':') else { return false };
    let name = name.trim_end();
    name.len() > 2
        && name[..2].eq_ignore_ascii_case("x-")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `text` without the header lines at its head (and the blank lines after them).
pub fn strip_headers(text: &str) -> &str {
    let mut rest = text;
    let mut stripped = false;
    loop {
        let (line, next) = match rest.find('\n') {
            Some(n) => (&rest[..n], &rest[n + 1..]),
            None => (rest, ""),
        };
        if header_line(line.trim_start()) {
            rest = next;
            stripped = true;
        } else if stripped && line.trim().is_empty() && !rest.is_empty() {
            rest = next;
        } else {
            return rest;
        }
    }
}

/// The system prompt: a string or text blocks (joined by a blank line),
/// per-request header lines stripped from its head.
pub fn system_text(v: &Value) -> Result<String, ApiError> {
    let blocks: Vec<String> = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(j, b)| {
                let at = format!("system[{j}]");
                match (b.get("type").and_then(Value::as_str), b.get("text")) {
                    (Some("text"), Some(Value::String(t))) => Ok(t.clone()),
                    (Some("text"), _) => Err(bad_at(&format!("{at}.text"), "a text block needs text (a string)")),
                    (Some(k), _) => {
                        Err(bad_at(&format!("{at}.type"), format!("'{k}': the system prompt takes text blocks")))
                    }
                    (None, _) => Err(bad_at(&at, "expected a text block ({\"type\": \"text\", \"text\": ...})")),
                }
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad_at("system", "expected a string or a list of text blocks")),
    };
    // Header lines lead the prompt: strip them from the first blocks, and
    // drop the blocks they were all of.
    let mut out: Vec<&str> = Vec::new();
    let mut head = true;
    for b in &blocks {
        let t = if head { strip_headers(b) } else { b.as_str() };
        if head && t.trim().is_empty() {
            continue;
        }
        head = false;
        out.push(t);
    }
    Ok(out.join("\n\n"))
}

/// Names of the tools that `tool_reference` blocks anywhere in `v` load
/// (a tool search's results, client- or server-side).
pub fn references(v: &Value, out: &mut HashSet<String>) {
    match v {
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) == Some("tool_reference") {
                if let Some(n) = o.get("tool_name").and_then(Value::as_str) {
                    out.insert(n.to_string());
                }
            }
            o.values().for_each(|x| references(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        _ => {}
    }
}

/// Blocks that only a server tool of Anthropic's makes (its call and its
/// result): this server runs none of them, so they are left out.
fn server_block(kind: &str) -> bool {
    matches!(kind, "server_tool_use" | "mcp_tool_use" | "container_upload") || kind.ends_with("_tool_result")
}

fn string_at<'a>(o: &'a Map<String, Value>, key: &str, at: &str, what: &str) -> Result<&'a str, ApiError> {
    o.get(key).and_then(Value::as_str).ok_or_else(|| bad_at(&format!("{at}.{key}"), what))
}

/// The text of a document block: a plain-text or content source is read, a
/// PDF, a file or a URL becomes a note.
fn document(o: &Map<String, Value>, at: &str) -> Result<Option<String>, ApiError> {
    let src = o.get("source");
    let title = o.get("title").and_then(Value::as_str);
    let body = match src.and_then(|s| s.get("type")).and_then(Value::as_str) {
        Some("text") => src.and_then(|s| s.get("data")).and_then(Value::as_str).map(str::to_string),
        Some("content") => match src.and_then(|s| s.get("content")) {
            Some(Value::String(t)) => Some(t.clone()),
            Some(c @ Value::Array(_)) => Some(result_text(c, &format!("{at}.source.content"))?.0),
            _ => None,
        },
        _ => None,
    };
    Ok(body.map(|b| match title {
        Some(t) => format!("{t}\n{b}"),
        None => b,
    }))
}

/// The text of a tool result's content (a string or blocks: text, images
/// and documents as notes, search results, tool references); also whether
/// every block was one this model cannot read.
fn result_text(v: &Value, at: &str) -> Result<(String, bool), ApiError> {
    let items = match v {
        Value::Null => return Ok((String::new(), false)),
        Value::String(s) => return Ok((s.clone(), false)),
        Value::Array(a) => a,
        _ => return Err(bad_at(at, "expected a string or a list of content blocks")),
    };
    let mut out: Vec<String> = Vec::new();
    let mut unread = !items.is_empty();
    for (j, b) in items.iter().enumerate() {
        let at = format!("{at}[{j}]");
        let o = b.as_object().ok_or_else(|| bad_at(&at, "expected a content block (an object with a type)"))?;
        let kind = o.get("type").and_then(Value::as_str).ok_or_else(|| bad_at(&format!("{at}.type"), "missing"))?;
        match kind {
            "text" => {
                out.push(string_at(o, "text", &at, "a text block needs text (a string)")?.to_string());
                unread = false;
            }
            "image" => out.push(unreadable("image")),
            "document" => match document(o, &at)? {
                Some(t) => {
                    out.push(t);
                    unread = false;
                }
                None => out.push(unreadable("document")),
            },
            "search_result" => {
                let title = o.get("title").and_then(Value::as_str).unwrap_or_default();
                let (body, _) = result_text(o.get("content").unwrap_or(&Value::Null), &format!("{at}.content"))?;
                out.push(format!("{title}\n{body}").trim().to_string());
                unread = false;
            }
            "tool_reference" => {
                let name = string_at(o, "tool_name", &at, "a tool reference needs tool_name (a string)")?;
                out.push(format!("[tool {name} loaded]"));
                unread = false;
            }
            k => return Err(bad_at(&format!("{at}.type"), format!("'{k}' is not a block a tool result can hold"))),
        }
    }
    Ok((out.join("\n"), unread))
}

/// decache's annotations on a block or message (`o`, at `at`): `"decache":
/// true`, or `"decached_from": N` and the request's `turn` is N or later
/// (see `request::request_turn`).
pub(crate) fn left_out(o: &Map<String, Value>, at: &str, turn: u32) -> Result<bool, ApiError> {
    let (decache, from) = crate::eval::requests::annotations(o, at).map_err(|(f, m)| bad_at(&f, m))?;
    Ok(crate::eval::requests::left_out(decache, from, turn))
}

/// The parts of one message's content, checked; `at` is
/// `messages[i].content`, `turn` the request's (for `decached_from`). A user turn made only of blocks this model
/// cannot read (images, binary documents) is refused, naming the first.
pub fn parts(content: &Value, role: &str, at: &str, turn: u32) -> Result<Vec<Part>, ApiError> {
    let items = match content {
        Value::String(s) => return Ok(vec![Part::Text(s.clone())]),
        Value::Array(a) => a,
        _ => return Err(bad_at(at, "expected a string or a list of content blocks")),
    };
    let mut out = Vec::with_capacity(items.len());
    let mut unread: Option<(usize, &str)> = None;
    let mut read = false;
    for (j, b) in items.iter().enumerate() {
        let at = format!("{at}[{j}]");
        let o = b.as_object().ok_or_else(|| bad_at(&at, "expected a content block (an object with a type)"))?;
        let kind = match o.get("type") {
            Some(Value::String(k)) => k.as_str(),
            Some(_) => return Err(bad_at(&format!("{at}.type"), "expected a string")),
            None => return Err(bad_at(&format!("{at}.type"), "missing: every content block has a type")),
        };
        // decache's annotation: keep this block out of the cache from now on
        // (the client goes on sending it). A tool call and its result stay
        // as cleared placeholders so that they still pair.
        let decache = left_out(o, &at, turn)?;
        if decache && !matches!(kind, "tool_use" | "tool_result") {
            continue;
        }
        match kind {
            "text" => {
                out.push(Part::Text(string_at(o, "text", &at, "a text block needs text (a string)")?.to_string()));
                read = true;
            }
            "thinking" => {
                let t = string_at(o, "thinking", &at, "a thinking block needs thinking (a string)")?;
                out.push(Part::Thinking(t.to_string()));
            }
            "redacted_thinking" => {}
            "tool_use" => {
                let name = string_at(o, "name", &at, "a tool_use block needs a name (a string)")?.to_string();
                let id = match o.get("id") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => return Err(bad_at(&format!("{at}.id"), "expected a string")),
                };
                let input = match o.get("input") {
                    None | Some(Value::Null) => Value::Object(Map::new()),
                    Some(v @ Value::Object(_)) => v.clone(),
                    Some(_) => return Err(bad_at(&format!("{at}.input"), "expected an object")),
                };
                out.push(Part::ToolUse { id, name, input, cleared: decache });
                read = true;
            }
            "tool_result" => {
                let id = match o.get("tool_use_id") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => return Err(bad_at(&format!("{at}.tool_use_id"), "expected a string")),
                };
                let is_error = match o.get("is_error") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(bad_at(&format!("{at}.is_error"), "expected true or false")),
                };
                let (text, _) = result_text(o.get("content").unwrap_or(&Value::Null), &format!("{at}.content"))?;
                out.push(Part::ToolResult { id, text, is_error, cleared: decache });
                read = true;
            }
            "image" => {
                unread.get_or_insert((j, "image"));
                out.push(Part::Text(unreadable("image")));
            }
            "document" => match document(o, &at)? {
                Some(t) => {
                    out.push(Part::Text(t));
                    read = true;
                }
                None => {
                    unread.get_or_insert((j, "document"));
                    out.push(Part::Text(unreadable("document")));
                }
            },
            "search_result" => {
                let (t, _) = result_text(&Value::Array(vec![b.clone()]), &at)?;
                out.push(Part::Text(t));
                read = true;
            }
            "tool_reference" => {
                let name = string_at(o, "tool_name", &at, "a tool reference needs tool_name (a string)")?;
                out.push(Part::Text(format!("[tool {name} loaded]")));
                read = true;
            }
            k if server_block(k) => {}
            k => return Err(bad_at(&format!("{at}.type"), format!("unknown content block type '{k}'"))),
        }
    }
    if let Some((j, kind)) = unread.filter(|_| !read && role != "assistant") {
        return Err(bad_at(
            &format!("{at}[{j}]"),
            format!(
                "{kind} blocks are not supported: this model reads text only (send text; inside a \
                 tool_result such a block becomes a note and the session goes on)"
            ),
        ));
    }
    Ok(out)
}

/// The text of an assistant turn's thinking as a template that reads
/// `<think>` takes it.
fn think(t: &str) -> String {
    format!("<think>\n{}\n</think>\n\n", t.trim())
}

impl Conversation {
    /// The messages as the chat template takes them: the system prompt
    /// first; an assistant turn's thinking as `<think>…</think>` before its
    /// text when `thinking` (the template reads it), else dropped; its calls
    /// as `<tool_call>` text; each tool result its own `tool` message (an
    /// error's text led by "Error: "), the rest of a user turn a `user` message.
    pub fn messages(&self, thinking: bool) -> Vec<ChatMessage> {
        let mut out = Vec::with_capacity(self.turns.len() + 1);
        if let Some(s) = &self.system {
            out.push(ChatMessage::new("system", s.clone()));
        }
        for t in &self.turns {
            if t.role == "assistant" {
                let mut head = String::new();
                let mut text: Vec<&str> = Vec::new();
                let mut calls = Vec::new();
                for p in &t.parts {
                    match p {
                        Part::Thinking(th) if thinking => head.push_str(&think(th)),
                        Part::Text(s) => text.push(s),
                        Part::ToolUse { name, input, cleared, .. } => {
                            let arguments = if *cleared { Value::String(CLEARED_INPUT.into()) } else { input.clone() };
                            calls.push(ToolCall { name: name.clone(), arguments });
                        }
                        Part::ToolResult { text: r, .. } => text.push(r),
                        Part::Thinking(_) => {}
                    }
                }
                let mut body = text.join("\n");
                if !calls.is_empty() {
                    let sep = if body.is_empty() { "" } else { "\n" };
                    body = format!("{body}{sep}{}", render_calls(&calls));
                }
                out.push(ChatMessage::new("assistant", format!("{head}{body}")));
                continue;
            }
            let mut pending: Vec<&str> = Vec::new();
            let flush = |pending: &mut Vec<&str>, out: &mut Vec<ChatMessage>| {
                if !pending.is_empty() {
                    out.push(ChatMessage::new(t.role.clone(), pending.join("\n")));
                    pending.clear();
                }
            };
            for p in &t.parts {
                match p {
                    Part::ToolResult { text, is_error, cleared, .. } => {
                        flush(&mut pending, &mut out);
                        let text = match (*cleared, *is_error) {
                            (true, _) => CLEARED_RESULT.to_string(),
                            (false, true) => format!("Error: {text}"),
                            (false, false) => text.clone(),
                        };
                        out.push(ChatMessage::new("tool", text));
                    }
                    Part::Text(s) => pending.push(s),
                    Part::Thinking(_) => {}
                    Part::ToolUse { .. } => {}
                }
            }
            flush(&mut pending, &mut out);
            if t.parts.is_empty() {
                out.push(ChatMessage::new(t.role.clone(), String::new()));
            }
        }
        out
    }

    /// Names of the tools called in the conversation.
    pub fn called(&self) -> HashSet<String> {
        self.turns
            .iter()
            .flat_map(|t| &t.parts)
            .filter_map(|p| match p {
                Part::ToolUse { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_lines_at_the_head_of_the_system_prompt_are_stripped() {
        let a = "x-anthropic-billing-header: cc_version=2.1.3.abc; cc_entrypoint=cli; cch=1f2e3;\nYou are Claude Code.";
        let b = "x-anthropic-billing-header: cc_version=2.1.3.abc; cc_entrypoint=cli; cch=9a8b7;\nYou are Claude Code.";
        assert_eq!(strip_headers(a), "You are Claude Code.");
        assert_eq!(strip_headers(a), strip_headers(b));
        assert_eq!(strip_headers("x-a: 1\nX-B-c: 2\n\nRules."), "Rules.");
        // Not at the head, not a header name, or the whole prompt: kept.
        assert_eq!(strip_headers("Rules.\nx-a: 1"), "Rules.\nx-a: 1");
        assert_eq!(strip_headers("Note: be brief."), "Note: be brief.");
        assert_eq!(strip_headers("x y: z"), "x y: z");
        let blocks = json!([{"type": "text", "text": "x-anthropic-billing-header: cch=1;"},
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "x-not-at-the-head: kept"}]);
        assert_eq!(system_text(&blocks).unwrap(), "You are Claude Code.\n\nx-not-at-the-head: kept");
        let e = system_text(&json!([{"type": "image"}])).unwrap_err();
        assert!(e.message.starts_with("system[0].type"), "{e:?}");
    }

    #[test]
    fn blocks_become_parts_and_unreadable_ones_notes() {
        let content = json!([
            {"type": "tool_result", "tool_use_id": "t1", "is_error": true, "content": [
                {"type": "text", "text": "no such file"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
            {"type": "text", "text": "<system-reminder>hi</system-reminder>", "cache_control": {"type": "ephemeral"}}
        ]);
        let p = parts(&content, "user", "messages[2].content", 1).unwrap();
        let note = unreadable("image");
        assert_eq!(
            p[0],
            Part::ToolResult { id: "t1".into(), text: format!("no such file\n{note}"), is_error: true, cleared: false }
        );
        let c = Conversation { system: None, turns: vec![Turn { role: "user".into(), parts: p }] };
        let m = c.messages(false);
        assert_eq!(
            (m[0].role.as_str(), m[0].content.as_str()),
            ("tool", format!("Error: no such file\n{note}").as_str())
        );
        assert_eq!((m[1].role.as_str(), m[1].content.as_str()), ("user", "<system-reminder>hi</system-reminder>"));
        // A user turn of images only is refused, naming the block.
        let e = parts(&json!([{"type": "image", "source": {}}]), "user", "messages[4].content", 1).unwrap_err();
        assert!(e.message.starts_with("messages[4].content[0]: image blocks are not supported"), "{e:?}");
        // A plain-text document is read; thinking without its text is refused.
        let doc = json!([{"type": "document", "title": "notes", "source": {"type": "text", "media_type": "text/plain", "data": "noon"}}]);
        assert_eq!(parts(&doc, "user", "m", 1).unwrap(), vec![Part::Text("notes\nnoon".into())]);
        let e =
            parts(&json!([{"type": "thinking", "signature": "x"}]), "assistant", "messages[1].content", 1).unwrap_err();
        assert!(e.message.starts_with("messages[1].content[0].thinking"), "{e:?}");
        let e = parts(&json!([{"type": "hologram"}]), "user", "messages[0].content", 1).unwrap_err();
        assert!(e.message.contains("messages[0].content[0].type"), "{e:?}");
    }

    #[test]
    fn blocks_annotated_decache_are_left_out_and_results_cleared() {
        let content = json!([
            {"type": "text", "text": "a long paste", "decache": true},
            {"type": "tool_result", "tool_use_id": "t1", "content": "a big file", "decache": true},
            {"type": "text", "text": "the question"}
        ]);
        let p = parts(&content, "user", "messages[2].content", 1).unwrap();
        assert_eq!(
            p,
            vec![
                Part::ToolResult { id: "t1".into(), text: "a big file".into(), is_error: false, cleared: true },
                Part::Text("the question".into())
            ]
        );
        let e = parts(&json!([{"type": "text", "text": "x", "decache": "yes"}]), "user", "m", 1).unwrap_err();
        assert!(e.message.starts_with("m[0].decache: expected true or false"), "{e:?}");
        // decached_from: in before its turn, out from it on.
        let content = json!([{"type": "text", "text": "old log", "decached_from": 3}, {"type": "text", "text": "q"}]);
        assert_eq!(parts(&content, "user", "m", 2).unwrap().len(), 2);
        assert_eq!(parts(&content, "user", "m", 3).unwrap(), vec![Part::Text("q".into())]);
        let e = parts(&json!([{"type": "text", "text": "x", "decached_from": -1}]), "user", "m", 1).unwrap_err();
        assert!(e.message.starts_with("m[0].decached_from: expected a turn number"), "{e:?}");
    }

    #[test]
    fn thinking_is_rendered_only_where_the_template_reads_it() {
        let parts = vec![
            Part::Thinking("The user wants a file.".into()),
            Part::Text("Reading it.".into()),
            Part::ToolUse { id: "t1".into(), name: "read".into(), input: json!({"path": "a"}), cleared: false },
        ];
        let c = Conversation { system: Some("S".into()), turns: vec![Turn { role: "assistant".into(), parts }] };
        let plain = &c.messages(false)[1].content;
        assert!(plain.starts_with("Reading it.\n<tool_call>") && !plain.contains("think"), "{plain}");
        let think = &c.messages(true)[1].content;
        assert!(think.starts_with("<think>\nThe user wants a file.\n</think>\n\nReading it.\n<tool_call>"), "{think}");
    }
}

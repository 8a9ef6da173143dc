//! Anthropic's Messages API: `POST /v1/messages`, whole or as its named
//! server-sent events (`message_start`, `content_block_delta`, ...), so a
//! Claude-Code-style client can point `ANTHROPIC_BASE_URL` here. Errors use
//! Anthropic's error body. Any model name is accepted (such clients send
//! their own), and the served model answers.
use super::engine::{CacheUse, FinishReason, JobEvent};
use super::error::{ApiError, Dialect};
use super::openai::{decache, event_stream, parse, timings, SsePayload};
use super::request::{check_tools, ChatPrompt, Sampling, StopField, MAX_MESSAGES};
use super::tools::{parse as parse_calls, CallFilter, Parsed, ToolCall};
use super::AppState;
use crate::tokenizer::ChatMessage;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Text {
    Plain(String),
    Blocks(Vec<Block>),
}

#[derive(Deserialize, Debug)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    /// `tool_result`: its content (text or text blocks).
    #[serde(default)]
    content: Option<Box<Text>>,
    /// `tool_use`: the call.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
}

#[derive(Deserialize, Debug)]
struct InMessage {
    role: String,
    content: Text,
}

/// A `/v1/messages` body.
#[derive(Deserialize, Debug)]
pub struct MessagesRequest {
    model: String,
    max_tokens: i64,
    messages: Vec<InMessage>,
    #[serde(default)]
    system: Option<Text>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    top_k: Option<i32>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg).dialect(Dialect::Anthropic)
}

/// The text of `t` at `at` (for errors): plain text, text blocks, tool results as text.
fn flatten(t: &Text, at: &str) -> Result<String, ApiError> {
    match t {
        Text::Plain(s) => Ok(s.clone()),
        Text::Blocks(blocks) => {
            let mut out = String::new();
            for (i, b) in blocks.iter().enumerate() {
                match (b.kind.as_str(), &b.text) {
                    ("text", Some(t)) => out.push_str(t),
                    ("text", None) => return Err(bad(format!("{at}[{i}]: a text block needs `text`"))),
                    ("tool_result", _) => {
                        let inner =
                            b.content.as_deref().map(|c| flatten(c, &format!("{at}[{i}].content"))).transpose()?;
                        out.push_str(&inner.unwrap_or_default());
                    }
                    ("tool_use", _) => {
                        let call = json!({"name": b.name, "arguments": b.input});
                        out.push_str(&format!("<tool_call>\n{call}\n</tool_call>"));
                    }
                    (k, _) => return Err(bad(format!("{at}[{i}]: content blocks of type '{k}' are not supported"))),
                }
            }
            Ok(out)
        }
    }
}

impl MessagesRequest {
    /// The messages as the chat template takes them, after the checks.
    pub fn chat_prompt(&self) -> Result<ChatPrompt, ApiError> {
        if self.messages.is_empty() {
            return Err(bad("messages: at least one message is required"));
        }
        if self.messages.len() > MAX_MESSAGES {
            return Err(bad(format!("messages: {} messages, at most {MAX_MESSAGES}", self.messages.len())));
        }
        let mut out = Vec::new();
        if let Some(sys) = &self.system {
            out.push(ChatMessage::new("system", flatten(sys, "system")?));
        }
        for (i, m) in self.messages.iter().enumerate() {
            // Claude Code sends its environment block as a `system` message
            // among the others on every turn: it is rendered as a system
            // turn where it stands.
            if !matches!(m.role.as_str(), "user" | "assistant" | "system") {
                return Err(bad(format!("messages[{i}].role: '{}' (user, assistant or system)", m.role)));
            }
            // A user turn made only of tool results is the tool speaking.
            let only_results =
                matches!(&m.content, Text::Blocks(b) if !b.is_empty() && b.iter().all(|b| b.kind == "tool_result"));
            let role = if m.role == "user" && only_results { "tool" } else { m.role.as_str() };
            out.push(ChatMessage::new(role, flatten(&m.content, &format!("messages[{i}].content"))?));
        }
        let tools = match self.tools_active() {
            true => {
                check_tools(self.tools.as_deref().unwrap_or_default()).map_err(|e| e.dialect(Dialect::Anthropic))?
            }
            false => Vec::new(),
        };
        Ok(ChatPrompt { messages: out, tools })
    }

    /// Tools offered and `tool_choice` is not `{"type": "none"}`.
    fn tools_active(&self) -> bool {
        let none = self.tool_choice.as_ref().and_then(|c| c.get("type")).and_then(Value::as_str) == Some("none");
        self.tools.as_ref().is_some_and(|t| !t.is_empty()) && !none
    }

    /// The sampling fields in the OpenAI request's shape (checked by `Sampling::options`).
    pub fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            max_tokens: Some(self.max_tokens),
            stop: self.stop_sequences.clone().map(StopField::Many),
            ..Sampling::default()
        }
    }
}

pub async fn messages(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let res = async {
        let req: MessagesRequest = parse(&body).map_err(|e| e.dialect(Dialect::Anthropic))?;
        answer(st, req).await
    };
    res.await.unwrap_or_else(|e: ApiError| e.dialect(Dialect::Anthropic).into_response())
}

/// `POST /v1/messages/count_tokens`: the prompt's token count, as rendered.
pub async fn count_tokens(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    struct CountRequest {
        messages: Vec<InMessage>,
        #[serde(default)]
        system: Option<Text>,
        #[serde(default)]
        tools: Option<Vec<Value>>,
    }
    let res = async {
        let r: CountRequest = parse(&body).map_err(|e| e.dialect(Dialect::Anthropic))?;
        let req = MessagesRequest {
            model: String::new(),
            max_tokens: 1,
            messages: r.messages,
            system: r.system,
            stream: false,
            temperature: None,
            top_p: None,
            top_k: None,
            stop_sequences: None,
            tools: r.tools,
            tool_choice: None,
        };
        let n = st.prompt(req.chat_prompt()?, false)?.0.len();
        Ok::<_, ApiError>(Json(json!({ "input_tokens": n })).into_response())
    };
    res.await.unwrap_or_else(|e| e.dialect(Dialect::Anthropic).into_response())
}

fn stop_reason(f: FinishReason, stop_hit: Option<&str>) -> &'static str {
    match (f, stop_hit) {
        (FinishReason::Length, _) => "max_tokens",
        (FinishReason::ContextFull, _) => "model_context_window_exceeded",
        (_, Some(_)) => "stop_sequence",
        _ => "end_turn",
    }
}

fn usage(input: usize, output: usize, cache: Option<&CacheUse>) -> Value {
    let cached = cache.map_or(0, |c| c.tokens_reused);
    json!({"input_tokens": input - cached.min(input), "output_tokens": output, "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0})
}

fn text_delta(t: &str) -> Value {
    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})
}

fn tool_use(c: &ToolCall) -> Value {
    json!({"type": "tool_use", "id": format!("toolu_{:016x}", rand::random::<u64>()), "name": c.name, "input": c.arguments})
}

async fn answer(st: Arc<AppState>, req: MessagesRequest) -> Result<Response, ApiError> {
    let tools = req.tools_active();
    let (mut opts, stop) = req.sampling().options(&st.opts.sampling)?;
    let prompt = req.chat_prompt()?;
    opts.forced = st.script_reply(&prompt)?;
    let (tokens, pruned) = st.prompt(prompt, true)?;
    let mut p = st.job(tokens, opts, stop)?;
    p.pruned = pruned;
    let id = format!("msg_{:016x}", rand::random::<u64>());
    let model = req.model.clone();
    if !req.stream {
        let (cache, f) = super::openai::collect(&mut p).await?;
        let Parsed { text: rest, calls, .. } = if tools { parse_calls(&f.text) } else { Parsed::default() };
        let (mut content, reason) = if calls.is_empty() {
            (vec![json!({"type": "text", "text": f.text})], stop_reason(f.reason, f.stop_hit.as_deref()))
        } else {
            let text = if rest.is_empty() { Vec::new() } else { vec![json!({"type": "text", "text": rest})] };
            (text, "tool_use")
        };
        content.extend(calls.iter().map(tool_use));
        return Ok(Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content,
            "stop_reason": reason, "stop_sequence": f.stop_hit,
            "usage": usage(p.prompt_tokens, f.predicted_n, Some(&cache)),
            "timings": timings(&f), "decache": decache(&cache, p.pruned, f.reason),
        }))
        .into_response());
    }
    let (input, pruned) = (p.prompt_tokens, p.pruned);
    let mut filter = CallFilter::new(tools);
    let stream = event_stream(p, false, move |ev, out: &mut Vec<SsePayload>, cache: &mut Option<CacheUse>| match ev {
        JobEvent::Started(c) => {
            let msg = json!({"id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": usage(input, 0, Some(&c))});
            out.push((Some("message_start"), json!({"type": "message_start", "message": msg})));
            out.push((
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            out.push((Some("ping"), json!({"type": "ping"})));
            *cache = Some(c);
        }
        JobEvent::Text(t) => {
            let shown = filter.push(&t);
            if !shown.is_empty() {
                out.push((Some("content_block_delta"), text_delta(&shown)));
            }
        }
        JobEvent::Done(f) => {
            let (rest, calls) = filter.finish();
            if !rest.is_empty() {
                out.push((Some("content_block_delta"), text_delta(&rest)));
            }
            out.push((Some("content_block_stop"), json!({"type": "content_block_stop", "index": 0})));
            for (i, c) in calls.iter().enumerate() {
                let mut block = tool_use(c);
                let input = std::mem::replace(&mut block["input"], json!({}));
                out.push((
                    Some("content_block_start"),
                    json!({"type": "content_block_start", "index": i + 1, "content_block": block}),
                ));
                out.push((
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": i + 1, "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
                ));
                out.push((Some("content_block_stop"), json!({"type": "content_block_stop", "index": i + 1})));
            }
            let reason = if calls.is_empty() { stop_reason(f.reason, f.stop_hit.as_deref()) } else { "tool_use" };
            let mut delta = json!({"type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": f.stop_hit},
                "usage": {"output_tokens": f.predicted_n}, "timings": timings(&f)});
            if let Some(c) = cache {
                delta["decache"] = decache(c, pruned, f.reason);
            }
            out.push((Some("message_delta"), delta));
            out.push((Some("message_stop"), json!({"type": "message_stop"})));
        }
        JobEvent::Failed(e) => out.push((Some("error"), ApiError::from(&e).dialect(Dialect::Anthropic).body())),
    });
    Ok(super::openai::sse(&st, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_context_is_told_apart_from_the_token_limit() {
        assert_eq!(stop_reason(FinishReason::Length, None), "max_tokens");
        assert_eq!(stop_reason(FinishReason::ContextFull, None), "model_context_window_exceeded");
        assert_eq!(stop_reason(FinishReason::Stop, Some("###")), "stop_sequence");
        assert_eq!(stop_reason(FinishReason::Stop, None), "end_turn");
    }
}

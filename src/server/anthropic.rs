//! Anthropic's Messages API: `POST /v1/messages`, whole or as its named
//! server-sent events (`message_start`, `content_block_delta`, ...), so a
//! Claude-Code-style client can point `ANTHROPIC_BASE_URL` here. Errors use
//! Anthropic's error body. Any model name is accepted (such clients send
//! their own), and the served model answers.
//!
//! What today's clients send is taken: thinking blocks (`<think>` text where
//! the template reads it), images and documents (a note inside a tool
//! result), `is_error`, `tool_choice`, deferred tools (offered once loaded),
//! server tools (left out), `cache_control` and the other fields this server
//! has no use for (ignored, but type-checked), the per-request billing header
//! at the head of the system prompt (stripped, so it costs no prefill), and
//! `context_management` edits, which run here and are remembered so that the
//! next request meets the cache (`edits.rs`).
pub mod content;
pub mod edits;
pub mod thinking;

use super::engine::{CacheUse, FinishReason, JobEvent};
use super::error::{ApiError, Dialect};
use super::openai::{decache, event_stream, parse, timings, SsePayload};
use super::reply::{Format, Split};
use super::request::{check_tools, CallRule, ChatPrompt, Sampling, StopField, ToolChoice, MAX_MESSAGES};
use super::tools::ToolCall;
use super::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use content::{bad, bad_at, Conversation, Turn};
use edits::{Counter, Edits};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::sync::Arc;
use thinking::Piece;

#[derive(Deserialize, Debug)]
struct InMessage {
    role: String,
    /// A string or a list of content blocks (checked in `content.rs`).
    content: Value,
}

/// A `/v1/messages` (and `/v1/messages/count_tokens`) body. Fields this
/// server has no use for are type-checked and ignored; unknown ones are
/// ignored, as Anthropic's API does.
#[derive(Deserialize, Debug)]
pub struct MessagesRequest {
    #[serde(default)]
    model: Option<String>,
    /// Required by `/v1/messages`, not by count_tokens.
    #[serde(default)]
    max_tokens: Option<i64>,
    messages: Vec<InMessage>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    stream: bool,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i32>,
    stop_sequences: Option<Vec<String>>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    /// `{"type": "enabled", "budget_tokens"}`, `{"type": "adaptive"}` or disabled.
    thinking: Option<Value>,
    context_management: Option<Value>,
    #[allow(dead_code)] // type-checked only
    metadata: Option<Map<String, Value>>,
    #[allow(dead_code)]
    output_config: Option<Map<String, Value>>,
    #[allow(dead_code)]
    service_tier: Option<String>,
    #[allow(dead_code)]
    container: Option<Value>,
    #[allow(dead_code)]
    mcp_servers: Option<Vec<Value>>,
}

/// A request checked and turned into a conversation, before context
/// editing and rendering.
#[derive(Clone, Debug)]
pub struct Checked {
    pub conv: Conversation,
    /// The tools offered (OpenAI's shape): custom ones, deferred ones once
    /// loaded, none under `tool_choice: none`.
    pub tools: Vec<Value>,
    pub rule: CallRule,
    /// The request asked for thinking.
    pub thinking: bool,
    pub edits: Edits,
    /// The request carried `context_management` (the response then does too).
    pub managed: bool,
}

impl Checked {
    /// The prompt before pruning: the conversation's messages (thinking as
    /// `<think>` when `think`), a required call asked for, the tools.
    pub fn prompt(&self, think: bool) -> ChatPrompt {
        let mut messages = self.conv.messages(think);
        self.rule.choice.instruct(&mut messages);
        ChatPrompt { messages, tools: self.tools.clone() }
    }
}

/// Anthropic's `tool_choice`: `{"type": "auto" | "any" | "tool" | "none",
/// "name", "disable_parallel_tool_use"}`.
fn call_rule(v: Option<&Value>) -> Result<CallRule, ApiError> {
    let o = match v {
        None | Some(Value::Null) => return Ok(CallRule::default()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad_at("tool_choice", "expected an object ({\"type\": \"auto\"}, ...)")),
    };
    let choice = match o.get("type").and_then(Value::as_str) {
        Some("auto") => ToolChoice::Auto,
        Some("any") => ToolChoice::Any,
        Some("none") => ToolChoice::None,
        Some("tool") => match o.get("name").and_then(Value::as_str) {
            Some(n) => ToolChoice::Tool(n.to_string()),
            None => return Err(bad_at("tool_choice.name", "a tool choice of type 'tool' needs a name (a string)")),
        },
        Some(t) => return Err(bad_at("tool_choice.type", format!("unknown type '{t}' (auto, any, tool or none)"))),
        None => return Err(bad_at("tool_choice.type", "missing (auto, any, tool or none)")),
    };
    let single = match o.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad_at("tool_choice.disable_parallel_tool_use", "expected true or false")),
    };
    Ok(CallRule { choice, single })
}

/// Whether `thinking` asks for thinking.
fn thinking_on(v: Option<&Value>) -> Result<bool, ApiError> {
    let o = match v {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(bad_at("thinking", "expected an object ({\"type\": \"enabled\", \"budget_tokens\": N})"))
        }
    };
    match o.get("type").and_then(Value::as_str) {
        Some("enabled") => match o.get("budget_tokens") {
            None | Some(Value::Null) => Ok(true),
            Some(b) if b.as_u64().is_some() => Ok(true),
            Some(_) => Err(bad_at("thinking.budget_tokens", "expected a non-negative integer")),
        },
        Some("adaptive") => Ok(true),
        Some("disabled") => Ok(false),
        Some(t) => Err(bad_at("thinking.type", format!("unknown type '{t}' (enabled, adaptive or disabled)"))),
        None => Err(bad_at("thinking.type", "missing (enabled, adaptive or disabled)")),
    }
}

impl MessagesRequest {
    /// Every check, and the request as a conversation with its tools and rules.
    pub fn check(&self) -> Result<Checked, ApiError> {
        if self.messages.is_empty() {
            return Err(bad("messages: at least one message is required").param("messages"));
        }
        if self.messages.len() > MAX_MESSAGES {
            return Err(
                bad(format!("messages: {} messages, at most {MAX_MESSAGES}", self.messages.len())).param("messages")
            );
        }
        let rule = call_rule(self.tool_choice.as_ref())?;
        let thinking = thinking_on(self.thinking.as_ref())?;
        let edits = Edits::parse(self.context_management.as_ref())?;
        let system = self.system.as_ref().map(content::system_text).transpose()?;
        let mut turns = Vec::with_capacity(self.messages.len());
        let mut loaded = HashSet::new();
        let turn = crate::server::request::request_turn(self.messages.iter().map(|m| m.role.as_str()));
        for (i, m) in self.messages.iter().enumerate() {
            // Claude Code sends its environment block as a `system` message
            // among the others on every turn: it is rendered as a system
            // turn where it stands.
            if !matches!(m.role.as_str(), "user" | "assistant" | "system") {
                return Err(bad_at(
                    &format!("messages[{i}].role"),
                    format!("'{}' (user, assistant or system)", m.role),
                ));
            }
            content::references(&m.content, &mut loaded);
            let parts = content::parts(&m.content, &m.role, &format!("messages[{i}].content"), turn)?;
            turns.push(Turn { role: m.role.clone(), parts });
        }
        let conv = Conversation { system, turns };
        loaded.extend(conv.called());
        let tools = self.offered(&loaded, &rule.choice)?;
        rule.choice.check_offered(&tools, "tool_choice.name").map_err(|e| e.dialect(Dialect::Anthropic))?;
        Ok(Checked { conv, tools, rule, thinking, edits, managed: self.context_management.is_some() })
    }

    /// The tools to offer, in OpenAI's shape: custom tools (no `type`, or
    /// `custom`; OpenAI-shaped ones too), a deferred one (`defer_loading`)
    /// only once loaded (called, or named by a `tool_reference`, or named by
    /// `tool_choice`); server tools this server cannot run are left out.
    fn offered(&self, loaded: &HashSet<String>, choice: &ToolChoice) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        for (i, t) in self.tools.iter().flatten().enumerate() {
            let at = format!("tools[{i}]");
            let o = t.as_object().ok_or_else(|| bad_at(&at, "expected an object"))?;
            match o.get("type") {
                None | Some(Value::Null) => {}
                Some(Value::String(k)) if k == "custom" || (k == "function" && o.contains_key("function")) => {}
                Some(Value::String(_)) => continue, // a server tool (web search, code execution, tool search)
                Some(_) => return Err(bad_at(&format!("{at}.type"), "expected a string")),
            }
            let deferred = match o.get("defer_loading") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad_at(&format!("{at}.defer_loading"), "expected true or false")),
            };
            let f = o.get("function").unwrap_or(t);
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| bad_at(&at, "needs a name (a string)"))?;
            if deferred && !loaded.contains(name) && *choice != ToolChoice::Tool(name.to_string()) {
                continue;
            }
            out.extend(check_tools(std::slice::from_ref(t)).map_err(|_| bad_at(&at, "needs a name (a string)"))?);
        }
        if *choice == ToolChoice::None {
            out.clear();
        }
        Ok(out)
    }

    /// The messages as the chat template takes them, after the checks
    /// (thinking dropped, no context editing).
    pub fn chat_prompt(&self) -> Result<ChatPrompt, ApiError> {
        Ok(self.check()?.prompt(false))
    }

    /// The sampling fields in the OpenAI request's shape (checked by `Sampling::options`).
    pub fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            max_tokens: self.max_tokens,
            stop: self.stop_sequences.clone().map(StopField::Many),
            ..Sampling::default()
        }
    }
}

/// A request ready for the model.
struct Prepared {
    checked: Checked,
    prompt: ChatPrompt,
    /// `context_management` of the response.
    managed: Option<Value>,
}

/// Check `req`, run its context edits (remembering new clears when
/// `remember`), and render it.
fn prepare(st: &AppState, req: &MessagesRequest, remember: bool) -> Result<Prepared, ApiError> {
    let mut checked = req.check()?;
    let think = st.template()?.source().contains(thinking::CLOSE);
    let mut managed = None;
    if checked.managed {
        let tok = &st.engine()?.model.tokenizer;
        let text = |t: &str| tok.encode(t, false, false).map_or(t.len() / 4, |v| v.len());
        let (tools, rule) = (checked.tools.clone(), checked.rule.clone());
        let prompt = |c: &Conversation| -> Result<usize, ApiError> {
            let mut messages = c.messages(think);
            rule.choice.instruct(&mut messages);
            Ok(st.prompt(ChatPrompt { messages, tools: tools.clone() }, false)?.0.len())
        };
        let count = Counter { text: &text, prompt: &prompt };
        let applied = edits::apply(&mut checked.conv, &checked.edits, &st.cleared, remember, think, &count)?;
        managed = Some(json!({ "applied_edits": applied }));
    }
    let prompt = checked.prompt(think);
    Ok(Prepared { checked, prompt, managed })
}

fn anthropic(e: ApiError) -> ApiError {
    e.dialect(Dialect::Anthropic)
}

pub async fn messages(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let res = async {
        let req: MessagesRequest = parse(&body).map_err(anthropic)?;
        answer(st, req).await
    };
    res.await.unwrap_or_else(|e: ApiError| anthropic(e).into_response())
}

/// `POST /v1/messages/count_tokens`: the prompt's token count, as rendered
/// (context edits applied, not remembered).
pub async fn count_tokens(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let res = async {
        let req: MessagesRequest = parse(&body).map_err(anthropic)?;
        let p = prepare(&st, &req, false)?;
        let n = st.prompt(p.prompt, false)?.0.len();
        let mut v = json!({ "input_tokens": n });
        if let Some(m) = p.managed {
            v["context_management"] = m;
        }
        Ok::<_, ApiError>(Json(v).into_response())
    };
    res.await.unwrap_or_else(|e| anthropic(e).into_response())
}

/// `POST /v1/messages/apply-template`: the prompt a Messages request
/// renders to (context edits applied, not remembered; not pruned), as
/// llama.cpp's `/apply-template` does for chat requests.
pub async fn apply_template(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let res = async {
        let req: MessagesRequest = parse(&body).map_err(anthropic)?;
        let p = prepare(&st, &req, false)?;
        let mut v = json!({ "prompt": st.prompt_text(p.prompt)? });
        if let Some(m) = p.managed {
            v["context_management"] = m;
        }
        Ok::<_, ApiError>(Json(v).into_response())
    };
    res.await.unwrap_or_else(|e| anthropic(e).into_response())
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

fn tool_use(c: &ToolCall) -> Value {
    json!({"type": "tool_use", "id": format!("toolu_{:016x}", rand::random::<u64>()), "name": c.name, "input": c.arguments})
}

/// The `signature` of a thinking block: this server's digest of the
/// thinking (clients send it back; it is not checked).
fn signature(thinking: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(thinking.as_bytes());
    format!("decache-{}", d[..12].iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Whether the prompt's last tokens open a thinking block (a template
/// whose generation prompt ends with `<think>`): the reply starts inside it.
fn prompt_opens_thinking(st: &AppState, tokens: &[u32]) -> bool {
    st.engine().is_ok_and(|e| {
        let tail = &tokens[tokens.len().saturating_sub(8)..];
        e.model.tokenizer.decode(tail, true).trim_end().ends_with(thinking::OPEN)
    })
}

/// The content blocks of a streamed message: the open one and the next index.
#[derive(Default)]
struct Blocks {
    next: usize,
    open: Option<&'static str>,
}

impl Blocks {
    /// Open a block of `kind` (closing another kind), or keep the open one; its index.
    fn start(&mut self, out: &mut Vec<SsePayload>, kind: &'static str, block: Value) -> usize {
        if self.open != Some(kind) {
            self.stop(out);
            out.push((
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": self.next, "content_block": block}),
            ));
            self.open = Some(kind);
            self.next += 1;
        }
        self.next - 1
    }

    fn stop(&mut self, out: &mut Vec<SsePayload>) {
        if self.open.take().is_some() {
            out.push((Some("content_block_stop"), json!({"type": "content_block_stop", "index": self.next - 1})));
        }
    }

    fn delta(&mut self, out: &mut Vec<SsePayload>, kind: &'static str, block: Value, delta: Value) {
        let index = self.start(out, kind, block);
        out.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": index, "delta": delta})));
    }

    fn text(&mut self, out: &mut Vec<SsePayload>, t: &str) {
        self.delta(out, "text", json!({"type": "text", "text": ""}), json!({"type": "text_delta", "text": t}));
    }

    fn thinking(&mut self, out: &mut Vec<SsePayload>, t: &str) {
        let block = json!({"type": "thinking", "thinking": "", "signature": ""});
        self.delta(out, "thinking", block, json!({"type": "thinking_delta", "thinking": t}));
    }
}

/// A streamed reply's state: its blocks, the thinking so far (for its
/// signature), the reply split into thinking, text and calls.
#[derive(Default)]
struct Streamed {
    blocks: Blocks,
    thought: String,
    split: Split,
    /// The request asked for thinking (else a harmony model's analysis is dropped).
    think: bool,
}

impl Streamed {
    fn pieces(&mut self, out: &mut Vec<SsePayload>, pieces: Vec<Piece>) {
        for piece in pieces {
            match piece {
                Piece::Thinking(_) | Piece::EndThinking if !self.think => {}
                Piece::Thinking(t) => {
                    self.thought.push_str(&t);
                    self.blocks.thinking(out, &t);
                }
                Piece::EndThinking => {
                    // Opened even when empty (`<think></think>`), then signed and closed.
                    self.blocks.start(out, "thinking", json!({"type": "thinking", "thinking": "", "signature": ""}));
                    let sig = json!({"type": "signature_delta", "signature": signature(&self.thought)});
                    self.blocks.delta(out, "thinking", Value::Null, sig);
                    self.blocks.stop(out);
                }
                Piece::Text(t) => self.blocks.text(out, &t),
            }
        }
    }
}

async fn answer(st: Arc<AppState>, req: MessagesRequest) -> Result<Response, ApiError> {
    if req.max_tokens.is_none() {
        return Err(bad_at("max_tokens", "required: the most tokens to generate"));
    }
    let (mut opts, stop) = req.sampling().options(&st.opts.sampling)?;
    let Prepared { checked, prompt, managed } = prepare(&st, &req, true)?;
    st.steer(&prompt, &checked.rule.choice, &mut opts)?;
    let tools = !prompt.tools.is_empty();
    let (rule, think) = (checked.rule, checked.thinking);
    let (tokens, pruned) = st.prompt(prompt, true)?;
    let open = think && prompt_opens_thinking(&st, &tokens);
    let format = Format { think, open, ..st.reply_format(tools)? };
    let mut p = st.job(tokens, opts, stop)?;
    p.pruned = pruned;
    let id = format!("msg_{:016x}", rand::random::<u64>());
    let model = req.model.clone().unwrap_or_else(|| st.model_id.clone());
    if !req.stream {
        let (cache, f) = super::openai::collect(&mut p).await?;
        let w = format.whole(&f.text);
        let (calls, text) = (rule.apply(w.calls, "messages"), w.text);
        let mut content = Vec::new();
        if let Some(t) = w.reasoning.filter(|_| think) {
            content.push(json!({"type": "thinking", "thinking": t, "signature": signature(&t)}));
        }
        if !text.is_empty() || (content.is_empty() && calls.is_empty()) {
            content.push(json!({"type": "text", "text": text}));
        }
        content.extend(calls.iter().map(tool_use));
        let reason = if calls.is_empty() { stop_reason(f.reason, f.stop_hit.as_deref()) } else { "tool_use" };
        let mut v = json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content,
            "stop_reason": reason, "stop_sequence": f.stop_hit,
            "usage": usage(p.prompt_tokens, f.predicted_n, Some(&cache)),
            "timings": timings(&f), "decache": decache(&cache, p.pruned, f.reason),
        });
        if let Some(m) = managed {
            v["context_management"] = m;
        }
        return Ok(Json(v).into_response());
    }
    let (input, pruned) = (p.prompt_tokens, p.pruned);
    let mut s = Streamed { split: format.splitter(), think, ..Streamed::default() };
    let stream = event_stream(p, false, move |ev, out: &mut Vec<SsePayload>, cache: &mut Option<CacheUse>| match ev {
        JobEvent::Started(c) => {
            let msg = json!({"id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": usage(input, 0, Some(&c))});
            out.push((Some("message_start"), json!({"type": "message_start", "message": msg})));
            if !think {
                s.blocks.start(out, "text", json!({"type": "text", "text": ""}));
            }
            out.push((Some("ping"), json!({"type": "ping"})));
            *cache = Some(c);
        }
        JobEvent::Text(t) => {
            let p = s.split.push(&t);
            s.pieces(out, p);
        }
        JobEvent::Done(f) => {
            let (p, calls) = s.split.finish();
            s.pieces(out, p);
            let calls = rule.apply(calls, "messages");
            if s.blocks.next == 0 && calls.is_empty() {
                s.blocks.start(out, "text", json!({"type": "text", "text": ""}));
            }
            s.blocks.stop(out);
            for c in &calls {
                let mut block = tool_use(c);
                let input = std::mem::replace(&mut block["input"], json!({}));
                let i = s.blocks.start(out, "tool_use", block);
                let delta = json!({"type": "input_json_delta", "partial_json": input.to_string()});
                out.push((
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": i, "delta": delta}),
                ));
                s.blocks.stop(out);
            }
            let reason = if calls.is_empty() { stop_reason(f.reason, f.stop_hit.as_deref()) } else { "tool_use" };
            let mut delta = json!({"type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": f.stop_hit},
                "usage": {"output_tokens": f.predicted_n}, "timings": timings(&f)});
            if let Some(c) = cache {
                delta["decache"] = decache(c, pruned, f.reason);
            }
            if let Some(m) = &managed {
                delta["context_management"] = m.clone();
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

    fn request(v: Value) -> Result<Checked, ApiError> {
        serde_json::from_value::<MessagesRequest>(v).map_err(|e| bad(e.to_string()))?.check()
    }

    /// A request shaped as Claude Code sends one.
    fn claude_code() -> Value {
        json!({
            "model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": true,
            "metadata": {"user_id": "user_abc_account_def_session_123"},
            "system": [
                {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.3.a1b; cc_entrypoint=cli; cch=4f2e1;"},
                {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.", "cache_control": {"type": "ephemeral"}}
            ],
            "thinking": {"type": "enabled", "budget_tokens": 31999},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "tools": [
                {"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
                {"name": "mcp__docs__search", "description": "Search the docs", "input_schema": {"type": "object"}, "defer_loading": true},
                {"name": "mcp__db__query", "description": "Query", "input_schema": {"type": "object"}, "defer_loading": true},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
            ],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": false},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Why does the parser fail?", "cache_control": {"type": "ephemeral"}}]},
                {"role": "system", "content": "<env>cwd: /repo</env>"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Read the parser first.", "signature": "EqQBCkYIBx"},
                    {"type": "redacted_thinking", "data": "EmwKAhgBEgy"},
                    {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "/repo/parser.rs"}},
                    {"type": "tool_use", "id": "toolu_02", "name": "ToolSearch", "input": {"query": "docs"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "is_error": true, "content": [
                        {"type": "text", "text": "File does not exist."},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
                    {"type": "tool_result", "tool_use_id": "toolu_02", "content": [{"type": "tool_reference", "tool_name": "mcp__docs__search"}]},
                    {"type": "text", "text": "<system-reminder>Keep the todo list current.</system-reminder>", "cache_control": {"type": "ephemeral"}}
                ]}
            ]
        })
    }

    #[test]
    fn a_claude_code_request_is_taken_whole() {
        let c = request(claude_code()).unwrap();
        assert!(c.thinking && c.managed);
        let names: Vec<&str> = c.tools.iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Read", "mcp__docs__search"], "the loaded deferred tool, not the other, not web search");
        let p = c.prompt(false);
        assert_eq!(p.messages[0].content, "You are Claude Code, Anthropic's official CLI for Claude.");
        let text: Vec<(&str, &str)> = p.messages.iter().map(|m| (m.role.as_str(), m.content.as_str())).collect();
        assert_eq!(text[2], ("system", "<env>cwd: /repo</env>"));
        assert!(text[3].1.starts_with("<tool_call>") && !text[3].1.contains("Read the parser"), "{:?}", text[3]);
        assert_eq!(text[4], ("tool", "Error: File does not exist.\n[image omitted: this model reads text only]"));
        assert_eq!(text[5], ("tool", "[tool mcp__docs__search loaded]"));
        assert_eq!(text[6].0, "user");
        // With a template that reads `<think>`, the thinking comes back.
        assert!(c.prompt(true).messages[3].content.starts_with("<think>\nRead the parser first.\n</think>\n\n"));
        // The billing line changes on every request; the prompt does not.
        let mut other = claude_code();
        other["system"][0]["text"] =
            json!("x-anthropic-billing-header: cc_version=2.1.3.a1b; cc_entrypoint=cli; cch=0b9c8;");
        assert_eq!(request(other).unwrap().prompt(true), c.prompt(true));
    }

    #[test]
    fn tool_choice_is_checked_and_asked_for() {
        let base = json!({"max_tokens": 8, "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]});
        let with = |choice: Value| {
            let mut r = base.clone();
            r["tool_choice"] = choice;
            request(r)
        };
        let any = with(json!({"type": "any"})).unwrap();
        assert_eq!(any.rule, CallRule { choice: ToolChoice::Any, single: false });
        assert!(any.prompt(false).messages[0].content.ends_with("call one of the offered tools.)"));
        let one = with(json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true})).unwrap();
        assert!(one.rule.single);
        assert!(one.prompt(false).messages[0].content.ends_with("call the tool `get_weather`.)"));
        assert!(with(json!({"type": "none"})).unwrap().tools.is_empty());
        assert_eq!(with(json!({"type": "auto"})).unwrap().prompt(false).messages[0].content, "Weather in Paris?");
        for (choice, at) in [
            (json!({"type": "sometimes"}), "tool_choice.type"),
            (json!({"type": "tool"}), "tool_choice.name"),
            (json!({"type": "tool", "name": "nope"}), "tool_choice.name"),
            (json!("any"), "tool_choice"),
            (json!({"type": "any", "disable_parallel_tool_use": "yes"}), "tool_choice.disable_parallel_tool_use"),
        ] {
            let e = with(choice.clone()).unwrap_err();
            assert!(e.message.starts_with(at), "{choice}: {}", e.message);
            assert_eq!(e.dialect, Dialect::Anthropic);
        }
        // The rule on the reply: a missing call is logged, extra calls dropped.
        let call = |n: &str| ToolCall { name: n.into(), arguments: json!({}) };
        assert_eq!(one.rule.apply(vec![call("get_weather"), call("other")], "test").len(), 1);
        assert!(any.rule.apply(vec![], "test").is_empty());
    }

    #[test]
    fn thinking_and_odd_fields_are_checked() {
        let base = json!({"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
        for (field, v, ok) in [
            ("thinking", json!({"type": "adaptive"}), true),
            ("thinking", json!({"type": "disabled"}), true),
            ("thinking", json!({"type": "enabled"}), true),
            ("thinking", json!({"type": "sometimes"}), false),
            ("thinking", json!({"type": "enabled", "budget_tokens": "lots"}), false),
            ("thinking", json!(true), false),
            ("tools", json!([{"type": 5, "name": "x"}]), false),
            ("tools", json!([{"name": "x", "defer_loading": "no"}]), false),
            ("tools", json!([{"description": "no name"}]), false),
            ("tools", json!([{"type": "code_execution_20250825", "name": "code_execution"}]), true),
        ] {
            let mut r = base.clone();
            r[field] = v.clone();
            let res = request(r);
            assert_eq!(res.is_ok(), ok, "{field}: {v}: {res:?}");
            if let Err(e) = res {
                assert!(e.message.starts_with(field), "{field}: {}", e.message);
            }
        }
    }
}

//! OpenAI's Responses API: `POST /v1/responses`, whole or as its named
//! server-sent events (`response.created` ... `response.completed`), the API
//! Codex CLI speaks. `instructions` and `input` (a string, or items:
//! messages, function calls and their outputs, reasoning, ...) are rendered
//! through the chat template like a chat request; `function` tools are
//! offered through the same machinery (tool types decache cannot run are
//! skipped). Stored responses (`store`, on by default) keep their whole
//! history in memory, bounded, so that `previous_response_id` continues one
//! and `GET /v1/responses/{id}` returns it. Errors use OpenAI's error body.
use super::anthropic::thinking::Piece;
use super::engine::{CacheUse, Finish, FinishReason, JobEvent};
use super::error::ApiError;
use super::openai::{collect, decache, event_stream, sse, timings, SsePayload};
use super::prune::Pruned;
use super::reply::Split;
use super::request::{ChatPrompt, Sampling, ToolChoice, MAX_MESSAGES};
use super::tools::{render_calls, ToolCall};
use super::AppState;
use crate::tokenizer::ChatMessage;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Responses kept for `previous_response_id` and `GET /v1/responses/{id}`.
pub const STORED_RESPONSES: usize = 256;
/// Bytes (as JSON) those responses may hold together; the oldest go first.
pub const STORED_BYTES: usize = 256 << 20;

/// What stands in for an image, a file or audio: the model reads text only.
const NO_IMAGE: &str = "[an image was attached here; this model reads text only]";
const NO_AUDIO: &str = "[audio was attached here; this model reads text only]";

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// A field of the request body, if present and not null, as `T`: a value
/// of the wrong type is a 400 naming the field.
fn field<T: DeserializeOwned>(o: &Map<String, Value>, name: &str) -> Result<Option<T>, ApiError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(|e| bad(format!("{name}: {e}")).param(name)),
    }
}

/// A `/v1/responses` body, checked field by field.
#[derive(Debug, Default)]
pub struct ResponsesRequest {
    pub model: Option<String>,
    /// A string, or a list of message items (rendered before the input).
    instructions: Option<Value>,
    /// The input items; a string input is one user message.
    input: Vec<Value>,
    /// The tools as given (echoed in the response).
    tools: Vec<Value>,
    tool_choice: Option<Value>,
    pub stream: bool,
    pub store: bool,
    pub previous_response_id: Option<String>,
    max_output_tokens: Option<i64>,
    max_tool_calls: Option<i64>,
    parallel_tool_calls: bool,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i32>,
    min_p: Option<f32>,
    seed: Option<i64>,
    auto_prune: bool,
    /// Fields accepted and echoed in the response object.
    echo: Map<String, Value>,
}

impl ResponsesRequest {
    /// Parse and check a request body: wrong types and impossible values
    /// are 400s naming the field; fields decache has no use for are
    /// accepted (their types still checked), unknown ones ignored.
    pub fn parse(body: &[u8]) -> Result<ResponsesRequest, ApiError> {
        if body.is_empty() {
            return Err(bad("empty request body: expected a JSON object"));
        }
        let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("invalid request body: {e}")))?;
        let Value::Object(o) = v else {
            return Err(bad("invalid request body: expected a JSON object"));
        };
        let input = match o.get("input") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) if s.is_empty() => Vec::new(),
            Some(Value::String(s)) => vec![json!({"type": "message", "role": "user", "content": s})],
            Some(Value::Array(items)) => items.clone(),
            Some(_) => return Err(bad("input: expected a string or a list of input items").param("input")),
        };
        if input.len() > MAX_MESSAGES {
            return Err(bad(format!("input: {} items, at most {MAX_MESSAGES}", input.len())).param("input"));
        }
        let instructions = match o.get("instructions") {
            None | Some(Value::Null) => None,
            Some(v @ (Value::String(_) | Value::Array(_))) => Some(v.clone()),
            Some(_) => {
                return Err(bad("instructions: expected a string (or a list of message items)").param("instructions"))
            }
        };
        let tools: Vec<Value> = field(&o, "tools")?.unwrap_or_default();
        let tool_choice: Option<Value> = field(&o, "tool_choice")?;
        match &tool_choice {
            None | Some(Value::Object(_)) => {}
            Some(Value::String(s)) if matches!(s.as_str(), "auto" | "none" | "required") => {}
            Some(other) => {
                return Err(bad(format!(
                    "tool_choice: {other} is not one of \"auto\", \"none\", \"required\" or an object naming a function"
                ))
                .param("tool_choice"))
            }
        }
        let max_output_tokens: Option<i64> = field(&o, "max_output_tokens")?;
        if let Some(m) = max_output_tokens.filter(|&m| m < 1) {
            return Err(bad(format!("max_output_tokens = {m}: must be at least 1")).param("max_output_tokens"));
        }
        let max_tool_calls: Option<i64> = field(&o, "max_tool_calls")?;
        if let Some(m) = max_tool_calls.filter(|&m| m < 1) {
            return Err(bad(format!("max_tool_calls = {m}: must be at least 1")).param("max_tool_calls"));
        }
        if field::<bool>(&o, "background")? == Some(true) {
            return Err(bad("background: background responses are not supported here").param("background"));
        }
        if o.get("conversation").is_some_and(|c| !c.is_null()) {
            return Err(bad("conversation: conversations are not supported here; continue with previous_response_id")
                .param("conversation"));
        }
        // Accepted for compatibility; only their types are checked.
        for name in ["metadata", "client_metadata", "reasoning", "text", "stream_options", "prompt"] {
            field::<Map<String, Value>>(&o, name)?;
        }
        for name in ["truncation", "service_tier", "user", "safety_identifier", "prompt_cache_key"] {
            field::<String>(&o, name)?;
        }
        field::<Vec<String>>(&o, "include")?;
        field::<i64>(&o, "top_logprobs")?;
        let mut echo = Map::new();
        for name in ["metadata", "reasoning", "text", "truncation", "service_tier", "user", "safety_identifier"] {
            if let Some(v) = o.get(name).filter(|v| !v.is_null()) {
                echo.insert(name.to_string(), v.clone());
            }
        }
        Ok(ResponsesRequest {
            model: field(&o, "model")?,
            instructions,
            input,
            tools,
            tool_choice,
            stream: field(&o, "stream")?.unwrap_or(false),
            store: field(&o, "store")?.unwrap_or(true),
            previous_response_id: field(&o, "previous_response_id")?,
            max_output_tokens,
            max_tool_calls,
            parallel_tool_calls: field(&o, "parallel_tool_calls")?.unwrap_or(true),
            temperature: field(&o, "temperature")?,
            top_p: field(&o, "top_p")?,
            top_k: field(&o, "top_k")?,
            min_p: field(&o, "min_p")?,
            seed: field(&o, "seed")?,
            auto_prune: field(&o, "auto_prune")?.unwrap_or(true),
            echo,
        })
    }

    /// The sampling fields in the chat request's shape (checked by `Sampling::options`).
    pub fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            seed: self.seed,
            max_tokens: self.max_output_tokens,
            ..Sampling::default()
        }
    }

    /// The function tools offered to the model, in OpenAI's chat shape.
    /// Tool types decache cannot run (`web_search`, `local_shell`,
    /// `custom`, `namespace`, `file_search`, ...) are skipped;
    /// `tool_choice` "none" offers nothing, and a named function (or
    /// `allowed_tools`) only those named.
    fn offered_tools(&self) -> Result<Vec<Value>, ApiError> {
        let choice = self.tool_choice.as_ref();
        if choice.and_then(Value::as_str) == Some("none") {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (i, t) in self.tools.iter().enumerate() {
            let at = format!("tools[{i}]");
            let o = t.as_object().ok_or_else(|| bad(format!("{at}: expected a tool object")).param(&at))?;
            if o.get("type").and_then(Value::as_str) != Some("function") {
                continue;
            }
            let name = match o.get("name").or_else(|| o.get("function").and_then(|f| f.get("name"))) {
                Some(Value::String(n)) if !n.is_empty() => n.clone(),
                _ => return Err(bad(format!("{at}.name: a function tool needs a name")).param(&at)),
            };
            let f = o.get("function").and_then(Value::as_object).unwrap_or(o);
            let mut func = json!({"name": name});
            if let Some(d) = f.get("description").filter(|d| d.is_string()) {
                func["description"] = d.clone();
            }
            func["parameters"] = f.get("parameters").filter(|p| p.is_object()).cloned().unwrap_or_else(|| json!({}));
            out.push(json!({"type": "function", "function": func}));
        }
        let allowed: Option<Vec<String>> = choice.filter(|c| c.is_object()).and_then(|c| {
            let names = |list: &Value| {
                list.as_array().map(|l| l.iter().filter_map(|t| t["name"].as_str().map(str::to_string)).collect())
            };
            match c.get("type").and_then(Value::as_str) {
                Some("function") => c.get("name").and_then(Value::as_str).map(|n| vec![n.to_string()]),
                Some("allowed_tools") => c.get("tools").and_then(names),
                _ => None,
            }
        });
        if let Some(names) = allowed {
            out.retain(|t| names.iter().any(|n| t["function"]["name"] == n.as_str()));
            if out.is_empty() {
                return Err(
                    bad(format!("tool_choice: no function tool named {}", names.join(", "))).param("tool_choice")
                );
            }
        }
        Ok(out)
    }

    /// The messages as the chat template takes them: the instructions, the
    /// stored history a `previous_response_id` continues, then the input;
    /// with the function tools offered.
    pub fn chat_prompt(&self, history: &[Value]) -> Result<ChatPrompt, ApiError> {
        let mut out = Vec::new();
        match &self.instructions {
            Some(Value::String(s)) if !s.is_empty() => out.push(ChatMessage::new("system", s.clone())),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    render_item(item, &format!("instructions[{i}]"), &mut out)?;
                }
            }
            _ => {}
        }
        let system = out.len();
        for (i, item) in history.iter().enumerate() {
            render_item(item, &format!("previous_response_id item {i}"), &mut out)?;
        }
        for (i, item) in self.input.iter().enumerate() {
            render_item(item, &format!("input[{i}]"), &mut out)?;
        }
        if out.len() > MAX_MESSAGES {
            return Err(
                bad(format!("{} messages with the stored history: at most {MAX_MESSAGES}", out.len())).param("input")
            );
        }
        if out[system..].iter().all(|m| m.role == "system") {
            let what = if self.input.is_empty() { "input is empty" } else { "input has no item the model can read" };
            return Err(bad(format!("{what}: a response needs a message to answer")).param("input"));
        }
        Ok(ChatPrompt { messages: out, tools: self.offered_tools()? })
    }

    /// Whether the model may call tools (some function tool is offered).
    fn tools_active(&self) -> bool {
        self.offered_tools().is_ok_and(|t| !t.is_empty())
    }

    /// The most calls to keep from one reply.
    fn call_limit(&self) -> usize {
        let n = if self.parallel_tool_calls { usize::MAX } else { 1 };
        self.max_tool_calls.map_or(n, |m| n.min(m as usize))
    }
}

/// The text of a content field (a string or a list of parts); parts that
/// are no text (images, files, audio) become a placeholder saying the model
/// reads text only. Also how many parts were text and how many were not.
fn content_text(v: &Value, at: &str) -> Result<(String, usize, usize), ApiError> {
    let parts = match v {
        Value::Null => return Ok((String::new(), 0, 0)),
        Value::String(s) => return Ok((s.clone(), 1, 0)),
        Value::Array(parts) => parts,
        _ => return Err(bad(format!("{at}: expected a string or a list of content parts")).param(at)),
    };
    let (mut text, mut texts, mut media, mut last_media) = (String::new(), 0, 0, false);
    for (j, p) in parts.iter().enumerate() {
        let at = format!("{at}[{j}]");
        let o = p.as_object().ok_or_else(|| bad(format!("{at}: expected a content part object")).param(&at))?;
        let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
        let piece = match kind {
            "input_image" | "image_url" | "image" => Some((true, NO_IMAGE.to_string())),
            "input_audio" | "audio" => Some((true, NO_AUDIO.to_string())),
            "input_file" | "file" => {
                let name = o.get("filename").and_then(Value::as_str).map(|n| format!(" ({n})")).unwrap_or_default();
                Some((true, format!("[a file{name} was attached here; this model reads text only]")))
            }
            "refusal" => o.get("refusal").and_then(Value::as_str).map(|r| (false, r.to_string())),
            _ => match o.get("text") {
                Some(Value::String(t)) => Some((false, t.clone())),
                Some(Value::Null) | None
                    if matches!(kind, "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text") =>
                {
                    return Err(
                        bad(format!("{at}.text: missing (a {kind} part needs its text)")).param(&format!("{at}.text"))
                    )
                }
                Some(Value::Null) | None => None,
                Some(_) => return Err(bad(format!("{at}.text: expected a string")).param(&format!("{at}.text"))),
            },
        };
        let Some((is_media, piece)) = piece else { continue };
        if !text.is_empty() && (is_media || last_media) {
            text.push('\n');
        }
        text.push_str(&piece);
        last_media = is_media;
        if is_media {
            media += 1;
        } else {
            texts += 1;
        }
    }
    Ok((text, texts, media))
}

/// A call by the assistant: joined to the assistant turn it follows (its
/// text and earlier calls), else a turn of its own; in the Hermes
/// convention a chat request's `tool_calls` are rendered in.
fn push_call(out: &mut Vec<ChatMessage>, call: ToolCall) {
    let text = render_calls(&[call]);
    match out.last_mut() {
        Some(m) if m.role == "assistant" => {
            if !m.content.is_empty() {
                m.content.push('\n');
            }
            m.content.push_str(&text);
        }
        _ => out.push(ChatMessage::new("assistant", text)),
    }
}

fn string_field<'a>(o: &'a Map<String, Value>, name: &str, at: &str) -> Result<Option<&'a str>, ApiError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("{at}.{name}: expected a string")).param(&format!("{at}.{name}"))),
    }
}

/// Render one input item (`at` names it in errors) onto the messages.
fn render_item(item: &Value, at: &str, out: &mut Vec<ChatMessage>) -> Result<(), ApiError> {
    let o = item.as_object().ok_or_else(|| bad(format!("{at}: expected an input item object")).param(at))?;
    let kind = match o.get("type") {
        Some(Value::String(t)) => t.as_str(),
        None | Some(Value::Null) if o.contains_key("role") => "message",
        None | Some(Value::Null) => {
            return Err(bad(format!("{at}: an item needs a `type` (or a `role`, for a message)")).param(at))
        }
        Some(_) => return Err(bad(format!("{at}.type: expected a string")).param(&format!("{at}.type"))),
    };
    let output = |o: &Map<String, Value>| -> Result<String, ApiError> {
        Ok(content_text(o.get("output").unwrap_or(&Value::Null), &format!("{at}.output"))?.0)
    };
    match kind {
        "message" => {
            let role = string_field(o, "role", at)?
                .ok_or_else(|| bad(format!("{at}.role: missing")).param(&format!("{at}.role")))?;
            if !matches!(role, "user" | "assistant" | "system" | "developer") {
                return Err(bad(format!("{at}.role: unknown role '{role}' (user, assistant, system or developer)"))
                    .param(&format!("{at}.role")));
            }
            let content = o
                .get("content")
                .filter(|c| !c.is_null())
                .ok_or_else(|| bad(format!("{at}.content: missing")).param(&format!("{at}.content")))?;
            let (text, texts, media) = content_text(content, &format!("{at}.content"))?;
            if role == "user" && media > 0 && texts == 0 {
                return Err(bad(format!(
                    "{at}.content: only images, files or audio, and this model reads text only; send the message as text"
                ))
                .param(&format!("{at}.content")));
            }
            let role = if role == "developer" { "system" } else { role };
            out.push(ChatMessage::new(role, text));
        }
        // Some clients send bare text parts as items: the user speaking.
        "input_text" | "text" => {
            let text = string_field(o, "text", at)?.unwrap_or_default();
            out.push(ChatMessage::new("user", text));
        }
        "function_call" => {
            let name = string_field(o, "name", at)?
                .filter(|n| !n.is_empty())
                .ok_or_else(|| bad(format!("{at}.name: a function call needs a name")).param(&format!("{at}.name")))?;
            let args = o.get("arguments").cloned().unwrap_or(Value::Null);
            let calls = super::tools::from_openai(&[json!({"name": name, "arguments": args})]).map_err(|_| {
                bad(format!("{at}.arguments: expected a JSON object (as a string)")).param(&format!("{at}.arguments"))
            })?;
            calls.into_iter().for_each(|c| push_call(out, c));
        }
        "custom_tool_call" => {
            let name = string_field(o, "name", at)?.unwrap_or("custom_tool");
            let input = string_field(o, "input", at)?.unwrap_or_default();
            push_call(out, ToolCall { name: name.to_string(), arguments: json!({ "input": input }) });
        }
        "local_shell_call" => {
            let action = o.get("action").filter(|a| a.is_object()).cloned().unwrap_or_else(|| json!({}));
            push_call(out, ToolCall { name: "local_shell".into(), arguments: action });
        }
        "function_call_output" | "custom_tool_call_output" | "local_shell_call_output" => {
            out.push(ChatMessage::new("tool", output(o)?));
        }
        // Reasoning (its summary included) is not shown to the model again,
        // as a chat request's earlier thinking is not; calls and their
        // results that decache did not make (web search, file search,
        // computer use, MCP, references to stored items) are skipped.
        _ => {}
    }
    Ok(())
}

/// A stored response's history: its own input and output items after
/// those of the response it continued (shared, not copied).
pub struct History {
    parent: Option<Arc<History>>,
    items: Vec<Value>,
    len: usize,
}

impl History {
    pub fn new(parent: Option<Arc<History>>, items: Vec<Value>) -> History {
        let len = parent.as_ref().map_or(0, |p| p.len) + items.len();
        History { parent, items, len }
    }

    /// Every item, oldest first.
    pub fn items(&self) -> Vec<Value> {
        let mut chain = vec![self];
        while let Some(p) = chain.last().and_then(|h| h.parent.as_deref()) {
            chain.push(p);
        }
        chain.iter().rev().flat_map(|h| h.items.iter().cloned()).collect()
    }
}

impl Drop for History {
    /// Unlink a long chain one node at a time (no deep recursion).
    fn drop(&mut self) {
        let mut next = self.parent.take();
        while let Some(node) = next {
            match Arc::try_unwrap(node) {
                Ok(mut h) => next = h.parent.take(),
                Err(_) => break,
            }
        }
    }
}

struct Entry {
    response: Arc<Value>,
    history: Arc<History>,
    bytes: usize,
}

#[derive(Default)]
struct Shelf {
    map: HashMap<String, Entry>,
    order: VecDeque<String>,
    bytes: usize,
}

/// The stored responses: the newest `max` (and at most `max_bytes` of
/// them as JSON), the oldest dropped first.
pub struct Store {
    shelf: Mutex<Shelf>,
    max: usize,
    max_bytes: usize,
}

impl Default for Store {
    fn default() -> Store {
        Store::new(STORED_RESPONSES, STORED_BYTES)
    }
}

impl Store {
    pub fn new(max: usize, max_bytes: usize) -> Store {
        Store { shelf: Mutex::default(), max, max_bytes }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shelf> {
        self.shelf.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn put(&self, id: String, response: Value, history: Arc<History>) {
        let bytes = response.to_string().len() + history.items.iter().map(|v| v.to_string().len()).sum::<usize>();
        let mut s = self.lock();
        s.bytes += bytes;
        if let Some(old) = s.map.insert(id.clone(), Entry { response: Arc::new(response), history, bytes }) {
            s.bytes -= old.bytes;
            s.order.retain(|x| *x != id);
        }
        s.order.push_back(id);
        while s.map.len() > self.max || s.bytes > self.max_bytes {
            let Some(old) = s.order.pop_front() else { break };
            if let Some(e) = s.map.remove(&old) {
                s.bytes -= e.bytes;
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<(Arc<Value>, Arc<History>)> {
        self.lock().map.get(id).map(|e| (e.response.clone(), e.history.clone()))
    }

    pub fn remove(&self, id: &str) -> bool {
        let mut s = self.lock();
        match s.map.remove(id) {
            Some(e) => {
                s.bytes -= e.bytes;
                s.order.retain(|x| x != id);
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("Response with id '{id}' not found."))
        .error_type("invalid_request_error")
}

fn previous_not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("Previous response with id '{id}' not found."))
        .param("previous_response_id")
        .code("previous_response_not_found")
        .error_type("invalid_request_error")
}

fn now() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn hex_id(prefix: &str) -> String {
    format!("{prefix}_{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>())
}

/// The prompt for a request: its stored history (an unknown
/// `previous_response_id` is a 404) and the messages to render.
fn prompt_of(st: &AppState, req: &ResponsesRequest) -> Result<(Option<Arc<History>>, ChatPrompt), ApiError> {
    let history = match &req.previous_response_id {
        Some(id) => Some(st.responses.get(id).ok_or_else(|| previous_not_found(id))?.1),
        None => None,
    };
    let items = history.as_ref().map(|h| h.items()).unwrap_or_default();
    let prompt = req.chat_prompt(&items)?;
    Ok((history, prompt))
}

/// The prompt text a Responses body renders to (`POST /apply-template`).
pub fn prompt_text(st: &AppState, body: &[u8]) -> Result<String, ApiError> {
    let req = ResponsesRequest::parse(body)?;
    st.prompt_text(prompt_of(st, &req)?.1)
}

/// `POST /v1/responses/input_tokens`: the prompt's token count, as rendered.
pub async fn input_tokens(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let count = || -> Result<Response, ApiError> {
        let req = ResponsesRequest::parse(&body)?;
        let n = st.prompt(prompt_of(&st, &req)?.1, false)?.0.len();
        Ok(Json(json!({"object": "response.input_tokens", "input_tokens": n})).into_response())
    };
    count().unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/responses/{id}`: a stored response.
pub async fn retrieve(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match st.responses.get(&id) {
        Some((r, _)) => Json(r.as_ref().clone()).into_response(),
        None => not_found(&id).into_response(),
    }
}

/// `DELETE /v1/responses/{id}`: forget a stored response.
pub async fn delete(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match st.responses.remove(&id) {
        true => Json(json!({"id": id, "object": "response.deleted", "deleted": true})).into_response(),
        false => not_found(&id).into_response(),
    }
}

/// `POST /v1/responses`.
pub async fn create(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    answer(st, &body).await.unwrap_or_else(IntoResponse::into_response)
}

/// The response object before generation: what the request asked for,
/// `in_progress`, no output yet.
fn skeleton(st: &AppState, req: &ResponsesRequest, id: &str) -> Value {
    let d = &st.opts.sampling;
    let instructions = match &req.instructions {
        Some(i) => i.clone(),
        None => Value::Null,
    };
    let mut r = json!({
        "id": id, "object": "response", "created_at": now(), "status": "in_progress",
        "background": false, "error": null, "incomplete_details": null,
        "instructions": instructions, "max_output_tokens": req.max_output_tokens, "max_tool_calls": req.max_tool_calls,
        "model": st.model_id, "output": [], "parallel_tool_calls": req.parallel_tool_calls,
        "previous_response_id": req.previous_response_id, "store": req.store,
        "temperature": req.temperature.unwrap_or(d.temperature), "top_p": req.top_p.unwrap_or(d.top_p),
        "tool_choice": req.tool_choice.clone().unwrap_or_else(|| json!("auto")), "tools": req.tools,
        "metadata": {}, "reasoning": {"effort": null, "summary": null}, "text": {"format": {"type": "text"}},
        "truncation": "disabled", "service_tier": "default", "user": null, "usage": null,
    });
    for (k, v) in &req.echo {
        r[k] = v.clone();
    }
    r
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": [text_part(text)]})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// The model's reasoning (a harmony model's analysis) as an output item.
fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"id": id, "type": "reasoning", "summary": [], "content": [reasoning_part(text)]})
}

fn reasoning_part(text: &str) -> Value {
    json!({"type": "reasoning_text", "text": text})
}

fn call_item(id: &str, call_id: &str, c: &ToolCall, status: &str, arguments: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id, "name": c.name, "arguments": arguments})
}

pub fn usage(prompt_tokens: usize, f: &Finish) -> Value {
    json!({
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": f.cache_n},
        "output_tokens": f.predicted_n,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + f.predicted_n,
    })
}

/// Whether a reply without calls was cut: at the token limit, or because
/// the context filled up (`decache.context_full` tells which).
fn cut(f: &Finish, called: bool) -> bool {
    !called && matches!(f.reason, FinishReason::Length | FinishReason::ContextFull)
}

/// The finished response object.
fn finished(
    base: &Value,
    output: Vec<Value>,
    f: &Finish,
    prompt_tokens: usize,
    cache: Option<&CacheUse>,
    pruned: Pruned,
    called: bool,
) -> Value {
    let mut r = base.clone();
    let incomplete = cut(f, called);
    r["status"] = json!(if incomplete { "incomplete" } else { "completed" });
    if incomplete {
        r["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    let text: String = output
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["text"].as_str().map(str::to_string))
        .collect();
    r["output_text"] = json!(text);
    r["output"] = json!(output);
    r["usage"] = usage(prompt_tokens, f);
    r["timings"] = timings(f);
    if let Some(c) = cache {
        r["decache"] = decache(c, pruned, f.reason);
    }
    r
}

/// Keep a finished response (its history: what it continued, its input,
/// its output) when the request asked to store it.
fn keep(st: &AppState, parent: Option<Arc<History>>, input: Vec<Value>, response: &Value) {
    let id = response["id"].as_str().unwrap_or_default().to_string();
    let mut items = input;
    items.extend(response["output"].as_array().cloned().unwrap_or_default());
    st.responses.put(id, response.clone(), Arc::new(History::new(parent, items)));
}

async fn answer(st: Arc<AppState>, body: &[u8]) -> Result<Response, ApiError> {
    let req = ResponsesRequest::parse(body)?;
    st.check_model(req.model.as_deref())?;
    let (parent, prompt) = prompt_of(&st, &req)?;
    let (mut opts, stop) = req.sampling().options(&st.opts.sampling)?;
    // A named function is the only tool offered (`offered_tools`).
    st.steer(&prompt, &ToolChoice::Auto, &mut opts)?;
    let (tokens, pruned) = st.prompt(prompt, req.auto_prune)?;
    let mut p = st.job(tokens, opts, stop)?;
    p.pruned = pruned;
    let id = hex_id("resp");
    let base = skeleton(&st, &req, &id);
    let (format, limit) = (st.reply_format(req.tools_active())?, req.call_limit());
    let saved = req.store.then(|| (parent, req.input.clone()));
    if !req.stream {
        let (cache, f) = collect(&mut p).await?;
        let w = format.whole(&f.text);
        let (text, mut calls) = (w.text, w.calls);
        calls.truncate(limit);
        let mut output = Vec::new();
        if let Some(r) = &w.reasoning {
            output.push(reasoning_item(&hex_id("rs"), r));
        }
        let status = if cut(&f, !calls.is_empty()) { "incomplete" } else { "completed" };
        if !text.is_empty() || calls.is_empty() {
            output.push(message_item(&hex_id("msg"), &text, status));
        }
        for c in &calls {
            output.push(call_item(&hex_id("fc"), &hex_id("call"), c, "completed", &c.arguments.to_string()));
        }
        let r = finished(&base, output, &f, p.prompt_tokens, Some(&cache), p.pruned, !calls.is_empty());
        if let Some((parent, input)) = saved {
            keep(&st, parent, input, &r);
        }
        return Ok(Json(r).into_response());
    }
    let mut s = Streamer {
        st: st.clone(),
        base,
        seq: 0,
        split: format.splitter(),
        reasoning: None,
        message: None,
        output: Vec::new(),
        prompt_tokens: p.prompt_tokens,
        pruned: p.pruned,
        limit,
        saved,
    };
    let stream =
        event_stream(p, false, move |ev, out: &mut Vec<SsePayload>, cache: &mut Option<CacheUse>| s.on(ev, out, cache));
    Ok(sse(&st, stream))
}

/// A streamed response: the events of its items as the text comes.
struct Streamer {
    st: Arc<AppState>,
    base: Value,
    seq: u64,
    split: Split,
    /// The reasoning item being streamed: its id and text so far.
    reasoning: Option<(String, String)>,
    /// The message item being streamed: its id and text so far.
    message: Option<(String, String)>,
    output: Vec<Value>,
    prompt_tokens: usize,
    pruned: Pruned,
    limit: usize,
    saved: Option<(Option<Arc<History>>, Vec<Value>)>,
}

impl Streamer {
    fn event(&mut self, name: &'static str, mut data: Value, out: &mut Vec<SsePayload>) {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push((Some(name), data));
    }

    /// Reasoning streamed: its item opened (a message before it closed) and the delta.
    fn reason(&mut self, t: &str, out: &mut Vec<SsePayload>) {
        self.close_message("completed", out);
        let index = self.output.len();
        if self.reasoning.is_none() {
            let id = hex_id("rs");
            let item = json!({"id": id, "type": "reasoning", "summary": [], "content": []});
            self.event("response.output_item.added", json!({"output_index": index, "item": item}), out);
            let part = json!({"item_id": id, "output_index": index, "content_index": 0, "part": reasoning_part("")});
            self.event("response.content_part.added", part, out);
            self.reasoning = Some((id, String::new()));
        }
        if t.is_empty() {
            return;
        }
        let Some((id, text)) = self.reasoning.as_mut() else { return };
        text.push_str(t);
        let d = json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t});
        self.event("response.reasoning_text.delta", d, out);
    }

    fn close_reasoning(&mut self, out: &mut Vec<SsePayload>) {
        let Some((id, text)) = self.reasoning.take() else { return };
        let index = self.output.len();
        let at = json!({"item_id": id, "output_index": index, "content_index": 0});
        let mut done = at.clone();
        done["text"] = json!(text);
        self.event("response.reasoning_text.done", done, out);
        let mut part = at;
        part["part"] = reasoning_part(&text);
        self.event("response.content_part.done", part, out);
        let item = reasoning_item(&id, &text);
        self.event("response.output_item.done", json!({"output_index": index, "item": item}), out);
        self.output.push(item);
    }

    fn pieces(&mut self, pieces: Vec<Piece>, out: &mut Vec<SsePayload>) {
        for p in pieces {
            match p {
                Piece::Thinking(t) => self.reason(&t, out),
                Piece::EndThinking => {
                    self.reason("", out);
                    self.close_reasoning(out);
                }
                Piece::Text(t) => self.text(&t, out),
            }
        }
    }

    fn text(&mut self, t: &str, out: &mut Vec<SsePayload>) {
        self.close_reasoning(out);
        let index = self.output.len();
        if self.message.is_none() {
            let id = hex_id("msg");
            let item =
                json!({"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []});
            self.event("response.output_item.added", json!({"output_index": index, "item": item}), out);
            let part = json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part("")});
            self.event("response.content_part.added", part, out);
            self.message = Some((id, String::new()));
        }
        if t.is_empty() {
            return;
        }
        let Some((id, text)) = self.message.as_mut() else { return };
        text.push_str(t);
        let d = json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t, "logprobs": []});
        self.event("response.output_text.delta", d, out);
    }

    fn close_message(&mut self, status: &str, out: &mut Vec<SsePayload>) {
        let Some((id, text)) = self.message.take() else { return };
        let index = self.output.len();
        let at = json!({"item_id": id, "output_index": index, "content_index": 0});
        let mut done = at.clone();
        done["text"] = json!(text);
        done["logprobs"] = json!([]);
        self.event("response.output_text.done", done, out);
        let mut part = at;
        part["part"] = text_part(&text);
        self.event("response.content_part.done", part, out);
        let item = message_item(&id, &text, status);
        self.event("response.output_item.done", json!({"output_index": index, "item": item}), out);
        self.output.push(item);
    }

    fn call(&mut self, c: &ToolCall, out: &mut Vec<SsePayload>) {
        let (index, id, call_id) = (self.output.len(), hex_id("fc"), hex_id("call"));
        let args = c.arguments.to_string();
        let added = call_item(&id, &call_id, c, "in_progress", "");
        self.event("response.output_item.added", json!({"output_index": index, "item": added}), out);
        let at = json!({"item_id": id, "output_index": index});
        let mut delta = at.clone();
        delta["delta"] = json!(args);
        self.event("response.function_call_arguments.delta", delta, out);
        let mut done = at;
        done["name"] = json!(c.name);
        done["arguments"] = json!(args);
        self.event("response.function_call_arguments.done", done, out);
        let item = call_item(&id, &call_id, c, "completed", &args);
        self.event("response.output_item.done", json!({"output_index": index, "item": item}), out);
        self.output.push(item);
    }

    fn on(&mut self, ev: JobEvent, out: &mut Vec<SsePayload>, cache: &mut Option<CacheUse>) {
        match ev {
            JobEvent::Started(c) => {
                let r = self.base.clone();
                self.event("response.created", json!({ "response": r }), out);
                self.event("response.in_progress", json!({ "response": self.base.clone() }), out);
                *cache = Some(c);
            }
            JobEvent::Text(t) => {
                let p = self.split.push(&t);
                self.pieces(p, out);
            }
            JobEvent::Done(f) => {
                let (rest, mut calls) = self.split.finish();
                self.pieces(rest, out);
                calls.truncate(self.limit);
                // A reply without calls has a message, empty or not.
                let texts = self.message.is_some() || self.output.iter().any(|i| i["type"] == "message");
                if calls.is_empty() && !texts {
                    self.text("", out);
                }
                let status = if cut(&f, !calls.is_empty()) { "incomplete" } else { "completed" };
                self.close_reasoning(out);
                self.close_message(status, out);
                for c in &calls {
                    self.call(c, out);
                }
                let output = std::mem::take(&mut self.output);
                let r = finished(
                    &self.base,
                    output,
                    &f,
                    self.prompt_tokens,
                    cache.as_ref(),
                    self.pruned,
                    !calls.is_empty(),
                );
                if let Some((parent, input)) = self.saved.take() {
                    keep(&self.st, parent, input, &r);
                }
                let name = if r["status"] == "incomplete" { "response.incomplete" } else { "response.completed" };
                self.event(name, json!({ "response": r }), out);
            }
            JobEvent::Failed(e) => {
                let err = ApiError::from(&e);
                let mut r = self.base.clone();
                r["status"] = json!("failed");
                r["error"] = json!({"code": err.code.unwrap_or("server_error"), "message": err.message});
                self.event("response.failed", json!({ "response": r }), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Result<ResponsesRequest, ApiError> {
        ResponsesRequest::parse(v.to_string().as_bytes())
    }

    fn roles_and_texts(p: &ChatPrompt) -> Vec<(String, String)> {
        p.messages.iter().map(|m| (m.role.clone(), m.content.clone())).collect()
    }

    #[test]
    fn items_render_as_chat_turns() {
        let r = req(json!({"instructions": "Be brief.", "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox: read-only."}]},
            {"role": "user", "content": [{"type": "input_text", "text": "Look at a.rs "}, {"type": "input_image", "image_url": "data:x"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "I should read it"}], "encrypted_content": "xx"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
            {"type": "function_call", "call_id": "c1", "name": "read", "arguments": "{\"path\":\"a.rs\"}"},
            {"type": "function_call", "call_id": "c2", "name": "ls", "arguments": ""},
            {"type": "function_call_output", "call_id": "c1", "output": "fn main() {}"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "a.rs"}]},
            {"type": "web_search_call", "id": "ws", "status": "completed"},
            {"type": "local_shell_call", "call_id": "c3", "action": {"type": "exec", "command": ["ls"]}},
            {"type": "local_shell_call_output", "call_id": "c3", "output": "a.rs"},
            {"type": "custom_tool_call", "call_id": "c4", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "c4", "output": "Done"},
            {"type": "something_new", "x": 1},
        ]}))
        .unwrap();
        let p = r.chat_prompt(&[]).unwrap();
        let m = roles_and_texts(&p);
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(m[0], s("system", "Be brief."));
        assert_eq!(m[1], s("system", "Sandbox: read-only."));
        assert_eq!(m[2], s("user", &format!("Look at a.rs \n{NO_IMAGE}")));
        assert_eq!(
            m[3],
            s("assistant", "Let me look.\n<tool_call>\n{\"name\": \"read\", \"arguments\": {\"path\": \"a.rs\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"ls\", \"arguments\": {}}\n</tool_call>")
        );
        assert_eq!(m[4], s("tool", "fn main() {}"));
        assert_eq!(m[5], s("tool", "a.rs"));
        assert!(m[6].0 == "assistant" && m[6].1.contains("\"name\": \"local_shell\"") && m[6].1.contains("[\"ls\"]"));
        assert_eq!(m[7], s("tool", "a.rs"));
        assert!(m[8].1.contains("\"input\": \"*** Begin Patch\""), "{:?}", m[8]);
        assert_eq!(m[9], s("tool", "Done"));
        assert_eq!(m.len(), 10, "reasoning, web search and unknown items are skipped: {m:?}");
        assert!(!m.iter().any(|(_, t)| t.contains("I should read it")));
    }

    #[test]
    fn tools_decache_cannot_run_are_skipped() {
        let tools = json!([
            {"type": "function", "name": "get_weather", "description": "Weather", "strict": true,
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"type": "web_search"}, {"type": "local_shell"}, {"type": "file_search", "vector_store_ids": []},
            {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
            {"type": "namespace", "name": "mcp", "tools": []},
            {"type": "function", "name": "ls"},
        ]);
        let r = req(json!({"input": "hi", "tools": tools})).unwrap();
        let p = r.chat_prompt(&[]).unwrap();
        let names: Vec<&str> = p.tools.iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["get_weather", "ls"]);
        assert_eq!(p.tools[1]["function"]["parameters"], json!({}));
        assert_eq!(p.tools[0]["function"]["description"], "Weather");
        let none = req(json!({"input": "hi", "tools": tools, "tool_choice": "none"})).unwrap();
        assert!(none.chat_prompt(&[]).unwrap().tools.is_empty());
        let one =
            req(json!({"input": "hi", "tools": tools, "tool_choice": {"type": "function", "name": "ls"}})).unwrap();
        assert_eq!(one.chat_prompt(&[]).unwrap().tools.len(), 1);
        let e = req(json!({"input": "hi", "tools": [{"type": "function"}]})).unwrap().chat_prompt(&[]).unwrap_err();
        assert!(e.message.starts_with("tools[0].name"), "{}", e.message);
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let cases = [
            (json!({"input": 5}), "input"),
            (json!({"input": ""}), "input"),
            (json!({"input": []}), "input"),
            (json!({"input": [{"type": "reasoning", "summary": []}]}), "input"),
            (json!({"input": "hi", "temperature": "hot"}), "temperature"),
            (json!({"input": "hi", "max_output_tokens": 0}), "max_output_tokens"),
            (json!({"input": "hi", "stream": "yes"}), "stream"),
            (json!({"input": "hi", "metadata": [1]}), "metadata"),
            (json!({"input": "hi", "include": "all"}), "include"),
            (json!({"input": "hi", "tool_choice": "sometimes"}), "tool_choice"),
            (json!({"input": "hi", "instructions": 3}), "instructions"),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
                "input[0].content",
            ),
            (json!({"input": [{"role": "wizard", "content": "hi"}]}), "input[0].role"),
            (json!({"input": ["hi"]}), "input[0]"),
            (json!({"input": [{"content": "hi"}]}), "input[0]"),
            (
                json!({"input": [{"role": "user", "content": "hi"}, {"type": "function_call", "name": "f", "arguments": "[1"}]}),
                "input[1].arguments",
            ),
            (json!({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}), "input[0].content[0].text"),
        ];
        for (body, name) in cases {
            let e = req(body.clone()).and_then(|r| r.chat_prompt(&[]).map(|_| r));
            let e = e.err().unwrap_or_else(|| panic!("accepted: {body}"));
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(e.message.starts_with(name), "{body}: {}", e.message);
        }
        let ok = req(json!({"input": "hi", "store": false, "include": ["reasoning.encrypted_content"],
            "reasoning": {"effort": "high", "summary": "auto"}, "text": {"verbosity": "low"}, "prompt_cache_key": "k",
            "parallel_tool_calls": false, "service_tier": "auto", "client_metadata": {"a": "b"}, "whatever": [1]}))
        .unwrap();
        assert!(!ok.store && ok.call_limit() == 1);
    }

    #[test]
    fn the_store_keeps_the_newest_and_shares_history() {
        let s = Store::new(2, usize::MAX);
        let a = Arc::new(History::new(None, vec![json!(1), json!(2)]));
        s.put("a".into(), json!({"id": "a"}), a.clone());
        let b = Arc::new(History::new(Some(a), vec![json!(3)]));
        s.put("b".into(), json!({"id": "b"}), b);
        let c_parent = s.get("b").unwrap().1;
        s.put("c".into(), json!({"id": "c"}), Arc::new(History::new(Some(c_parent), vec![json!(4)])));
        assert!(s.get("a").is_none(), "the oldest went");
        assert_eq!(s.get("c").unwrap().1.items(), vec![json!(1), json!(2), json!(3), json!(4)]);
        assert!(s.remove("b") && !s.remove("b") && s.len() == 1);
        let small = Store::new(10, 40);
        small.put("x".into(), json!({"text": "x".repeat(100)}), Arc::new(History::new(None, vec![])));
        assert!(small.is_empty(), "a response over the byte bound is not kept");
        // A long chain drops without deep recursion.
        let mut h = Arc::new(History::new(None, vec![]));
        for _ in 0..200_000 {
            h = Arc::new(History::new(Some(h), vec![]));
        }
        drop(h);
    }
}

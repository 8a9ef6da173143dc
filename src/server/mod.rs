//! `decache serve`: an OpenAI-compatible HTTP server over the engine's
//! slots, with prefix and subconscious caching. The model loads after the
//! socket is bound, so `/health` answers 503 while it loads.
pub mod anthropic;
pub mod engine;
pub mod error;
pub mod openai;
pub mod prompt_cache;
pub mod prune;
pub mod reply;
pub mod request;
pub mod responses;
pub mod stop;
pub use crate::toolcall as tools;

use crate::session::GenerateOptions;
use crate::tokenizer::{ChatMessage, ChatTemplate};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::Engine;
use error::ApiError;
use request::{ChatPrompt, ToolChoice};
use serde_json::json;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// What the server needs besides the engine.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The name clients use for the model (`--alias`, else the file's stem).
    pub model_id: String,
    /// Refuse a `model` name other than `model_id` (404 `model_not_found`);
    /// by default any name is answered by the loaded model, as llama-server
    /// does (harnesses hard-code theirs).
    pub strict_model: bool,
    /// Required as `Authorization: Bearer KEY` or `x-api-key: KEY` on /v1 routes.
    pub api_key: Option<String>,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Sampling for fields a request leaves out (`--temp`, `--top-k`, ...).
    pub sampling: crate::sampling::SamplingParams,
    /// Prune requests that pass the decache watermark (on unless `--no-auto-prune`).
    pub auto_prune: bool,
    /// The policy auto-pruning follows.
    pub policy: crate::context::policy::DecachePolicy,
    /// Quiet time after which a stream gets a `: keep-alive` comment (long prefills).
    pub keep_alive: std::time::Duration,
    /// `--script`: replies come from this script instead of being sampled.
    pub script: Option<Arc<std::sync::Mutex<crate::script::ReplyScript>>>,
    /// `--record-requests DIR`: each request's method, path, status and body
    /// is written there as `NNNNN.json` (to replay, benchmark or debug a client).
    pub record_requests: Option<std::path::PathBuf>,
}

pub struct AppState {
    pub model_id: String,
    pub opts: ServerOptions,
    pruner: prune::Pruner,
    /// Stored responses of the Responses API (`previous_response_id`).
    pub responses: responses::Store,
    /// Tool uses cleared by Anthropic context editing, applied again to later requests.
    cleared: anthropic::edits::Memory,
    engine: OnceLock<Arc<Engine>>,
    template: OnceLock<ChatTemplate>,
    /// Requests written by `--record-requests`.
    recorded: std::sync::atomic::AtomicU64,
    started: Instant,
}

impl AppState {
    pub fn new(opts: ServerOptions) -> Arc<AppState> {
        let pruner = prune::Pruner::new(opts.policy.clone());
        Arc::new(AppState {
            model_id: opts.model_id.clone(),
            opts,
            pruner,
            responses: responses::Store::default(),
            cleared: Default::default(),
            engine: OnceLock::new(),
            template: OnceLock::new(),
            recorded: Default::default(),
            started: Instant::now(),
        })
    }

    /// Make the server ready: the engine and the chat template to render
    /// with (with the BOS and EOS pieces of the engine's vocabulary).
    pub fn set_ready(&self, engine: Arc<Engine>, template: ChatTemplate) {
        let _ = self.template.set(template.with_vocab(&engine.model.tokenizer));
        let _ = self.engine.set(engine);
    }

    pub fn engine(&self) -> Result<&Arc<Engine>, ApiError> {
        self.engine
            .get()
            .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model is loading; retry shortly"))
    }

    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        match requested {
            Some(m) if !m.is_empty() && m != self.model_id && self.opts.strict_model => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("model '{m}' is not served here; this server serves '{}' (see /v1/models)", self.model_id),
            )
            .param("model")
            .code("model_not_found")),
            _ => Ok(()),
        }
    }

    /// What the generation of a chat request needs from its prompt: the
    /// scripted reply (with `serve --script`), and the names a tool call
    /// may take: the offered tools, or the one `tool_choice` names.
    pub fn steer(&self, p: &ChatPrompt, choice: &ToolChoice, opts: &mut GenerateOptions) -> Result<(), ApiError> {
        opts.forced = self.script_reply(p)?;
        let name = |t: &serde_json::Value| t.get("function").unwrap_or(t).get("name")?.as_str().map(str::to_string);
        opts.sampling.tool_names = match choice {
            ToolChoice::Tool(n) => vec![n.clone()],
            _ => p.tools.iter().filter_map(name).collect(),
        };
        Ok(())
    }

    /// With `serve --script`: the scripted reply for this request, as the
    /// tokens to generate (the model's text, tool calls in its syntax).
    fn script_reply(&self, p: &ChatPrompt) -> Result<Option<Vec<u32>>, ApiError> {
        let Some(script) = &self.opts.script else { return Ok(None) };
        let last = p.messages.last().map_or("", |m| m.content.as_str());
        let cue = crate::script::Cue { tools: !p.tools.is_empty(), last };
        let text = script.lock().unwrap_or_else(|e| e.into_inner()).next(&cue);
        let text = text.unwrap_or_else(|| crate::script::NO_MORE.to_string());
        let tok = &self.engine()?.model.tokenizer;
        Ok(Some(tok.encode(&text, false, true).map_err(|e| ApiError::bad_request(e.to_string()))?))
    }

    /// The prompt's tokens for `msgs`, ready for the assistant to speak,
    /// after auto-pruning when it is on for the server and for this
    /// request; also what it pruned.
    pub fn prompt(&self, p: ChatPrompt, prune: bool) -> Result<(Vec<u32>, prune::Pruned), ApiError> {
        let engine = self.engine()?;
        let tok = &engine.model.tokenizer;
        let (msgs, tools) = self.offer(p)?;
        let encode = |m: &[ChatMessage]| {
            tok.encode(&self.render(m, tools.as_deref())?, false, true)
                .map_err(|e| ApiError::bad_request(e.to_string()))
        };
        if !(self.opts.auto_prune && prune) {
            return Ok((encode(&msgs)?, prune::Pruned::default()));
        }
        let count = |t: &str| tok.encode(t, false, false).map_or(t.len(), |v| v.len());
        let c = self.pruner.prune(msgs, engine.n_ctx, &encode, &count)?;
        Ok((c.tokens, c.pruned))
    }

    /// How the tools reach the model: given to a template that renders
    /// `tools` itself, else described in the system prompt (Hermes
    /// convention). The messages to render, and the tools for the template.
    fn offer(&self, p: ChatPrompt) -> Result<(Vec<ChatMessage>, Option<Vec<serde_json::Value>>), ApiError> {
        let ChatPrompt { mut messages, tools } = p;
        if tools.is_empty() {
            return Ok((messages, None));
        }
        if self.template()?.renders_tools() {
            return Ok((messages, Some(tools)));
        }
        let offer = tools::offer(&tools);
        match messages.first_mut() {
            Some(m) if m.role == "system" => m.content = format!("{}\n\n{offer}", m.content),
            _ => messages.insert(0, ChatMessage::new("system", offer)),
        }
        Ok((messages, None))
    }

    fn template(&self) -> Result<&ChatTemplate, ApiError> {
        self.template.get().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model is loading"))
    }

    /// How the model writes its replies: harmony where the chat template
    /// speaks it, and whether Hermes calls are parsed from the text (`tools`:
    /// the request offered tools; a harmony template that renders them has
    /// the model call them its own way).
    pub fn reply_format(&self, tools: bool) -> Result<reply::Format, ApiError> {
        let t = self.template()?;
        let harmony = crate::harmony::is_harmony(t.source());
        Ok(reply::Format { harmony, calls: tools && !(harmony && t.renders_tools()), ..reply::Format::default() })
    }

    /// The chat template's rendering of `msgs` (and `tools` for a template
    /// that renders them), ready for the assistant to speak. A harmony
    /// template reads earlier calls and reasoning from their own fields,
    /// and every tool's description.
    fn render(&self, msgs: &[ChatMessage], tools: Option<&[serde_json::Value]>) -> Result<String, ApiError> {
        let t = self.template()?;
        let out = if crate::harmony::is_harmony(t.source()) {
            let tools = tools.map(crate::harmony::template_tools);
            t.render_json(&crate::harmony::template_messages(msgs), tools.as_deref(), true)
        } else {
            t.render_with_tools(msgs, tools, true)
        };
        out.map_err(|e| ApiError::bad_request(format!("the chat template failed on these messages: {e}")))
    }

    /// The prompt text of a chat request, as the model will read it (not pruned).
    pub fn prompt_text(&self, p: ChatPrompt) -> Result<String, ApiError> {
        let (msgs, tools) = self.offer(p)?;
        self.render(&msgs, tools.as_deref())
    }
}

/// The routes, with the API-key guard on /v1 and the body limit.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/responses", post(responses::create))
        .route("/v1/responses/input_tokens", post(responses::input_tokens))
        .route("/v1/responses/{id}", get(responses::retrieve).delete(responses::delete))
        .route("/v1/messages/apply-template", post(anthropic::apply_template))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model_by_id))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/apply-template", post(apply_template))
        .route("/props", get(props))
        .route("/slots", get(slots))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .merge(v1)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint").into_response() })
        .layer(DefaultBodyLimit::max(state.opts.max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), access_log))
        .with_state(state)
}

/// One line per request, as llama-server logs them: method, path (with
/// its query), status and time to the response head (a stream goes on
/// after); with `--record-requests`, the request itself into a file.
async fn access_log(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let t0 = Instant::now();
    let (res, body) = match &st.opts.record_requests {
        None => (next.run(req).await, None),
        Some(_) => {
            let (parts, body) = req.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, st.opts.max_body).await else {
                return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large or broke off")
                    .into_response();
            };
            let res = next.run(Request::from_parts(parts, axum::body::Body::from(bytes.clone()))).await;
            (res, Some(bytes))
        }
    };
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let status = res.status().as_u16();
    tracing::info!(target: "decache::access", "request: {method} {uri} {status} {ms:.0} ms");
    if let (Some(dir), Some(bytes)) = (&st.opts.record_requests, body) {
        let n = st.recorded.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let body = serde_json::from_slice::<serde_json::Value>(&bytes)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        let rec = json!({"seq": n, "method": method.as_str(), "path": uri.to_string(), "status": status, "body": body});
        if let Err(e) = std::fs::write(dir.join(format!("{n:05}.json")), rec.to_string()) {
            tracing::warn!("--record-requests {}: {e}", dir.display());
        }
    }
    res
}

async fn auth(State(st): State<Arc<AppState>>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let dialect =
        if req.uri().path().starts_with("/v1/messages") { error::Dialect::Anthropic } else { error::Dialect::OpenAi };
    if let Some(key) = &st.opts.api_key {
        let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let x = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        let given = |v: Option<&str>| v.is_some_and(|v| same_key(v, key));
        if !given(bearer) && !given(x) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid or missing API key (Authorization: Bearer KEY or x-api-key: KEY)",
            )
            .dialect(dialect)
            .into_response();
        }
    }
    next.run(req).await
}

/// Whether `given` is the API key, in time that does not depend on where
/// they differ: both are hashed, and the digests compared without an early exit.
fn same_key(given: &str, key: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(key.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    match st.engine.get() {
        Some(_) => Json(json!({"status": "ok"})).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading model"}))).into_response(),
    }
}

/// The served model as OpenAI's model object.
fn model_object(st: &AppState) -> serde_json::Value {
    let meta = st.engine.get().map(|e| {
        let m = &e.model;
        json!({"n_params": m.info.n_params, "size": m.info.file_size, "n_ctx_train": m.hparams.n_ctx_train, "n_vocab": m.hparams.n_vocab})
    });
    json!({"id": st.model_id, "object": "model", "created": 0, "owned_by": "decache", "meta": meta})
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    Json(json!({"object": "list", "data": [model_object(&st)]})).into_response()
}

/// `GET /v1/models/{id}`: the served model, under any name unless `--strict-model`.
async fn model_by_id(
    State(st): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match st.check_model(Some(&id)) {
        Ok(()) => Json(model_object(&st)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn props(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let e = st.engine()?;
    let tpl = st.template.get().map(|t| t.source().to_string());
    Ok(Json(json!({
        "model_path": e.model.info.path,
        "n_ctx": e.n_ctx,
        "total_slots": e.config.slots,
        "chat_template": tpl,
        "subconscious_min": e.config.min_chunk,
        "positions": format!("{:?}", e.config.positions).to_lowercase(),
        "uptime_s": st.started.elapsed().as_secs(),
    }))
    .into_response())
}

async fn slots(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(Json(st.engine()?.slots()).into_response())
}

/// Prometheus text exposition of the running totals.
async fn metrics(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let e = st.engine()?;
    let m = e.metrics();
    let busy = e.slots().iter().filter(|s| s.busy).count();
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, v: f64| {
        out.push_str(&format!("# HELP decache:{name} {help}\n# TYPE decache:{name} {kind}\ndecache:{name} {v}\n"));
    };
    put("requests_total", "counter", "Requests answered.", m.requests as f64);
    put("requests_failed_total", "counter", "Requests that failed in the model.", m.requests_failed as f64);
    put("prompt_tokens_total", "counter", "Prompt tokens prefilled.", m.prompt_tokens as f64);
    put("cached_tokens_total", "counter", "Prompt tokens served from the cache.", m.cached_tokens as f64);
    put("removed_tokens_total", "counter", "Cached tokens deleted in place to fit a request.", m.removed_tokens as f64);
    put("tokens_predicted_total", "counter", "Tokens generated.", m.predicted_tokens as f64);
    put("prompt_seconds_total", "counter", "Time spent prefilling.", m.prompt_seconds);
    put("tokens_predicted_seconds_total", "counter", "Time spent generating.", m.predicted_seconds);
    put("hits_prefix_total", "counter", "Requests that reused a common prefix only.", m.hits_prefix as f64);
    put(
        "hits_subconscious_total",
        "counter",
        "Requests that reused chunks after a pruned span.",
        m.hits_subconscious as f64,
    );
    put("misses_total", "counter", "Requests that reused nothing.", m.misses as f64);
    put(
        "shared_prefix_tokens_total",
        "counter",
        "Prompt tokens a slot took over from another slot's cells (computed once, held copy-free).",
        m.shared_prefix_tokens as f64,
    );
    put(
        "batches_total",
        "counter",
        "Graphs computed for the slots' steps (several slots' tokens in one).",
        m.batches as f64,
    );
    put("batched_steps_total", "counter", "Slot steps those graphs held in all.", m.batched_steps as f64);
    put("prompt_cache_saves_total", "counter", "Chains saved from a slot into memory.", m.prompt_cache_saves as f64);
    put(
        "prompt_cache_restores_total",
        "counter",
        "Saved chains restored into a slot for a request that continued them.",
        m.prompt_cache_restores as f64,
    );
    put("prompt_cache_chains", "gauge", "Chains the prompt cache holds.", m.prompt_cache_chains as f64);
    put("prompt_cache_bytes", "gauge", "Bytes the prompt cache holds.", m.prompt_cache_bytes as f64);
    put("requests_processing", "gauge", "Slots busy now.", busy as f64);
    put("requests_deferred", "gauge", "Requests waiting for a slot.", e.waiting() as f64);
    Ok(([("content-type", "text/plain; version=0.0.4")], out).into_response())
}

#[derive(serde::Deserialize)]
struct TokenizeReq {
    content: String,
    #[serde(default)]
    add_special: bool,
    #[serde(default = "yes")]
    parse_special: bool,
    #[serde(default)]
    with_pieces: bool,
}

fn yes() -> bool {
    true
}

async fn tokenize(State(st): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: TokenizeReq = openai::parse(&body)?;
    let tok = &st.engine()?.model.tokenizer;
    let ids = tok
        .encode(&req.content, req.add_special, req.parse_special)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let tokens: Vec<serde_json::Value> = if req.with_pieces {
        ids.iter()
            .map(|&id| json!({"id": id, "piece": String::from_utf8_lossy(&tok.token_to_piece(id, true))}))
            .collect()
    } else {
        ids.iter().map(|&id| json!(id)).collect()
    };
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

/// The prompt a chat request renders to (llama.cpp's `/apply-template`);
/// a Responses body (`input`, no `messages`) too.
async fn apply_template(State(st): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let v: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    if v.as_ref().is_some_and(|v| v.get("input").is_some() && v.get("messages").is_none()) {
        return Ok(Json(json!({ "prompt": responses::prompt_text(&st, &body)? })).into_response());
    }
    let req: request::ChatRequest = openai::parse(&body)?;
    let prompt = st.prompt_text(req.chat_prompt()?)?;
    Ok(Json(json!({ "prompt": prompt })).into_response())
}

#[derive(serde::Deserialize)]
struct DetokenizeReq {
    tokens: Vec<u32>,
}

async fn detokenize(State(st): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: DetokenizeReq = openai::parse(&body)?;
    let tok = &st.engine()?.model.tokenizer;
    let n = tok.n_vocab();
    if let Some((i, &id)) = req.tokens.iter().enumerate().find(|(_, &id)| id as usize >= n) {
        return Err(
            ApiError::bad_request(format!("tokens[{i}] = {id}: outside the vocabulary (0..{n})")).param("tokens")
        );
    }
    Ok(Json(json!({ "content": tok.decode(&req.tokens, true) })).into_response())
}

#[cfg(test)]
mod tests {
    use super::same_key;

    #[test]
    fn keys_compare_by_digest() {
        assert!(same_key("sk-local-123", "sk-local-123"));
        assert!(!same_key("sk-local-124", "sk-local-123"));
        assert!(!same_key("", "sk-local-123"));
        assert!(!same_key("sk-local-123 ", "sk-local-123"));
    }
}

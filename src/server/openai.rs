//! OpenAI-compatible endpoints: `/v1/chat/completions` and `/v1/completions`,
//! whole or streamed as server-sent events ending in `[DONE]`. Every
//! response carries `usage` (with `prompt_tokens_details.cached_tokens`),
//! llama.cpp-style `timings`, and a `decache` object telling how the cache
//! served the request.
use super::anthropic::thinking::Piece;
use super::engine::{CacheUse, Finish, FinishReason, Job, JobEvent};
use super::error::ApiError;
use super::prune::Pruned;
use super::reply::{Format, Split};
use super::request::{CallRule, ChatRequest, CompletionRequest, PromptField};
use super::tools::ToolCall;
use super::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::Receiver;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A chat completion, its reply written in this format.
    Chat(Format),
    Text,
}

pub fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("empty request body: expected a JSON object"));
    }
    // The path of the field that failed (`temperature`, `messages[2].content`)
    // leads the message and is the error's `param`.
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "" | "." => ApiError::bad_request(format!("invalid request body: {}", e.inner())),
            _ => ApiError::bad_request(format!("invalid request body: {path}: {}", e.inner())).param(&path),
        }
    })
}

/// Parse the body as `T` and answer with `f`, errors as API errors.
async fn handle<T, Fut>(st: Arc<AppState>, body: Bytes, f: impl FnOnce(Arc<AppState>, T) -> Fut) -> Response
where
    T: serde::de::DeserializeOwned,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    match parse::<T>(&body) {
        Ok(req) => f(st, req).await.unwrap_or_else(IntoResponse::into_response),
        Err(e) => e.into_response(),
    }
}

pub async fn chat_completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    handle(st, body, chat).await
}

pub async fn completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    handle(st, body, completion).await
}

async fn chat(st: Arc<AppState>, req: ChatRequest) -> Result<Response, ApiError> {
    let c = &req.common;
    st.check_model(c.model.as_deref())?;
    let (mut opts, stop) = c.sampling.options(&st.opts.sampling)?;
    let prompt = req.chat_prompt()?;
    let rule = req.call_rule()?;
    st.steer(&prompt, &rule.choice, &mut opts)?;
    let (tokens, pruned) = st.prompt(prompt, req.auto_prune())?;
    let mut job = st.job(tokens, opts, stop)?;
    job.pruned = pruned;
    let format = st.reply_format(req.tools_active())?;
    respond(st, job, Kind::Chat(format), rule, c.stream, c.include_usage()).await
}

async fn completion(st: Arc<AppState>, req: CompletionRequest) -> Result<Response, ApiError> {
    let c = &req.common;
    st.check_model(c.model.as_deref())?;
    let engine = st.engine()?;
    let (opts, stop) = c.sampling.options(&st.opts.sampling)?;
    let tok = &engine.model.tokenizer;
    let encode = |t: &str| tok.encode(t, true, true).map_err(|e| ApiError::bad_request(e.to_string()));
    let tokens = match &req.prompt {
        PromptField::Text(t) => encode(t)?,
        PromptField::Texts(v) if v.len() == 1 => encode(&v[0])?,
        PromptField::Texts(v) => {
            return Err(ApiError::bad_request(format!("{} prompts: one prompt per request is supported", v.len()))
                .param("prompt"))
        }
        PromptField::Tokens(t) => {
            let n = tok.n_vocab();
            if let Some((i, &id)) = t.iter().enumerate().find(|(_, &id)| id as usize >= n) {
                return Err(ApiError::bad_request(format!("prompt[{i}] = {id}: outside the vocabulary (0..{n})"))
                    .param("prompt"));
            }
            t.clone()
        }
    };
    if tokens.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty").param("prompt"));
    }
    let job = st.job(tokens, opts, stop)?;
    respond(st, job, Kind::Text, CallRule::default(), c.stream, c.include_usage()).await
}

/// A queued job's receiving end: dropping it (the client went away) cancels the job.
pub struct Pending {
    pub rx: Receiver<JobEvent>,
    pub cancel: Arc<AtomicBool>,
    pub prompt_tokens: usize,
    /// What auto-pruning pruned from the request.
    pub pruned: Pruned,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl AppState {
    /// Check the prompt against the context and queue it.
    pub fn job(
        &self,
        tokens: Vec<u32>,
        opts: crate::session::GenerateOptions,
        stop: Vec<String>,
    ) -> Result<Pending, ApiError> {
        let engine = self.engine()?;
        let n_ctx = engine.n_ctx;
        if tokens.len() >= n_ctx {
            return Err(ApiError::bad_request(format!(
                "the request needs {} prompt tokens, more than the context of {n_ctx} allows",
                tokens.len()
            ))
            .code("context_length_exceeded")
            .with("n_prompt_tokens", tokens.len())
            .with("n_ctx", n_ctx));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let cancel = Arc::new(AtomicBool::new(false));
        let prompt_tokens = tokens.len();
        let job = Job::new(tokens, opts, stop, tx, cancel.clone());
        if engine.submit(job).is_err() {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the server is busy: all slots are working and the queue of {} is full; retry later",
                    engine.config.queue
                ),
            ));
        }
        Ok(Pending { rx, cancel, prompt_tokens, pruned: Pruned::default() })
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn request_id(kind: Kind) -> String {
    let n: u64 = rand::random();
    match kind {
        Kind::Chat(_) => format!("chatcmpl-{n:016x}"),
        Kind::Text => format!("cmpl-{n:016x}"),
    }
}

pub fn usage(prompt_tokens: usize, f: &Finish) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": f.predicted_n,
        "total_tokens": prompt_tokens + f.predicted_n,
        "prompt_tokens_details": {"cached_tokens": f.cache_n},
    })
}

pub fn timings(f: &Finish) -> Value {
    let per = |n: usize, ms: f64| if n > 0 { ms / n as f64 } else { 0.0 };
    let rate = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
    let mut t = json!({
        "cache_n": f.cache_n,
        "prompt_n": f.prompt_n,
        "prompt_ms": f.prompt_ms,
        "prompt_per_token_ms": per(f.prompt_n, f.prompt_ms),
        "prompt_per_second": rate(f.prompt_n, f.prompt_ms),
        "predicted_n": f.predicted_n,
        "predicted_ms": f.predicted_ms,
        "predicted_per_token_ms": per(f.predicted_n, f.predicted_ms),
        "predicted_per_second": rate(f.predicted_n, f.predicted_ms),
    });
    // As llama-server reports speculative decoding: only where a draft ran.
    if f.draft_n > 0 {
        t["draft_n"] = json!(f.draft_n);
        t["draft_n_accepted"] = json!(f.draft_n_accepted);
    }
    t
}

pub fn decache(c: &CacheUse, pruned: Pruned, reason: FinishReason) -> Value {
    json!({
        "context_full": reason == FinishReason::ContextFull,
        "hit": c.hit,
        "from": c.from,
        "tokens_reused": c.tokens_reused,
        "tokens_removed": c.tokens_removed,
        "spans_matched": c.spans_matched,
        "spans_removed": c.spans_removed,
        "spans_replaced": c.spans_replaced,
        "messages_pruned": pruned.messages,
        "parts_pruned": pruned.parts,
        "slot": c.slot,
    })
}

/// Calls in OpenAI's shape (arguments as a JSON string); `indexed` adds
/// the `index` streamed deltas carry.
fn openai_calls(calls: &[ToolCall], indexed: bool) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut v = json!({"id": format!("call_{:016x}", rand::random::<u64>()), "type": "function",
                "function": {"name": c.name, "arguments": c.arguments.to_string()}});
            if indexed {
                v["index"] = json!(i);
            }
            v
        })
        .collect()
}

fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        // OpenAI has no reason of its own for it: `decache.context_full` says which.
        FinishReason::Length | FinishReason::ContextFull => "length",
    }
}

/// Wait for the whole result of a job.
pub async fn collect(p: &mut Pending) -> Result<(CacheUse, Finish), ApiError> {
    let mut cache = None;
    while let Some(ev) = p.rx.recv().await {
        match ev {
            JobEvent::Started(c) => cache = Some(c),
            JobEvent::Text(_) => {}
            JobEvent::Done(f) => {
                let c = cache.ok_or_else(|| {
                    ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "job finished unstarted")
                })?;
                return Ok((c, f));
            }
            JobEvent::Failed(e) => return Err(ApiError::from(&e)),
        }
    }
    Err(ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "the model stopped before answering"))
}

async fn respond(
    st: Arc<AppState>,
    mut p: Pending,
    kind: Kind,
    rule: CallRule,
    stream: bool,
    include_usage: bool,
) -> Result<Response, ApiError> {
    let id = request_id(kind);
    let model = st.model_id.clone();
    let created = now();
    if !stream {
        let (cache, f) = collect(&mut p).await?;
        let choice = match kind {
            Kind::Chat(format) => {
                let w = format.whole(&f.text);
                let calls = rule.apply(w.calls, "chat.completions");
                let mut choice = if calls.is_empty() {
                    json!({"index": 0, "message": {"role": "assistant", "content": w.text}, "finish_reason": finish_reason(f.reason)})
                } else {
                    let content = if w.text.is_empty() { Value::Null } else { json!(w.text) };
                    json!({"index": 0, "message": {"role": "assistant", "content": content, "tool_calls": openai_calls(&calls, false)},
                        "finish_reason": "tool_calls"})
                };
                if let Some(r) = w.reasoning {
                    choice["message"]["reasoning_content"] = json!(r);
                }
                choice
            }
            Kind::Text => {
                json!({"index": 0, "text": f.text, "logprobs": null, "finish_reason": finish_reason(f.reason)})
            }
        };
        let object = if kind == Kind::Text { "text_completion" } else { "chat.completion" };
        return Ok(Json(json!({
            "id": id, "object": object, "created": created, "model": model,
            "choices": [choice],
            "usage": usage(p.prompt_tokens, &f),
            "timings": timings(&f),
            "decache": decache(&cache, p.pruned, f.reason),
        }))
        .into_response());
    }
    let object = if kind == Kind::Text { "text_completion" } else { "chat.completion.chunk" };
    let chunk = move |choices: Value, extra: Option<(&str, Value)>| {
        let mut v = json!({"id": id, "object": object, "created": created, "model": model, "choices": choices});
        if let Some((k, x)) = extra {
            v[k] = x;
        }
        v
    };
    // A piece of text (or of reasoning: `reasoning_content`, as llama-server streams it).
    let delta = move |piece: Option<&Piece>, reason: Option<&str>| match kind {
        Kind::Chat(_) => {
            let d = match piece {
                Some(Piece::Text(t)) => json!({"content": t}),
                Some(Piece::Thinking(t)) => json!({"reasoning_content": t}),
                Some(Piece::EndThinking) | None => json!({}),
            };
            json!([{"index": 0, "delta": d, "finish_reason": reason}])
        }
        Kind::Text => {
            let t = match piece {
                Some(Piece::Text(t)) => t.as_str(),
                _ => "",
            };
            json!([{"index": 0, "text": t, "logprobs": null, "finish_reason": reason}])
        }
    };
    let (prompt_tokens, pruned) = (p.prompt_tokens, p.pruned);
    let mut split = match kind {
        Kind::Chat(format) => format.splitter(),
        Kind::Text => Split::default(),
    };
    let stream = event_stream(p, true, move |ev, out: &mut Vec<SsePayload>, cache: &mut Option<CacheUse>| match ev {
        JobEvent::Started(c) => {
            if kind != Kind::Text {
                out.push((
                    None,
                    chunk(
                        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
                        None,
                    ),
                ));
            }
            *cache = Some(c);
        }
        JobEvent::Text(t) => {
            for piece in split.push(&t).iter().filter(|p| **p != Piece::EndThinking) {
                out.push((None, chunk(delta(Some(piece), None), None)));
            }
        }
        JobEvent::Done(f) => {
            let (rest, calls) = split.finish();
            let calls = rule.apply(calls, "chat.completions");
            for piece in rest.iter().filter(|p| **p != Piece::EndThinking) {
                out.push((None, chunk(delta(Some(piece), None), None)));
            }
            let reason = if calls.is_empty() { finish_reason(f.reason) } else { "tool_calls" };
            if !calls.is_empty() {
                let d =
                    json!([{"index": 0, "delta": {"tool_calls": openai_calls(&calls, true)}, "finish_reason": null}]);
                out.push((None, chunk(d, None)));
            }
            let mut last = chunk(delta(None, Some(reason)), Some(("timings", timings(&f))));
            if let Some(c) = cache {
                last["decache"] = decache(c, pruned, f.reason);
            }
            out.push((None, last));
            if include_usage {
                out.push((None, chunk(json!([]), Some(("usage", usage(prompt_tokens, &f))))));
            }
        }
        JobEvent::Failed(e) => out.push((None, ApiError::from(&e).body())),
    });
    Ok(sse(&st, stream))
}

/// A stream as a server-sent-event response, with keep-alive comments
/// while nothing else is sent (a long prefill).
pub fn sse<S>(st: &AppState, stream: S) -> Response
where
    S: futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(stream).keep_alive(KeepAlive::new().interval(st.opts.keep_alive).text("keep-alive")).into_response()
}

/// One server-sent event: an optional event name and its JSON data.
pub type SsePayload = (Option<&'static str>, Value);

/// Server-sent events from a job: `on_event` turns each job event into zero
/// or more payloads; with `done_marker` (OpenAI) a `[DONE]` ends the stream.
pub fn event_stream<F>(
    p: Pending,
    done_marker: bool,
    on_event: F,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>>
where
    F: FnMut(JobEvent, &mut Vec<SsePayload>, &mut Option<CacheUse>) + Send + 'static,
{
    use futures_util::StreamExt;
    futures_util::stream::unfold(
        (p, false, None::<CacheUse>, on_event),
        move |(mut p, done, mut cache, mut on)| async move {
            if done {
                return None;
            }
            let (ev, end) = match p.rx.recv().await {
                Some(ev) => {
                    let end = matches!(ev, JobEvent::Done(_) | JobEvent::Failed(_));
                    (Some(ev), end)
                }
                None => (None, true),
            };
            let mut out = Vec::new();
            if let Some(ev) = ev {
                on(ev, &mut out, &mut cache);
            }
            let mut events: Vec<Event> = out
                .iter()
                .map(|(name, v)| match name {
                    Some(n) => Event::default().event(*n).data(v.to_string()),
                    None => Event::default().data(v.to_string()),
                })
                .collect();
            if end && done_marker {
                events.push(Event::default().data("[DONE]"));
            }
            Some((futures_util::stream::iter(events.into_iter().map(Ok)), (p, end, cache, on)))
        },
    )
    .flatten()
}

//! The model side of the server: slots (each a `Session` on its own
//! thread), a bounded queue, and a dispatcher that gives each request to the
//! idle slot whose cache matches it best. Results go back as events over a
//! tokio channel, so the HTTP side never blocks on the model; a client that
//! goes away (its channel closed, or its cancel flag set) stops its job.
use super::prompt_cache::{CachedChain, PromptCache, MIN_SAVED_TOKENS};
use super::stop::StopMatcher;
use crate::error::Result;
use crate::kv::KvError;
use crate::model::Model;
use crate::session::reuse::{plan, HitKind, ReuseOutcome};
use crate::session::speculate::SpecParams;
use crate::session::{GenerateEvent, GenerateOptions, PositionPolicy, Session, SessionConfig, StopReason};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::mpsc::Sender;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub session: SessionConfig,
    /// Parallel sequences (`-np`): slots of one cache of `session.n_ctx`
    /// cells, which they share (llama.cpp's unified cache).
    pub slots: usize,
    /// Requests waiting beyond the busy slots before new ones get 503.
    pub queue: usize,
    /// Minimum chunk length for a subconscious hit; `None` = prefix caching only.
    pub min_chunk: Option<usize>,
    pub positions: PositionPolicy,
    /// Boundary refresh after the reuse deletes spans (`--refresh`; 0 = off).
    pub refresh: usize,
    /// Each slot writes a transcript of its session into this folder
    /// (`--transcripts DIR`).
    pub transcripts: Option<std::path::PathBuf>,
    /// The weights were loaded repacked (recorded in transcript headers).
    pub repack: bool,
    /// Tokens any request may generate at most (`serve -n`); `None` = no cap.
    pub n_predict: Option<usize>,
    /// Bytes of chains pushed out of slots kept in memory (`--cache-ram`); 0 = none.
    pub cache_ram: usize,
    /// Draft-free speculative decoding for every request (`--spec`).
    pub spec: SpecParams,
}

/// One request for the model: the prompt's tokens and how to generate.
pub struct Job {
    pub tokens: Vec<u32>,
    pub opts: GenerateOptions,
    pub stop: Vec<String>,
    pub events: Sender<JobEvent>,
    pub cancel: Arc<AtomicBool>,
    /// A saved chain the dispatcher chose for this job, restored into its slot first.
    restore: Option<CachedChain>,
}

impl Job {
    pub fn new(
        tokens: Vec<u32>,
        opts: GenerateOptions,
        stop: Vec<String>,
        events: Sender<JobEvent>,
        cancel: Arc<AtomicBool>,
    ) -> Job {
        Job { tokens, opts, stop, events, cancel, restore: None }
    }
}

/// How the cache served a request (the `decache` object of a response).
#[derive(Clone, Debug, Serialize)]
pub struct CacheUse {
    pub slot: usize,
    pub hit: &'static str,
    /// Where the reused tokens were: `slot` (the slot's own cache),
    /// `shared` (another slot's cells, shared copy-free), or `prompt_cache`
    /// (a chain saved in memory, restored into the slot).
    pub from: &'static str,
    pub tokens_reused: usize,
    pub tokens_removed: usize,
    pub spans_matched: usize,
    pub spans_removed: usize,
    pub spans_replaced: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    /// The request's token limit (`max_tokens`, or the server's `-n`).
    Length,
    /// The context filled up before the reply ended.
    ContextFull,
}

#[derive(Clone, Debug)]
pub struct Finish {
    pub reason: FinishReason,
    pub text: String,
    /// The stop string that ended the text, if one did.
    pub stop_hit: Option<String>,
    /// Prompt tokens in the cache already (reused) and prefilled now.
    pub cache_n: usize,
    pub prompt_n: usize,
    pub prompt_ms: f64,
    pub predicted_n: usize,
    pub predicted_ms: f64,
    /// Draft tokens checked, and kept (speculative decoding).
    pub draft_n: usize,
    pub draft_n_accepted: usize,
}

pub enum JobEvent {
    Started(CacheUse),
    Text(String),
    Done(Finish),
    /// The job failed; the error says why and what class of failure it is.
    Failed(crate::Error),
}

/// What `/slots` shows of a slot.
#[derive(Clone, Debug, Serialize)]
pub struct SlotInfo {
    pub id: usize,
    pub n_ctx: usize,
    pub busy: bool,
    pub n_cached: usize,
    pub requests: u64,
    pub last_hit: Option<&'static str>,
    /// Where the last request's reused tokens were (`slot`, `prompt_cache`).
    pub last_from: Option<&'static str>,
    /// When the slot last took a job (dispatch order; 0 = never).
    #[serde(skip)]
    pub last_used: u64,
}

/// Running totals for `/metrics`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Metrics {
    pub requests: u64,
    pub requests_failed: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub removed_tokens: u64,
    pub predicted_tokens: u64,
    pub prompt_seconds: f64,
    pub predicted_seconds: f64,
    pub hits_prefix: u64,
    pub hits_subconscious: u64,
    pub misses: u64,
    /// Prompt tokens a request took over from another slot's cells
    /// (a shared prefix, computed once).
    pub shared_prefix_tokens: u64,
    /// Graphs computed for the slots' steps, and the slot steps they held
    /// (their ratio is the mean batch width).
    pub batches: u64,
    pub batched_steps: u64,
    /// Chains saved into the prompt cache, and restored from it.
    pub prompt_cache_saves: u64,
    pub prompt_cache_restores: u64,
    /// What the prompt cache holds now.
    pub prompt_cache_chains: usize,
    pub prompt_cache_bytes: usize,
}

/// A slot as the dispatcher sees it: what `/slots` shows, and the tokens
/// in its cache in position order (what the next request is matched against).
struct Slot {
    info: SlotInfo,
    chain: Vec<u32>,
}

struct Shared {
    slots: Mutex<Vec<Slot>>,
    idle: Condvar,
    metrics: Mutex<Metrics>,
    waiting: Mutex<usize>,
    prompt_cache: Mutex<PromptCache>,
}

pub struct Engine {
    queue: SyncSender<Job>,
    shared: Arc<Shared>,
    pub config: EngineConfig,
    pub model: Arc<Model>,
    /// Cells of the cache the slots share.
    pub n_ctx: usize,
    batch_stats: crate::session::BatchCounter,
}

impl Engine {
    /// Create the slots' sessions (errors surface here) and start the threads.
    pub fn start(model: Arc<Model>, mut config: EngineConfig) -> Result<Engine> {
        if config.refresh > 0 && model.hparams.recurrent.is_some() {
            // A hybrid model's recurrent state takes each token once: the
            // server is already listening, so it says so and goes on without.
            tracing::warn!(
                arch = %model.hparams.arch,
                "--refresh {} is off: boundary refresh is not available for hybrid models",
                config.refresh
            );
            config.refresh = 0;
        }
        let n = config.slots.max(1);
        // One cache for all slots: each slot is a sequence of it, their steps
        // are computed together, and a prefix one slot computed is shared
        // with the others that continue it.
        let first = Session::new(model.clone(), SessionConfig { n_seq: n, ..config.session.clone() })?;
        let mut sessions = Vec::with_capacity(n);
        for _ in 1..n {
            sessions.push(first.sequence()?);
        }
        let batch_stats = first.batch_counter();
        sessions.insert(0, first);
        if let Some(dir) = &config.transcripts {
            let at = |e: String| crate::Error::InvalidArgument(format!("--transcripts {}: {e}", dir.display()));
            std::fs::create_dir_all(dir).map_err(|e| at(e.to_string()))?;
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            for (id, s) in sessions.iter_mut().enumerate() {
                // The pid too: a server restarted within the same second must not
                // truncate the transcripts of the one before.
                let path = dir.join(format!("serve-{stamp}-{}-slot{id}.jsonl", std::process::id()));
                crate::transcript::TranscriptWriter::attach(s, &path, "serve", config.repack).map_err(at)?;
            }
        }
        let n_ctx = sessions[0].n_ctx();
        let infos = (0..n)
            .map(|id| Slot {
                info: SlotInfo {
                    id,
                    n_ctx,
                    busy: false,
                    n_cached: 0,
                    requests: 0,
                    last_hit: None,
                    last_from: None,
                    last_used: 0,
                },
                chain: Vec::new(),
            })
            .collect();
        let shared = Arc::new(Shared {
            slots: Mutex::new(infos),
            idle: Condvar::new(),
            metrics: Mutex::default(),
            waiting: Mutex::new(0),
            prompt_cache: Mutex::new(PromptCache::new(config.cache_ram)),
        });
        let mut slot_tx = Vec::with_capacity(n);
        for (id, mut session) in sessions.into_iter().enumerate() {
            let (tx, rx) = sync_channel::<Job>(1);
            slot_tx.push(tx);
            let (shared, cfg) = (shared.clone(), config.clone());
            std::thread::Builder::new()
                .name(format!("slot-{id}"))
                .spawn(move || {
                    for job in rx {
                        let events = job.events.clone();
                        let last = run_job(id, &mut session, &cfg, &shared, job);
                        let chain = session.live_tokens();
                        session.pause_threads();
                        {
                            let mut slots = shared.slots.lock().unwrap_or_else(|e| e.into_inner());
                            slots[id].info.n_cached = chain.len();
                            slots[id].chain = chain;
                            slots[id].info.busy = false;
                            shared.idle.notify_all();
                        }
                        // The slot is free before the client hears the end.
                        if let Some(ev) = last {
                            let _ = events.blocking_send(ev);
                        }
                    }
                })
                .map_err(|source| crate::Error::System { what: "cannot start a slot thread".into(), source })?;
        }
        // Admission is decided in `submit`; the channel only has to hold what it admits.
        let (queue, rx) = sync_channel::<Job>(n + config.queue + 1);
        let (sh, min_chunk) = (shared.clone(), config.min_chunk);
        std::thread::Builder::new()
            .name("dispatch".into())
            .spawn(move || dispatch(rx, slot_tx, &sh, min_chunk))
            .map_err(|source| crate::Error::System { what: "cannot start the dispatcher".into(), source })?;
        Ok(Engine { queue, shared, config, model, n_ctx, batch_stats })
    }

    /// Queue a job; gives it back when every slot is busy and `queue` jobs
    /// already wait. The count is taken under the slots' lock (the dispatcher
    /// moves a job from waiting to busy under it too), so a job the dispatcher
    /// has not picked up yet never makes the queue look fuller than it is.
    pub fn submit(&self, job: Job) -> std::result::Result<(), Box<Job>> {
        let slots = self.shared.slots.lock().unwrap_or_else(|e| e.into_inner());
        let busy = slots.iter().filter(|s| s.info.busy).count();
        let mut waiting = self.shared.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if busy + *waiting >= slots.len() + self.config.queue {
            return Err(Box::new(job));
        }
        // Counted before it can reach the dispatcher, which uncounts it.
        *waiting += 1;
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(j)) | Err(TrySendError::Disconnected(j)) => {
                *waiting -= 1;
                Err(Box::new(j))
            }
        }
    }

    pub fn slots(&self) -> Vec<SlotInfo> {
        self.shared.slots.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|s| s.info.clone()).collect()
    }

    pub fn metrics(&self) -> Metrics {
        let mut m = self.shared.metrics.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (m.batches, m.batched_steps) = self.batch_stats.batch_stats();
        (m.prompt_cache_chains, m.prompt_cache_bytes) =
            self.shared.prompt_cache.lock().unwrap_or_else(|e| e.into_inner()).usage();
        m
    }

    /// Requests accepted but not yet on a slot.
    pub fn waiting(&self) -> usize {
        *self.shared.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A saved chain is restored only when it reuses this many more tokens than
/// the slot's own cache (a restore copies the cells back).
const RESTORE_GAIN: usize = 32;

/// Hand each job to the idle slot whose cache it continues (more than half
/// of its prompt is reused there), the one reusing most; if it continues none, to
/// the least recently used idle slot (an empty one first), so that a new
/// conversation does not evict a cache another one is using. When a chain
/// saved in the prompt cache serves the job better than that slot, the
/// least recently used idle slot gets the job with the chain to restore.
fn dispatch(rx: Receiver<Job>, slot_tx: Vec<SyncSender<Job>>, shared: &Shared, min_chunk: Option<usize>) {
    let mut clock = 0u64;
    for mut job in rx {
        let mut slots = shared.slots.lock().unwrap_or_else(|e| e.into_inner());
        while slots.iter().all(|s| s.info.busy) {
            slots = shared.idle.wait(slots).unwrap_or_else(|e| e.into_inner());
        }
        let idle = slots.iter().filter(|s| !s.info.busy);
        let reuse: Vec<(usize, usize)> =
            idle.map(|s| (s.info.id, plan(&s.chain, &job.tokens, min_chunk).cached())).collect();
        let (mut best, slot_reused) = reuse
            .iter()
            .copied()
            .max_by_key(|&(id, reused)| {
                let continues = reused > 0 && 2 * reused > job.tokens.len();
                let last_used = slots[id].info.last_used;
                (continues, if continues { reused } else { 0 }, std::cmp::Reverse(last_used), std::cmp::Reverse(id))
            })
            .unwrap_or((0, 0));
        {
            let mut cache = shared.prompt_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((i, reused)) = cache.best(&job.tokens, min_chunk) {
                if reused >= slot_reused + RESTORE_GAIN {
                    job.restore = Some(cache.take(i));
                    best = slots
                        .iter()
                        .filter(|s| !s.info.busy)
                        .min_by_key(|s| (!s.chain.is_empty(), s.info.last_used))
                        .map_or(best, |s| s.info.id);
                }
            }
        }
        clock += 1;
        let info = &mut slots[best].info;
        info.last_used = clock;
        info.busy = true;
        info.requests += 1;
        // From waiting to busy in one step under the slots' lock (see `submit`).
        *shared.waiting.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        drop(slots);
        if slot_tx[best].send(job).is_err() {
            return;
        }
    }
}

/// A shared prefix is taken only when it reuses this many more tokens than
/// the slot's own cache would.
const SHARE_GAIN: usize = 16;

/// All slots are sequences of one cache: when another slot holds a longer
/// prefix of the prompt than this slot would reuse (a system prompt and
/// tools every client sends), this slot goes on from that slot's cells,
/// copy-free, instead of prefilling them again. Returns the tokens shared.
fn share_prefix(id: usize, session: &mut Session, cfg: &EngineConfig, shared: &Shared, job: &Job) -> usize {
    let own = plan(&session.live_tokens(), &job.tokens, cfg.min_chunk).cached();
    // The last prompt token is evaluated in any case (its logits start the reply).
    let prompt = &job.tokens[..job.tokens.len().saturating_sub(1)];
    let Some((best, other)) =
        (0..cfg.slots).filter(|&o| o != id).map(|o| (session.common_prefix_with(o, prompt), o)).max()
    else {
        return 0;
    };
    if best < own + SHARE_GAIN {
        return 0;
    }
    match session.share_prefix_of(other, prompt, own + SHARE_GAIN) {
        Ok(n) => {
            tracing::debug!(slot = id, from = other, tokens = n, "shared a prefix");
            shared.metrics.lock().unwrap_or_else(|e| e.into_inner()).shared_prefix_tokens += n as u64;
            n
        }
        Err(e) => {
            tracing::warn!(slot = id, "cannot share slot {other}'s prefix: {e}");
            0
        }
    }
}

/// Run one job, streaming its text; returns the final event (`Done` or
/// `Failed`) for the slot to send once it is free, or `None` if the client left.
/// Before a job overwrites the slot's cache: save the chain the slot holds
/// into the prompt cache when the job would throw most of it away (or a
/// saved chain is to be restored over it), then restore the job's chain.
/// The cache never fails a job: what cannot be saved or restored is logged
/// and the job goes on from the slot's cache. Returns whether it restored.
fn swap_chains(id: usize, session: &mut Session, cfg: &EngineConfig, shared: &Shared, job: &mut Job) -> bool {
    let lock = || shared.prompt_cache.lock().unwrap_or_else(|e| e.into_inner());
    let restore = job.restore.take();
    let chain = session.live_tokens();
    let continued = restore.is_none() && 2 * plan(&chain, &job.tokens, cfg.min_chunk).cached() >= chain.len();
    if lock().enabled() && chain.len() >= MIN_SAVED_TOKENS && !continued {
        let tag = lock().next_id();
        match session.snapshot_tagged(tag).map(|snap| lock().put(tag, chain, snap)) {
            Ok(true) => shared.metrics.lock().unwrap_or_else(|e| e.into_inner()).prompt_cache_saves += 1,
            Ok(false) => tracing::info!(slot = id, "a chain larger than --cache-ram is not kept"),
            Err(e) => tracing::warn!(slot = id, "cannot save the slot's chain: {e}"),
        }
    }
    let Some(saved) = restore else { return false };
    match session.restore_tagged(&saved.snap, Some(saved.id)) {
        Ok(()) => {
            shared.metrics.lock().unwrap_or_else(|e| e.into_inner()).prompt_cache_restores += 1;
            true
        }
        Err(e) => {
            tracing::warn!(slot = id, "cannot restore a saved chain: {e}");
            false
        }
    }
}

fn run_job(id: usize, session: &mut Session, cfg: &EngineConfig, shared: &Shared, mut job: Job) -> Option<JobEvent> {
    let fail = |e: crate::Error| {
        shared.metrics.lock().unwrap_or_else(|e| e.into_inner()).requests_failed += 1;
        Some(JobEvent::Failed(e))
    };
    if job.cancel.load(Ordering::Relaxed) || job.events.is_closed() {
        if let Some(saved) = job.restore.take() {
            shared.prompt_cache.lock().unwrap_or_else(|e| e.into_inner()).put(saved.id, saved.chain, saved.snap);
        }
        return None;
    }
    // The server's cap on generated tokens (`serve -n`) bounds every request.
    job.opts.spec = cfg.spec;
    job.opts.n_predict = match (job.opts.n_predict, cfg.n_predict) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let restored = swap_chains(id, session, cfg, shared, &mut job);
    let shared_prefix = if restored { 0 } else { share_prefix(id, session, cfg, shared, &job) };
    // Sliding-window layers that have dropped cells a closed gap would
    // bring back into their window refuse to close it: start again from an
    // empty cache (the prompt is prefilled whole, as llama.cpp does).
    let start_over = |session: &mut Session, removed: usize, e: &crate::Error| {
        tracing::info!(slot = id, "positions not closed ({e}); prefilling the whole prompt again");
        let outcome = ReuseOutcome {
            plan: Default::default(),
            removed: removed + session.n_live(),
            spans_removed: 0,
            refreshed: 0,
        };
        session.clear();
        outcome
    };
    let t_reuse = std::time::Instant::now();
    let reevaluated_before = session.reevaluated();
    let opts = crate::session::reuse::ReuseOptions::new(cfg.min_chunk);
    let mut reuse = match session.reuse_refreshing(&job.tokens, &opts, cfg.positions, cfg.refresh) {
        Ok(r) => r,
        Err(e @ crate::Error::Kv(KvError::WindowShift { .. })) => start_over(session, 0, &e),
        Err(e) => return fail(e),
    };
    let reuse_ms = t_reuse.elapsed().as_secs_f64() * 1e3;
    let more = job.tokens.len() - reuse.plan.reused + job.opts.n_predict.unwrap_or(0);
    if let Err(e) = session.prepare_positions(cfg.positions, more) {
        reuse = start_over(session, reuse.removed, &e);
    }
    let from = match (restored, shared_prefix > 0) {
        (true, _) => "prompt_cache",
        (false, true) => "shared",
        (false, false) => "slot",
    };
    let reused = reuse.plan.reused;
    let rest = &job.tokens[reused..];
    // Replaced spans were evaluated in place by the reuse: prefilled, not reused.
    let (cached, in_place) = (reuse.plan.cached(), reuse.plan.evaluated());
    let kind = reuse.kind();
    if session.recording() {
        session.note(&serde_json::json!({"note": "request", "slot": id, "prompt_tokens": job.tokens.len(), "reused": cached, "removed": reuse.removed, "hit": kind.name(), "from": from}));
    }
    let cache = CacheUse {
        slot: id,
        hit: kind.name(),
        from,
        tokens_reused: cached,
        tokens_removed: reuse.removed,
        spans_matched: reuse.plan.chunks.len(),
        spans_removed: reuse.spans_removed,
        spans_replaced: reuse.spans_replaced(),
    };
    {
        let mut slots = shared.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots[id].info.last_hit = Some(kind.name());
        slots[id].info.last_from = Some(from);
    }
    if job.events.blocking_send(JobEvent::Started(cache)).is_err() {
        return None;
    }
    let mut stop = StopMatcher::new(job.stop.clone());
    let mut text = String::new();
    let mut closed = false;
    let res = session.generate(rest, &job.opts, &mut |ev| {
        if let GenerateEvent::Token { text: t, .. } = ev {
            let shown = stop.push(t);
            if !shown.is_empty() {
                text.push_str(&shown);
                closed |= job.events.blocking_send(JobEvent::Text(shown)).is_err();
            }
            return !(closed || stop.stopped() || job.cancel.load(Ordering::Relaxed));
        }
        !job.cancel.load(Ordering::Relaxed)
    });
    let gen = match res {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    let tail = stop.finish();
    if !tail.is_empty() {
        text.push_str(&tail);
        let _ = job.events.blocking_send(JobEvent::Text(tail));
    }
    let reason = match gen.stop {
        StopReason::Length if !stop.stopped() => FinishReason::Length,
        StopReason::ContextFull if !stop.stopped() => FinishReason::ContextFull,
        _ => FinishReason::Stop,
    };
    let finish = Finish {
        reason,
        text,
        stop_hit: stop.hit().map(str::to_string),
        cache_n: cached,
        // (A hybrid model's rewind evaluates live tokens again: counted.)
        prompt_n: rest.len() + in_place + reuse.refreshed + (session.reevaluated() - reevaluated_before) as usize,
        prompt_ms: gen.prompt_ms + reuse_ms,
        predicted_n: gen.tokens.len(),
        predicted_ms: gen.gen_ms,
        draft_n: gen.spec.drafted,
        draft_n_accepted: gen.spec.accepted,
    };
    {
        let mut m = shared.metrics.lock().unwrap_or_else(|e| e.into_inner());
        m.requests += 1;
        m.prompt_tokens += (rest.len() + in_place) as u64;
        m.cached_tokens += cached as u64;
        m.removed_tokens += reuse.removed as u64;
        m.predicted_tokens += gen.tokens.len() as u64;
        m.prompt_seconds += (gen.prompt_ms + reuse_ms) / 1e3;
        m.predicted_seconds += gen.gen_ms / 1e3;
        match kind {
            HitKind::Miss => m.misses += 1,
            HitKind::Prefix => m.hits_prefix += 1,
            HitKind::Subconscious => m.hits_subconscious += 1,
        }
    }
    Some(JobEvent::Done(finish))
}

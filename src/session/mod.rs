//! `Session`: prefill and decode over the KV cache. The CLI, the server and
//! the agent all drive this one loop.
mod config;
pub mod conversation;
mod decache;
mod generate;
pub mod perplexity;
pub mod record;
mod recurrent;
mod refresh;
pub mod reuse;
pub mod save;
mod shared;
pub mod speculate;

pub use config::{default_threads, SessionConfig, FLASH_ATTN_AUTO};
pub use decache::{ClosedGaps, Gap, PositionPolicy, Removal};
pub use generate::{GenerateEvent, GenerateOptions, Generation, StopReason};
pub use recurrent::Rewound;
pub use refresh::{Reach, Refreshed};

use crate::error::{Error, Result};
use crate::ggml::GgmlType;
use crate::kv::{KvCache, KvError, KvLayout, KvParams, KvSnapshot, LayerKv, Pos, SeqId, SwaLayout, MAX_SEQ, N_KV_PAD};
use crate::model::runner::Runner;
use crate::model::Model;
use std::sync::Arc;
use std::time::Instant;

/// While another session shares the CPU, a prefill's turns last about this
/// long (seconds)...
const SHARED_TURN: f64 = 0.25;
/// ... and the first turn, before its speed is known, has this many tokens.
const SHARED_FIRST_CHUNK: usize = 64;

/// A model, its KV cache and the runner of its graphs, with the positions
/// of one conversation: what the CLI, the server and the agent drive. A
/// session is one sequence of its cache; `Session::sequence` opens another
/// on the same cache (up to `SessionConfig::n_seq`), whose steps are
/// computed in the same graphs and which can continue a prefix this one
/// computed without copying it (`Session::share_prefix_from`).
pub struct Session {
    model: Arc<Model>,
    cfg: SessionConfig,
    shared: Arc<shared::SharedCache>,
    seq: SeqId,
    next_pos: Pos,
    /// Where ops are recorded (transcripts), if anywhere.
    recorder: Option<record::Recorder>,
    /// Inside `generate` (its evaluations are recorded as tokens).
    generating: bool,
    /// Tokens evaluated again by rewinds of the recurrent state, so far.
    reevaluated: u64,
    /// Memory the next evaluation's logits go to (see `recycle`).
    spare: Vec<f32>,
}

/// The sliding-window layers' own pool, when the model has such layers and
/// their window plus a micro-batch (rounded up as attention pads) is smaller
/// than the context; llama.cpp sizes its sliding-window cache the same way.
fn swa_layout(hp: &crate::model::hparams::HParams, cfg: &SessionConfig) -> Option<SwaLayout> {
    let swa = hp.swa.as_ref().filter(|_| !cfg.swa_full)?;
    // Each sequence's window, and one micro-batch beyond.
    let size = (swa.window as usize * cfg.n_seq.max(1) + cfg.n_ubatch).div_ceil(N_KV_PAD) * N_KV_PAD;
    let layers: Vec<bool> = (0..hp.n_layer as usize).map(|il| hp.is_swa(il)).collect();
    (size < cfg.n_ctx && layers.contains(&true)).then_some(SwaLayout { layers, window: swa.window, size })
}

impl Session {
    pub fn new(model: Arc<Model>, mut cfg: SessionConfig) -> Result<Session> {
        let hp = &model.hparams;
        if cfg.n_ctx == 0 {
            cfg.n_ctx = (hp.n_ctx_train as usize).min(4096);
        }
        if cfg.n_ctx > (1 << 24) {
            return Err(Error::InvalidArgument(format!(
                "context size {} is too large (at most {})",
                cfg.n_ctx,
                1 << 24
            )));
        }
        if cfg.n_seq == 0 || cfg.n_seq > MAX_SEQ {
            return Err(Error::InvalidArgument(format!(
                "{} parallel sequences: between 1 and {MAX_SEQ} are supported",
                cfg.n_seq
            )));
        }
        cfg.n_batch = cfg.n_batch.max(1);
        cfg.n_ubatch = cfg.n_ubatch.clamp(1, cfg.n_batch);
        for (flag, t) in [("-ctk", cfg.type_k), ("-ctv", cfg.type_v)] {
            if t != GgmlType::F16 && t != GgmlType::F32 && t != GgmlType::Q8_0 {
                return Err(Error::InvalidArgument(format!("{flag} {t}: supported cache types are f16, f32, q8_0")));
            }
        }
        if cfg.type_v.is_quantized() && !cfg.flash_attn {
            // Without flash attention V is stored transposed, one element per
            // row, which a block-quantized type cannot hold (llama.cpp refuses
            // it the same way).
            return Err(Error::InvalidArgument(format!(
                "-ctv {}: a quantized V cache needs flash attention (-fa on)",
                cfg.type_v
            )));
        }
        if (cfg.type_k.is_quantized() || cfg.type_v.is_quantized()) && !hp.uniform_heads() {
            // The Hadamard rotation of a quantized cache is one matrix for one head size.
            return Err(Error::InvalidArgument(format!(
                "-ctk {} -ctv {}: a quantized cache needs one head size, and this model's layers have several",
                cfg.type_k, cfg.type_v
            )));
        }
        let n_layer = hp.n_layer as usize;
        let layers: Vec<LayerKv> = (0..n_layer)
            .map(|il| match (hp.is_recurrent(il), hp.owns_kv(il)) {
                (true, _) => LayerKv::Recurrent,
                (false, false) => LayerKv::Reads(hp.layer(il).kv_from),
                (false, true) => {
                    let n = hp.n_embd_k_gqa(il) as usize;
                    LayerKv::Cells { k: n, v: n }
                }
            })
            .collect();
        for &n in layers.iter().filter_map(|l| if let LayerKv::Cells { k, .. } = l { Some(k) } else { None }) {
            if cfg.type_k.row_bytes(n as u64).is_none() || cfg.type_v.row_bytes(n as u64).is_none() {
                return Err(Error::InvalidArgument(format!(
                    "cache type {} needs rows that are a multiple of {} elements (this model has {n})",
                    cfg.type_k,
                    cfg.type_k.block_size()
                )));
            }
        }
        let swa = swa_layout(hp, &cfg);
        let offload = &model.offload;
        // Rows on a device take none of this machine's memory; a transposed V
        // is as wide as the widest layer's in every layer.
        let v_max = hp.n_embd_k_gqa_max() as u64;
        let need: u128 = (0..n_layer)
            .filter(|&il| offload.layer_device(il).is_none())
            .filter_map(|il| match layers[il] {
                LayerKv::Cells { k, v } => Some((il, k as u64, if cfg.flash_attn { v as u64 } else { v_max })),
                _ => None,
            })
            .map(|(il, k, v)| {
                let cells = match &swa {
                    Some(s) if s.layers[il] => s.size as u128,
                    _ => cfg.n_ctx as u128,
                };
                (cfg.type_k.row_bytes(k).unwrap_or(0) + cfg.type_v.row_bytes(v).unwrap_or(0)) as u128 * cells
            })
            .sum();
        if let Some(avail) = crate::model::available_memory().filter(|&a| need > a as u128) {
            return Err(KvError::OutOfMemory {
                cells: cfg.n_ctx,
                need_mib: (need >> 20) as u64,
                avail_mib: avail >> 20,
            }
            .into());
        }
        let runner = Runner::new(&model, cfg.n_threads, cfg.flash_attn && !cfg.ggml_attention, !cfg.ggml_matmul)?;
        let cpu = runner.backend().buffer_type();
        let bufts: Vec<_> = (0..hp.n_layer as usize).map(|il| offload.kv_buffer_type(il, cpu)).collect();
        let params = KvParams {
            size: cfg.n_ctx,
            layers,
            head_dim: hp.layer(0).head_dim as usize,
            type_k: cfg.type_k,
            type_v: cfg.type_v,
            v_trans: !cfg.flash_attn,
            swa,
            n_seq: cfg.n_seq,
            recurrent: hp.recurrent.as_ref().map(|r| crate::kv::RecurrentLayout {
                layers: r.layers.clone(),
                n_embd_r: r.n_embd_r(),
                n_embd_s: r.n_embd_s(),
            }),
        };
        let kv = KvCache::new(params, &bufts)?;
        let mut runner = runner;
        // Compute memory for the largest step: a full micro-batch over the whole cache.
        runner.reserve(&model, &kv, cfg.n_ubatch.min(kv.size()))?;
        let shared = Arc::new(shared::SharedCache::new(kv, runner, cfg.n_ubatch));
        Ok(Session {
            model,
            cfg,
            shared,
            seq: 0,
            next_pos: 0,
            recorder: None,
            generating: false,
            reevaluated: 0,
            spare: Vec::new(),
        })
    }

    /// Another sequence of this session's cache, empty: it shares the
    /// cache's cells and its steps are computed together with this one's.
    /// Fails when all `SessionConfig::n_seq` sequences are open.
    pub fn sequence(&self) -> Result<Session> {
        let n = self.cfg.n_seq;
        let seq = self.shared.take_seq(n).ok_or_else(|| {
            Error::InvalidArgument(format!("all {n} sequences of this cache are open (give more parallel sequences)"))
        })?;
        Ok(Session {
            model: self.model.clone(),
            cfg: self.cfg.clone(),
            shared: self.shared.clone(),
            seq,
            next_pos: 0,
            recorder: None,
            generating: false,
            reevaluated: 0,
            spare: Vec::new(),
        })
    }

    /// This session's sequence in its cache.
    pub fn seq(&self) -> SeqId {
        self.seq
    }

    /// Go on from `other`'s tokens at positions below `end` (a common
    /// prefix: a shared system prompt), copy-free: this session's cache
    /// is emptied, then holds the same cells as `other` there. Both must
    /// be sequences of the same cache. Returns the cells shared.
    pub fn share_prefix_from(&mut self, other: &Session, end: Pos) -> Result<usize> {
        if !Arc::ptr_eq(&self.shared, &other.shared) {
            return Err(Error::InvalidArgument("the sessions do not share a cache".into()));
        }
        self.share_from(other.seq, |_| Some(end))
    }

    /// If sequence `other` of this cache holds at least `min` leading
    /// tokens of `tokens` (in its position order), go on from them as
    /// `share_prefix_from` does. Returns the tokens shared (0: nothing done).
    pub fn share_prefix_of(&mut self, other: SeqId, tokens: &[u32], min: usize) -> Result<usize> {
        if other == self.seq {
            return Ok(0);
        }
        self.share_from(other, |chain| {
            let n = chain.iter().zip(tokens).take_while(|((_, a), b)| a == *b).count();
            (n >= min.max(1)).then(|| chain[n - 1].0 + 1)
        })
    }

    /// How many leading tokens of `tokens` sequence `other` of this cache
    /// holds, in its position order (0 for a sequence it does not have).
    pub fn common_prefix_with(&self, other: SeqId, tokens: &[u32]) -> usize {
        let pool = self.shared.pool();
        if other == self.seq || pool.kv.check_seq(other).is_err() {
            return 0;
        }
        pool.kv.live_chain(other).iter().zip(tokens).take_while(|((_, a), b)| a == *b).count()
    }

    /// Share `other`'s cells below the end `pick` chooses from its chain
    /// (`None`: nothing), after emptying this sequence.
    fn share_from(&mut self, other: SeqId, pick: impl FnOnce(&[(Pos, u32)]) -> Option<Pos>) -> Result<usize> {
        let mut pool = self.shared.pool();
        pool.kv.check_seq(other)?;
        let Some(end) = pick(&pool.kv.live_chain(other)) else { return Ok(0) };
        pool.kv.clear_seq(self.seq);
        let n = pool.kv.share_range(other, self.seq, 0, end)?;
        self.next_pos = pool.kv.max_pos(self.seq).map_or(0, |p| p + 1);
        let chain = pool.kv.live_chain(self.seq);
        drop(pool);
        // A transcript replays the shared tokens as evaluated here: what an
        // engine with a cache of its own would have done to get here.
        self.record(record::SessionOp::Clear);
        let (positions, tokens): (Vec<Pos>, Vec<u32>) = chain.into_iter().unzip();
        self.record(record::SessionOp::Eval { tokens: &tokens, positions: &positions });
        Ok(n)
    }

    /// Micro-batches the cache has computed, and the sequences they held in
    /// all (their ratio is the mean batch width).
    pub fn batch_stats(&self) -> (u64, u64) {
        self.shared.batch_stats()
    }

    /// A handle that reads `batch_stats` without the session.
    pub fn batch_counter(&self) -> BatchCounter {
        BatchCounter(self.shared.clone())
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    pub fn n_ctx(&self) -> usize {
        self.shared.pool().kv.size()
    }

    /// The sliding-window layers' own pool, if they have one: how many
    /// layers keep their rows there, and its cells.
    pub fn swa_pool(&self) -> Option<(usize, usize)> {
        self.shared.pool().kv.swa_pool()
    }

    /// Bytes of K and V the cache holds, all layers.
    pub fn kv_bytes(&self) -> usize {
        self.shared.pool().kv.bytes()
    }

    /// Cells holding this sequence's tokens (shared ones included).
    pub fn n_live(&self) -> usize {
        self.shared.pool().kv.n_held(self.seq)
    }

    /// Cells free for new tokens (in the pool all sequences share).
    pub fn n_free(&self) -> usize {
        self.shared.pool().kv.n_free()
    }

    /// Cells free for new tokens once idle sequences of the same cache have
    /// given theirs back, least recently used first, until `n` are free (or
    /// none is idle): a side request never throws a busy conversation away.
    pub fn room(&self, n: usize) -> usize {
        self.shared.make_room(self.seq, n);
        self.n_free()
    }

    /// The position the next token will take.
    pub fn next_pos(&self) -> Pos {
        self.next_pos
    }

    /// Record per-node compute times of the following evaluations.
    pub fn start_profile(&mut self) {
        self.shared.pool().runner.start_profile();
    }

    pub fn stop_profile(&mut self) -> Vec<crate::ggml::NodeTime> {
        self.shared.pool().runner.stop_profile()
    }

    /// Let the compute threads sleep until the next evaluation (e.g. while
    /// another engine runs, or while waiting for user input).
    pub fn pause_threads(&self) {
        self.shared.pool().runner.pause_threads();
    }

    /// Pieces the scheduler cut the last graph into (one per change of
    /// backend along it; 1 when everything runs on the CPU).
    pub fn graph_splits(&self) -> usize {
        self.shared.pool().runner.graph_splits()
    }

    /// The backends that compute, devices first ("RPC0+CPU").
    pub fn backend_name(&self) -> String {
        self.shared.pool().runner.backend_name()
    }

    /// Forget everything this sequence holds (positions restart at 0;
    /// cells other sequences hold stay theirs).
    pub fn clear(&mut self) {
        self.shared.pool().kv.clear_seq(self.seq);
        self.next_pos = 0;
        self.record(record::SessionOp::Clear);
    }

    /// The shape of the cache's contents (a snapshot only fits the same one).
    pub fn kv_layout(&self) -> KvLayout {
        self.shared.pool().kv.layout()
    }

    /// Per layer: bytes of a cell's K row and of its V values (what a
    /// snapshot holds per cell).
    pub fn kv_row_bytes(&self) -> Result<Vec<(usize, usize)>> {
        Ok(self.shared.pool().kv.row_bytes()?)
    }

    /// Copy the cache's used cells out. Pending position shifts are applied
    /// first (so the keys saved are rotated to the positions saved).
    pub fn snapshot(&mut self) -> Result<KvSnapshot> {
        self.sync_recurrent()?;
        let mut pool = self.shared.pool();
        let shared::Pool { kv, runner } = &mut *pool;
        kv.apply_pending_shift(runner.sched(), &*self.model)?;
        Ok(kv.snapshot(self.seq, self.next_pos)?)
    }

    /// Replace the cache's contents with `snap` (checked first: a bad
    /// snapshot leaves the session as it was).
    pub fn restore(&mut self, snap: &KvSnapshot) -> Result<()> {
        self.restore_tagged(snap, None)
    }

    /// [`Session::snapshot`], told to the transcript under `tag`, so that a
    /// replay can keep its own copy and restore it where this session does.
    pub fn snapshot_tagged(&mut self, tag: u64) -> Result<KvSnapshot> {
        let snap = self.snapshot()?;
        self.record(record::SessionOp::Saved { tag });
        Ok(snap)
    }

    /// [`Session::restore`] of a snapshot taken by [`Session::snapshot_tagged`].
    pub fn restore_tagged(&mut self, snap: &KvSnapshot, tag: Option<u64>) -> Result<()> {
        let mut pool = self.shared.pool();
        pool.kv.restore(self.seq, snap, self.model.hparams.n_vocab)?;
        pool.runner.reset();
        drop(pool);
        self.next_pos = snap.next_pos;
        self.record(record::SessionOp::Restore { tag });
        Ok(())
    }

    /// Append `tokens` at the next positions. Returns the logits of the last
    /// token, or of every token when `all_logits` (rows of n_vocab).
    pub fn eval(&mut self, tokens: &[u32], all_logits: bool) -> Result<Vec<f32>> {
        let n = i32::try_from(tokens.len()).ok().and_then(|n| self.next_pos.checked_add(n));
        let end = n.ok_or_else(|| KvError::PositionRange("token positions would overflow 32 bits".into()))?;
        let positions: Vec<Pos> = (self.next_pos..end).collect();
        let out = self.eval_at(tokens, &positions, all_logits)?;
        Ok(out)
    }

    /// Evaluate `tokens` at explicit, strictly increasing `positions` that no
    /// cached token holds (a query sees every cached token at or before its
    /// position).
    pub fn eval_at(&mut self, tokens: &[u32], positions: &[Pos], all_logits: bool) -> Result<Vec<f32>> {
        if let Some(&first) = positions.first() {
            self.recurrent_before_eval(first)?;
        }
        let out = self.eval_unrecorded(tokens, positions, all_logits)?;
        self.record(record::SessionOp::Eval { tokens, positions });
        Ok(out)
    }

    /// `eval_at` without the transcript record (a rewind's re-evaluation,
    /// which a replay redoes by itself).
    fn eval_unrecorded(&mut self, tokens: &[u32], positions: &[Pos], all_logits: bool) -> Result<Vec<f32>> {
        if tokens.len() != positions.len() {
            return Err(Error::InvalidArgument("tokens and positions differ in length".into()));
        }
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let n_vocab = self.model.hparams.n_vocab as usize;
        if let Some((i, &t)) = tokens.iter().enumerate().find(|(_, &t)| t as usize >= n_vocab) {
            return Err(Error::InvalidArgument(format!("token {i} has id {t}, outside the vocabulary (0..{n_vocab})")));
        }
        if positions.windows(2).any(|w| w[1] <= w[0]) {
            return Err(Error::InvalidArgument("positions within one evaluation must be strictly increasing".into()));
        }
        self.room(tokens.len());
        self.shared.pool().kv.check_new(self.seq, positions)?;
        // (The first chunk's rows are moved, not copied: a draft's batch
        // carries a row of n_vocab logits per token.)
        let mut out = Vec::new();
        let (mut at, mut rate) = (0, None);
        while at < tokens.len() {
            let end = (at + self.chunk_len(rate)).min(tokens.len());
            let (toks, poss) = (&tokens[at..end], &positions[at..end]);
            let outputs: Vec<usize> = if all_logits {
                (0..toks.len()).collect()
            } else if end == tokens.len() {
                vec![toks.len() - 1]
            } else {
                vec![]
            };
            let t0 = Instant::now();
            let logits = self.step(toks, poss, &outputs)?;
            rate = Some(toks.len() as f64 / t0.elapsed().as_secs_f64().max(1e-6));
            if out.is_empty() {
                out = logits;
            } else {
                out.extend_from_slice(&logits);
            }
            at = end;
        }
        if let Some(&p) = positions.iter().max() {
            self.next_pos = self.next_pos.max(p.saturating_add(1));
        }
        self.recurrent_after_eval(tokens.len());
        Ok(out)
    }

    /// Tokens in the next micro-batch: `-ub`, unless another sequence of the
    /// cache is busy (a conversation streaming tokens, whose steps share
    /// this one's graphs): then as many as
    /// take about `SHARED_TURN` at the last chunk's `rate` (tokens per
    /// second), so that a long prefill never stalls its stream for longer.
    fn chunk_len(&self, rate: Option<f64>) -> usize {
        let ub = self.cfg.n_ubatch.max(1);
        if !self.shared.others_busy(self.seq) {
            return ub;
        }
        let n = rate.map_or(SHARED_FIRST_CHUNK, |r| (r * SHARED_TURN) as usize);
        // Multiples of 16: fewer graph shapes to build. (At depth 16k on 2
        // cores, 16 tokens take about 0.4 s.)
        (n / 16 * 16).clamp(16, ub.max(16)).min(ub)
    }

    /// Run one micro-batch, together with whatever other sequences of the
    /// cache have queued: pending key rotations are applied, the tokens
    /// placed in free cells, the graph run; returns the logits of the rows
    /// in `outputs` (the cells are given back if the graph fails).
    fn step(&mut self, tokens: &[u32], positions: &[Pos], outputs: &[usize]) -> Result<Vec<f32>> {
        let buffer = std::mem::take(&mut self.spare);
        self.shared.step(&self.model, self.seq, tokens, positions, outputs, buffer)
    }

    /// Give back logits an evaluation returned, once read: the next
    /// evaluation writes its logits to the largest such memory instead of
    /// fresh pages (a draft's batch returns a row of n_vocab logits per
    /// token: 64 MiB for 64 rows of gemma-3; faulting them in took longer
    /// than copying them). `generate` recycles its own and lets the memory
    /// go when it returns.
    pub fn recycle(&mut self, logits: Vec<f32>) {
        if logits.capacity() > self.spare.capacity() {
            self.spare = logits;
        }
    }
}

/// Reads how a cache's steps were batched (see `Session::batch_stats`).
#[derive(Clone)]
pub struct BatchCounter(Arc<shared::SharedCache>);

impl BatchCounter {
    pub fn batch_stats(&self) -> (u64, u64) {
        self.0.batch_stats()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The last session of a cache drops the cache with it; another gives
        // its sequence back.
        if Arc::strong_count(&self.shared) > 1 {
            self.shared.release_seq(self.seq);
        }
    }
}

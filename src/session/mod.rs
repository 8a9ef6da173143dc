//! `Session`: prefill and decode over the KV cache. The CLI, the server and
//! the agent all drive this one loop.
mod config;
pub mod conversation;
mod decache;
mod generate;
pub mod reuse;
pub mod save;
pub mod state;
pub mod perplexity;
pub mod record;

pub use config::{default_threads, SessionConfig, FLASH_ATTN_AUTO};
pub use decache::{PositionPolicy, Removal};
pub use generate::{GenerateEvent, GenerateOptions, Generation, StopReason};

use crate::error::{Error, Result};
use crate::ggml::{Backend, Context, GgmlType, OwnedGraph, Scheduler};
use crate::kv::{mask::build_mask, KvCache, Pool, Pos, SwaLayout};
use crate::model::graph::StepGraph;
use crate::model::Model;
use std::sync::Arc;
use std::time::Instant;

/// Attention spans the live range rounded up to this many cells, so graph
/// shapes stay stable across steps (llama.cpp pads the same way).
const N_KV_PAD: usize = 256;

/// The last step's graph, its shape key (tokens, attended cells in each
/// pool, outputs), and where its optional inputs sit among the kept tensors.
struct StepCache {
    key: (usize, usize, usize, usize),
    graph: OwnedGraph,
    out_ids: Option<usize>,
    k_rot: Option<usize>,
    v_rot: Option<usize>,
    mask_swa: Option<usize>,
    k_idxs_swa: Option<usize>,
    v_idxs_swa: Option<usize>,
}

/// Where the optional inputs land after the six fixed slots, in the order
/// they are kept (out_ids, k_rot, v_rot, mask_swa, k_idxs_swa, v_idxs_swa),
/// given which exist.
fn optional_slots<const N: usize>(present: [bool; N]) -> [Option<usize>; N] {
    let mut next = 6;
    present.map(|p| {
        p.then(|| {
            next += 1;
            next - 1
        })
    })
}

pub struct Session {
    model: Arc<Model>,
    cfg: SessionConfig,
    kv: KvCache,
    sched: Scheduler,
    backend: Backend,
    /// Backends of the devices layers were offloaded to (see `Model::offload`).
    device_backends: Vec<Backend>,
    next_pos: Pos,
    mask: Vec<f32>,
    mask_swa: Vec<f32>,
    /// Graphs computed (see `graphs_run`).
    graphs_run: u64,
    /// The Hadamard matrix for q/k when the K cache is quantized.
    k_rotation: Option<Vec<f32>>,
    /// The Hadamard matrix for v and attention's output when the V cache is quantized.
    v_rotation: Option<Vec<f32>>,
    /// Reused while the shapes match.
    step_graph: Option<StepCache>,
    /// Where ops are recorded (transcripts), if anywhere.
    recorder: Option<record::Recorder>,
    /// Inside `generate` (its evaluations are recorded as tokens).
    generating: bool,
}

/// Memory the system can still give (Linux `MemAvailable`); `None` where
/// it cannot be read.
pub(crate) fn available_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The sliding-window layers' own pool, when the model has such layers and
/// their window plus a micro-batch (rounded up as attention pads) is smaller
/// than the context; llama.cpp sizes its sliding-window cache the same way.
fn swa_layout(hp: &crate::model::hparams::HParams, cfg: &SessionConfig) -> Option<SwaLayout> {
    let swa = hp.swa.as_ref().filter(|_| !cfg.swa_full)?;
    let size = (swa.window as usize + cfg.n_ubatch).div_ceil(N_KV_PAD) * N_KV_PAD;
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
            return Err(Error::InvalidArgument(format!("context size {} is too large (at most {})", cfg.n_ctx, 1 << 24)));
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
        let backend = Backend::cpu(cfg.n_threads);
        let kv_elems = hp.n_embd_k_gqa() as usize;
        if cfg.type_k.row_bytes(kv_elems as u64).is_none() || cfg.type_v.row_bytes(kv_elems as u64).is_none() {
            return Err(Error::InvalidArgument(format!(
                "cache type {} needs rows that are a multiple of {} elements (this model has {kv_elems})",
                cfg.type_k, cfg.type_k.block_size()
            )));
        }
        let swa = swa_layout(hp, &cfg);
        let offload = &model.offload;
        // Rows on a device take none of this machine's memory.
        let rows: u128 = (0..hp.n_layer as usize)
            .filter(|&il| offload.layer_device(il).is_none())
            .map(|il| match &swa {
                Some(s) if s.layers[il] => s.size as u128,
                _ => cfg.n_ctx as u128,
            })
            .sum();
        let need = (cfg.type_k.row_bytes(kv_elems as u64).unwrap_or(0) + cfg.type_v.row_bytes(kv_elems as u64).unwrap_or(0)) as u128 * rows;
        if let Some(avail) = available_memory().filter(|&a| need > a as u128) {
            return Err(Error::Context(format!(
                "a context of {} cells needs {} MiB for its KV cache, but {} MiB of memory are available (lower -c)",
                cfg.n_ctx,
                need >> 20,
                avail >> 20
            )));
        }
        let bufts: Vec<_> = (0..hp.n_layer as usize).map(|il| offload.kv_buffer_type(il, backend.buffer_type())).collect();
        let kv = KvCache::new(cfg.n_ctx, hp.n_layer as usize, kv_elems, kv_elems, cfg.type_k, cfg.type_v, !cfg.flash_attn, &bufts, swa)
            .ok_or_else(|| Error::Context(format!("could not allocate a KV cache of {} cells (out of memory?)", cfg.n_ctx)))?;
        let mut device_backends = Vec::new();
        for d in offload.used_devices() {
            device_backends.push(d.backend(cfg.n_threads).ok_or_else(|| Error::Context(format!("could not start a backend on {}", d.name())))?);
        }
        // The scheduler takes the devices first and the CPU last.
        let all: Vec<&Backend> = device_backends.iter().chain([&backend]).collect();
        let sched = Scheduler::new(&all, model.graph_size());
        let k_rotation = crate::kv::rotation::k_rotation_size(hp.head_dim as usize, cfg.type_k.is_quantized())
            .map(crate::kv::rotation::hadamard);
        let v_rotation = crate::kv::rotation::v_rotation_size(hp.head_dim as usize, cfg.type_v.is_quantized())
            .map(crate::kv::rotation::hadamard);
        let mut s = Session {
            model,
            cfg,
            kv,
            sched,
            backend,
            device_backends,
            next_pos: 0,
            mask: Vec::new(),
            mask_swa: Vec::new(),
            graphs_run: 0,
            k_rotation,
            v_rotation,
            step_graph: None,
            recorder: None,
            generating: false,
        };
        s.reserve()?;
        Ok(s)
    }

    /// Reserve compute memory for the largest step (a full micro-batch over the whole cache).
    fn reserve(&mut self) -> Result<()> {
        let n = self.cfg.n_ubatch.min(self.kv.size());
        let ctx = Context::new(self.model.graph_size(), self.model.graph_size());
        let n_swa = self.kv.swa.as_ref().map_or(0, |p| p.cells.size());
        let mut g = StepGraph::new(&ctx, &self.model, &self.kv, n, self.kv.size(), n_swa, n);
        let logits = self.model.arch.build(&mut g);
        g.graph.expand(logits);
        self.sched.reserve(&g.graph)?;
        tracing::debug!(compute_buffer_mib = self.sched.buffer_size(&self.backend) as f64 / 1048576.0, nodes = g.graph.n_nodes(), "reserved");
        self.step_graph = None;
        Ok(())
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    pub fn n_ctx(&self) -> usize {
        self.kv.size()
    }

    /// The sliding-window layers' own pool, if they have one: how many
    /// layers keep their rows there, and its cells.
    pub fn swa_pool(&self) -> Option<(usize, usize)> {
        let p = self.kv.swa.as_ref()?;
        Some((self.kv.swa_layers().iter().filter(|&&s| s).count(), p.cells.size()))
    }

    /// Bytes of K and V the cache holds, all layers.
    pub fn kv_bytes(&self) -> usize {
        self.kv.bytes()
    }

    /// Cells holding live tokens.
    pub fn n_live(&self) -> usize {
        self.kv.cells.n_live()
    }

    /// The position the next token will take.
    pub fn next_pos(&self) -> Pos {
        self.next_pos
    }

    /// Record per-node compute times of the following evaluations.
    pub fn start_profile(&mut self) {
        self.sched.start_profile();
    }

    pub fn stop_profile(&mut self) -> Vec<crate::ggml::NodeTime> {
        self.sched.stop_profile()
    }

    /// Let the compute threads sleep until the next evaluation (e.g. while
    /// another engine runs, or while waiting for user input).
    pub fn pause_threads(&self) {
        self.backend.pause_threads();
    }

    /// Pieces the scheduler cut the last graph into (one per change of
    /// backend along it; 1 when everything runs on the CPU).
    pub fn graph_splits(&self) -> usize {
        self.sched.n_splits().max(0) as usize
    }

    /// The backends that compute, devices first ("RPC0+CPU").
    pub fn backend_name(&self) -> String {
        self.device_backends.iter().chain([&self.backend]).map(Backend::name).collect::<Vec<_>>().join("+")
    }

    /// Forget everything (empty cache, positions restart at 0).
    pub fn clear(&mut self) {
        self.kv.cells.clear();
        if let Some(swa) = &mut self.kv.swa {
            swa.cells.clear();
        }
        self.next_pos = 0;
        self.record(record::SessionOp::Clear);
    }

    /// Append `tokens` at the next positions. Returns the logits of the last
    /// token, or of every token when `all_logits` (rows of n_vocab).
    pub fn eval(&mut self, tokens: &[u32], all_logits: bool) -> Result<Vec<f32>> {
        let n = i32::try_from(tokens.len()).ok().and_then(|n| self.next_pos.checked_add(n));
        let end = n.ok_or_else(|| Error::Context("token positions would overflow 32 bits".into()))?;
        let positions: Vec<Pos> = (self.next_pos..end).collect();
        let out = self.eval_at(tokens, &positions, all_logits)?;
        Ok(out)
    }

    /// Evaluate `tokens` at explicit, strictly increasing `positions` that no
    /// cached token holds (a query sees every cached token at or before its
    /// position).
    pub fn eval_at(&mut self, tokens: &[u32], positions: &[Pos], all_logits: bool) -> Result<Vec<f32>> {
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
        if let Some(&p) = positions.iter().find(|&&p| p < 0 || self.kv.cells.has_pos(p)) {
            return Err(Error::InvalidArgument(format!("position {p} is negative or already holds a token")));
        }
        if let Some(swa) = &self.kv.swa {
            if let Some(p) = swa.missing_for(&self.kv.cells, positions[0], positions[positions.len() - 1]) {
                return Err(Error::Context(format!(
                    "a query at position {} would see position {p}, which the sliding-window layers have already dropped \
                     (their pool holds the last {} cells): the cache cannot go on from there exactly; prefill again, or use --swa-full",
                    positions[0],
                    swa.cells.size()
                )));
            }
        }
        if tokens.len() > self.kv.cells.n_free() {
            return Err(Error::Context(format!(
                "the context is full: {} of {} cells are live and {} more tokens do not fit (raise -c)",
                self.kv.cells.n_live(), self.kv.size(), tokens.len()
            )));
        }
        let mut out = Vec::with_capacity(if all_logits { tokens.len() * n_vocab } else { n_vocab });
        let step = self.cfg.n_ubatch;
        let n_chunks = tokens.len().div_ceil(step);
        for (ci, (toks, poss)) in tokens.chunks(step).zip(positions.chunks(step)).enumerate() {
            let last = ci + 1 == n_chunks;
            let outputs: Vec<usize> = if all_logits { (0..toks.len()).collect() } else if last { vec![toks.len() - 1] } else { vec![] };
            let logits = self.step(toks, poss, &outputs)?;
            out.extend_from_slice(&logits);
        }
        if let Some(&p) = positions.iter().max() {
            self.next_pos = self.next_pos.max(p.saturating_add(1));
        }
        self.record(record::SessionOp::Eval { tokens, positions });
        Ok(out)
    }

    /// Run one micro-batch: place the tokens in free cells, build and run
    /// the graph, return the logits of the rows in `outputs`.
    fn step(&mut self, tokens: &[u32], positions: &[Pos], outputs: &[usize]) -> Result<Vec<f32>> {
        self.apply_pending_shift()?;
        let cells = self.kv.cells.find_free(tokens.len()).ok_or_else(|| Error::Context("the context is full".into()))?;
        let swa_cells = match &mut self.kv.swa {
            Some(p) => {
                p.make_room(tokens.len(), positions[0]).map_err(Error::Context)?;
                Some(p.cells.find_free(tokens.len()).ok_or_else(|| Error::Context("the sliding-window pool is full".into()))?)
            }
            None => None,
        };
        for (pool, cells) in [(Pool::Global, Some(&cells)), (Pool::Swa, swa_cells.as_ref())] {
            for ((&c, &t), &p) in cells.into_iter().flatten().zip(tokens).zip(positions) {
                self.kv.pool_cells_mut(pool).fill(c, t, p);
            }
        }
        let res = self.compute(tokens, positions, &cells, swa_cells.as_deref(), outputs);
        if res.is_err() {
            for (pool, cells) in [(Pool::Global, Some(&cells)), (Pool::Swa, swa_cells.as_ref())] {
                for &c in cells.into_iter().flatten() {
                    self.kv.pool_cells_mut(pool).remove(c);
                }
            }
        }
        res
    }

    /// Destinations of the new tokens' V in a pool: their cells, or every
    /// element of each when V is transposed.
    fn v_idxs(&self, pool: Pool, cells: &[usize]) -> Vec<i64> {
        if !self.kv.v_trans {
            return cells.iter().map(|&c| c as i64).collect();
        }
        let n_embd_v = self.kv.n_embd_v;
        let mut v = Vec::with_capacity(cells.len() * n_embd_v);
        for &c in cells {
            v.extend((0..n_embd_v).map(|j| self.kv.v_index(pool, c, j) as i64));
        }
        v
    }

    fn compute(
        &mut self, tokens: &[u32], positions: &[Pos], cells: &[usize], swa_cells: Option<&[usize]>, outputs: &[usize],
    ) -> Result<Vec<f32>> {
        let t_setup = Instant::now();
        let n_kv = self.kv.cells.n_kv(N_KV_PAD);
        let n_kv_swa = self.kv.swa.as_ref().map_or(0, |p| p.cells.n_kv(N_KV_PAD));
        let n_outputs = outputs.len().max(1);
        let key = (tokens.len(), n_kv, n_kv_swa, n_outputs);
        if self.step_graph.as_ref().map(|c| c.key) != Some(key) {
            // New shapes: build and allocate a new graph (the old one's
            // allocation is released by the scheduler's reset).
            self.step_graph = None;
            let ctx = Context::new(self.model.graph_size(), self.model.graph_size());
            let (model, kv) = (&self.model, &self.kv);
            let g = OwnedGraph::build(ctx, |ctx, _| {
                let mut g = StepGraph::new(ctx, model, kv, tokens.len(), n_kv, n_kv_swa, n_outputs);
                let logits = model.arch.build(&mut g);
                logits.set_output();
                g.graph.expand(logits);
                let i = &g.inputs;
                // Slots 0..=5, then the optional ones (see `optional_slots`).
                let mut keep = vec![i.tokens, i.pos, i.k_idxs, i.v_idxs, i.mask, logits];
                keep.extend(i.out_ids);
                keep.extend(i.k_rot);
                keep.extend(i.v_rot);
                keep.extend(i.mask_swa);
                keep.extend(i.k_idxs_swa);
                keep.extend(i.v_idxs_swa);
                (g.graph, keep)
            });
            self.sched.alloc(&g.graph())?;
            tracing::trace!(target: "decache::graph", "{}", g.graph().describe().join("\n"));
            tracing::debug!(nodes = g.graph().n_nodes(), splits = self.sched.n_splits(), n_tokens = tokens.len(), n_kv, "new step graph");
            let pool = self.kv.swa.is_some();
            let [out_ids, k_rot, v_rot, mask_swa, k_idxs_swa, v_idxs_swa] = optional_slots([
                n_outputs < tokens.len(),
                self.k_rotation.is_some(),
                self.v_rotation.is_some(),
                self.model.hparams.swa.is_some(),
                pool,
                pool,
            ]);
            self.step_graph = Some(StepCache { key, graph: g, out_ids, k_rot, v_rot, mask_swa, k_idxs_swa, v_idxs_swa });
        }
        let cache = self.step_graph.as_ref().expect("step graph");
        let g = &cache.graph;
        let (inp_tokens, inp_pos, inp_k, inp_v, inp_mask, logits) =
            (g.tensor(0), g.tensor(1), g.tensor(2), g.tensor(3), g.tensor(4), g.tensor(5));

        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        inp_tokens.write_i32(&ids);
        inp_pos.write_i32(positions);
        let k_idxs: Vec<i64> = cells.iter().map(|&c| c as i64).collect();
        inp_k.write_i64(&k_idxs);
        inp_v.write_i64(&self.v_idxs(Pool::Global, cells));
        if let (Some(sc), Some(ks), Some(vs)) = (swa_cells, cache.k_idxs_swa, cache.v_idxs_swa) {
            g.tensor(ks).write_i64(&sc.iter().map(|&c| c as i64).collect::<Vec<_>>());
            g.tensor(vs).write_i64(&self.v_idxs(Pool::Swa, sc));
        }
        build_mask(&self.kv.cells, n_kv, positions, None, &mut self.mask);
        inp_mask.write_f32(&self.mask);
        if let (Some(swa), Some(slot)) = (&self.model.hparams.swa, cache.mask_swa) {
            match &self.kv.swa {
                Some(p) => build_mask(&p.cells, n_kv_swa, positions, Some(swa.window), &mut self.mask_swa),
                None => build_mask(&self.kv.cells, n_kv, positions, Some(swa.window), &mut self.mask_swa),
            }
            g.tensor(slot).write_f32(&self.mask_swa);
        }
        if n_outputs < tokens.len() {
            let rows: Vec<i32> = if outputs.is_empty() { vec![tokens.len() as i32 - 1] } else { outputs.iter().map(|&r| r as i32).collect() };
            g.tensor(cache.out_ids.expect("out_ids slot")).write_i32(&rows);
        }
        if let (Some(h), Some(slot)) = (&self.k_rotation, cache.k_rot) {
            g.tensor(slot).write_f32(h);
        }
        if let (Some(h), Some(slot)) = (&self.v_rotation, cache.v_rot) {
            g.tensor(slot).write_f32(h);
        }

        let t0 = Instant::now();
        self.sched.compute(&g.graph())?;
        self.graphs_run += 1;
        let dt = t0.elapsed();
        tracing::trace!(tokens = tokens.len(), n_kv, setup_us = (t0 - t_setup).as_micros() as u64, compute_us = dt.as_micros() as u64, "step");
        if outputs.is_empty() {
            return Ok(Vec::new());
        }
        let n_vocab = self.model.hparams.n_vocab as usize;
        let mut out = vec![0f32; n_vocab * outputs.len()];
        logits.read_f32(&mut out, 0);
        Ok(out)
    }
}

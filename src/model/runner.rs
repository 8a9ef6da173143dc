//! Running a model's step graphs: the backends (the CPU's, and the devices'
//! layers were offloaded to), the scheduler that splits graphs between them,
//! and the last step graph, reused while its shapes match. The KV cache runs
//! its own small graphs (K-shift, defrag) on the same scheduler; a step
//! graph whose allocation they replaced is built again before it runs.
use super::graph::{StepGraph, StepInputs};
use super::Model;
use crate::error::{Error, Result};
use crate::ggml::{Backend, Context, NodeTime, OwnedGraph, Scheduler};
use crate::kv::{KShift, KvCache, Placement, Pos, SeqId};
use std::time::Instant;

/// A step graph's shapes: tokens, attended cells in each pool, outputs,
/// sequences, and the cells each row attends when rows are computed alone.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StepKey {
    n_tokens: usize,
    n_kv: usize,
    n_kv_swa: usize,
    n_outputs: usize,
    n_seqs: usize,
    rows: Option<(Vec<usize>, Vec<usize>)>,
}

/// Most rows a step computes as lone rows: a micro-batch at llama.cpp's
/// default size (`-ub 512`), so any draft length (`--draft-max`) up to it.
pub const ROWS_ALONE_MAX: usize = 512;
/// Most runs of rows attending the same count of cells in such a step: the
/// counts are padded to `N_KV_PAD` and grow along the batch.
pub const ROWS_ALONE_GROUPS: usize = ROWS_ALONE_MAX / crate::kv::N_KV_PAD + 2;

/// Whether a step computes each row as a step of that token alone would,
/// bit for bit: a step of one sequence that wants every row's logits (a
/// draft being verified), with flash attention on the CPU, and where the
/// weights' products allow it (`Model::rows_multiply_alone`). ggml-cpu
/// chooses its kernels by the rows of an op, and they round apart (enough
/// to swap near-tied tokens): a lone query's attention over 512 cells or
/// more splits the keys between the threads and joins the partial sums, a
/// batch's rows take theirs in one pass; repacked weights take a gemm from
/// 4 rows on, K-quants tiles from 8. So each row attends as a lone query
/// over the cells its step alone would attend (`blocks::attend`), and
/// products whose kernel would differ take the batch a row per plane
/// (`Context::multiply_rows_alone`): greedy speculation then writes plain
/// decoding's text exactly.
fn rows_alone(model: &Model, flash: bool, cpu_only: bool, step: &StepKey, n_outputs: usize) -> bool {
    flash
        && cpu_only
        && step.n_seqs == 1
        && step.n_tokens > 1
        && step.n_tokens <= ROWS_ALONE_MAX
        && n_outputs == step.n_tokens
        && model.rows_multiply_alone(step.n_tokens)
}

/// The last step's graph: its shape key, its inputs by name, and the
/// scheduler allocation it holds.
struct StepCache {
    key: StepKey,
    graph: OwnedGraph,
    inputs: StepInputs<usize>,
    logits: usize,
    allocation: u64,
}

pub struct Runner {
    backend: Backend,
    /// Backends of the devices layers were offloaded to (see `Model::offload`).
    device_backends: Vec<Backend>,
    sched: Scheduler,
    step: Option<StepCache>,
    /// Attend through decache's kernels (see `new`).
    own_attention: bool,
    /// Multiply packed weights through decache's products (see `new`).
    own_matmul: bool,
}

impl Runner {
    /// Backends for `model`'s devices and the CPU (`n_threads`), and a
    /// scheduler over them (devices first, the CPU last).
    /// `own_attention`: with flash attention, steps attend through decache's
    /// kernels (`blocks::attend`) when every layer is on the CPU.
    /// `own_matmul`: the weights the model packed (`Model::packed`) are
    /// multiplied by decache's products (`Context::use_packed`), likewise.
    pub fn new(model: &Model, n_threads: usize, own_attention: bool, own_matmul: bool) -> Result<Runner> {
        let backend = Backend::cpu(n_threads);
        let mut device_backends = Vec::new();
        for d in model.offload.used_devices() {
            device_backends.push(d.backend(n_threads).ok_or_else(|| Error::Backend(d.name().to_string()))?);
        }
        let all: Vec<&Backend> = device_backends.iter().chain([&backend]).collect();
        let sched = Scheduler::new(&all, model.graph_size());
        let own_attention = own_attention && device_backends.is_empty();
        let own_matmul = own_matmul && device_backends.is_empty();
        Ok(Runner { backend, device_backends, sched, step: None, own_attention, own_matmul })
    }

    /// The CPU backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The scheduler, for the cache's own graphs.
    pub fn sched(&mut self) -> &mut Scheduler {
        &mut self.sched
    }

    /// Reserve compute memory for the largest step: `n` tokens over the
    /// whole cache.
    pub fn reserve(&mut self, model: &Model, kv: &KvCache, n: usize) -> Result<()> {
        let ctx = Context::new(model.graph_size(), model.graph_size());
        let n_swa = kv.swa_pool().map_or(0, |(_, cells)| cells);
        let mut g = StepGraph::new(&ctx, model, kv, n, kv.size(), n_swa, n, 1);
        let logits = model.arch.build(&mut g);
        g.graph.expand(logits);
        self.sched.reserve(&g.graph)?;
        tracing::debug!(
            compute_buffer_mib = self.sched.buffer_size(&self.backend) as f64 / 1048576.0,
            nodes = g.graph.n_nodes(),
            "reserved"
        );
        self.step = None;
        Ok(())
    }

    /// Run one micro-batch whose tokens (of sequences `seqs`) the cache has
    /// placed: build (or reuse) the graph, fill its inputs, compute, and
    /// return the logits of the rows in `outputs` (rows of n_vocab), in
    /// `out`'s memory.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        model: &Model,
        kv: &mut KvCache,
        tokens: &[u32],
        positions: &[Pos],
        seqs: &[SeqId],
        placed: &Placement,
        outputs: &[usize],
        mut out: Vec<f32>,
    ) -> Result<Vec<f32>> {
        let t_setup = Instant::now();
        let (n_kv, n_kv_swa) = kv.n_kv();
        let n_outputs = outputs.len().max(1);
        let step_seqs = step_sequences(seqs);
        if model.hparams.recurrent.is_some() && !grouped(seqs, &step_seqs) {
            return Err(Error::Internal(
                "a step of a model with recurrent layers must hold as many tokens of each sequence, one after the other"
                    .into(),
            ));
        }
        let mut key =
            StepKey { n_tokens: tokens.len(), n_kv, n_kv_swa, n_outputs, n_seqs: step_seqs.len(), rows: None };
        if rows_alone(model, !kv.v_trans(), self.device_backends.is_empty(), &key, outputs.len()) {
            key.rows = Some(kv.n_kv_by_row(placed));
        }
        // A graph whose allocation the cache's own graphs (K-shift, defrag)
        // replaced is built again: the scheduler cannot allocate a graph it
        // has already split a second time (devices lose their assignments).
        let current = self.sched.allocations();
        if self.step.as_ref().is_none_or(|c| c.key != key || c.allocation != current) {
            // New shapes: build and allocate a new graph (the old one's
            // allocation is released by the scheduler's reset).
            self.step = None;
            let ctx = Context::new(model.graph_size(), model.graph_size());
            let mut inputs = None;
            let mut logits_at = 0;
            let kv_ref = &*kv;
            let g = OwnedGraph::build(ctx, |ctx, _| {
                if let Some(p) = model.packed().filter(|_| self.own_matmul) {
                    ctx.use_packed(p);
                }
                let mut g =
                    StepGraph::new(ctx, model, kv_ref, tokens.len(), n_kv, n_kv_swa, n_outputs, step_seqs.len());
                if let Some((global, swa)) = &key.rows {
                    g.rows_alone(global, swa);
                }
                if self.own_attention {
                    g.own_attention();
                }
                let logits = model.arch.build(&mut g);
                logits.set_output();
                g.graph.expand(logits);
                let mut keep = Vec::new();
                inputs = Some(g.inputs.map(|t| {
                    keep.push(t);
                    keep.len() - 1
                }));
                logits_at = keep.len();
                keep.push(logits);
                (g.graph, keep)
            });
            self.sched.alloc(&g.graph())?;
            tracing::trace!(target: "decache::graph", "{}", g.graph().describe().join("\n"));
            tracing::debug!(
                nodes = g.graph().n_nodes(),
                splits = self.sched.n_splits(),
                n_tokens = tokens.len(),
                n_kv,
                "new step graph"
            );
            let inputs = inputs.expect("step inputs");
            let allocation = self.sched.allocations();
            self.step = Some(StepCache { key, graph: g, inputs, logits: logits_at, allocation });
        }
        let cache = self.step.as_ref().expect("step graph");
        let g = &cache.graph;
        let inp = cache.inputs.map(|i| g.tensor(i));
        inp.tokens.write_i32(&tokens.iter().map(|&t| t as i32).collect::<Vec<_>>());
        // (A model roping with sections takes those instead.)
        if inp.pos.is_allocated() {
            inp.pos.write_i32(positions);
        }
        if let Some(t) = inp.pos_sections {
            let n = positions.len();
            let mut p = vec![0i32; 4 * n];
            for s in 0..3 {
                p[s * n..(s + 1) * n].copy_from_slice(positions);
            }
            t.write_i32(&p);
        }
        if let Some(t) = inp.rs_ids.filter(|t| t.is_allocated()) {
            t.write_i32(&step_seqs.iter().map(|&s| s as i32).collect::<Vec<_>>());
        }
        if let (Some(t), Some(temp)) = (inp.attn_temp, model.hparams.attn_temp) {
            t.write_f32(&positions.iter().map(|&p| temp.factor(p)).collect::<Vec<_>>());
        }
        if let Some(t) = inp.out_ids {
            let rows: Vec<i32> = if outputs.is_empty() {
                vec![tokens.len() as i32 - 1]
            } else {
                outputs.iter().map(|&r| r as i32).collect()
            };
            t.write_i32(&rows);
        }
        kv.set_inputs(&inp.kv, placed, positions, seqs, model.hparams.swa.as_ref().map(|s| s.window));

        let t0 = Instant::now();
        self.sched.compute(&g.graph())?;
        let dt = t0.elapsed();
        if let Some(r) = kv.recurrent_mut() {
            for (&s, &p) in seqs.iter().zip(positions) {
                r.absorbed(s, p);
            }
        }
        tracing::trace!(
            tokens = tokens.len(),
            n_kv,
            setup_us = (t0 - t_setup).as_micros() as u64,
            compute_us = dt.as_micros() as u64,
            "step"
        );
        if outputs.is_empty() {
            return Ok(Vec::new());
        }
        let n_vocab = model.hparams.n_vocab as usize;
        g.tensor(cache.logits).read_f32_into(&mut out, 0, n_vocab * outputs.len());
        Ok(out)
    }

    /// Graphs computed so far (steps, K-shifts, defrags).
    pub fn graphs_run(&self) -> u64 {
        self.sched.computes()
    }

    /// Record per-node compute times of the following evaluations.
    pub fn start_profile(&mut self) {
        self.sched.start_profile();
    }

    pub fn stop_profile(&mut self) -> Vec<NodeTime> {
        self.sched.stop_profile()
    }

    /// Let the compute threads sleep until the next evaluation.
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

    /// Forget the cached step graph (its shapes or the cache changed).
    pub fn reset(&mut self) {
        self.step = None;
    }
}

/// The sequences of a step, in the order their tokens first appear.
fn step_sequences(seqs: &[SeqId]) -> Vec<SeqId> {
    let mut out: Vec<SeqId> = Vec::new();
    for &s in seqs {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Whether the tokens come as equal runs, one per sequence of `order`.
fn grouped(seqs: &[SeqId], order: &[SeqId]) -> bool {
    let n = seqs.len() / order.len().max(1);
    n * order.len() == seqs.len() && seqs.chunks(n.max(1)).zip(order).all(|(c, &s)| c.iter().all(|&x| x == s))
}

impl KShift for Model {
    fn k_shift<'c>(
        &'c self,
        ctx: &'c Context,
        il: usize,
        n_ctx: usize,
        k: crate::ggml::Tensor<'c>,
        shift: crate::ggml::Tensor<'c>,
        k_rot: Option<crate::ggml::Tensor<'c>>,
    ) -> crate::ggml::Tensor<'c> {
        let l = self.hparams.layer(il);
        let factors = self.rope_factors(il, n_ctx);
        // A pure rotation: the attention factor (Phi-3 long contexts, YaRN's
        // magnitude correction) was applied when the key was first roped.
        // llama.cpp's K-shift applies it again on every shift. ggml's YaRN
        // kernel multiplies in 1 + 0.1 ln(1 / freq_scale) itself: divided out.
        let mut rope = crate::ggml::RopeParams { attn_factor: 1.0, ..self.rope_params(il) };
        // Multi-section RoPE rotates a text token's sections by the same
        // position: the shift is a NeoX rotation of the whole (as llama.cpp's).
        if rope.mode == super::hparams::RopeKind::IMrope as i32 {
            rope.mode = super::hparams::RopeKind::Neox as i32;
        }
        if rope.ext_factor != 0.0 {
            rope.attn_factor = 1.0 / (1.0 + 0.1 * (1.0 / rope.freq_scale).ln());
        }
        super::blocks::k_shift(ctx, k, shift, &rope, factors, l.head_dim as i64, l.n_head_kv as i64, k_rot)
    }
}

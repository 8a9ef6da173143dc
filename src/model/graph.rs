//! One micro-batch's graph: its context, inputs, and access to the model's
//! weights and the KV cache, handed to an architecture recipe.
use super::blocks::AttnInputs;
use super::hparams::HParams;
use super::Model;
use crate::ggml::{Context, GgmlType, Graph, RopeParams, Tensor};
use crate::kv::{KvCache, KvInputs, Pool};

/// Input tensors of a step, by name (filled after allocation). `T` is a
/// tensor while the graph is built, and the tensor's index among the
/// graph's kept tensors once it is (see `model::runner`). Each is allocated
/// with its byte size rounded up to 64 and used through a view of the exact
/// size (`Context::new_input_aligned`).
#[derive(Clone, Copy, Debug)]
pub struct StepInputs<T> {
    pub tokens: T,
    pub pos: T,
    /// Rows whose logits are computed, when fewer than all tokens.
    pub out_ids: Option<T>,
    /// [1, 1, n_tokens] factors for q by position (attention temperature).
    pub attn_temp: Option<T>,
    /// Four positions per token, section-major (multi-section RoPE).
    pub pos_sections: Option<T>,
    /// The sequences of the step, in order (their recurrent states' rows).
    pub rs_ids: Option<T>,
    /// What the KV cache fills: cells, masks, rotations.
    pub kv: KvInputs<T>,
}

impl<T: Copy> StepInputs<T> {
    /// The same inputs through `f` (tensor to index, or back).
    pub fn map<U>(&self, mut f: impl FnMut(T) -> U) -> StepInputs<U> {
        StepInputs {
            tokens: f(self.tokens),
            pos: f(self.pos),
            out_ids: self.out_ids.map(&mut f),
            attn_temp: self.attn_temp.map(&mut f),
            pos_sections: self.pos_sections.map(&mut f),
            rs_ids: self.rs_ids.map(&mut f),
            kv: self.kv.map(f),
        }
    }
}

pub struct StepGraph<'c> {
    pub ctx: &'c Context,
    pub graph: Graph<'c>,
    pub inputs: StepInputs<Tensor<'c>>,
    /// The masks as attention takes them: the f32 inputs themselves, or
    /// their f16 casts for flash attention.
    mask_attn: Tensor<'c>,
    mask_swa_attn: Option<Tensor<'c>>,
    model: &'c Model,
    kv: &'c KvCache,
    n_tokens: i64,
    n_kv: i64,
    n_kv_swa: i64,
    n_seqs: i64,
    /// Per query row, the cells it attends alone (global pool, sliding-window
    /// pool), when rows are computed alone (see `runner::rows_alone`).
    rows: Option<(Vec<i64>, Vec<i64>)>,
    /// Attend with decache's kernels where they take the layer's shapes
    /// (see `blocks::attend`).
    own_attention: bool,
}

impl<'c> StepGraph<'c> {
    /// Create the inputs for `n_tokens` new tokens of `n_seqs` sequences
    /// (as many tokens each, one after the other, when the model has
    /// recurrent layers) attending over `n_kv` cells (`n_kv_swa` in the
    /// sliding-window pool, if there is one), with `n_outputs` logits rows.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &'c Context,
        model: &'c Model,
        kv: &'c KvCache,
        n_tokens: usize,
        n_kv: usize,
        n_kv_swa: usize,
        n_outputs: usize,
        n_seqs: usize,
    ) -> Self {
        let nt = n_tokens as i64;
        let hp = &model.hparams;
        let kv_inputs = kv.new_inputs(ctx, n_tokens, n_kv, n_kv_swa, hp.swa.is_some(), hp.head_dim as usize);
        let n_kv_swa = if kv.has_swa_pool() { n_kv_swa } else { n_kv };
        let flash = !kv.v_trans();
        let for_attn = |m: Tensor<'c>| if flash { ctx.cast(m, GgmlType::F16) } else { m };
        let inputs = StepInputs {
            tokens: ctx.new_input_aligned("inp_tokens", GgmlType::I32, &[nt]),
            pos: ctx.new_input_aligned("inp_pos", GgmlType::I32, &[nt]),
            out_ids: (n_outputs < n_tokens)
                .then(|| ctx.new_input_aligned("inp_out_ids", GgmlType::I32, &[n_outputs as i64])),
            attn_temp: hp.attn_temp.map(|_| ctx.new_input_aligned("inp_attn_temp", GgmlType::F32, &[1, 1, nt])),
            pos_sections: hp.rope_sections.map(|_| ctx.new_input_aligned("inp_pos_sections", GgmlType::I32, &[4 * nt])),
            rs_ids: hp
                .recurrent
                .as_ref()
                .map(|_| ctx.new_input_aligned("inp_rs_ids", GgmlType::I32, &[n_seqs.max(1) as i64])),
            kv: kv_inputs,
        };
        let graph = ctx.new_graph(model.graph_size());
        StepGraph {
            ctx,
            graph,
            mask_attn: for_attn(inputs.kv.mask),
            mask_swa_attn: inputs.kv.mask_swa.map(for_attn),
            inputs,
            model,
            kv,
            n_tokens: nt,
            n_kv: n_kv as i64,
            n_kv_swa: n_kv_swa as i64,
            n_seqs: n_seqs.max(1) as i64,
            rows: None,
            own_attention: false,
        }
    }

    /// Compute each row as a step of its token alone would: attending over
    /// its own count of cells (global pool, sliding-window pool), and
    /// multiplied by the weights as a lone row (see `runner::rows_alone`).
    pub fn rows_alone(&mut self, global: &[usize], swa: &[usize]) {
        let v = |r: &[usize]| r.iter().map(|&n| n as i64).collect();
        self.rows = Some((v(global), v(swa)));
        self.ctx.multiply_rows_alone();
    }

    /// Attend through decache's kernels where the layer fits them.
    pub fn own_attention(&mut self) {
        self.own_attention = true;
    }

    /// Sequences in this step (their tokens follow one another, as many each).
    pub fn n_seqs(&self) -> i64 {
        self.n_seqs
    }

    /// Layer `il`'s recurrent states: (convolution [n_embd_r, n_seq],
    /// delta rule [n_embd_s, n_seq]).
    pub fn rs_layer(&self, il: usize) -> (Tensor<'c>, Tensor<'c>) {
        let r = self.kv.recurrent().expect("a model with recurrent layers has their states");
        (r.store().get(r.conv(il)), r.store().get(r.delta(il)))
    }

    pub fn hparams(&self) -> &'c HParams {
        &self.model.hparams
    }

    pub fn n_tokens(&self) -> i64 {
        self.n_tokens
    }

    /// A required weight (the loader checked it exists).
    pub fn w(&self, name: &str) -> Tensor<'c> {
        self.w_opt(name).unwrap_or_else(|| panic!("weight {name} missing after validation"))
    }

    pub fn w_opt(&self, name: &str) -> Option<Tensor<'c>> {
        self.model.weights.id(name).map(|id| self.model.weights.get(id))
    }

    pub fn kv_layer(&self, il: usize) -> (Tensor<'c>, Tensor<'c>) {
        let s = self.kv.store();
        (s.get(self.kv.k(il)), s.get(self.kv.v(il)))
    }

    /// Attention inputs of layer `il` (a sliding-window layer gets its mask,
    /// and its own pool's cells when it has one).
    pub fn attn_inputs(&self, il: usize) -> AttnInputs<'c> {
        let i = &self.inputs.kv;
        let swa = self.mask_swa_attn.filter(|_| self.model.hparams.is_swa(il));
        let (k_idxs, v_idxs, n_kv, rows) = match (self.kv.pool_of(il), i.k_idxs_swa, i.v_idxs_swa) {
            (Pool::Swa, Some(k), Some(v)) => (k, v, self.n_kv_swa, self.rows.as_ref().map(|r| r.1.clone())),
            _ => (i.k_idxs, i.v_idxs, self.n_kv, self.rows.as_ref().map(|r| r.0.clone())),
        };
        AttnInputs {
            k_idxs,
            v_idxs,
            mask: swa.unwrap_or(self.mask_attn),
            n_kv,
            kv_size: self.kv.layer_size(il) as i64,
            k_rot: i.k_rot,
            v_rot: i.v_rot,
            flash: !self.kv.v_trans(),
            own_kernels: self.own_attention,
            rows,
        }
    }

    pub fn rope_params(&self, il: usize) -> RopeParams {
        self.model.rope_params(il)
    }

    /// Layer `il`'s RoPE frequency factors for this cache's size, if it has any.
    pub fn rope_factors(&self, il: usize) -> Option<Tensor<'c>> {
        self.model.rope_factors(il, self.kv.size())
    }

    /// Keep only the rows whose logits are wanted (after the last layer).
    pub fn select_output(&self, a: Tensor<'c>) -> Tensor<'c> {
        match self.inputs.out_ids {
            Some(ids) => self.ctx.get_rows(a, ids),
            None => a,
        }
    }

    /// In the last layer, keep only the rows whose logits are wanted.
    pub fn select_outputs(&self, a: Tensor<'c>, b: Tensor<'c>) -> (Tensor<'c>, Tensor<'c>) {
        match self.inputs.out_ids {
            Some(ids) => (self.ctx.get_rows(a, ids), self.ctx.get_rows(b, ids)),
            None => (a, b),
        }
    }
}

//! One micro-batch's graph: its context, inputs, and access to the model's
//! weights and the KV cache, handed to an architecture recipe.
use super::blocks::AttnInputs;
use super::hparams::HParams;
use super::Model;
use crate::ggml::{Context, GgmlType, Graph, RopeParams, Tensor};
use crate::kv::{KvCache, Pool};

/// Input tensors of a step (filled after allocation). Each is allocated with
/// its byte size rounded up to 64 and used through a view of the exact size:
/// the allocator aligns tensors to 32 bytes only, and a small odd-sized input
/// would shift every activation after it off the 64-byte alignment that the
/// AVX-512/AMX kernels want (measured: ~13% slower prompt processing).
pub struct StepInputs<'c> {
    pub tokens: Tensor<'c>,
    pub pos: Tensor<'c>,
    pub k_idxs: Tensor<'c>,
    pub v_idxs: Tensor<'c>,
    pub mask: Tensor<'c>,
    /// The mask of sliding-window layers, when the model has them (over
    /// their own pool's cells when they have one).
    pub mask_swa: Option<Tensor<'c>>,
    /// Cells (and V destinations) of the new tokens in the sliding-window
    /// pool, when there is one.
    pub k_idxs_swa: Option<Tensor<'c>>,
    pub v_idxs_swa: Option<Tensor<'c>>,
    /// The masks as attention takes them: the f32 inputs themselves, or
    /// their f16 casts for flash attention.
    pub mask_attn: Tensor<'c>,
    pub mask_swa_attn: Option<Tensor<'c>>,
    /// Rows whose logits are computed, when fewer than all tokens.
    pub out_ids: Option<Tensor<'c>>,
    /// The Hadamard matrix rotating q and k, when the K cache is quantized.
    pub k_rot: Option<Tensor<'c>>,
    /// The Hadamard matrix rotating v and attention's output, when the V cache is quantized.
    pub v_rot: Option<Tensor<'c>>,
}

pub struct StepGraph<'c> {
    pub ctx: &'c Context,
    pub graph: Graph<'c>,
    pub inputs: StepInputs<'c>,
    model: &'c Model,
    kv: &'c KvCache,
    n_tokens: i64,
    n_kv: i64,
    n_kv_swa: i64,
}

/// An input of shape `ne` (1 or 2 dims) backed by an allocation padded to a
/// multiple of 64 bytes; returns the exact-size view (writes go through it).
fn padded_input<'c>(ctx: &'c Context, name: &str, typ: GgmlType, ne: &[i64]) -> Tensor<'c> {
    let elem = typ.type_size() as i64;
    let total: i64 = ne.iter().product();
    let padded = (total * elem + 63) / 64 * 64 / elem;
    let parent = ctx.new_input(name, typ, &[padded]);
    let exact = ctx.view(parent, &[total], &[], 0);
    if ne.len() == 1 {
        exact
    } else {
        ctx.reshape(exact, ne)
    }
}

impl<'c> StepGraph<'c> {
    /// Create the inputs for `n_tokens` new tokens attending over `n_kv`
    /// cells (`n_kv_swa` in the sliding-window pool, if there is one), with
    /// `n_outputs` logits rows.
    pub fn new(
        ctx: &'c Context, model: &'c Model, kv: &'c KvCache, n_tokens: usize, n_kv: usize, n_kv_swa: usize, n_outputs: usize,
    ) -> Self {
        let nt = n_tokens as i64;
        // A transposed V is written element by element; a V of rows, cell by cell.
        let n_v_idxs = if kv.v_trans { nt * kv.n_embd_v as i64 } else { nt };
        let n_kv_swa = if kv.swa.is_some() { n_kv_swa } else { n_kv };
        let mask = padded_input(ctx, "inp_kq_mask", GgmlType::F32, &[n_kv as i64, nt]);
        let mask_swa = model.hparams.swa.is_some().then(|| padded_input(ctx, "inp_kq_mask_swa", GgmlType::F32, &[n_kv_swa as i64, nt]));
        let pool = kv.swa.is_some();
        let flash = !kv.v_trans;
        let for_attn = |m: Tensor<'c>| if flash { ctx.cast(m, GgmlType::F16) } else { m };
        let inputs = StepInputs {
            tokens: padded_input(ctx, "inp_tokens", GgmlType::I32, &[nt]),
            pos: padded_input(ctx, "inp_pos", GgmlType::I32, &[nt]),
            k_idxs: padded_input(ctx, "inp_k_idxs", GgmlType::I64, &[nt]),
            v_idxs: padded_input(ctx, "inp_v_idxs", GgmlType::I64, &[n_v_idxs]),
            k_idxs_swa: pool.then(|| padded_input(ctx, "inp_k_idxs_swa", GgmlType::I64, &[nt])),
            v_idxs_swa: pool.then(|| padded_input(ctx, "inp_v_idxs_swa", GgmlType::I64, &[n_v_idxs])),
            mask,
            mask_swa,
            mask_attn: for_attn(mask),
            mask_swa_attn: mask_swa.map(for_attn),
            out_ids: (n_outputs < n_tokens).then(|| padded_input(ctx, "inp_out_ids", GgmlType::I32, &[n_outputs as i64])),
            k_rot: crate::kv::rotation::k_rotation_size(model.hparams.head_dim as usize, kv.type_k.is_quantized())
                .map(|n| padded_input(ctx, "inp_k_rot", GgmlType::F32, &[n as i64, n as i64])),
            v_rot: crate::kv::rotation::v_rotation_size(model.hparams.head_dim as usize, kv.type_v.is_quantized())
                .map(|n| padded_input(ctx, "inp_v_rot", GgmlType::F32, &[n as i64, n as i64])),
        };
        let graph = ctx.new_graph(model.graph_size());
        StepGraph { ctx, graph, inputs, model, kv, n_tokens: nt, n_kv: n_kv as i64, n_kv_swa: n_kv_swa as i64 }
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
        let i = &self.inputs;
        let swa = i.mask_swa_attn.filter(|_| self.model.hparams.is_swa(il));
        let (k_idxs, v_idxs, n_kv) = match (self.kv.pool_of(il), i.k_idxs_swa, i.v_idxs_swa) {
            (Pool::Swa, Some(k), Some(v)) => (k, v, self.n_kv_swa),
            _ => (i.k_idxs, i.v_idxs, self.n_kv),
        };
        AttnInputs {
            k_idxs,
            v_idxs,
            mask: swa.unwrap_or(i.mask_attn),
            n_kv,
            kv_size: self.kv.layer_size(il) as i64,
            k_rot: self.inputs.k_rot,
            v_rot: self.inputs.v_rot,
            flash: !self.kv.v_trans,
        }
    }

    pub fn rope_params(&self, il: usize) -> RopeParams {
        self.model.rope_params(il)
    }

    /// RoPE frequency factors for this cache's size, if the model has any.
    pub fn rope_factors(&self) -> Option<Tensor<'c>> {
        self.model.rope_factors_name(self.kv.size()).and_then(|n| self.w_opt(n))
    }

    /// In the last layer, keep only the rows whose logits are wanted.
    pub fn select_outputs(&self, a: Tensor<'c>, b: Tensor<'c>) -> (Tensor<'c>, Tensor<'c>) {
        match self.inputs.out_ids {
            Some(ids) => (self.ctx.get_rows(a, ids), self.ctx.get_rows(b, ids)),
            None => (a, b),
        }
    }
}

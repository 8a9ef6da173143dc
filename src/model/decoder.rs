//! The pre-norm decoder every supported architecture is a variant of:
//! embeddings, then per layer RMSNorm → attention (optionally with q/k
//! norms, fused QKV, biases, a sliding window) → residual → RMSNorm →
//! gated feed-forward → residual, then the output norm and head. A recipe
//! says which variant; the tensors it needs follow from it.
use super::blocks::{self, AttnShape};
use super::graph::StepGraph;
use super::hparams::HParams;
use super::moe::{self, MoeKind};
use super::plan::{blk, TensorReq, Usage};
use crate::ggml::Tensor;

/// The feed-forward network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ffn {
    /// down(silu(gate·x) * up·x).
    SwiGlu,
    /// down(gelu_tanh(gate·x) * up·x) (Gemma).
    GeGlu,
    /// One `ffn_up` of twice the width: its first half is the gate (Phi-3).
    SwiGluFused,
}

/// What makes an architecture different from the plain llama decoder.
#[derive(Clone, Copy, Debug)]
pub struct Recipe {
    /// Embeddings scaled by sqrt(n_embd) (Gemma).
    pub embd_scale: bool,
    /// RMSNorm over each head of q and k before RoPE (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Q scaled by 1/sqrt(head_dim) before attention, which then does not
    /// scale (Gemma 3, Phi-3: the same product, in llama.cpp's order).
    pub q_scale: bool,
    /// One `attn_qkv` weight instead of three (Phi-3).
    pub fused_qkv: bool,
    pub ffn: Ffn,
    /// RMSNorm after attention and after the feed-forward, before each
    /// residual add (Gemma 3).
    pub post_norms: bool,
}

/// The embeddings, output norm and head, and RoPE factor tensors every
/// architecture may have. The head is the embeddings when absent.
pub fn io_tensors(hp: &HParams) -> Vec<TensorReq> {
    let (e, v) = (hp.n_embd as i64, hp.n_vocab as i64);
    let half_rot = (hp.n_rot / 2) as i64;
    vec![
        TensorReq::req("token_embd.weight", &[e, v], Usage::GetRows),
        TensorReq::req("output_norm.weight", &[e], Usage::Elementwise),
        TensorReq::tied("output.weight", &[e, v], Usage::MulMat, "token_embd.weight"),
        TensorReq::opt("output.bias", &[v], Usage::Elementwise),
        TensorReq::opt("rope_freqs.weight", &[half_rot], Usage::Elementwise),
        TensorReq::opt("rope_factors_long.weight", &[half_rot], Usage::Elementwise),
        TensorReq::opt("rope_factors_short.weight", &[half_rot], Usage::Elementwise),
    ]
}

/// Layer `il`'s attention tensors: its input norm, q/k/v (fused or not,
/// biases optional), q/k norms, the output projection (bias optional).
pub fn attn_tensors(hp: &HParams, r: &Recipe, il: usize) -> Vec<TensorReq> {
    let e = hp.n_embd as i64;
    let hd = hp.layer(il).head_dim as i64;
    let q = hd * hp.n_head as i64;
    let kv = hp.n_embd_k_gqa(il) as i64;
    let b = |s: &str| blk(il, s);
    let mut t = vec![TensorReq::req(b("attn_norm.weight"), &[e], Usage::Elementwise)];
    if r.fused_qkv {
        t.push(TensorReq::req(b("attn_qkv.weight"), &[e, q + 2 * kv], Usage::MulMat));
        t.push(TensorReq::opt(b("attn_qkv.bias"), &[q + 2 * kv], Usage::Elementwise));
    } else {
        t.extend([
            TensorReq::req(b("attn_q.weight"), &[e, q], Usage::MulMat),
            TensorReq::req(b("attn_k.weight"), &[e, kv], Usage::MulMat),
            TensorReq::req(b("attn_v.weight"), &[e, kv], Usage::MulMat),
            TensorReq::opt(b("attn_q.bias"), &[q], Usage::Elementwise),
            TensorReq::opt(b("attn_k.bias"), &[kv], Usage::Elementwise),
            TensorReq::opt(b("attn_v.bias"), &[kv], Usage::Elementwise),
        ]);
    }
    if r.qk_norm {
        t.push(TensorReq::req(b("attn_q_norm.weight"), &[hd], Usage::Elementwise));
        t.push(TensorReq::req(b("attn_k_norm.weight"), &[hd], Usage::Elementwise));
    }
    t.push(TensorReq::req(b("attn_output.weight"), &[q, e], Usage::MulMat));
    t.push(TensorReq::opt(b("attn_output.bias"), &[e], Usage::Elementwise));
    t
}

/// The tensors `r` needs for `hp`, with exact shapes. Biases, a separate
/// output head and RoPE factor tensors are optional.
pub fn tensors(hp: &HParams, r: &Recipe) -> Vec<TensorReq> {
    let e = hp.n_embd as i64;
    let mut t = io_tensors(hp);
    for il in 0..hp.n_layer as usize {
        let ff = hp.layer(il).n_ff as i64;
        let b = |s: &str| blk(il, s);
        t.extend(attn_tensors(hp, r, il));
        t.push(TensorReq::req(b("ffn_norm.weight"), &[e], Usage::Elementwise));
        if r.post_norms {
            t.push(TensorReq::req(b("post_attention_norm.weight"), &[e], Usage::Elementwise));
            t.push(TensorReq::req(b("post_ffw_norm.weight"), &[e], Usage::Elementwise));
        }
        if let Some(x) = &hp.experts {
            t.extend(moe::tensors(hp, x, il, MoeKind::SOFTMAX_SWIGLU));
            continue;
        }
        match r.ffn {
            Ffn::SwiGlu | Ffn::GeGlu => {
                t.push(TensorReq::req(b("ffn_gate.weight"), &[e, ff], Usage::MulMat));
                t.push(TensorReq::req(b("ffn_up.weight"), &[e, ff], Usage::MulMat));
            }
            Ffn::SwiGluFused => t.push(TensorReq::req(b("ffn_up.weight"), &[e, 2 * ff], Usage::MulMat)),
        }
        t.push(TensorReq::req(b("ffn_down.weight"), &[ff, e], Usage::MulMat));
    }
    t
}

/// q, k and v of layer `il` as [head_dim, heads, n_tokens], biases added.
fn qkv<'c>(g: &StepGraph<'c>, il: usize, x: Tensor<'c>, r: &Recipe) -> (Tensor<'c>, Tensor<'c>, Tensor<'c>) {
    let hp = g.hparams();
    let ctx = g.ctx;
    let l = hp.layer(il);
    let (hd, nh, nkv, nt) = (l.head_dim as i64, hp.n_head as i64, l.n_head_kv as i64, g.n_tokens());
    let (q, k, v) = if r.fused_qkv {
        let all = blocks::linear(ctx, g.w(&blk(il, "attn_qkv.weight")), x, g.w_opt(&blk(il, "attn_qkv.bias")));
        let row = all.nb()[1];
        let f = all.typ().type_size() as usize;
        let part = |heads: i64, at: i64| ctx.view(all, &[hd, heads, nt], &[hd as usize * f, row], at as usize * f);
        (part(nh, 0), part(nkv, hd * nh), part(nkv, hd * (nh + nkv)))
    } else {
        let lin = |name: &str| {
            blocks::linear(ctx, g.w(&blk(il, &format!("{name}.weight"))), x, g.w_opt(&blk(il, &format!("{name}.bias"))))
        };
        let (q, k, v) = (lin("attn_q"), lin("attn_k"), lin("attn_v"));
        (ctx.reshape(q, &[hd, nh, nt]), ctx.reshape(k, &[hd, nkv, nt]), ctx.reshape(v, &[hd, nkv, nt]))
    };
    (q, k, v)
}

/// The token embeddings (scaled when the recipe says so).
pub fn embed<'c>(g: &StepGraph<'c>, r: &Recipe) -> Tensor<'c> {
    let x = g.ctx.get_rows(g.w("token_embd.weight"), g.inputs.tokens);
    if r.embd_scale {
        g.ctx.scale(x, (g.hparams().n_embd as f32).sqrt())
    } else {
        x
    }
}

/// RMSNorm of `x` by layer `il`'s weight `name`.
pub fn norm<'c>(g: &StepGraph<'c>, x: Tensor<'c>, name: &str, il: usize) -> Tensor<'c> {
    blocks::rms_norm(g.ctx, x, g.w(&blk(il, name)), g.hparams().rms_eps)
}

/// Layer `il`'s self-attention on its normed input `cur`: q, k, v, their
/// norms, RoPE, the recipe's scaling and the attention temperature, the
/// attention over the cache (with `sinks` when given), the output
/// projection (+ bias).
pub fn self_attention<'c>(
    g: &mut StepGraph<'c>,
    il: usize,
    cur: Tensor<'c>,
    r: &Recipe,
    sinks: Option<Tensor<'c>>,
) -> Tensor<'c> {
    let ctx = g.ctx;
    let hp = g.hparams();
    let shape = attn_shape(hp, il);
    let kq_scale = shape.scale;
    let shape = AttnShape { scale: if r.q_scale { 1.0 } else { kq_scale }, ..shape };
    let (mut q, mut k, v) = qkv(g, il, cur, r);
    if r.qk_norm {
        q = norm(g, q, "attn_q_norm.weight", il);
        k = norm(g, k, "attn_k_norm.weight", il);
    }
    let rope = g.rope_params(il);
    let factors = g.rope_factors(il);
    let pos = g.inputs.pos;
    let mut q = ctx.rope(q, pos, factors, &rope);
    let k = ctx.rope(k, pos, factors, &rope);
    if r.q_scale {
        q = ctx.scale(q, kq_scale);
    }
    if let Some(t) = g.inputs.attn_temp {
        q = ctx.mul(q, t);
    }
    let (kc, vc) = g.kv_layer(il);
    let inp = g.attn_inputs(il);
    let att = blocks::attention(ctx, &mut g.graph, q, k, v, kc, vc, &inp, shape, sinks);
    blocks::linear(ctx, g.w(&blk(il, "attn_output.weight")), att, g.w_opt(&blk(il, "attn_output.bias")))
}

/// Layer `il`'s attention shape, scaled by 1/sqrt(head size).
pub fn attn_shape(hp: &HParams, il: usize) -> AttnShape {
    let l = hp.layer(il);
    let hd = l.head_dim as i64;
    AttnShape { head_dim: hd, n_head: hp.n_head as i64, n_head_kv: l.n_head_kv as i64, scale: 1.0 / (hd as f32).sqrt() }
}

/// The output norm and head (+ bias), soft-capped when the file asks.
pub fn head<'c>(g: &StepGraph<'c>, x: Tensor<'c>) -> Tensor<'c> {
    let ctx = g.ctx;
    let hp = g.hparams();
    let x = blocks::rms_norm(ctx, x, g.w("output_norm.weight"), hp.rms_eps);
    let logits = blocks::linear(ctx, g.w("output.weight"), x, g.w_opt("output.bias"));
    match hp.final_softcap {
        Some(cap) => ctx.scale(ctx.tanh(ctx.scale(logits, 1.0 / cap)), cap),
        None => logits,
    }
}

/// The forward pass of one micro-batch; returns the logits.
pub fn build<'c>(g: &mut StepGraph<'c>, r: &Recipe) -> Tensor<'c> {
    let hp = g.hparams();
    let ctx = g.ctx;
    let mut x = embed(g, r);
    for il in 0..hp.n_layer as usize {
        let cur = norm(g, x, "attn_norm.weight", il);
        let mut cur = self_attention(g, il, cur, r, None);
        if r.post_norms {
            cur = norm(g, cur, "post_attention_norm.weight", il);
        }
        let mut residual = x;
        if il + 1 == hp.n_layer as usize {
            (cur, residual) = g.select_outputs(cur, residual);
        }
        let ffn_in = ctx.add(cur, residual);
        let cur = norm(g, ffn_in, "ffn_norm.weight", il);
        let w = |name: &str| g.w(&blk(il, name));
        let mut cur = match (&hp.experts, r.ffn) {
            (Some(x), _) => {
                let ew = moe::ExpertWeights::of_layer(il, |n| g.w(n), |n| g.w_opt(n));
                moe::ffn(ctx, &mut g.graph, cur, &ew, x.n_used as i64, MoeKind::SOFTMAX_SWIGLU)
            }
            (None, Ffn::SwiGlu) => {
                blocks::ffn_swiglu(ctx, cur, w("ffn_gate.weight"), w("ffn_up.weight"), w("ffn_down.weight"))
            }
            (None, Ffn::GeGlu) => {
                blocks::ffn_geglu(ctx, cur, w("ffn_gate.weight"), w("ffn_up.weight"), w("ffn_down.weight"))
            }
            (None, Ffn::SwiGluFused) => blocks::ffn_swiglu_fused(ctx, cur, w("ffn_up.weight"), w("ffn_down.weight")),
        };
        if r.post_norms {
            cur = norm(g, cur, "post_ffw_norm.weight", il);
        }
        x = ctx.add(cur, ffn_in);
    }
    head(g, x)
}

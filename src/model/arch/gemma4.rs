//! gemma4 (Gemma 4 text decoders: E2B, E4B, 26B-A4B, 31B). Gemma 3's
//! layer (scaled embeddings, q/k norms, post-attention and post-FFN norms,
//! GeGLU, NeoX RoPE, sliding-window layers) with what Gemma 4 changes:
//! - layers of two shapes: the sliding-window layers' head size, kv heads
//!   and rotary dimensions differ from the global layers' (`LayerHp`), and
//!   only the global layers rotate by `rope_freqs` (the first pairs; the
//!   rest are factored out: "proportional" RoPE);
//! - V is RMS-normed without a weight, and is K's projection itself where a
//!   layer has no `attn_v`; attention does not scale (q and k are normed);
//! - the last `shared_kv_layers` layers compute no K/V and attend over an
//!   earlier layer's cells (the cache gives them none of their own);
//! - per-layer embeddings (E2B, E4B): a slice per layer, from a token table
//!   and a projection of the embeddings, gated into the residual stream
//!   after each layer's FFN;
//! - `layer_output_scale` multiplies the residual stream after each layer;
//! - with experts (26B-A4B), a dense GeGLU and routed GeGLU experts side by
//!   side, each with its own norms; the router reads the unweighted RMS
//!   norm of the layer's input, scaled.
//!
//! The rows whose logits are wanted are picked after the last layer (the
//! per-layer embeddings need every row until then).
use crate::ggml::Tensor;
use crate::model::blocks::{self, AttnShape};
use crate::model::decoder::{self, Ffn, Recipe};
use crate::model::graph::StepGraph;
use crate::model::hparams::{ArchHp, HParams, MoeHp, RopeKind, SwaHp};
use crate::model::moe::{self, ExpertAct, Gating, MoeKind};
use crate::model::plan::{blk, TensorReq, Usage};

pub const HP: ArchHp = ArchHp {
    swa: Some(SwaHp { period: 6, rope_base: Some(10000.0) }),
    moe: MoeHp::IfPresent,
    layer_shapes: true,
    ..ArchHp::new(RopeKind::Neox)
};

/// The embeddings (scaled by sqrt(n_embd)) and the head, as Gemma 3's.
const IO: Recipe =
    Recipe { embd_scale: true, qk_norm: true, q_scale: false, fused_qkv: false, ffn: Ffn::GeGlu, post_norms: true };

const EXPERTS: MoeKind = MoeKind { gating: Gating::SoftmaxNormTopK, act: ExpertAct::GeGlu, biases: false };

pub fn tensors(hp: &HParams) -> Vec<TensorReq> {
    let (e, n_layer) = (hp.n_embd as i64, hp.n_layer as usize);
    let mut t: Vec<TensorReq> = decoder::io_tensors(hp).into_iter().filter(|r| !r.name.starts_with("rope_")).collect();
    // Global layers rotate by these factors (one table, over their whole head).
    let global = (0..n_layer).find(|&il| !hp.is_swa(il));
    if let Some(il) = global {
        t.push(TensorReq::req("rope_freqs.weight", &[(hp.layer(il).head_dim / 2) as i64], Usage::Elementwise));
    }
    let p = hp.n_embd_per_layer as i64;
    if p > 0 {
        let pl = p * n_layer as i64;
        t.extend([
            TensorReq::req("per_layer_token_embd.weight", &[pl, hp.n_vocab as i64], Usage::GetRows),
            TensorReq::req("per_layer_model_proj.weight", &[e, pl], Usage::MulMat),
            TensorReq::req("per_layer_proj_norm.weight", &[p], Usage::Elementwise),
        ]);
    }
    for il in 0..n_layer {
        let l = hp.layer(il);
        let (hd, q, kv, ff) =
            (l.head_dim as i64, (l.head_dim * hp.n_head) as i64, hp.n_embd_k_gqa(il) as i64, l.n_ff as i64);
        let b = |s: &str| blk(il, s);
        // Layers reading another's cache may carry unused K/V weights.
        let kv_req = |name: String, ne: &[i64], u: Usage| match hp.owns_kv(il) {
            true => TensorReq::req(name, ne, u),
            false => TensorReq::opt(name, ne, u),
        };
        t.extend([
            TensorReq::req(b("attn_norm.weight"), &[e], Usage::Elementwise),
            TensorReq::req(b("attn_q.weight"), &[e, q], Usage::MulMat),
            kv_req(b("attn_k.weight"), &[e, kv], Usage::MulMat),
            TensorReq::opt(b("attn_v.weight"), &[e, kv], Usage::MulMat),
            TensorReq::req(b("attn_q_norm.weight"), &[hd], Usage::Elementwise),
            kv_req(b("attn_k_norm.weight"), &[hd], Usage::Elementwise),
            TensorReq::req(b("attn_output.weight"), &[q, e], Usage::MulMat),
            TensorReq::req(b("post_attention_norm.weight"), &[e], Usage::Elementwise),
            TensorReq::opt(b("layer_output_scale.weight"), &[1], Usage::Elementwise),
            TensorReq::req(b("ffn_norm.weight"), &[e], Usage::Elementwise),
            TensorReq::req(b("ffn_gate.weight"), &[e, ff], Usage::MulMat),
            TensorReq::req(b("ffn_up.weight"), &[e, ff], Usage::MulMat),
            TensorReq::req(b("ffn_down.weight"), &[ff, e], Usage::MulMat),
            TensorReq::req(b("post_ffw_norm.weight"), &[e], Usage::Elementwise),
        ]);
        if let Some(x) = &hp.experts {
            let (fx, n) = (x.n_ff as i64, x.n_expert as i64);
            t.extend([
                TensorReq::req(b("ffn_gate_inp.weight"), &[e, n], Usage::MulMat),
                TensorReq::req(b("ffn_gate_inp.scale"), &[e], Usage::Elementwise),
                TensorReq::req(b("pre_ffw_norm_2.weight"), &[e], Usage::Elementwise),
                TensorReq::req(b("post_ffw_norm_1.weight"), &[e], Usage::Elementwise),
                TensorReq::req(b("post_ffw_norm_2.weight"), &[e], Usage::Elementwise),
                TensorReq::opt(b("ffn_gate_up_exps.weight"), &[e, 2 * fx, n], Usage::MulMatId),
                TensorReq::opt(b("ffn_gate_exps.weight"), &[e, fx, n], Usage::MulMatId),
                TensorReq::opt(b("ffn_up_exps.weight"), &[e, fx, n], Usage::MulMatId),
                TensorReq::req(b("ffn_down_exps.weight"), &[fx, e, n], Usage::MulMatId),
                TensorReq::opt(b("ffn_down_exps.scale"), &[n], Usage::Elementwise),
            ]);
        }
        if p > 0 {
            t.extend([
                TensorReq::req(b("inp_gate.weight"), &[e, p], Usage::MulMat),
                TensorReq::req(b("proj.weight"), &[p, e], Usage::MulMat),
                TensorReq::req(b("post_norm.weight"), &[e], Usage::Elementwise),
            ]);
        }
    }
    t
}

/// The experts' gate and up come fused or as two tensors, one or the other.
pub fn check(hp: &HParams, has: &dyn Fn(&str) -> bool) -> Result<(), String> {
    if hp.experts.is_none() {
        return Ok(());
    }
    for il in 0..hp.n_layer as usize {
        let fused = has(&blk(il, "ffn_gate_up_exps.weight"));
        let split = has(&blk(il, "ffn_gate_exps.weight")) && has(&blk(il, "ffn_up_exps.weight"));
        if fused == split {
            return Err(format!(
                "layer {il}: the experts need either '{}' or both '{}' and '{}'",
                blk(il, "ffn_gate_up_exps.weight"),
                blk(il, "ffn_gate_exps.weight"),
                blk(il, "ffn_up_exps.weight")
            ));
        }
    }
    Ok(())
}

pub fn build<'c>(g: &mut StepGraph<'c>) -> Tensor<'c> {
    let hp = g.hparams();
    let ctx = g.ctx;
    let mut x = decoder::embed(g, &IO);
    let per_layer = (hp.n_embd_per_layer > 0).then(|| per_layer_inputs(g, x));
    for il in 0..hp.n_layer as usize {
        let cur = decoder::norm(g, x, "attn_norm.weight", il);
        let cur = attention(g, il, cur);
        let cur = decoder::norm(g, cur, "post_attention_norm.weight", il);
        let attn_out = ctx.add(cur, x);
        let cur = match &hp.experts {
            Some(xp) => dense_and_experts(g, il, attn_out, xp.n_used as i64),
            None => dense_ffn(g, il, decoder::norm(g, attn_out, "ffn_norm.weight", il)),
        };
        let cur = decoder::norm(g, cur, "post_ffw_norm.weight", il);
        let mut cur = ctx.add(cur, attn_out);
        if let Some(ple) = per_layer {
            // This layer's slice [P, n_tokens] of the per-layer inputs [P, n_tokens, n_layer].
            let (p, nt) = (ple.ne()[0], ple.ne()[1]);
            let slice = ctx.view(ple, &[p, nt], &[ple.nb()[1]], il * ple.nb()[2]);
            let gate = ctx.gelu(ctx.mul_mat(g.w(&blk(il, "inp_gate.weight")), cur));
            let y = ctx.mul_mat(g.w(&blk(il, "proj.weight")), ctx.mul(gate, slice));
            cur = ctx.add(cur, decoder::norm(g, y, "post_norm.weight", il));
        }
        if let Some(s) = g.w_opt(&blk(il, "layer_output_scale.weight")) {
            cur = ctx.mul(cur, s);
        }
        x = cur;
    }
    let x = g.select_output(x);
    decoder::head(g, x)
}

/// Layer `il`'s attention: q (normed, roped) from every layer; k and v
/// (k normed and roped, v RMS-normed) only where the layer owns its cells,
/// stored there; then attention over the cells it reads, unscaled.
fn attention<'c>(g: &mut StepGraph<'c>, il: usize, cur: Tensor<'c>) -> Tensor<'c> {
    let ctx = g.ctx;
    let hp = g.hparams();
    let shape = AttnShape { scale: 1.0, ..decoder::attn_shape(hp, il) };
    let (hd, nkv, nt) = (shape.head_dim, shape.n_head_kv, g.n_tokens());
    let rope = g.rope_params(il);
    let factors = g.rope_factors(il);
    let pos = g.inputs.pos;
    let w = |name: &str| g.w(&blk(il, name));
    let q = ctx.reshape(ctx.mul_mat(w("attn_q.weight"), cur), &[hd, shape.n_head, nt]);
    let q = ctx.rope(decoder::norm(g, q, "attn_q_norm.weight", il), pos, factors, &rope);
    let wo = w("attn_output.weight");
    let (kc, vc) = g.kv_layer(il);
    let inp = g.attn_inputs(il);
    if hp.owns_kv(il) {
        let k_proj = ctx.mul_mat(g.w(&blk(il, "attn_k.weight")), cur);
        let v_proj = match g.w_opt(&blk(il, "attn_v.weight")) {
            Some(wv) => ctx.mul_mat(wv, cur),
            None => k_proj,
        };
        let k = decoder::norm(g, ctx.reshape(k_proj, &[hd, nkv, nt]), "attn_k_norm.weight", il);
        let v = ctx.rms_norm(ctx.reshape(v_proj, &[hd, nkv, nt]), hp.rms_eps);
        let k = ctx.rope(k, pos, factors, &rope);
        blocks::store_kv(ctx, &mut g.graph, k, v, kc, vc, &inp, shape);
    }
    let att = blocks::attend(ctx, &mut g.graph, q, kc, vc, &inp, shape, None);
    ctx.mul_mat(wo, att)
}

fn dense_ffn<'c>(g: &StepGraph<'c>, il: usize, x: Tensor<'c>) -> Tensor<'c> {
    let w = |name: &str| g.w(&blk(il, name));
    blocks::ffn_geglu(g.ctx, x, w("ffn_gate.weight"), w("ffn_up.weight"), w("ffn_down.weight"))
}

/// The dense GeGLU and the routed experts side by side, each normed, summed.
fn dense_and_experts<'c>(g: &mut StepGraph<'c>, il: usize, attn_out: Tensor<'c>, n_used: i64) -> Tensor<'c> {
    let ctx = g.ctx;
    let hp = g.hparams();
    let dense = dense_ffn(g, il, decoder::norm(g, attn_out, "ffn_norm.weight", il));
    let dense = decoder::norm(g, dense, "post_ffw_norm_1.weight", il);
    let x = decoder::norm(g, attn_out, "pre_ffw_norm_2.weight", il);
    let r = ctx.scale(ctx.rms_norm(attn_out, hp.rms_eps), 1.0 / (hp.n_embd as f32).sqrt());
    let r = ctx.mul(r, g.w(&blk(il, "ffn_gate_inp.scale")));
    let ew = moe::ExpertWeights::of_layer(il, |n| g.w(n), |n| g.w_opt(n));
    let logits = ctx.mul_mat(ew.router.0, r);
    let routed = moe::experts(ctx, &mut g.graph, x, logits, &ew, n_used, EXPERTS);
    let routed = decoder::norm(g, routed, "post_ffw_norm_2.weight", il);
    ctx.add(dense, routed)
}

/// The per-layer inputs [P, n_tokens, n_layer]: each token's rows of
/// `per_layer_token_embd` (scaled by sqrt(P)) plus the normed projection
/// of the scaled embeddings `x` (scaled by 1/sqrt(n_embd)), over sqrt(2).
fn per_layer_inputs<'c>(g: &StepGraph<'c>, x: Tensor<'c>) -> Tensor<'c> {
    let ctx = g.ctx;
    let hp = g.hparams();
    let (p, n_layer, nt) = (hp.n_embd_per_layer as i64, hp.n_layer as i64, g.n_tokens());
    let tok = ctx.get_rows(g.w("per_layer_token_embd.weight"), g.inputs.tokens);
    let tok = ctx.scale(ctx.reshape(tok, &[p, n_layer, nt]), (p as f32).sqrt());
    let proj = ctx.mul_mat(g.w("per_layer_model_proj.weight"), x);
    let proj = ctx.reshape(ctx.scale(proj, 1.0 / (hp.n_embd as f32).sqrt()), &[p, n_layer, nt]);
    let proj = blocks::rms_norm(ctx, proj, g.w("per_layer_proj_norm.weight"), hp.rms_eps);
    let sum = ctx.scale(ctx.add(proj, tok), 1.0 / 2f32.sqrt());
    ctx.cont(ctx.permute(sum, [0, 2, 1, 3]))
}

//! Qwen3.5 (`qwen35`, and `qwen35moe` with experts): a hybrid of recurrent
//! gated-delta-net layers (`model::delta_net`) and, every few layers, full
//! attention. The attention layers project q twice as wide: each head's
//! query, then its output gate (σ, applied to the attention's output before
//! the output projection); q and k are RMS-normed per head and roped with
//! interleaved multi-section RoPE (text tokens give all three sections the
//! same position). Every layer: RMSNorm → mixer → residual → RMSNorm
//! (`post_attention_norm`) → feed-forward (dense SwiGLU, or experts plus a
//! σ-gated shared expert) → residual.
use crate::ggml::Tensor;
use crate::model::blocks::{self, AttnShape};
use crate::model::decoder;
use crate::model::delta_net;
use crate::model::graph::StepGraph;
use crate::model::hparams::{ArchHp, HParams, MoeHp, RopeKind};
use crate::model::moe::{self, MoeKind};
use crate::model::plan::{blk, TensorReq, Usage};

pub const HP: ArchHp = ArchHp { recurrent: true, ..ArchHp::new(RopeKind::IMrope) };
pub const HP_MOE: ArchHp = ArchHp { recurrent: true, moe: MoeHp::Required, ..ArchHp::new(RopeKind::IMrope) };

/// The attention layer's tensors: q (query and gate) k v, fused or not, the
/// q/k norms and the output projection.
fn attn_tensors(hp: &HParams, il: usize) -> Vec<TensorReq> {
    let (e, hd) = (hp.n_embd as i64, hp.head_dim as i64);
    let (q, kv) = (hd * hp.n_head as i64, hp.n_embd_k_gqa(0) as i64);
    let b = |s: &str| blk(il, s);
    let mut t = vec![
        TensorReq::opt(b("attn_qkv.weight"), &[e, 2 * q + 2 * kv], Usage::MulMat),
        TensorReq::opt(b("attn_q.weight"), &[e, 2 * q], Usage::MulMat),
        TensorReq::opt(b("attn_k.weight"), &[e, kv], Usage::MulMat),
        TensorReq::opt(b("attn_v.weight"), &[e, kv], Usage::MulMat),
    ];
    t.extend([
        TensorReq::req(b("attn_q_norm.weight"), &[hd], Usage::Elementwise),
        TensorReq::req(b("attn_k_norm.weight"), &[hd], Usage::Elementwise),
        TensorReq::req(b("attn_output.weight"), &[q, e], Usage::MulMat),
    ]);
    t
}

/// The shared expert beside the routed ones (qwen35moe).
fn shared_expert_tensors(hp: &HParams, il: usize) -> Vec<TensorReq> {
    let e = hp.n_embd as i64;
    let ff = hp.n_ff_shared.unwrap_or(hp.n_ff) as i64;
    let b = |s: &str| blk(il, s);
    vec![
        TensorReq::req(b("ffn_gate_inp_shexp.weight"), &[e], Usage::MulMat),
        TensorReq::req(b("ffn_gate_shexp.weight"), &[e, ff], Usage::MulMat),
        TensorReq::req(b("ffn_up_shexp.weight"), &[e, ff], Usage::MulMat),
        TensorReq::req(b("ffn_down_shexp.weight"), &[ff, e], Usage::MulMat),
    ]
}

pub fn tensors(hp: &HParams) -> Vec<TensorReq> {
    let (e, ff) = (hp.n_embd as i64, hp.n_ff as i64);
    let mut t = decoder::io_tensors(hp);
    for il in 0..hp.n_layer as usize {
        let b = |s: &str| blk(il, s);
        t.push(TensorReq::req(b("attn_norm.weight"), &[e], Usage::Elementwise));
        t.push(TensorReq::req(b("post_attention_norm.weight"), &[e], Usage::Elementwise));
        if hp.is_recurrent(il) {
            t.extend(delta_net::tensors(hp, il));
        } else {
            t.extend(attn_tensors(hp, il));
        }
        match &hp.experts {
            Some(x) => {
                t.extend(moe::tensors(hp, x, il, MoeKind::SOFTMAX_SWIGLU));
                t.extend(shared_expert_tensors(hp, il));
            }
            None => t.extend([
                TensorReq::req(b("ffn_gate.weight"), &[e, ff], Usage::MulMat),
                TensorReq::req(b("ffn_up.weight"), &[e, ff], Usage::MulMat),
                TensorReq::req(b("ffn_down.weight"), &[ff, e], Usage::MulMat),
            ]),
        }
    }
    t
}

/// Whether the file's tensors fit: each attention layer has q/k/v either
/// fused or separate.
pub fn check(hp: &HParams, has: &dyn Fn(&str) -> bool) -> Result<(), String> {
    for il in (0..hp.n_layer as usize).filter(|&il| !hp.is_recurrent(il)) {
        let fused = has(&blk(il, "attn_qkv.weight"));
        let split = ["attn_q.weight", "attn_k.weight", "attn_v.weight"].iter().all(|n| has(&blk(il, n)));
        if fused == split {
            return Err(format!(
                "attention layer {il} needs either blk.{il}.attn_qkv.weight or blk.{il}.attn_q/k/v.weight"
            ));
        }
    }
    Ok(())
}

/// The gated attention of layer `il` on its normed input.
fn attention<'c>(g: &mut StepGraph<'c>, il: usize, cur: Tensor<'c>) -> Tensor<'c> {
    let ctx = g.ctx;
    let hp = g.hparams();
    let (hd, nh, nkv, nt) = (hp.head_dim as i64, hp.n_head as i64, hp.n_head_kv as i64, g.n_tokens());
    let (qw, kvw) = (hd * nh, hd * nkv);
    let (qg, k, v) = match g.w_opt(&blk(il, "attn_qkv.weight")) {
        Some(wqkv) => {
            let all = ctx.mul_mat(wqkv, cur);
            let f = all.typ().type_size() as usize;
            let row = all.nb()[1];
            let part = |n: i64, at: i64| ctx.view(all, &[n, nt], &[row], at as usize * f);
            (ctx.cont(part(2 * qw, 0)), ctx.cont(part(kvw, 2 * qw)), ctx.cont(part(kvw, 2 * qw + kvw)))
        }
        None => {
            let lin = |n: &str| ctx.mul_mat(g.w(&blk(il, n)), cur);
            (lin("attn_q.weight"), lin("attn_k.weight"), lin("attn_v.weight"))
        }
    };
    let f = qg.typ().type_size() as usize;
    let head = |at: usize| ctx.view(qg, &[hd, nh, nt], &[2 * hd as usize * f, 2 * qw as usize * f], at);
    let q = decoder::norm(g, head(0), "attn_q_norm.weight", il);
    let gate = ctx.cont_2d(head(hd as usize * f), qw, nt);
    let k = decoder::norm(g, ctx.reshape(k, &[hd, nkv, nt]), "attn_k_norm.weight", il);
    let v = ctx.reshape(v, &[hd, nkv, nt]);
    let rope = g.rope_params(il);
    let pos = g.inputs.pos_sections.expect("multi-section positions");
    let sections = hp.rope_sections.unwrap_or_default();
    let q = ctx.rope_multi(q, pos, sections, &rope);
    let k = ctx.rope_multi(k, pos, sections, &rope);
    let shape = AttnShape { head_dim: hd, n_head: nh, n_head_kv: nkv, scale: 1.0 / (hd as f32).sqrt() };
    let (kc, vc) = g.kv_layer(il);
    let inp = g.attn_inputs(il);
    let att = blocks::attention(ctx, &mut g.graph, q, k, v, kc, vc, &inp, shape, None);
    let att = ctx.mul(att, ctx.sigmoid(gate));
    ctx.mul_mat(g.w(&blk(il, "attn_output.weight")), att)
}

/// The feed-forward of layer `il`: dense SwiGLU, or the experts plus the
/// shared expert gated by σ(w·x).
fn ffn<'c>(g: &mut StepGraph<'c>, il: usize, cur: Tensor<'c>) -> Tensor<'c> {
    let ctx = g.ctx;
    let Some(x) = &g.hparams().experts else {
        let w = |name: &str| g.w(&blk(il, name));
        return blocks::ffn_swiglu(ctx, cur, w("ffn_gate.weight"), w("ffn_up.weight"), w("ffn_down.weight"));
    };
    let ew = moe::ExpertWeights::of_layer(il, |n| g.w(n), |n| g.w_opt(n));
    let routed = moe::ffn(ctx, &mut g.graph, cur, &ew, x.n_used as i64, MoeKind::SOFTMAX_SWIGLU);
    let w = |name: &str| g.w(&blk(il, name));
    let shared =
        blocks::ffn_swiglu(ctx, cur, w("ffn_gate_shexp.weight"), w("ffn_up_shexp.weight"), w("ffn_down_shexp.weight"));
    let gate = ctx.sigmoid(ctx.mul_mat(w("ffn_gate_inp_shexp.weight"), cur));
    ctx.add(routed, ctx.mul(shared, gate))
}

pub fn build<'c>(g: &mut StepGraph<'c>) -> Tensor<'c> {
    let hp = g.hparams();
    let ctx = g.ctx;
    let mut x = ctx.get_rows(g.w("token_embd.weight"), g.inputs.tokens);
    for il in 0..hp.n_layer as usize {
        let cur = decoder::norm(g, x, "attn_norm.weight", il);
        let cur = if hp.is_recurrent(il) { delta_net::layer(g, il, cur) } else { attention(g, il, cur) };
        let ffn_in = ctx.add(cur, x);
        let cur = decoder::norm(g, ffn_in, "post_attention_norm.weight", il);
        let cur = ffn(g, il, cur);
        x = ctx.add(cur, ffn_in);
    }
    let x = blocks::rms_norm(ctx, x, g.w("output_norm.weight"), hp.rms_eps);
    let x = g.select_output(x);
    ctx.mul_mat(g.w("output.weight"), x)
}

//! The mixture-of-experts feed-forward, shared by every architecture with
//! experts (qwen3moe, Mixtral-style llama, mistral3): a router scores the
//! experts per token, the top `n_used` are chosen, their weights
//! renormalised to sum to one, and the chosen experts' SwiGLU networks run
//! through ggml's per-token expert matmul (`mul_mat_id`, one weight tensor
//! per projection holding every expert). The op order is llama.cpp's
//! (`build_moe_ffn`), so the same file gives the same sums.
use super::hparams::{Experts, HParams};
use super::plan::{blk, TensorReq, Usage};
use crate::ggml::{Context, Graph, Tensor};

/// The tensors of layer `il`'s experts and router.
pub fn tensors(hp: &HParams, x: &Experts, il: usize) -> Vec<TensorReq> {
    let (e, ff, n) = (hp.n_embd as i64, x.n_ff as i64, x.n_expert as i64);
    let b = |s: &str| blk(il, s);
    vec![
        TensorReq::req(b("ffn_gate_inp.weight"), &[e, n], Usage::MulMat),
        TensorReq::req(b("ffn_gate_exps.weight"), &[e, ff, n], Usage::MulMatId),
        TensorReq::req(b("ffn_up_exps.weight"), &[e, ff, n], Usage::MulMatId),
        TensorReq::req(b("ffn_down_exps.weight"), &[ff, e, n], Usage::MulMatId),
    ]
}

/// The weights of one layer's experts.
pub struct ExpertWeights<'c> {
    pub router: Tensor<'c>,
    pub gate: Tensor<'c>,
    pub up: Tensor<'c>,
    pub down: Tensor<'c>,
}

/// x: [n_embd, n_tokens] → [n_embd, n_tokens]: softmax routing, top-k,
/// weights renormalised, SwiGLU experts, weighted sum.
pub fn ffn<'c>(ctx: &'c Context, gf: &mut Graph<'c>, x: Tensor<'c>, w: &ExpertWeights<'c>, n_used: i64) -> Tensor<'c> {
    let (n_embd, n_tokens) = (x.ne()[0], x.ne()[1]);
    let n_expert = w.router.ne()[1];
    let probs = ctx.soft_max(ctx.mul_mat(w.router, x)); // [n_expert, n_tokens]
    let chosen = ctx.argsort_top_k(probs, n_used); // [n_used, n_tokens]
    let weights = ctx.get_rows(ctx.reshape(probs, &[1, n_expert, n_tokens]), chosen); // [1, n_used, n_tokens]
    let weights = ctx.reshape(weights, &[n_used, n_tokens]);
    // The smallest normal f16, as llama.cpp clamps, so no row divides by zero.
    let sum = ctx.clamp(ctx.sum_rows(weights), 6.103_515_6e-5, f32::INFINITY);
    let weights = ctx.reshape(ctx.div(weights, sum), &[1, n_used, n_tokens]);
    gf.expand(weights);

    let x = ctx.reshape(x, &[n_embd, 1, n_tokens]);
    let up = ctx.mul_mat_id(w.up, x, chosen); // [n_ff, n_used, n_tokens]
    let gate = ctx.mul_mat_id(w.gate, x, chosen);
    let out = ctx.mul_mat_id(w.down, ctx.swiglu_split(gate, up), chosen); // [n_embd, n_used, n_tokens]
    let out = ctx.mul(out, weights);
    gf.expand(out);

    let part = |i: i64| ctx.view(out, &[n_embd, n_tokens], &[out.nb()[2]], i as usize * out.nb()[1]);
    let parts: Vec<Tensor<'c>> = (0..n_used).map(part).collect();
    for &p in &parts {
        gf.expand(p);
    }
    let mut sum = parts[0];
    for &p in &parts[1..] {
        sum = ctx.add(sum, p);
        gf.expand(sum);
    }
    sum
}

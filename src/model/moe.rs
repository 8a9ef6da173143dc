//! The mixture-of-experts feed-forward, shared by every architecture with
//! experts (qwen3moe, Mixtral-style llama, mistral3, gpt-oss): a router
//! scores the experts per token, the top `n_used` are chosen and weighted
//! (as the family's `Gating` says), and the chosen experts' gated networks
//! run through ggml's per-token expert matmul (`mul_mat_id`, one weight
//! tensor per projection holding every expert). The op order is llama.cpp's
//! (`build_moe_ffn`), so the same file gives the same sums.
use super::hparams::{Experts, HParams};
use super::plan::{blk, TensorReq, Usage};
use crate::ggml::{Context, Graph, Tensor};

/// How the router's scores become the chosen experts' weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gating {
    /// softmax over every expert, the top k, renormalised to sum to one
    /// (qwen3moe, Mixtral, mistral3).
    SoftmaxNormTopK,
    /// the top k of the raw scores, softmax over those k (gpt-oss).
    TopKSoftmax,
}

/// The experts' gated activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ExpertAct {
    /// silu(gate) · up.
    SwiGlu,
    /// gpt-oss's clamped SwiGLU (alpha 1.702, limit 7).
    SwiGluOai,
    /// gelu_tanh(gate) · up (Gemma 4).
    GeGlu,
}

/// One family's kind of experts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoeKind {
    pub gating: Gating,
    pub act: ExpertAct,
    /// Biases on the router and on every expert's projections (gpt-oss).
    pub biases: bool,
}

impl MoeKind {
    pub const SOFTMAX_SWIGLU: MoeKind =
        MoeKind { gating: Gating::SoftmaxNormTopK, act: ExpertAct::SwiGlu, biases: false };
}

/// The tensors of layer `il`'s experts and router.
pub fn tensors(hp: &HParams, x: &Experts, il: usize, kind: MoeKind) -> Vec<TensorReq> {
    let (e, ff, n) = (hp.n_embd as i64, x.n_ff as i64, x.n_expert as i64);
    let b = |s: &str| blk(il, s);
    let mut t = vec![
        TensorReq::req(b("ffn_gate_inp.weight"), &[e, n], Usage::MulMat),
        TensorReq::req(b("ffn_gate_exps.weight"), &[e, ff, n], Usage::MulMatId),
        TensorReq::req(b("ffn_up_exps.weight"), &[e, ff, n], Usage::MulMatId),
        TensorReq::req(b("ffn_down_exps.weight"), &[ff, e, n], Usage::MulMatId),
    ];
    if kind.biases {
        t.extend([
            TensorReq::req(b("ffn_gate_inp.bias"), &[n], Usage::Elementwise),
            TensorReq::req(b("ffn_gate_exps.bias"), &[ff, n], Usage::Elementwise),
            TensorReq::req(b("ffn_up_exps.bias"), &[ff, n], Usage::Elementwise),
            TensorReq::req(b("ffn_down_exps.bias"), &[e, n], Usage::Elementwise),
        ]);
    }
    t
}

/// The experts' gate and up projections: two tensors, or one holding
/// each expert's gate rows then its up rows (Gemma 4's converted files).
pub enum GateUp<'c> {
    Split { gate: (Tensor<'c>, Option<Tensor<'c>>), up: (Tensor<'c>, Option<Tensor<'c>>) },
    Fused(Tensor<'c>),
}

/// One layer's router and experts, with their biases where the family has them.
pub struct ExpertWeights<'c> {
    pub router: (Tensor<'c>, Option<Tensor<'c>>),
    pub gate_up: GateUp<'c>,
    pub down: (Tensor<'c>, Option<Tensor<'c>>),
    /// One factor per expert on its down projection's output (Gemma 4's
    /// `ffn_down_exps.scale`).
    pub down_scale: Option<Tensor<'c>>,
}

impl<'c> ExpertWeights<'c> {
    /// Layer `il`'s weights, by their names.
    pub fn of_layer(il: usize, w: impl Fn(&str) -> Tensor<'c>, w_opt: impl Fn(&str) -> Option<Tensor<'c>>) -> Self {
        let pair = |name: &str| (w(&blk(il, &format!("{name}.weight"))), w_opt(&blk(il, &format!("{name}.bias"))));
        let gate_up = match w_opt(&blk(il, "ffn_gate_up_exps.weight")) {
            Some(t) => GateUp::Fused(t),
            None => GateUp::Split { gate: pair("ffn_gate_exps"), up: pair("ffn_up_exps") },
        };
        ExpertWeights {
            router: pair("ffn_gate_inp"),
            gate_up,
            down: pair("ffn_down_exps"),
            down_scale: w_opt(&blk(il, "ffn_down_exps.scale")),
        }
    }
}

/// x: [n_embd, n_tokens] → [n_embd, n_tokens], routed by the layer's router.
pub fn ffn<'c>(
    ctx: &'c Context,
    gf: &mut Graph<'c>,
    x: Tensor<'c>,
    w: &ExpertWeights<'c>,
    n_used: i64,
    kind: MoeKind,
) -> Tensor<'c> {
    let mut logits = ctx.mul_mat(w.router.0, x); // [n_expert, n_tokens]
    if let Some(b) = w.router.1 {
        logits = ctx.add(logits, b);
    }
    experts(ctx, gf, x, logits, w, n_used, kind)
}

/// x: [n_embd, n_tokens] → [n_embd, n_tokens], routed by `logits`
/// ([n_expert, n_tokens]; Gemma 4 computes them from another input).
pub fn experts<'c>(
    ctx: &'c Context,
    gf: &mut Graph<'c>,
    x: Tensor<'c>,
    logits: Tensor<'c>,
    w: &ExpertWeights<'c>,
    n_used: i64,
    kind: MoeKind,
) -> Tensor<'c> {
    let (n_embd, n_tokens) = (x.ne()[0], x.ne()[1]);
    let n_expert = logits.ne()[0];
    let probs = match kind.gating {
        Gating::SoftmaxNormTopK => ctx.soft_max(logits),
        Gating::TopKSoftmax => logits,
    };
    let chosen = ctx.argsort_top_k(probs, n_used); // [n_used, n_tokens]
    let weights = ctx.get_rows(ctx.reshape(probs, &[1, n_expert, n_tokens]), chosen); // [1, n_used, n_tokens]
    let weights = ctx.reshape(weights, &[n_used, n_tokens]);
    let weights = match kind.gating {
        Gating::SoftmaxNormTopK => {
            // The smallest normal f16, as llama.cpp clamps, so no row divides by zero.
            let sum = ctx.clamp(ctx.sum_rows(weights), 6.103_515_6e-5, f32::INFINITY);
            ctx.div(weights, sum)
        }
        Gating::TopKSoftmax => ctx.soft_max(weights),
    };
    let weights = ctx.reshape(weights, &[1, n_used, n_tokens]);
    gf.expand(weights);

    let x = ctx.reshape(x, &[n_embd, 1, n_tokens]);
    let project = |(m, b): (Tensor<'c>, Option<Tensor<'c>>), input: Tensor<'c>| {
        let y = ctx.mul_mat_id(m, input, chosen);
        match b {
            Some(b) => ctx.add_id(y, b, chosen),
            None => y,
        }
    };
    let (gate, up) = match w.gate_up {
        GateUp::Split { gate, up } => {
            let up = project(up, x); // [n_ff, n_used, n_tokens]
            (project(gate, x), up)
        }
        GateUp::Fused(m) => {
            let gu = ctx.mul_mat_id(m, x, chosen); // [2 n_ff, n_used, n_tokens]
            let n_ff = gu.ne()[0] / 2;
            let half = |at: i64| {
                let off = at as usize * gu.typ().type_size() as usize;
                ctx.view(gu, &[n_ff, gu.ne()[1], gu.ne()[2]], &[gu.nb()[1], gu.nb()[2]], off)
            };
            (half(0), half(n_ff))
        }
    };
    let act = match kind.act {
        ExpertAct::SwiGlu => ctx.swiglu_split(gate, up),
        ExpertAct::SwiGluOai => ctx.swiglu_oai(gate, up, 1.702, 7.0),
        ExpertAct::GeGlu => ctx.geglu_split(gate, up),
    };
    let mut out = ctx.mul_mat_id(w.down.0, act, chosen); // [n_embd, n_used, n_tokens]
    if let Some(s) = w.down_scale {
        // Each chosen expert's factor, picked as llama.cpp picks it.
        let s = ctx.repeat_4d(ctx.reshape(s, &[1, n_expert, 1]), [1, n_expert, n_tokens, 1]);
        out = ctx.mul(out, ctx.get_rows(s, chosen));
    }
    if let Some(b) = w.down.1 {
        out = ctx.add_id(out, b, chosen);
    }
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
    if n_used == 1 {
        // A view is not contiguous; later ops want a tensor of their own.
        sum = ctx.cont(sum);
    }
    sum
}

//! gpt-oss (`general.architecture = gpt-oss`, llama.cpp's openai-moe):
//! gpt-oss-20b and -120b. Attention with q/k/v and output biases, one
//! learned sink logit per head, NeoX RoPE (YaRN in the released files),
//! sliding-window layers alternating with global ones (every even layer
//! slides, with the global RoPE); an RMSNorm after attention's residual
//! feeds a mixture of experts with biases everywhere, routed by a softmax
//! over the top-k raw scores, through gpt-oss's clamped SwiGLU (its experts
//! in MXFP4 in the released files). The rows whose logits are wanted are
//! picked after the last layer, as llama.cpp does for this architecture.
use crate::ggml::Tensor;
use crate::model::decoder::{self, Ffn, Recipe};
use crate::model::graph::StepGraph;
use crate::model::hparams::{ArchHp, HParams, MoeHp, RopeKind, SwaHp};
use crate::model::moe::{self, ExpertAct, Gating, MoeKind};
use crate::model::plan::{blk, TensorReq, Usage};

pub const HP: ArchHp =
    ArchHp { swa: Some(SwaHp { period: 2, rope_base: None }), moe: MoeHp::Required, ..ArchHp::new(RopeKind::Neox) };

/// The attention part (shared with the decoder): no q/k norms, plain scaling.
const ATTN: Recipe =
    Recipe { embd_scale: false, qk_norm: false, q_scale: false, fused_qkv: false, ffn: Ffn::SwiGlu, post_norms: false };

const EXPERTS: MoeKind = MoeKind { gating: Gating::TopKSoftmax, act: ExpertAct::SwiGluOai, biases: true };

pub fn tensors(hp: &HParams) -> Vec<TensorReq> {
    let e = hp.n_embd as i64;
    let x = hp.experts.as_ref().expect("gpt-oss has experts (checked when reading the hyper-parameters)");
    let mut t: Vec<TensorReq> = decoder::io_tensors(hp)
        .into_iter()
        .map(|r| if r.name == "output.weight" { TensorReq::req("output.weight", &r.ne, Usage::MulMat) } else { r })
        .collect();
    for il in 0..hp.n_layer as usize {
        t.extend(decoder::attn_tensors(hp, &ATTN, il));
        t.push(TensorReq::req(blk(il, "attn_sinks.weight"), &[hp.n_head as i64], Usage::Elementwise));
        t.push(TensorReq::req(blk(il, "post_attention_norm.weight"), &[e], Usage::Elementwise));
        t.extend(moe::tensors(hp, x, il, EXPERTS));
    }
    t
}

pub fn build<'c>(g: &mut StepGraph<'c>) -> Tensor<'c> {
    let hp = g.hparams();
    let ctx = g.ctx;
    let n_used = hp.experts.as_ref().map_or(1, |x| x.n_used as i64);
    let mut x = decoder::embed(g, &ATTN);
    for il in 0..hp.n_layer as usize {
        let cur = decoder::norm(g, x, "attn_norm.weight", il);
        let sinks = g.w(&blk(il, "attn_sinks.weight"));
        let cur = decoder::self_attention(g, il, cur, &ATTN, Some(sinks));
        let ffn_in = ctx.add(cur, x);
        let cur = decoder::norm(g, ffn_in, "post_attention_norm.weight", il);
        let w = moe::ExpertWeights::of_layer(il, |n| g.w(n), |n| g.w_opt(n));
        let cur = moe::ffn(ctx, &mut g.graph, cur, &w, n_used, EXPERTS);
        x = ctx.add(cur, ffn_in);
    }
    let x = g.select_output(x);
    decoder::head(g, x)
}

//! llama (and SmolLM2, Mistral-style) decoders: RMSNorm, RoPE, grouped-query
//! attention, SwiGLU feed-forward, tied or separate output.
use crate::model::blocks::{self, AttnShape};
use crate::model::graph::StepGraph;
use crate::model::hparams::HParams;
use crate::model::plan::{blk, TensorReq, Usage};
use crate::ggml::Tensor;

pub fn tensors(hp: &HParams) -> Vec<TensorReq> {
    let (e, v, ff) = (hp.n_embd as i64, hp.n_vocab as i64, hp.n_ff as i64);
    let q = (hp.head_dim * hp.n_head) as i64;
    let kv = hp.n_embd_k_gqa() as i64;
    let mut t = vec![
        TensorReq::req("token_embd.weight", &[e, v], Usage::GetRows),
        TensorReq::req("output_norm.weight", &[e], Usage::Elementwise),
        TensorReq::tied("output.weight", &[e, v], Usage::MulMat, "token_embd.weight"),
    ];
    for il in 0..hp.n_layer as usize {
        t.extend([
            TensorReq::req(blk(il, "attn_norm.weight"), &[e], Usage::Elementwise),
            TensorReq::req(blk(il, "attn_q.weight"), &[e, q], Usage::MulMat),
            TensorReq::req(blk(il, "attn_k.weight"), &[e, kv], Usage::MulMat),
            TensorReq::req(blk(il, "attn_v.weight"), &[e, kv], Usage::MulMat),
            TensorReq::req(blk(il, "attn_output.weight"), &[q, e], Usage::MulMat),
            TensorReq::req(blk(il, "ffn_norm.weight"), &[e], Usage::Elementwise),
            TensorReq::req(blk(il, "ffn_gate.weight"), &[e, ff], Usage::MulMat),
            TensorReq::req(blk(il, "ffn_up.weight"), &[e, ff], Usage::MulMat),
            TensorReq::req(blk(il, "ffn_down.weight"), &[ff, e], Usage::MulMat),
        ]);
    }
    t
}

pub fn build<'c>(g: &mut StepGraph<'c>) -> Tensor<'c> {
    let hp = g.hparams().clone();
    let ctx = g.ctx;
    let n_tokens = g.n_tokens();
    let (hd, nh, nkv) = (hp.head_dim as i64, hp.n_head as i64, hp.n_head_kv as i64);
    let shape = AttnShape { head_dim: hd, n_head: nh, n_head_kv: nkv, kv_size: g.kv_size(), scale: 1.0 / (hd as f32).sqrt() };
    let rope = g.rope_params();
    let pos = g.inputs.pos;

    let mut x = ctx.get_rows(g.w("token_embd.weight"), g.inputs.tokens);
    for il in 0..hp.n_layer as usize {
        let residual = x;
        let cur = blocks::rms_norm(ctx, x, g.w(&blk(il, "attn_norm.weight")), hp.rms_eps);
        let q = ctx.reshape(ctx.mul_mat(g.w(&blk(il, "attn_q.weight")), cur), &[hd, nh, n_tokens]);
        let k = ctx.reshape(ctx.mul_mat(g.w(&blk(il, "attn_k.weight")), cur), &[hd, nkv, n_tokens]);
        let v = ctx.reshape(ctx.mul_mat(g.w(&blk(il, "attn_v.weight")), cur), &[hd, nkv, n_tokens]);
        let q = blocks::rope(ctx, q, pos, &rope);
        let k = blocks::rope(ctx, k, pos, &rope);
        let (kc, vc) = g.kv_layer(il);
        let inp = g.attn_inputs();
        let att = blocks::attention(ctx, &mut g.graph, q, k, v, kc, vc, &inp, shape);
        let mut cur = ctx.mul_mat(g.w(&blk(il, "attn_output.weight")), att);
        let mut residual = residual;
        if il + 1 == hp.n_layer as usize {
            (cur, residual) = g.select_outputs(cur, residual);
        }
        let ffn_in = ctx.add(cur, residual);
        let cur = blocks::rms_norm(ctx, ffn_in, g.w(&blk(il, "ffn_norm.weight")), hp.rms_eps);
        let cur = blocks::ffn_swiglu(
            ctx, cur, g.w(&blk(il, "ffn_gate.weight")), g.w(&blk(il, "ffn_up.weight")), g.w(&blk(il, "ffn_down.weight")),
        );
        x = ctx.add(cur, ffn_in);
    }
    let x = blocks::rms_norm(ctx, x, g.w("output_norm.weight"), hp.rms_eps);
    ctx.mul_mat(g.w("output.weight"), x)
}

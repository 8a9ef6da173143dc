//! The gated delta net: Qwen3.5's recurrent (linear-attention) layer, a
//! shared block for the hybrid architectures. Per token: one projection
//! gives q, k and v (through a short causal convolution over the previous
//! `d_conv - 1` inputs, then SiLU), another the output gate z; per value
//! head a decay `g = softplus(alpha·x + dt_bias) · a` and a write strength
//! `beta = σ(beta·x)`. The delta rule updates each head's state matrix
//! and reads it with the (L2-normed) query; the result is RMS-normed, gated
//! by SiLU(z) and projected out.
//!
//! Each sequence's convolution inputs and state matrices live in the
//! cache (`kv::recurrent`): a step reads the rows of its sequences
//! (`inp_rs_ids`) and writes them back.
use super::blocks;
use super::graph::StepGraph;
use super::hparams::HParams;
use super::plan::{blk, TensorReq, Usage};
use crate::ggml::Tensor;

/// Layer `il`'s tensors (a recurrent layer).
pub fn tensors(hp: &HParams, il: usize) -> Vec<TensorReq> {
    let r = hp.recurrent.as_ref().expect("a hybrid model");
    let e = hp.n_embd as i64;
    let (conv, inner, hv) = (r.conv_channels() as i64, r.d_inner as i64, r.n_v_heads as i64);
    let b = |s: &str| blk(il, s);
    vec![
        TensorReq::req(b("attn_qkv.weight"), &[e, conv], Usage::MulMat),
        TensorReq::req(b("attn_gate.weight"), &[e, inner], Usage::MulMat),
        TensorReq::req(b("ssm_conv1d.weight"), &[r.d_conv as i64, conv], Usage::Elementwise),
        TensorReq::req(b("ssm_dt.bias"), &[hv], Usage::Elementwise),
        TensorReq::req(b("ssm_a"), &[hv], Usage::Elementwise),
        TensorReq::req(b("ssm_beta.weight"), &[e, hv], Usage::MulMat),
        TensorReq::req(b("ssm_alpha.weight"), &[e, hv], Usage::MulMat),
        TensorReq::req(b("ssm_norm.weight"), &[r.head_v_dim() as i64], Usage::Elementwise),
        TensorReq::req(b("ssm_out.weight"), &[inner, e], Usage::MulMat),
    ]
}

/// L2 norm as llama.cpp computes it for this layer: an RMS norm with
/// eps / n, scaled by 1 / sqrt(n).
fn l2_norm<'c>(g: &StepGraph<'c>, x: Tensor<'c>, eps: f32) -> Tensor<'c> {
    let n = x.ne()[0] as f32;
    g.ctx.scale(g.ctx.rms_norm(x, eps / n), 1.0 / n.sqrt())
}

/// Layer `il` on its normed input `cur` [n_embd, n_tokens]: returns
/// [n_embd, n_tokens], and queues the writes of the step's sequences' new
/// states into the cache.
pub fn layer<'c>(g: &mut StepGraph<'c>, il: usize, cur: Tensor<'c>) -> Tensor<'c> {
    let ctx = g.ctx;
    let hp = g.hparams();
    let r = hp.recurrent.as_ref().expect("a hybrid model");
    let (ns, nt) = (g.n_seqs(), g.n_tokens());
    let nst = nt / ns;
    let (hk, nhk, nhv, hv) = (r.d_state as i64, r.n_k_heads as i64, r.n_v_heads as i64, r.head_v_dim() as i64);
    let (channels, k_conv) = (r.conv_channels() as i64, r.d_conv as i64);
    let ids = g.inputs.rs_ids.expect("recurrent inputs");
    let (conv_all, delta_all) = g.rs_layer(il);

    let qkv = ctx.reshape(ctx.mul_mat(g.w(&blk(il, "attn_qkv.weight")), cur), &[channels, nst, ns]);
    let z = ctx.mul_mat(g.w(&blk(il, "attn_gate.weight")), cur);
    let beta = ctx.sigmoid(ctx.reshape(ctx.mul_mat(g.w(&blk(il, "ssm_beta.weight")), cur), &[1, nhv, nst, ns]));
    let alpha = ctx.reshape(ctx.mul_mat(g.w(&blk(il, "ssm_alpha.weight")), cur), &[nhv, nst, ns]);
    let decay = ctx.mul(ctx.softplus(ctx.add(alpha, g.w(&blk(il, "ssm_dt.bias")))), g.w(&blk(il, "ssm_a")));
    let decay = ctx.reshape(decay, &[1, nhv, nst, ns]);

    // The convolution: the state's last inputs, then this step's.
    let state = ctx.reshape(ctx.get_rows(conv_all, ids), &[k_conv - 1, channels, ns]);
    let input = ctx.concat(state, ctx.transpose(qkv), 0);
    let f = input.typ().type_size() as usize;
    let (nb1, nb2) = (input.nb()[1], input.nb()[2]);
    let last = ctx.view(input, &[k_conv - 1, channels, ns], &[nb1, nb2], nst as usize * f);
    let last = ctx.reshape(ctx.cont(last), &[(k_conv - 1) * channels, ns]);
    g.graph.expand(ctx.set_rows(conv_all, last, ids));
    let mixed = ctx.silu(ctx.ssm_conv(input, g.w(&blk(il, "ssm_conv1d.weight"))));

    let f = mixed.typ().type_size() as usize;
    let row = channels as usize * f;
    let part = |d: i64, heads: i64, at: i64| {
        ctx.view(mixed, &[d, heads, nst, ns], &[d as usize * f, row, row * nst as usize], at as usize * f)
    };
    let q = l2_norm(g, part(hk, nhk, 0), hp.rms_eps);
    let k = l2_norm(g, part(hk, nhk, hk * nhk), hp.rms_eps);
    let v = part(hv, nhv, 2 * hk * nhk);

    let s = ctx.reshape(ctx.get_rows(delta_all, ids), &[hv, hv, nhv, ns]);
    let out = ctx.gated_delta_net(q, k, v, decay, beta, s, 1);
    let f = out.typ().type_size() as usize;
    let o = ctx.view(
        out,
        &[hv, nhv, nst, ns],
        &[hv as usize * f, (hv * nhv) as usize * f, (hv * nhv * nst) as usize * f],
        0,
    );
    let n_embd_s = r.n_embd_s();
    let new_state = ctx.view(out, &[n_embd_s as i64, ns], &[n_embd_s * f], (hv * nhv * nt) as usize * f);
    g.graph.expand(ctx.set_rows(delta_all, new_state, ids));

    let normed = blocks::rms_norm(ctx, o, g.w(&blk(il, "ssm_norm.weight")), hp.rms_eps);
    let gated = ctx.mul(normed, ctx.silu(ctx.reshape(z, &[hv, nhv, nst, ns])));
    let flat = ctx.reshape(gated, &[hv * nhv, nt]);
    ctx.mul_mat(g.w(&blk(il, "ssm_out.weight")), flat)
}

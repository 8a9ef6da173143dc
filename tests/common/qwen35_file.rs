//! Random-weight GGUF files of llama.cpp's `qwen35` and `qwen35moe`
//! architectures (the Qwen3.5 hybrids), as llama.cpp's loader reads them
//! (`src/models/qwen35.cpp`, `qwen35moe.cpp`).
//!
//! - `Qwen35Shape`: the hyper-parameters; `tiny()` / `tiny_moe()` are small
//!   test shapes (4 layers, interval 4: layers 0-2 recurrent, 3 attention).
//! - Layer `il` is recurrent (a gated delta net, "linear attention") unless
//!   `(il + 1) % full_attention_interval == 0`, when it is gated full
//!   attention; llama.cpp derives the same split from
//!   `{arch}.full_attention_interval`.
//! - Recurrent layer: `attn_norm`, `attn_qkv` [n_embd, 2·d_state·n_group +
//!   d_inner] (q, k, v stacked: n_group k heads, dt_rank v heads, all of
//!   size d_state), `attn_gate` [n_embd, d_inner] (z of the gated norm),
//!   `ssm_conv1d` [d_conv, conv_dim], `ssm_dt.bias` [dt_rank] (small),
//!   `ssm_a` [dt_rank] (no `.weight`; -exp(A_log), negative), `ssm_beta`,
//!   `ssm_alpha` [n_embd, dt_rank], `ssm_norm` [d_state], `ssm_out`
//!   [d_inner, n_embd].
//! - Attention layer: `attn_norm`, `attn_q` [n_embd, 2·head_dim·n_head]
//!   (per head the query then its output gate, interleaved head by head),
//!   `attn_k`, `attn_v` [n_embd, head_dim·n_head_kv], `attn_q_norm`,
//!   `attn_k_norm` [head_dim], `attn_output` [head_dim·n_head, n_embd].
//! - Every layer then: `post_attention_norm` [n_embd] (the FFN's input norm)
//!   and a SwiGLU FFN, dense (`ffn_gate`, `ffn_up`, `ffn_down`) or, in
//!   `qwen35moe`, routed experts (`ffn_gate_inp` [n_embd, n_expert],
//!   `ffn_{gate,up}_exps` [n_embd, n_ff_exp, n_expert], `ffn_down_exps`
//!   [n_ff_exp, n_embd, n_expert]) plus a shared expert (`ffn_gate_inp_shexp`
//!   [n_embd], its sigmoid gate; `ffn_{gate,up}_shexp` [n_embd, n_ff_shexp],
//!   `ffn_down_shexp` [n_ff_shexp, n_embd]).
//! - Globals: `token_embd`, `output_norm`, and an untied `output` (remove
//!   it to tie the head to the embeddings).
//! - Keys: `arch_header`'s (tiny gpt2 vocabulary, context 256, freq base
//!   1e4), rms eps 1e-6, `attention.key_length` / `value_length` = head_dim,
//!   `rope.dimension_count` = 2·Σ`rope_sections` (partial rotary, IMRoPE),
//!   `rope.dimension_sections` (4 × i32), `ssm.conv_kernel`,
//!   `ssm.inner_size` (d_state·dt_rank), `ssm.state_size`,
//!   `ssm.time_step_rank`, `ssm.group_count`, `full_attention_interval`,
//!   and for `qwen35moe` `expert_count`, `expert_used_count`,
//!   `expert_feed_forward_length`, `expert_shared_feed_forward_length`.
//! - Values: norms 1 ± 0.3, matrices uniform ±2/√ne0 (f32, or random Q4_K
//!   blocks with `Weights::Q4K`), embeddings ±1; routers, `ffn_gate_inp_shexp`,
//!   norms, `ssm_*` vectors and `ssm_conv1d` are always f32.
#![allow(dead_code)]

use super::gguf_writer::{arch_header, blk, f32_bytes, q4_k, tiny_vocab, tt, Gguf, Rng, Value};

/// The hyper-parameters of a `qwen35` / `qwen35moe` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Qwen35Shape {
    pub n_layer: u64,
    pub n_embd: u64,
    /// Query heads of the attention layers (and output gates, as many).
    pub n_head: u64,
    pub n_head_kv: u64,
    pub head_dim: u64,
    /// Width of the dense FFN (written as `feed_forward_length` in MoE files too).
    pub n_ff: u64,
    /// Every `full_attention_interval`-th layer is full attention.
    pub full_attention_interval: u64,
    /// Kernel size of the short convolution of the recurrent layers (4).
    pub d_conv: u64,
    /// Head size of the keys and values in the recurrent layers.
    pub d_state: u64,
    /// Key heads of the recurrent layers.
    pub n_group: u64,
    /// Value heads of the recurrent layers (a multiple of `n_group`).
    pub dt_rank: u64,
    /// (experts, used per token, width of each, width of the shared expert):
    /// `qwen35moe` when set.
    pub experts: Option<(u64, u64, u64, u64)>,
    /// IMRoPE sections; the rotary part of a head is twice their sum.
    pub rope_sections: [u32; 4],
}

impl Qwen35Shape {
    /// A small dense shape: 4 layers (0-2 recurrent, 3 attention), n_embd
    /// 128, 4 query / 2 kv heads of 32 (16 rotary dims), ffn 256; recurrent
    /// layers with 2 key and 4 value heads of 16 (d_inner 64), conv 4.
    pub fn tiny() -> Qwen35Shape {
        Qwen35Shape {
            n_layer: 4,
            n_embd: 128,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 32,
            n_ff: 256,
            full_attention_interval: 4,
            d_conv: 4,
            d_state: 16,
            n_group: 2,
            dt_rank: 4,
            experts: None,
            rope_sections: [3, 3, 2, 0],
        }
    }

    /// `tiny()` with 8 experts of 64, 2 per token, and a shared expert of 128.
    pub fn tiny_moe() -> Qwen35Shape {
        Qwen35Shape { experts: Some((8, 2, 64, 128)), ..Qwen35Shape::tiny() }
    }

    /// "qwen35moe" with experts, else "qwen35".
    pub fn arch(&self) -> &'static str {
        if self.experts.is_some() {
            "qwen35moe"
        } else {
            "qwen35"
        }
    }

    /// Whether layer `il` is a recurrent (gated delta net) layer.
    pub fn is_recurrent(&self, il: u64) -> bool {
        !(il + 1).is_multiple_of(self.full_attention_interval)
    }

    /// Width of the recurrent layers' values (`ssm.inner_size`).
    pub fn d_inner(&self) -> u64 {
        self.d_state * self.dt_rank
    }

    /// Channels of the short convolution: q, k (n_group heads) and v.
    pub fn conv_dim(&self) -> u64 {
        2 * self.d_state * self.n_group + self.d_inner()
    }

    /// Rotary dimensions of an attention head (`rope.dimension_count`).
    pub fn n_rot(&self) -> u64 {
        2 * self.rope_sections.iter().map(|&s| s as u64).sum::<u64>()
    }

    fn check(&self) {
        assert!(self.n_layer > 0 && self.full_attention_interval > 0, "{self:?}");
        assert!(self.n_head.is_multiple_of(self.n_head_kv), "query heads a multiple of kv heads: {self:?}");
        assert!(self.dt_rank.is_multiple_of(self.n_group), "value heads a multiple of key heads: {self:?}");
        assert!(self.n_rot() > 0 && self.n_rot() <= self.head_dim, "rotary part within a head: {self:?}");
        if let Some((n, used, _, _)) = self.experts {
            assert!(used > 0 && used <= n, "{self:?}");
        }
    }
}

/// How the matrices are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    F32,
    /// Random Q4_K blocks (`gguf_writer::q4_k`): every matrix's rows must
    /// hold whole blocks of 256.
    Q4K,
}

fn rand(rng: &mut Rng, n: u64, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.f32_sym() * scale).collect()
}

/// Norm weights around 1 (so a wrong norm shows).
fn norm(rng: &mut Rng, n: u64) -> Vec<u8> {
    f32_bytes(&(0..n).map(|_| 1.0 + 0.3 * rng.f32_sym()).collect::<Vec<_>>())
}

/// A `qwen35` (or `qwen35moe`) file of shape `s` with f32 random weights.
pub fn qwen35(s: &Qwen35Shape, seed: u64) -> Gguf {
    qwen35_with(s, seed, Weights::F32)
}

/// `qwen35` with the matrices stored as `w`.
pub fn qwen35_with(s: &Qwen35Shape, seed: u64, w: Weights) -> Gguf {
    s.check();
    let arch = s.arch();
    let n_vocab = tiny_vocab().0.len() as u64;
    let mut g = Gguf::new();
    arch_header(&mut g, arch, s.n_layer, s.n_embd, s.n_ff, s.n_head, s.n_head_kv);
    let k = |x: &str| format!("{arch}.{x}");
    let sections: Vec<i32> = s.rope_sections.iter().map(|&v| v as i32).collect();
    g.set("general.name", Value::Str(format!("random {arch}")))
        .set("general.file_type", Value::U32(if w == Weights::Q4K { 15 } else { 0 }))
        .set(&k("attention.layer_norm_rms_epsilon"), Value::F32(1e-6))
        .set(&k("attention.key_length"), Value::U32(s.head_dim as u32))
        .set(&k("attention.value_length"), Value::U32(s.head_dim as u32))
        .set(&k("rope.dimension_count"), Value::U32(s.n_rot() as u32))
        .set(&k("rope.dimension_sections"), Value::i32s(&sections))
        .set(&k("ssm.conv_kernel"), Value::U32(s.d_conv as u32))
        .set(&k("ssm.inner_size"), Value::U32(s.d_inner() as u32))
        .set(&k("ssm.state_size"), Value::U32(s.d_state as u32))
        .set(&k("ssm.time_step_rank"), Value::U32(s.dt_rank as u32))
        .set(&k("ssm.group_count"), Value::U32(s.n_group as u32))
        .set(&k("full_attention_interval"), Value::U32(s.full_attention_interval as u32));
    if let Some((n, used, ff, shff)) = s.experts {
        g.set(&k("expert_count"), Value::U32(n as u32))
            .set(&k("expert_used_count"), Value::U32(used as u32))
            .set(&k("expert_feed_forward_length"), Value::U32(ff as u32))
            .set(&k("expert_shared_feed_forward_length"), Value::U32(shff as u32));
    }

    let mut rng = Rng::new(seed);
    // A matrix (2-D or a 3-D stack of experts), ne0 first.
    let mat = |g: &mut Gguf, name: &str, dims: &[u64], scale: f32, rng: &mut Rng| {
        let n: u64 = dims.iter().product();
        match w {
            Weights::F32 => g.tensor(name, tt::F32, dims, f32_bytes(&rand(rng, n, scale))),
            Weights::Q4K => {
                assert_eq!(dims[0] % 256, 0, "{name}: Q4_K rows of {} values", dims[0]);
                g.tensor(name, tt::Q4_K, dims, q4_k(n, rng))
            }
        };
    };
    let sc = |ne0: u64| 2.0 / (ne0 as f32).sqrt();
    let vec_f32 = |g: &mut Gguf, name: &str, v: Vec<f32>| {
        let n = v.len() as u64;
        g.tensor(name, tt::F32, &[n], f32_bytes(&v));
    };
    let e = s.n_embd;

    mat(&mut g, "token_embd.weight", &[e, n_vocab], 1.0, &mut rng);
    g.tensor("output_norm.weight", tt::F32, &[e], norm(&mut rng, e));
    mat(&mut g, "output.weight", &[e, n_vocab], sc(e), &mut rng);

    let (q, kv) = (s.head_dim * s.n_head, s.head_dim * s.n_head_kv);
    for il in 0..s.n_layer {
        let b = |x: &str| blk(il, x);
        g.tensor(&b("attn_norm.weight"), tt::F32, &[e], norm(&mut rng, e));
        if s.is_recurrent(il) {
            let (di, cd) = (s.d_inner(), s.conv_dim());
            mat(&mut g, &b("attn_qkv.weight"), &[e, cd], sc(e), &mut rng);
            mat(&mut g, &b("attn_gate.weight"), &[e, di], sc(e), &mut rng);
            let conv = rand(&mut rng, s.d_conv * cd, sc(s.d_conv));
            g.tensor(&b("ssm_conv1d.weight"), tt::F32, &[s.d_conv, cd], f32_bytes(&conv));
            let dt = rand(&mut rng, s.dt_rank, 0.2);
            vec_f32(&mut g, &b("ssm_dt.bias"), dt);
            // -exp(A_log), A_log in [-2, 0.5): decays of 0.2 to 0.9 per token.
            let a = (0..s.dt_rank).map(|_| -(-0.75 + 1.25 * rng.f32_sym()).exp()).collect();
            vec_f32(&mut g, &b("ssm_a"), a);
            mat(&mut g, &b("ssm_beta.weight"), &[e, s.dt_rank], sc(e), &mut rng);
            mat(&mut g, &b("ssm_alpha.weight"), &[e, s.dt_rank], sc(e), &mut rng);
            g.tensor(&b("ssm_norm.weight"), tt::F32, &[s.d_state], norm(&mut rng, s.d_state));
            mat(&mut g, &b("ssm_out.weight"), &[di, e], sc(di), &mut rng);
        } else {
            mat(&mut g, &b("attn_q.weight"), &[e, 2 * q], sc(e), &mut rng);
            mat(&mut g, &b("attn_k.weight"), &[e, kv], sc(e), &mut rng);
            mat(&mut g, &b("attn_v.weight"), &[e, kv], sc(e), &mut rng);
            g.tensor(&b("attn_q_norm.weight"), tt::F32, &[s.head_dim], norm(&mut rng, s.head_dim));
            g.tensor(&b("attn_k_norm.weight"), tt::F32, &[s.head_dim], norm(&mut rng, s.head_dim));
            mat(&mut g, &b("attn_output.weight"), &[q, e], sc(q), &mut rng);
        }
        g.tensor(&b("post_attention_norm.weight"), tt::F32, &[e], norm(&mut rng, e));
        match s.experts {
            None => {
                mat(&mut g, &b("ffn_gate.weight"), &[e, s.n_ff], sc(e), &mut rng);
                mat(&mut g, &b("ffn_up.weight"), &[e, s.n_ff], sc(e), &mut rng);
                mat(&mut g, &b("ffn_down.weight"), &[s.n_ff, e], sc(s.n_ff), &mut rng);
            }
            Some((n, _, ff, shff)) => {
                let router = rand(&mut rng, e * n, sc(e));
                g.tensor(&b("ffn_gate_inp.weight"), tt::F32, &[e, n], f32_bytes(&router));
                mat(&mut g, &b("ffn_gate_exps.weight"), &[e, ff, n], sc(e), &mut rng);
                mat(&mut g, &b("ffn_up_exps.weight"), &[e, ff, n], sc(e), &mut rng);
                mat(&mut g, &b("ffn_down_exps.weight"), &[ff, e, n], sc(ff), &mut rng);
                let shared_gate = rand(&mut rng, e, sc(e));
                vec_f32(&mut g, &b("ffn_gate_inp_shexp.weight"), shared_gate);
                mat(&mut g, &b("ffn_gate_shexp.weight"), &[e, shff], sc(e), &mut rng);
                mat(&mut g, &b("ffn_up_shexp.weight"), &[e, shff], sc(e), &mut rng);
                mat(&mut g, &b("ffn_down_shexp.weight"), &[shff, e], sc(shff), &mut rng);
            }
        }
    }
    g
}

//! The other architectures at llama.cpp parity on small random-weight GGUF
//! files written here: qwen2 (q/k/v biases, output bias), qwen3 (q/k norms,
//! head size apart from n_embd/n_head), phi3 (fused QKV and gate-up, long
//! RoPE factors with their attention factor), llama with Llama-3 RoPE
//! factors, and gemma3 (sliding-window and global layers, post norms,
//! GeGLU, soft-capped logits), qwen3moe and a Mixtral-style llama (mixtures
//! of experts). Each file's logits at every position are
//! compared with llama.cpp's on the same file; then a middle span is
//! decached (keep and shift) and the continuation compared again with
//! `llama_memory_seq_rm` (+ `seq_add`), and greedy generations from two
//! more prompts must be identical.
#[path = "common/arch_check.rs"]
mod arch_check;
#[path = "common/gguf_writer.rs"]
mod gguf_writer;
use arch_check::{check, shift_against_recompute};
use decache::model::{LoadOptions, Model};
use gguf_writer::{arch_header, blk, f32_bytes, tiny_vocab, Gguf, Rng, Value};

const N_EMBD: u64 = 128;
const N_FF: u64 = 256;
const N_HEAD: u64 = 4;
const N_HEAD_KV: u64 = 2;

#[derive(Default, Clone, Copy)]
struct Shape {
    n_layer: u64,
    head_dim: u64,
    qkv_bias: bool,
    output_bias: bool,
    qk_norm: bool,
    fused_qkv: bool,
    fused_ffn: bool,
    post_norms: bool,
    rope_freqs: bool,
    phi3_factors: bool,
    /// (experts, used per token, width of each): a mixture of experts
    /// instead of the dense feed-forward.
    experts: Option<(u64, u64, u64)>,
}

fn rand(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.f32_sym() * scale).collect()
}

/// Norm weights around 1 (so a wrong norm shows).
fn norm(rng: &mut Rng, n: usize) -> Vec<u8> {
    f32_bytes(&(0..n).map(|_| 1.0 + 0.3 * rng.f32_sym()).collect::<Vec<_>>())
}

fn model(arch: &str, s: Shape, seed: u64) -> Gguf {
    let n_vocab = tiny_vocab().0.len() as u64;
    let mut g = Gguf::new();
    arch_header(&mut g, arch, s.n_layer, N_EMBD, N_FF, N_HEAD, N_HEAD_KV);
    let k = |x: &str| format!("{arch}.{x}");
    g.set(&k("attention.key_length"), Value::U32(s.head_dim as u32))
        .set(&k("attention.value_length"), Value::U32(s.head_dim as u32));
    let mut rng = Rng::new(seed);
    let mat = |g: &mut Gguf, name: &str, ne0: u64, ne1: u64, rng: &mut Rng| {
        let w = rand(rng, (ne0 * ne1) as usize, 2.0 / (ne0 as f32).sqrt());
        g.tensor(name, 0, &[ne0, ne1], f32_bytes(&w));
    };
    g.tensor("token_embd.weight", 0, &[N_EMBD, n_vocab], f32_bytes(&rand(&mut rng, (N_EMBD * n_vocab) as usize, 1.0)));
    g.tensor("output_norm.weight", 0, &[N_EMBD], norm(&mut rng, N_EMBD as usize));
    mat(&mut g, "output.weight", N_EMBD, n_vocab, &mut rng);
    if s.output_bias {
        g.tensor("output.bias", 0, &[n_vocab], f32_bytes(&rand(&mut rng, n_vocab as usize, 0.5)));
    }
    let half = s.head_dim / 2;
    let factors = |rng: &mut Rng| f32_bytes(&(0..half).map(|_| 1.0 + 4.0 * (rng.f32_sym() + 1.0)).collect::<Vec<_>>());
    if s.rope_freqs {
        g.tensor("rope_freqs.weight", 0, &[half], factors(&mut rng));
    }
    if s.phi3_factors {
        g.tensor("rope_factors_long.weight", 0, &[half], factors(&mut rng));
        g.tensor("rope_factors_short.weight", 0, &[half], factors(&mut rng));
    }
    let (q, kv) = (s.head_dim * N_HEAD, s.head_dim * N_HEAD_KV);
    if let Some((n, used, ff)) = s.experts {
        g.set(&k("expert_count"), Value::U32(n as u32))
            .set(&k("expert_used_count"), Value::U32(used as u32))
            .set(&k("expert_feed_forward_length"), Value::U32(ff as u32));
    }
    for il in 0..s.n_layer {
        let b = |x: &str| blk(il, x);
        g.tensor(&b("attn_norm.weight"), 0, &[N_EMBD], norm(&mut rng, N_EMBD as usize));
        if s.fused_qkv {
            mat(&mut g, &b("attn_qkv.weight"), N_EMBD, q + 2 * kv, &mut rng);
        } else {
            mat(&mut g, &b("attn_q.weight"), N_EMBD, q, &mut rng);
            mat(&mut g, &b("attn_k.weight"), N_EMBD, kv, &mut rng);
            mat(&mut g, &b("attn_v.weight"), N_EMBD, kv, &mut rng);
        }
        if s.qkv_bias {
            for (name, n) in [("attn_q.bias", q), ("attn_k.bias", kv), ("attn_v.bias", kv)] {
                g.tensor(&b(name), 0, &[n], f32_bytes(&rand(&mut rng, n as usize, 0.5)));
            }
        }
        if s.qk_norm {
            g.tensor(&b("attn_q_norm.weight"), 0, &[s.head_dim], norm(&mut rng, s.head_dim as usize));
            g.tensor(&b("attn_k_norm.weight"), 0, &[s.head_dim], norm(&mut rng, s.head_dim as usize));
        }
        mat(&mut g, &b("attn_output.weight"), q, N_EMBD, &mut rng);
        g.tensor(&b("ffn_norm.weight"), 0, &[N_EMBD], norm(&mut rng, N_EMBD as usize));
        if s.post_norms {
            g.tensor(&b("post_attention_norm.weight"), 0, &[N_EMBD], norm(&mut rng, N_EMBD as usize));
            g.tensor(&b("post_ffw_norm.weight"), 0, &[N_EMBD], norm(&mut rng, N_EMBD as usize));
        }
        if let Some((n, _, ff)) = s.experts {
            mat(&mut g, &b("ffn_gate_inp.weight"), N_EMBD, n, &mut rng);
            for (name, ne0, ne1) in
                [("ffn_gate_exps", N_EMBD, ff), ("ffn_up_exps", N_EMBD, ff), ("ffn_down_exps", ff, N_EMBD)]
            {
                let w = rand(&mut rng, (ne0 * ne1 * n) as usize, 2.0 / (ne0 as f32).sqrt());
                g.tensor(&b(&format!("{name}.weight")), 0, &[ne0, ne1, n], f32_bytes(&w));
            }
            continue;
        }
        if s.fused_ffn {
            mat(&mut g, &b("ffn_up.weight"), N_EMBD, 2 * N_FF, &mut rng);
        } else {
            mat(&mut g, &b("ffn_gate.weight"), N_EMBD, N_FF, &mut rng);
            mat(&mut g, &b("ffn_up.weight"), N_EMBD, N_FF, &mut rng);
        }
        mat(&mut g, &b("ffn_down.weight"), N_FF, N_EMBD, &mut rng);
    }
    g
}

#[test]
fn qwen2_matches_llama_cpp() {
    let s = Shape { n_layer: 2, head_dim: 32, qkv_bias: true, output_bias: true, ..Shape::default() };
    for line in check("qwen2", model("qwen2", s, 0x0202), true) {
        eprintln!("{line}");
    }
}

#[test]
fn qwen3_matches_llama_cpp() {
    // Head size 48 while n_embd / n_head is 32: q and k are wider than the stream.
    let s = Shape { n_layer: 2, head_dim: 48, qk_norm: true, ..Shape::default() };
    for line in check("qwen3", model("qwen3", s, 0x0303), true) {
        eprintln!("{line}");
    }
}

#[test]
fn phi3_matches_llama_cpp() {
    let s =
        Shape { n_layer: 2, head_dim: 32, fused_qkv: true, fused_ffn: true, phi3_factors: true, ..Shape::default() };
    let mut g = model("phi3", s, 0x0303);
    // A trained context of 128 below the cache's 256: the long factors apply.
    g.set("phi3.rope.scaling.original_context_length", Value::U32(128));
    for line in check("phi3", g.clone(), true) {
        eprintln!("{line}");
    }
    // With RoPE's attention factor: llama.cpp's K-shift applies the factor
    // to cached keys a second time, decache's rotates only, so a shift is
    // compared with nothing here; the rest matches.
    g.set("phi3.rope.scaling.attn_factor", Value::F32(1.19));
    for line in check("phi3 attn_factor", g, false) {
        eprintln!("{line}");
    }
}

#[test]
fn llama3_rope_scaling_matches_llama_cpp() {
    let s = Shape { n_layer: 2, head_dim: 32, rope_freqs: true, ..Shape::default() };
    let mut g = model("llama", s, 0x0313);
    g.set("llama.rope.freq_base", Value::F32(500000.0));
    for line in check("llama3", g, true) {
        eprintln!("{line}");
    }
}

#[test]
fn gemma3_sliding_window_matches_llama_cpp() {
    // Three layers, pattern 3: layers 0 and 1 see the last 8 positions, layer 2 all.
    let s = Shape { n_layer: 3, head_dim: 32, qk_norm: true, post_norms: true, ..Shape::default() };
    let mut g = model("gemma3", s, 0x0303);
    g.set("gemma3.attention.sliding_window", Value::U32(8))
        .set("gemma3.attention.sliding_window_pattern", Value::U32(3))
        .set("gemma3.rope.freq_base", Value::F32(1_000_000.0))
        .set("gemma3.final_logit_softcapping", Value::F32(30.0));
    for line in check("gemma3", g, true) {
        eprintln!("{line}");
    }
}

#[test]
fn qwen3moe_experts_match_llama_cpp() {
    // 8 experts of width 64, 2 per token: the router's choice differs per
    // token, so every expert's matmul is exercised across the prompt.
    let s = Shape { n_layer: 2, head_dim: 32, qk_norm: true, experts: Some((8, 2, 64)), ..Shape::default() };
    for line in check("qwen3moe", model("qwen3moe", s, 0x3003), true) {
        eprintln!("{line}");
    }
}

#[test]
fn mixtral_style_llama_experts_match_llama_cpp() {
    // llama with `expert_count`: each expert as wide as feed_forward_length.
    let s = Shape { n_layer: 2, head_dim: 32, experts: Some((4, 2, N_FF)), ..Shape::default() };
    let mut g = model("llama", s, 0x3004);
    g.remove("llama.expert_feed_forward_length");
    for line in check("llama experts", g, true) {
        eprintln!("{line}");
    }
}

#[test]
fn mistral3_yarn_and_attention_temperature_match_llama_cpp() {
    // YaRN: 4 times an original context of 16, beta 32/1; q scaled by
    // 1 + 0.2 ln(floor(p / 16) + 1), so positions 16 and on differ.
    let s = Shape { n_layer: 2, head_dim: 32, ..Shape::default() };
    let mut g = model("mistral3", s, 0x3303);
    g.set("mistral3.rope.scaling.type", Value::str("yarn"))
        .set("mistral3.rope.scaling.factor", Value::F32(4.0))
        .set("mistral3.rope.scaling.original_context_length", Value::U32(16))
        .set("mistral3.attention.temperature_scale", Value::F32(0.2));
    // llama.cpp's K-shift multiplies cached keys by YaRN's magnitude
    // correction again (as with Phi-3's attention factor): the shift is
    // checked against a recompute below instead.
    for line in check("mistral3 yarn", g.clone(), false) {
        eprintln!("{line}");
    }
    let mut one = model("mistral3", Shape { n_layer: 1, ..s }, 0x3303);
    for (k, v) in [("factor", 4.0), ("original_context_length", 16.0)] {
        let key = format!("mistral3.rope.scaling.{k}");
        one.set(&key, if k == "factor" { Value::F32(v) } else { Value::U32(v as u32) });
    }
    one.set("mistral3.rope.scaling.type", Value::str("yarn"));
    eprintln!("{}", shift_against_recompute("mistral3 yarn", &one));
    // With a YaRN log multiplier (the attention factor is a ratio then).
    g.set("mistral3.rope.scaling.yarn_log_multiplier", Value::F32(0.5));
    for line in check("mistral3 yarn log_mul", g, false) {
        eprintln!("{line}");
    }
    // Without YaRN, with experts: the shift compares with llama.cpp too.
    let s = Shape { n_layer: 2, head_dim: 32, experts: Some((4, 2, N_FF)), ..Shape::default() };
    let mut g = model("mistral3", s, 0x3304);
    g.remove("mistral3.expert_feed_forward_length");
    g.set("mistral3.rope.scaling.original_context_length", Value::U32(16))
        .set("mistral3.attention.temperature_scale", Value::F32(0.2));
    for line in check("mistral3 experts", g, true) {
        eprintln!("{line}");
    }
}

const MXFP4: u32 = 39;

/// Random MXFP4 data (blocks of 32 values: an E8M0 scale byte, 2^-7 here,
/// and 16 bytes of 4-bit E2M1 values).
fn mxfp4(n: u64, rng: &mut Rng) -> Vec<u8> {
    assert_eq!(n % 32, 0);
    let mut out = Vec::with_capacity((n / 32 * 17) as usize);
    for _ in 0..n / 32 {
        out.push(121);
        out.extend((0..16).map(|_| rng.below(256) as u8));
    }
    out
}

/// A gpt-oss file: attention with biases and sinks, every even layer in a
/// window of 8, a post-attention norm, experts with biases (f32 or MXFP4).
fn gpt_oss(n_layer: u64, experts_mxfp4: bool, seed: u64) -> Gguf {
    let (hd, n_exp, used, ff) = (32u64, 4u64, 2u64, 64u64);
    let n_vocab = tiny_vocab().0.len() as u64;
    let mut g = Gguf::new();
    arch_header(&mut g, "gpt-oss", n_layer, N_EMBD, ff, N_HEAD, N_HEAD_KV);
    g.set("gpt-oss.attention.key_length", Value::U32(hd as u32))
        .set("gpt-oss.attention.value_length", Value::U32(hd as u32))
        .set("gpt-oss.attention.sliding_window", Value::U32(8))
        .set("gpt-oss.expert_count", Value::U32(n_exp as u32))
        .set("gpt-oss.expert_used_count", Value::U32(used as u32))
        .set("gpt-oss.expert_feed_forward_length", Value::U32(ff as u32));
    let mut rng = Rng::new(seed);
    let vec = |n: u64, scale: f32, rng: &mut Rng| f32_bytes(&rand(rng, n as usize, scale));
    g.tensor("token_embd.weight", 0, &[N_EMBD, n_vocab], vec(N_EMBD * n_vocab, 1.0, &mut rng));
    g.tensor("output_norm.weight", 0, &[N_EMBD], norm(&mut rng, N_EMBD as usize));
    g.tensor("output.weight", 0, &[N_EMBD, n_vocab], vec(N_EMBD * n_vocab, 0.2, &mut rng));
    let (q, kv) = (hd * N_HEAD, hd * N_HEAD_KV);
    for il in 0..n_layer {
        let b = |x: &str| blk(il, x);
        g.tensor(&b("attn_norm.weight"), 0, &[N_EMBD], norm(&mut rng, N_EMBD as usize));
        for (name, n) in [("attn_q", q), ("attn_k", kv), ("attn_v", kv)] {
            g.tensor(&b(&format!("{name}.weight")), 0, &[N_EMBD, n], vec(N_EMBD * n, 0.18, &mut rng));
            g.tensor(&b(&format!("{name}.bias")), 0, &[n], vec(n, 0.5, &mut rng));
        }
        g.tensor(&b("attn_output.weight"), 0, &[q, N_EMBD], vec(q * N_EMBD, 0.18, &mut rng));
        g.tensor(&b("attn_output.bias"), 0, &[N_EMBD], vec(N_EMBD, 0.5, &mut rng));
        g.tensor(&b("attn_sinks.weight"), 0, &[N_HEAD], vec(N_HEAD, 2.0, &mut rng));
        g.tensor(&b("post_attention_norm.weight"), 0, &[N_EMBD], norm(&mut rng, N_EMBD as usize));
        g.tensor(&b("ffn_gate_inp.weight"), 0, &[N_EMBD, n_exp], vec(N_EMBD * n_exp, 0.18, &mut rng));
        g.tensor(&b("ffn_gate_inp.bias"), 0, &[n_exp], vec(n_exp, 0.5, &mut rng));
        for (name, ne0, ne1) in
            [("ffn_gate_exps", N_EMBD, ff), ("ffn_up_exps", N_EMBD, ff), ("ffn_down_exps", ff, N_EMBD)]
        {
            let n = ne0 * ne1 * n_exp;
            let (t, data) = if experts_mxfp4 { (MXFP4, mxfp4(n, &mut rng)) } else { (0, vec(n, 0.18, &mut rng)) };
            g.tensor(&b(&format!("{name}.weight")), t, &[ne0, ne1, n_exp], data);
            g.tensor(&b(&format!("{name}.bias")), 0, &[ne1, n_exp], vec(ne1 * n_exp, 0.5, &mut rng));
        }
    }
    g
}

#[test]
fn gpt_oss_sinks_windows_and_experts_match_llama_cpp() {
    for line in check("gpt-oss", gpt_oss(3, false, 0x6055), true) {
        eprintln!("{line}");
    }
    for line in check("gpt-oss mxfp4", gpt_oss(2, true, 0x6056), true) {
        eprintln!("{line}");
    }
    // The released files' YaRN (factor 32 over 4096 positions, here 4 over 16).
    let mut g = gpt_oss(2, true, 0x6057);
    g.set("gpt-oss.rope.scaling.type", Value::str("yarn"))
        .set("gpt-oss.rope.scaling.factor", Value::F32(4.0))
        .set("gpt-oss.rope.scaling.original_context_length", Value::U32(16));
    for line in check("gpt-oss yarn", g, false) {
        eprintln!("{line}");
    }
}

/// `decache info` names the experts and the window pattern.
#[test]
fn info_names_experts_and_window_layers() {
    let dir = tempfile::tempdir().unwrap();
    let info = |name: &str, g: Gguf| {
        let path = dir.path().join(name);
        g.write(&path);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_decache")).arg("info").arg(&path).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let s = Shape { n_layer: 2, head_dim: 32, qk_norm: true, experts: Some((8, 2, 64)), ..Shape::default() };
    let out = info("moe.gguf", model("qwen3moe", s, 1));
    assert!(out.contains("architecture:    qwen3moe"), "{out}");
    assert!(out.contains("experts:         2 of 8 per token, each 64 wide"), "{out}");
    let s = Shape { n_layer: 3, head_dim: 32, qk_norm: true, post_norms: true, ..Shape::default() };
    let mut g = model("gemma3", s, 1);
    g.set("gemma3.attention.sliding_window", Value::U32(8))
        .set("gemma3.attention.sliding_window_pattern", Value::U32(3));
    let out = info("swa.gguf", g);
    assert!(out.contains("sliding window:  8 tokens on 2 of 3 layers (SSG)"), "{out}");
}

/// Files that break the experts' rules are refused with the key named.
#[test]
fn bad_expert_counts_are_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    let s = Shape { n_layer: 1, head_dim: 32, qk_norm: true, experts: Some((8, 2, 64)), ..Shape::default() };
    let cases: [(&str, u32, &str); 3] = [
        ("qwen3moe.expert_used_count", 9, "expert_used_count"),
        ("qwen3moe.expert_used_count", 0, "expert_used_count"),
        ("qwen3moe.expert_count", 0, "expert_count"),
    ];
    for (key, v, named) in cases {
        let mut g = model("qwen3moe", s, 2);
        g.set(key, Value::U32(v));
        g.write(&path);
        let e = Model::load(&path, &LoadOptions::default()).err().expect("refused").to_string();
        assert!(e.contains(named), "{key}={v}: {e}");
    }
    // A dense architecture given experts says so.
    let mut g = model("qwen3", Shape { n_layer: 1, head_dim: 32, qk_norm: true, ..Shape::default() }, 2);
    g.set("qwen3.expert_count", Value::U32(4));
    g.write(&path);
    let e = Model::load(&path, &LoadOptions::default()).err().expect("refused").to_string();
    assert!(e.contains("expert_count") && e.contains("has none"), "{e}");
}

#[test]
fn unknown_architectures_are_named_with_the_supported_list() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mamba.gguf");
    let mut g = model("llama", Shape { n_layer: 1, head_dim: 32, ..Shape::default() }, 1);
    g.set("general.architecture", Value::str("mamba"));
    g.write(&path);
    let e = Model::load(&path, &LoadOptions::default()).err().expect("refused").to_string();
    assert!(e.contains("unsupported architecture 'mamba'") && e.contains("qwen3") && e.contains("gemma3"), "{e}");
}

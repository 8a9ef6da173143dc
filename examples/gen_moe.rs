//! Writes a random-weight `qwen3moe` GGUF file at the layer shapes of
//! Qwen3-30B-A3B (hidden size 2048, 32 query and 4 key/value heads of 128,
//! 128 experts of width 768, 8 per token), with only a few layers and the
//! tests' 300-token vocabulary, every matrix in Q4_K: the kernels decache
//! and llama.cpp run on it are those of the real model, in a file small
//! enough to generate here (`make bench-moe`).
//!
//! cargo run --release --example gen_moe -- OUT.gguf [LAYERS]
#[path = "../tests/common/gguf_writer.rs"]
mod gguf_writer;
use gguf_writer::{arch_header, blk, f32_bytes, q4_k, tiny_vocab, Gguf, Rng, Value};

const Q4_K: u32 = 12;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).expect("usage: gen_moe OUT.gguf [LAYERS]");
    let n_layer: u64 = args.get(2).map_or(4, |s| s.parse().expect("LAYERS is a number"));
    let (n_embd, n_head, n_head_kv, head_dim) = (2048u64, 32u64, 4u64, 128u64);
    let (n_expert, n_used, n_ff_exp) = (128u64, 8u64, 768u64);
    let n_vocab = tiny_vocab().0.len() as u64;
    let mut g = Gguf::new();
    arch_header(&mut g, "qwen3moe", n_layer, n_embd, 6144, n_head, n_head_kv);
    g.set("general.name", Value::str("random qwen3moe, Qwen3-30B-A3B layer shapes"))
        .set("general.file_type", Value::U32(15))
        .set("qwen3moe.context_length", Value::U32(40960))
        .set("qwen3moe.rope.freq_base", Value::F32(1_000_000.0))
        .set("qwen3moe.attention.layer_norm_rms_epsilon", Value::F32(1e-6))
        .set("qwen3moe.attention.key_length", Value::U32(head_dim as u32))
        .set("qwen3moe.attention.value_length", Value::U32(head_dim as u32))
        .set("qwen3moe.expert_count", Value::U32(n_expert as u32))
        .set("qwen3moe.expert_used_count", Value::U32(n_used as u32))
        .set("qwen3moe.expert_feed_forward_length", Value::U32(n_ff_exp as u32));
    let mut rng = Rng::new(0x30b);
    let ones = |n: u64| f32_bytes(&vec![1.0; n as usize]);
    let mut rng_router = Rng::new(0x7007);
    let mut mat = |g: &mut Gguf, name: &str, dims: &[u64]| {
        let n: u64 = dims.iter().product();
        g.tensor(name, Q4_K, dims, q4_k(n, &mut rng));
    };
    mat(&mut g, "token_embd.weight", &[n_embd, n_vocab]);
    g.tensor("output_norm.weight", 0, &[n_embd], ones(n_embd));
    let (q, kv) = (n_head * head_dim, n_head_kv * head_dim);
    for il in 0..n_layer {
        let b = |s: &str| blk(il, s);
        g.tensor(&b("attn_norm.weight"), 0, &[n_embd], ones(n_embd));
        mat(&mut g, &b("attn_q.weight"), &[n_embd, q]);
        mat(&mut g, &b("attn_k.weight"), &[n_embd, kv]);
        mat(&mut g, &b("attn_v.weight"), &[n_embd, kv]);
        g.tensor(&b("attn_q_norm.weight"), 0, &[head_dim], ones(head_dim));
        g.tensor(&b("attn_k_norm.weight"), 0, &[head_dim], ones(head_dim));
        mat(&mut g, &b("attn_output.weight"), &[q, n_embd]);
        g.tensor(&b("ffn_norm.weight"), 0, &[n_embd], ones(n_embd));
        let router: Vec<f32> = (0..n_embd * n_expert).map(|_| rng_router.f32_sym() * 0.05).collect();
        g.tensor(&b("ffn_gate_inp.weight"), 0, &[n_embd, n_expert], f32_bytes(&router));
        mat(&mut g, &b("ffn_gate_exps.weight"), &[n_embd, n_ff_exp, n_expert]);
        mat(&mut g, &b("ffn_up_exps.weight"), &[n_embd, n_ff_exp, n_expert]);
        mat(&mut g, &b("ffn_down_exps.weight"), &[n_ff_exp, n_embd, n_expert]);
    }
    g.write(std::path::Path::new(out));
    eprintln!("wrote {out}: qwen3moe, {n_layer} layers at Qwen3-30B-A3B shapes, Q4_K");
}

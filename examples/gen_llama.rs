//! Writes a random-weight `llama` GGUF file at the layer shapes of
//! SmolLM2-135M (30 layers, hidden size 576, 9 query and 3 key/value heads
//! of 64, FFN 1536, RoPE base 100000, context 8192, output tied to the
//! token embeddings), with the tests' 300-token vocabulary, every matrix
//! (token embeddings too) in Q4_1 and the norms in f32, as in the Q4_1 file
//! the tests use: the kernels decache and llama.cpp run on it are those of
//! the real model, in a file small enough to generate where the real one
//! cannot travel (a GPU machine reached with a size limit). LAYERS (default
//! 30) takes fewer layers.
//!
//! cargo run --release --example gen_llama -- OUT.gguf [LAYERS]
#[path = "../tests/common/gguf_writer.rs"]
mod gguf_writer;
use gguf_writer::{arch_header, blk, f32_bytes, q4_1, tiny_vocab, tt, Gguf, Rng, Value};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).expect("usage: gen_llama OUT.gguf [LAYERS]");
    let n_layer: u64 = args.get(2).map_or(30, |s| s.parse().expect("LAYERS is a number"));
    let (n_embd, n_ff, n_head, n_head_kv) = (576u64, 1536u64, 9u64, 3u64);
    let head_dim = n_embd / n_head;
    let n_vocab = tiny_vocab().0.len() as u64;
    let mut g = Gguf::new();
    arch_header(&mut g, "llama", n_layer, n_embd, n_ff, n_head, n_head_kv);
    g.set("general.name", Value::str("random llama, SmolLM2-135M layer shapes"))
        .set("general.file_type", Value::U32(3)) // MOSTLY_Q4_1
        .set("llama.context_length", Value::U32(8192))
        .set("llama.rope.freq_base", Value::F32(100_000.0))
        .set("llama.rope.dimension_count", Value::U32(head_dim as u32))
        .set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .set("tokenizer.ggml.bos_token_id", Value::U32(0))
        .set("tokenizer.ggml.eos_token_id", Value::U32(2));
    let mut rng = Rng::new(0x135);
    let ones = |n: u64| f32_bytes(&vec![1.0; n as usize]);
    let mut mat = |g: &mut Gguf, name: &str, dims: &[u64]| {
        let n: u64 = dims.iter().product();
        g.tensor(name, tt::Q4_1, dims, q4_1(n, &mut rng));
    };
    // No output.weight: the output layer reads token_embd (tied, as SmolLM2).
    mat(&mut g, "token_embd.weight", &[n_embd, n_vocab]);
    g.tensor("output_norm.weight", tt::F32, &[n_embd], ones(n_embd));
    let (q, kv) = (n_head * head_dim, n_head_kv * head_dim);
    for il in 0..n_layer {
        let b = |s: &str| blk(il, s);
        g.tensor(&b("attn_norm.weight"), tt::F32, &[n_embd], ones(n_embd));
        mat(&mut g, &b("attn_q.weight"), &[n_embd, q]);
        mat(&mut g, &b("attn_k.weight"), &[n_embd, kv]);
        mat(&mut g, &b("attn_v.weight"), &[n_embd, kv]);
        mat(&mut g, &b("attn_output.weight"), &[q, n_embd]);
        g.tensor(&b("ffn_norm.weight"), tt::F32, &[n_embd], ones(n_embd));
        mat(&mut g, &b("ffn_gate.weight"), &[n_embd, n_ff]);
        mat(&mut g, &b("ffn_up.weight"), &[n_embd, n_ff]);
        mat(&mut g, &b("ffn_down.weight"), &[n_ff, n_embd]);
    }
    g.write(std::path::Path::new(out));
    eprintln!("wrote {out}: llama, {n_layer} layers at SmolLM2-135M shapes, Q4_1");
}

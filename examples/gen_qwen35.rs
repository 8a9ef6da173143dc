//! Writes a random-weight `qwen35` GGUF file at the layer shapes of
//! Qwen3.5-2B (hidden size 2048; gated full attention with 8 query and 2
//! key/value heads of 256, 64 of them rotary in sections [11, 11, 10, 0];
//! gated delta net layers with 16 key and 16 value heads of 128, conv 4;
//! FFN 6144; every 4th layer full attention), with only a few layers and
//! the tests' 300-token vocabulary, every matrix in Q4_K (norms, the
//! `ssm_*` vectors and `ssm_conv1d` in f32): the kernels decache and
//! llama.cpp run on it are those of the real model, in a small file.
//!
//! cargo run --release --example gen_qwen35 -- OUT.gguf [LAYERS]
#[path = "../tests/common/gguf_writer.rs"]
mod gguf_writer;
#[path = "../tests/common/qwen35_file.rs"]
mod qwen35_file;
use gguf_writer::Value;
use qwen35_file::{qwen35_with, Qwen35Shape, Weights};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).expect("usage: gen_qwen35 OUT.gguf [LAYERS]");
    let n_layer: u64 = args.get(2).map_or(4, |s| s.parse().expect("LAYERS is a number"));
    let s = Qwen35Shape {
        n_layer,
        n_embd: 2048,
        n_head: 8,
        n_head_kv: 2,
        head_dim: 256,
        n_ff: 6144,
        full_attention_interval: 4,
        d_conv: 4,
        d_state: 128,
        n_group: 16,
        dt_rank: 16,
        experts: None,
        rope_sections: [11, 11, 10, 0],
    };
    let mut g = qwen35_with(&s, 0x35_2b, Weights::Q4K);
    g.set("general.name", Value::str("random qwen35, Qwen3.5-2B layer shapes"))
        .set("qwen35.context_length", Value::U32(262_144))
        .set("qwen35.rope.freq_base", Value::F32(10_000_000.0));
    g.write(std::path::Path::new(out));
    let n_attn = (0..n_layer).filter(|&il| !s.is_recurrent(il)).count();
    eprintln!(
        "wrote {out}: qwen35, {n_layer} layers ({} delta net, {n_attn} attention) at Qwen3.5-2B shapes, Q4_K",
        n_layer as usize - n_attn
    );
}

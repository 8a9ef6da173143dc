//! Every type ggml can quantize to loads and runs, at llama.cpp parity: a
//! small random-weight llama (n_embd 256 so K-quants fit) is written with its
//! matmul weights in each type, then our logits at every position are compared
//! with llama.cpp's on the same file (same ggml kernels underneath).
#[path = "common/gguf_writer.rs"]
mod gguf_writer;
use decache::ggml::oracle::{OracleContext, OracleModel, OracleParams};
use decache::ggml::GgmlType;
use decache::model::{LoadOptions, Model};
use decache::session::{Session, SessionConfig};
use gguf_writer::{f32_bytes, tiny_vocab, Gguf, Rng};
use std::sync::Arc;

const N_EMBD: usize = 256;
const N_FF: usize = 512;
const N_HEAD: usize = 4;
const N_HEAD_KV: usize = 2;
const HEAD_DIM: usize = 64;
const N_LAYER: usize = 2;

fn weights(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.f32_sym() * scale).collect()
}

/// A llama whose matmul weights are of type `t` (rows of `ne0` values).
fn model_with(t: GgmlType) -> (Vec<u8>, usize) {
    let n_vocab = tiny_vocab().0.len();
    let mut g = Gguf::new();
    gguf_writer::llama_header(&mut g, N_LAYER as u64, N_EMBD as u64, N_FF as u64, N_HEAD as u64, N_HEAD_KV as u64);
    let mut rng = Rng::new(0x9a17 + t.id() as u64);
    let mat = |g: &mut Gguf, name: &str, ne0: usize, ne1: usize, rng: &mut Rng| {
        let w = weights(rng, ne0 * ne1, 1.0 / (ne0 as f32).sqrt() * 2.0);
        let data = if t == GgmlType::F32 {
            f32_bytes(&w)
        } else {
            t.quantize(&w, ne0).unwrap_or_else(|e| panic!("{name} as {t}: {e}"))
        };
        g.tensor(name, t.id(), &[ne0 as u64, ne1 as u64], data);
    };
    let ones = f32_bytes(&vec![1.0; N_EMBD]);
    let embd = weights(&mut rng, N_EMBD * n_vocab, 1.0);
    g.tensor("token_embd.weight", 0, &[N_EMBD as u64, n_vocab as u64], f32_bytes(&embd));
    g.tensor("output_norm.weight", 0, &[N_EMBD as u64], ones.clone());
    mat(&mut g, "output.weight", N_EMBD, n_vocab, &mut rng);
    let (q, kv) = (HEAD_DIM * N_HEAD, HEAD_DIM * N_HEAD_KV);
    for il in 0..N_LAYER {
        let b = |s: &str| format!("blk.{il}.{s}");
        g.tensor(&b("attn_norm.weight"), 0, &[N_EMBD as u64], ones.clone());
        g.tensor(&b("ffn_norm.weight"), 0, &[N_EMBD as u64], ones.clone());
        mat(&mut g, &b("attn_q.weight"), N_EMBD, q, &mut rng);
        mat(&mut g, &b("attn_k.weight"), N_EMBD, kv, &mut rng);
        mat(&mut g, &b("attn_v.weight"), N_EMBD, kv, &mut rng);
        mat(&mut g, &b("attn_output.weight"), q, N_EMBD, &mut rng);
        mat(&mut g, &b("ffn_gate.weight"), N_EMBD, N_FF, &mut rng);
        mat(&mut g, &b("ffn_up.weight"), N_EMBD, N_FF, &mut rng);
        mat(&mut g, &b("ffn_down.weight"), N_FF, N_EMBD, &mut rng);
    }
    (g.build().0, n_vocab)
}

#[test]
fn every_quantizable_type_matches_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let types: Vec<GgmlType> =
        (0..64).filter_map(GgmlType::from_id).filter(|t| t.can_quantize() || *t == GgmlType::F32).collect();
    assert!(types.len() >= 25, "expected ggml to quantize at least 25 types, found {}", types.len());
    let toks: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 300).collect();
    let mut report = Vec::new();
    for t in types {
        let (bytes, n_vocab) = model_with(t);
        let path = dir.path().join(format!("tiny-{t}.gguf"));
        std::fs::write(&path, bytes).unwrap();
        let model = Arc::new(Model::load(&path, &LoadOptions::default()).unwrap_or_else(|e| panic!("{t}: {e}")));
        let cfg = SessionConfig { n_ctx: 256, n_threads: 2, ..SessionConfig::default() };
        let ours = Session::new(model, cfg).unwrap().eval(&toks, true).unwrap();
        let oracle = OracleModel::load(&path).unwrap_or_else(|e| panic!("{t}: {e}"));
        let mut oc =
            OracleContext::new(&oracle, &OracleParams { n_ctx: 256, n_threads: 2, ..OracleParams::default() }).unwrap();
        let ids: Vec<i32> = toks.iter().map(|&x| x as i32).collect();
        let pos: Vec<i32> = (0..ids.len() as i32).collect();
        let theirs = oc.decode(&ids, &pos, true).unwrap();
        let mut worst = 0f32;
        for (i, row) in theirs.iter().enumerate() {
            let mine = &ours[i * n_vocab..(i + 1) * n_vocab];
            let am = |v: &[f32]| v.iter().enumerate().fold(0, |b, (j, &x)| if x > v[b] { j } else { b });
            assert_eq!(am(mine), am(row), "{t}: top-1 differs at position {i}");
            worst = worst.max(mine.iter().zip(row).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max));
        }
        assert!(worst < 1e-3, "{t}: max |Δlogit| {worst}");
        report.push(format!("{t} {worst:.1e}"));
    }
    eprintln!("quant types at parity (max |Δlogit|): {}", report.join(", "));
}

//! `decache perplexity -f FILE -c 512` prints llama.cpp's final line, and its
//! value is within 0.5% of the perplexity computed from llama.cpp's own logits
//! (same ggml build and file) with llama.cpp's chunked scoring.
mod common;
use decache::ggml::oracle::{OracleContext, OracleModel, OracleParams};
use decache::session::perplexity::perplexity;
use std::process::Command;

const CHUNKS: usize = 4;
const N_CTX: usize = 512;

/// `decache perplexity` on `path` against llama.cpp's logits, scored the
/// same way (`bos`: the id the model starts chunks with, if any).
fn check(path: &std::path::Path, chunks: usize, bos: Option<u32>) {
    let text_file = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/perplexity.txt");

    let out = Command::new(env!("CARGO_BIN_EXE_decache"))
        .args(["perplexity", "-m"])
        .arg(path)
        .args(["-f", text_file, "-c", &N_CTX.to_string(), "-t", "2", "--chunks", &chunks.to_string()])
        .output()
        .expect("run decache perplexity");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "decache perplexity failed: {}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("Final estimate: PPL = ")).expect("final estimate line");
    let rest = line.trim_start_matches("Final estimate: PPL = ");
    let (ppl, err) = rest.split_once(" +/- ").expect("'x +/- y'");
    let ours: f64 = ppl.parse().unwrap();
    let _err: f64 = err.parse().unwrap();

    // llama.cpp: its tokenizer, its logits, the same scoring.
    let oracle = OracleModel::load(path).unwrap();
    let text = std::fs::read_to_string(text_file).unwrap();
    let ids: Vec<u32> = oracle.tokenize(&text, true, false).iter().map(|&t| t as u32).collect();
    assert!(ids.len() >= chunks * N_CTX, "the corpus is too short: {} tokens", ids.len());
    let ids = &ids[..chunks * N_CTX];
    let params = OracleParams { n_ctx: N_CTX as u32, n_batch: N_CTX as u32, n_threads: 2, ..OracleParams::default() };
    let mut ctx = OracleContext::new(&oracle, &params).unwrap();
    let n_vocab = oracle.n_vocab();
    let reference = perplexity(
        ids,
        N_CTX,
        n_vocab,
        bos,
        &mut |chunk| {
            ctx.clear();
            let toks: Vec<i32> = chunk.iter().map(|&t| t as i32).collect();
            let pos: Vec<i32> = (0..toks.len() as i32).collect();
            Ok(ctx.decode(&toks, &pos, true).unwrap().concat())
        },
        &mut |_, _, _| {},
    )
    .unwrap();
    let rel = (ours - reference.ppl).abs() / reference.ppl;
    eprintln!(
        "{}: perplexity: decache {ours:.4}, llama.cpp {:.4} +/- {:.5}, relative difference {:.4}%",
        path.display(),
        reference.ppl,
        reference.err,
        rel * 100.0
    );
    assert!(rel < 0.005, "perplexity {ours} differs from llama.cpp's {} by {:.3}%", reference.ppl, rel * 100.0);
}

#[test]
fn perplexity_matches_llama_cpp_within_half_a_percent() {
    check(&common::smollm2(), CHUNKS, None); // SmolLM2 adds no BOS
}

#[test]
fn gemma3_perplexity_matches_llama_cpp_within_half_a_percent() {
    // Gemma starts every chunk with <bos> (id 2); two chunks of its 262k-wide logits.
    check(&common::gemma3(), 2, Some(2));
}

//! Oracle parity of the forward pass on the real models (SmolLM2, and
//! gemma-3-270m with its sliding-window layers): next-token logits at every
//! position and greedy generations must match llama.cpp's (same ggml build,
//! same file, same threads and batch sizes).
mod common;
use common::*;
use decache::ggml::oracle::{OracleContext, OracleModel, OracleParams};
use decache::model::{LoadOptions, Model};
use decache::session::{Session, SessionConfig};
use std::sync::Arc;

const THREADS: usize = 2;

fn session(model: &Arc<Model>, n_ctx: usize) -> Session {
    let cfg = SessionConfig { n_ctx, n_threads: THREADS, ..SessionConfig::default() };
    Session::new(model.clone(), cfg).expect("session")
}

fn oracle_ctx(m: &OracleModel, n_ctx: u32) -> OracleContext<'_> {
    let p = OracleParams { n_ctx, n_threads: THREADS as i32, ..OracleParams::default() };
    OracleContext::new(m, &p).expect("oracle context")
}

/// Logits at every position of every prompt (the oracle's token ids, BOS
/// added when `bos`); returns the largest |Δlogit|.
fn logits_parity(path: &std::path::Path, bos: bool) -> f32 {
    let model = Arc::new(Model::load(path, &LoadOptions::default()).unwrap());
    let oracle = OracleModel::load(path).unwrap();
    let n_vocab = model.hparams.n_vocab as usize;
    let mut worst = 0f32;
    let mut positions = 0;
    for prompt in PROMPTS {
        // The oracle's token ids, so this test isolates the forward pass.
        let ids: Vec<i32> = oracle.tokenize(prompt, bos, true);
        let ours_ids: Vec<u32> = ids.iter().map(|&t| t as u32).collect();
        let mut s = session(&model, 1024);
        let ours = s.eval(&ours_ids, true).unwrap();
        let mut oc = oracle_ctx(&oracle, 1024);
        let pos: Vec<i32> = (0..ids.len() as i32).collect();
        let theirs = oc.decode(&ids, &pos, true).unwrap();
        assert_eq!(theirs.len(), ids.len());
        for (i, row) in theirs.iter().enumerate() {
            let mine = &ours[i * n_vocab..(i + 1) * n_vocab];
            assert_eq!(argmax(mine), argmax(row), "top-1 differs at position {i} of {prompt:?}");
            let d = max_abs_diff(mine, row);
            worst = worst.max(d);
            positions += 1;
        }
    }
    eprintln!(
        "{}: logits parity: {} prompts, {positions} positions, max |Δlogit| = {worst:.3e}",
        path.display(),
        PROMPTS.len()
    );
    worst
}

#[test]
fn logits_match_llama_cpp_at_every_position() {
    let worst = logits_parity(&smollm2(), false);
    assert!(worst < 1e-2, "max |Δlogit| {worst} exceeds 1e-2");
}

#[test]
fn gemma3_logits_match_llama_cpp_at_every_position() {
    let worst = logits_parity(&gemma3(), true);
    assert!(worst < 5e-2, "max |Δlogit| {worst} exceeds 5e-2");
}

/// 128 greedy tokens after three prompts, ours and llama.cpp's.
fn greedy_parity(path: &std::path::Path, bos: bool) {
    let model = Arc::new(Model::load(path, &LoadOptions::default()).unwrap());
    let oracle = OracleModel::load(path).unwrap();
    for prompt in [PROMPTS[0], PROMPTS[2], PROMPTS[3]] {
        let ids = oracle.tokenize(prompt, bos, true);
        // Ours: decode one token at a time with greedy choice.
        let mut s = session(&model, 1024);
        let mut logits = s.eval(&ids.iter().map(|&t| t as u32).collect::<Vec<_>>(), false).unwrap();
        let mut ours = Vec::new();
        for _ in 0..128 {
            let t = argmax(&logits) as u32;
            ours.push(t as i32);
            logits = s.eval(&[t], false).unwrap();
        }
        // llama.cpp, the same way.
        let mut oc = oracle_ctx(&oracle, 1024);
        let pos: Vec<i32> = (0..ids.len() as i32).collect();
        let mut l = oc.decode(&ids, &pos, false).unwrap().pop().unwrap();
        let mut theirs = Vec::new();
        for k in 0..128 {
            let t = argmax(&l) as i32;
            theirs.push(t);
            l = oc.decode(&[t], &[(ids.len() + k) as i32], false).unwrap().pop().unwrap();
        }
        assert_eq!(ours, theirs, "greedy continuation of {prompt:?} differs");
    }
}

#[test]
fn greedy_generations_match_llama_cpp() {
    greedy_parity(&smollm2(), false);
}

#[test]
fn gemma3_greedy_generations_match_llama_cpp() {
    greedy_parity(&gemma3(), true);
}

#[test]
fn kv_cache_types_match_llama_cpp() {
    use decache::ggml::GgmlType;
    let path = smollm2();
    let model = Arc::new(Model::load(&path, &LoadOptions::default()).unwrap());
    let oracle = OracleModel::load(&path).unwrap();
    let n_vocab = model.hparams.n_vocab as usize;
    let ids = oracle.tokenize(PROMPTS[2], false, true);
    let toks: Vec<u32> = ids.iter().map(|&t| t as u32).collect();
    for (tk, tv) in [(GgmlType::Q8_0, GgmlType::F16), (GgmlType::F32, GgmlType::F32)] {
        let cfg = SessionConfig { n_ctx: 512, n_threads: THREADS, type_k: tk, type_v: tv, ..SessionConfig::default() };
        let ours = Session::new(model.clone(), cfg).unwrap().eval(&toks, true).unwrap();
        let p =
            OracleParams { n_ctx: 512, n_threads: THREADS as i32, type_k: tk, type_v: tv, ..OracleParams::default() };
        let mut oc = OracleContext::new(&oracle, &p).unwrap();
        let pos: Vec<i32> = (0..ids.len() as i32).collect();
        let theirs = oc.decode(&ids, &pos, true).unwrap();
        let mut worst = 0f32;
        for (i, row) in theirs.iter().enumerate() {
            let mine = &ours[i * n_vocab..(i + 1) * n_vocab];
            assert_eq!(argmax(mine), argmax(row), "-ctk {tk} -ctv {tv}: top-1 differs at {i}");
            worst = worst.max(max_abs_diff(mine, row));
        }
        eprintln!("-ctk {tk} -ctv {tv}: max |Δlogit| = {worst:.3e}");
        assert!(worst < 1e-2, "-ctk {tk} -ctv {tv}: max |Δlogit| {worst}");
    }
    // A quantized V cache needs flash attention: a clear error, not an abort.
    let cfg = SessionConfig { n_ctx: 512, n_threads: THREADS, type_v: GgmlType::Q8_0, ..SessionConfig::default() };
    let err = Session::new(model.clone(), cfg).err().expect("-ctv q8_0 must be refused");
    assert!(err.to_string().contains("-ctv q8_0") && err.to_string().contains("flash attention"), "{err}");
}

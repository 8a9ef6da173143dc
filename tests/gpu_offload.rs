//! Offloading to a GPU backend, against llama.cpp offloaded to the same
//! device. Built only with a GPU feature (`--features vulkan|cuda|metal`):
//! `make check-vulkan` runs it on Mesa's lavapipe (a Vulkan device emulated
//! on the CPU: slow, but ggml-vulkan's real code path), and on a machine
//! with a GPU it runs there. Every layer on the device (`-ngl all`): its
//! weights and KV rows live there, and the scheduler splits each graph
//! between it and the CPU (token embeddings). Checked, top-1 identical and
//! |Δlogit| bounded: prefill, removal with the keep policy, removal with
//! the shift policy (the K-shift graph runs on the device), defrag (the
//! moves too), and decoding token by token (graph reuse).
//!
//! The model is SmolLM2-135M-Instruct (Q4_1, fetched by `make models`), or
//! the GGUF file named by the environment variable `DECACHE_GPU_MODEL` when
//! it is set: e.g. a random-weight file at SmolLM2's shapes written by
//! `examples/gen_llama.rs`, for a GPU machine the real model cannot reach.
//! The prompt is read from this checkout's `prompts/perplexity.txt` (a path
//! fixed at compile time).
#![cfg(any(feature = "vulkan", feature = "cuda", feature = "metal"))]
mod common;
use common::*;
use decache::ggml::oracle::{OracleContext, OracleModel, OracleParams};
use decache::ggml::Device;
use decache::model::{GpuLayers, LoadOptions, Model};
use decache::session::{Gap, Session, SessionConfig};
use std::sync::Arc;

const N_CTX: usize = 512;

/// Top-1 identical on every row and |Δlogit| bounded; returns the largest.
fn compare(what: &str, ours: &[f32], theirs: &[Vec<f32>], n_vocab: usize) -> f32 {
    let worst = top1_and_max_diff(what, ours, &theirs.concat(), n_vocab);
    assert!(worst < 0.1, "{what}: max |Δlogit| {worst}");
    worst
}

#[test]
fn all_layers_on_the_device_match_llama_cpp_there() {
    let gpus = Device::gpus();
    assert!(
        !gpus.is_empty(),
        "built with a GPU backend but ggml sees no device (without a GPU, Vulkan can use Mesa's lavapipe: GGML_VK_VISIBLE_DEVICES=0)"
    );
    eprintln!("devices: {:?}", gpus.iter().map(|d| d.description()).collect::<Vec<_>>());
    let path = std::env::var_os("DECACHE_GPU_MODEL").map_or_else(smollm2, std::path::PathBuf::from);
    eprintln!("model: {}", path.display());
    let model =
        Arc::new(Model::load(&path, &LoadOptions { gpu_layers: GpuLayers::All, ..LoadOptions::default() }).unwrap());
    let n_layer = model.hparams.n_layer as usize;
    assert_eq!(model.offload.n_offloaded(), n_layer + 1, "every layer and the output");
    let oracle = OracleModel::load_on(&path, true, &model.offload.devices, model.offload.n_offloaded() as i32).unwrap();
    let n_vocab = model.hparams.n_vocab as usize;

    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/perplexity.txt")).unwrap();
    let all = oracle.tokenize(&text, true, false);
    let (abc, d, e, f) = (&all[..96], &all[96..104], &all[104..108], &all[108..112]);
    let u = |t: &[i32]| t.iter().map(|&x| x as u32).collect::<Vec<u32>>();

    let mut s =
        Session::new(model.clone(), SessionConfig { n_ctx: N_CTX, n_threads: 2, ..SessionConfig::default() }).unwrap();
    assert!(s.backend_name().starts_with(&model.offload.devices[0].name()), "{}", s.backend_name());
    let p = OracleParams { n_ctx: N_CTX as u32, n_threads: 2, ..OracleParams::default() };
    let mut oc = OracleContext::new(&oracle, &p).unwrap();

    // Prefill.
    let ours = s.eval(&u(abc), true).unwrap();
    let theirs = oc.decode(abc, &(0..96).collect::<Vec<_>>(), true).unwrap();
    compare("prefill 96", &ours, &theirs, n_vocab);
    assert!(s.graph_splits() >= 2, "embeddings on the CPU, layers on the device: {} splits", s.graph_splits());

    // Keep removal of 20..40, then D at 96..104.
    s.remove_range(20, 40, Gap::Keep).unwrap();
    assert!(oc.seq_rm(20, 40));
    let ours = s.eval(&u(d), true).unwrap();
    let theirs = oc.decode(d, &(96..104).collect::<Vec<_>>(), true).unwrap();
    compare("keep removal, then 8 tokens", &ours, &theirs, n_vocab);

    // Shift removal of 50..60: later keys re-rotated on the device.
    s.remove_range(50, 60, Gap::Close).unwrap();
    assert!(oc.seq_rm(50, 60));
    oc.seq_add(60, -1, -10);
    let ours = s.eval(&u(e), true).unwrap();
    let theirs = oc.decode(e, &(94..98).collect::<Vec<_>>(), true).unwrap();
    compare("shift removal, then 4 tokens", &ours, &theirs, n_vocab);

    // Defrag moves rows on the device; llama.cpp's cache keeps its holes
    // (the same cells attend, so the logits must not move).
    assert!(s.defrag().unwrap() > 0);
    let mut worst = 0f32;
    for (i, &t) in f.iter().enumerate() {
        let ours = s.eval(&[t as u32], false).unwrap();
        let theirs = oc.decode(&[t], &[98 + i as i32], false).unwrap();
        worst = worst.max(compare(&format!("after defrag, token {i}"), &ours, &theirs, n_vocab));
    }
    eprintln!("decode after defrag: max |Δlogit| {worst:.3e}");
}

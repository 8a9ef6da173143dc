//! ggml's RPC backend on loopback, with two processes: `decache rpc-server`
//! serves this machine's CPU as a device, and the test (or a second
//! `decache run`) puts layers there with `--rpc`. Its weights and KV rows
//! then live in the server process, and every graph is split by the
//! scheduler between it and the local CPU. Checked against the same model
//! run locally:
//! - all layers remote: logits equal to local ones (same ggml-cpu kernels
//!   on the same weight layout; local without repacking, which the RPC
//!   buffer type does not do) through prefill, removal with both position
//!   policies, defrag, and the K/V bytes read back from the server;
//! - about half the layers remote and the rest local, so that every graph
//!   is split between two backends: the same equality;
//! - `decache run --rpc` prints the same text as `decache run`, and an
//!   unreachable or bad endpoint is a clear error, not an abort.
mod common;
use common::*;
use decache::ggml::rpc::probe;
use decache::model::{GpuLayers, LoadOptions, Model};
use decache::session::{Gap, Session, SessionConfig};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `decache rpc-server` child, stopped when dropped.
struct Server {
    child: Child,
    endpoint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn start_server() -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_decache"))
        .args(["rpc-server", "--port", &port.to_string(), "-t", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start decache rpc-server");
    let mut s = Server { child, endpoint: format!("127.0.0.1:{port}") };
    let t0 = Instant::now();
    while probe(&s.endpoint, Duration::from_secs(2)).is_err() {
        assert!(s.child.try_wait().unwrap().is_none(), "decache rpc-server exited before listening");
        assert!(t0.elapsed() < Duration::from_secs(30), "decache rpc-server did not answer within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

fn session(model: &Arc<Model>) -> Session {
    Session::new(model.clone(), SessionConfig { n_ctx: 1024, n_threads: 2, ..SessionConfig::default() }).unwrap()
}

fn tokens(model: &Model, n: usize) -> Vec<u32> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/perplexity.txt")).unwrap();
    let t = model.tokenizer.encode(&text, true, false).unwrap();
    assert!(t.len() >= n, "corpus too short");
    t[..n].to_vec()
}

/// Run the same steps on both sessions; returns the largest |Δlogit| seen.
fn same_steps(local: &mut Session, remote: &mut Session, toks: &[u32], n_vocab: usize) -> f32 {
    let mut worst = 0f32;
    let mut both = |what: &str, f: &mut dyn FnMut(&mut Session) -> Vec<f32>| {
        let (a, b) = (f(local), f(remote));
        // 0 in every step here: the remote side runs the same kernels on the same bytes.
        worst = worst.max(top1_and_max_diff(what, &a, &b, n_vocab));
    };
    both("prefill 300", &mut |s| s.eval(&toks[..300], true).unwrap());
    both("keep removal of 100..160, then 16 tokens", &mut |s| {
        s.remove_range(100, 160, Gap::Keep).unwrap();
        s.eval(&toks[300..316], true).unwrap()
    });
    both("shift removal of 200..230, then 16 tokens", &mut |s| {
        s.remove_range(200, 230, Gap::Close).unwrap();
        s.eval(&toks[316..332], true).unwrap()
    });
    both("defrag, then 8 tokens", &mut |s| {
        assert!(s.defrag().unwrap() > 0, "cells moved");
        s.eval(&toks[332..340], true).unwrap()
    });
    both("decode 8 tokens one at a time", &mut |s| {
        toks[340..348].iter().flat_map(|&t| s.eval(&[t], false).unwrap()).collect()
    });
    worst
}

#[test]
fn all_layers_over_rpc_match_local() {
    let server = start_server();
    let path = smollm2();
    let local = Arc::new(Model::load(&path, &LoadOptions { extra_buffers: false, ..LoadOptions::default() }).unwrap());
    let opts = LoadOptions {
        extra_buffers: false,
        gpu_layers: GpuLayers::All,
        rpc: vec![server.endpoint.clone()],
        ..LoadOptions::default()
    };
    let remote = Arc::new(Model::load(&path, &opts).unwrap());
    let n_layer = remote.hparams.n_layer as usize;
    assert_eq!(remote.info.offloaded.len(), 1, "one device: {:?}", remote.info.offloaded);
    assert_eq!(remote.info.offloaded[0].1, n_layer + 1, "every layer and the output");
    assert!(remote.info.offloaded[0].0.contains(&server.endpoint));
    assert!(
        remote.info.buffers.iter().any(|(b, _)| b.starts_with("RPC")),
        "weights in RPC buffers: {:?}",
        remote.info.buffers
    );
    let (mut a, mut b) = (session(&local), session(&remote));
    assert!(b.backend_name().starts_with("RPC"), "{}", b.backend_name());
    let toks = tokens(&local, 348);
    let worst = same_steps(&mut a, &mut b, &toks, local.hparams.n_vocab as usize);
    assert_eq!(worst, 0.0, "max |Δlogit|");
    assert_eq!(a.graph_splits(), 1);
    assert!(b.graph_splits() >= 2, "embeddings here, layers there: {} splits", b.graph_splits());
    // The K and V rows held by the server are the local ones, byte for byte.
    let (sa, sb) = (a.snapshot().unwrap(), b.snapshot().unwrap());
    assert_eq!(sa.pos, sb.pos);
    for il in 0..n_layer {
        assert!(sa.k[il] == sb.k[il] && sa.v[il] == sb.v[il], "layer {il}: K/V bytes differ");
    }
}

#[test]
fn layers_split_between_rpc_and_the_local_cpu() {
    let server = start_server();
    let path = smollm2();
    let plain = LoadOptions { extra_buffers: false, ..LoadOptions::default() };
    let local = Arc::new(Model::load(&path, &plain).unwrap());
    let opts = LoadOptions { gpu_layers: GpuLayers::Count(16), rpc: vec![server.endpoint.clone()], ..plain };
    let remote = Arc::new(Model::load(&path, &opts).unwrap());
    assert_eq!(remote.info.offloaded[0].1, 16);
    let n_layer = remote.hparams.n_layer as usize;
    assert!(remote.offload.layer_device(n_layer - 1).is_some() && remote.offload.layer_device(0).is_none());
    let (mut a, mut b) = (session(&local), session(&remote));
    let toks = tokens(&local, 348);
    let worst = same_steps(&mut a, &mut b, &toks, local.hparams.n_vocab as usize);
    assert_eq!(worst, 0.0, "max |Δlogit|");
    assert!(b.graph_splits() >= 2, "{} splits", b.graph_splits());
}

fn decache_run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_decache")).arg("run").args(args).output().unwrap()
}

#[test]
fn cli_run_over_rpc_prints_the_local_text_and_bad_endpoints_are_errors() {
    let server = start_server();
    let common =
        ["-p", "The history of the printing press", "-n", "24", "--temp", "0", "-t", "2", "--no-repack", "-c", "256"];
    // Offloaded layers attend with the device's op (ggml's): the local run
    // that prints the same text attends with ggml's op too.
    let local = decache_run(&[&common[..], &["--ggml-attention"]].concat());
    let mut args = vec!["--rpc", server.endpoint.as_str()];
    args.extend(common);
    let remote = decache_run(&args);
    assert!(local.status.success() && remote.status.success(), "{}", String::from_utf8_lossy(&remote.stderr));
    assert!(!local.stdout.is_empty());
    assert_eq!(String::from_utf8_lossy(&local.stdout), String::from_utf8_lossy(&remote.stdout));
    assert!(String::from_utf8_lossy(&remote.stderr).contains("offloaded 31/31 layers to RPC"));

    let closed = format!("127.0.0.1:{}", free_port());
    for (ep, says) in
        [(closed.as_str(), "cannot connect"), ("127.0.0.1", "expected host:port"), ("127.0.0.1:99999", "not a port")]
    {
        let out = decache_run(&["--rpc", ep, "-p", "x", "-n", "1"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{ep}: {err}");
        assert!(err.contains(says) && err.contains(ep), "{ep}: {err}");
    }
}

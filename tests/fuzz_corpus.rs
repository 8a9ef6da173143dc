//! The fuzz harnesses (`fuzz/src/lib.rs`) over the committed seed corpora
//! (`fuzz/seeds/<target>/`) and crash reproducers (`fuzz/regressions/<target>/`),
//! on stable Rust: every input returns, without a panic, within seconds.
//! `make fuzz` runs the same harnesses under libFuzzer.
#[path = "../fuzz/src/lib.rs"]
mod harness;
use std::path::Path;
use std::time::{Duration, Instant};

/// A fuzz target: its name and its harness.
type Target = (&'static str, fn(&[u8]));

const TARGETS: &[Target] = &[
    ("gguf", harness::gguf),
    ("tokenizer", harness::tokenizer),
    ("template", harness::chat_template),
    ("transcript", harness::transcript),
    ("toolcall", harness::toolcall),
    ("http_body", harness::http_body),
];

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn every_seed_and_reproducer_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, run) in TARGETS {
        let seeds = inputs(&root.join("seeds").join(target));
        assert!(!seeds.is_empty(), "no seeds for {target}: run `make fuzz-seeds`");
        let repro = inputs(&root.join("regressions").join(target));
        for p in seeds.iter().chain(&repro) {
            let data = std::fs::read(p).unwrap();
            let t0 = Instant::now();
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "{target}: {} panicked", p.display());
            assert!(t0.elapsed() < Duration::from_secs(10), "{target}: {} took {:?}", p.display(), t0.elapsed());
        }
        eprintln!("{target}: {} seeds, {} reproducers", seeds.len(), repro.len());
    }
}

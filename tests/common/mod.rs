//! Shared helpers for integration tests that use the real models (fetched by
//! `make models` into the decache cache directory).
#![allow(dead_code)]
use std::path::PathBuf;

/// Path of the default model; fails the test with a clear message if absent.
pub fn smollm2() -> PathBuf {
    let p = decache::pull::default_model_path();
    assert!(p.exists(), "{} is missing: run `make models` first", p.display());
    p
}

/// Path of gemma-3-270m (fetched by `make models` too).
pub fn gemma3() -> PathBuf {
    let p = decache::pull::cache_dir().join(decache::pull::GEMMA3_270M_FILE);
    assert!(p.exists(), "{} is missing: run `make models` first", p.display());
    p
}

/// Index of the largest value (first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Logits `a` and `b` (rows of `n_vocab`): asserts the same row count and
/// the same top-1 on every row; prints and returns the largest |Δlogit|.
pub fn top1_and_max_diff(what: &str, a: &[f32], b: &[f32], n_vocab: usize) -> f32 {
    assert_eq!(a.len(), b.len(), "{what}: row counts");
    let mut worst = 0f32;
    for (i, (ra, rb)) in a.chunks(n_vocab).zip(b.chunks(n_vocab)).enumerate() {
        assert_eq!(argmax(ra), argmax(rb), "{what}: top-1 differs at row {i}");
        worst = worst.max(max_abs_diff(ra, rb));
    }
    eprintln!("{what}: max |Δlogit| {worst:.3e}");
    worst
}

/// Prompts for logits parity: prose, code, several scripts, chat markup.
pub const PROMPTS: &[&str] = &[
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "<|im_start|>user\nWhat is 17 times 23?<|im_end|>\n<|im_start|>assistant\n",
    "Les chats sont des animaux domestiques qui",
    "東京は日本の首都で、人口は",
    "   leading spaces,\ttabs\tand\n\nblank lines   ",
    "fn main() { let v: Vec<u32> = (0..10).map(|x| x * x).collect(); println!(\"{:?}\", v); }",
    "Emoji 🦀🚀 and numbers 3.14159 2718281828 mixed in a sentence",
];

/// A short ChatML conversation (a build log, an answer, a reminder, a
/// question) and the start of the reply that follows it: the text the
/// removal oracles cut spans out of.
pub const CONVERSATION: &str = "<|im_start|>system\nYou are a careful assistant. Answer briefly.<|im_end|>\n\
<|im_start|>user\nHere is the build log:\ncompiling core v0.1 ... ok\ncompiling net v0.3 ... ok\ncompiling ui v0.9 ... ok\n\
test result: 214 passed; 0 failed\nWhat does the log say about the tests?<|im_end|>\n\
<|im_start|>assistant\nAll 214 tests passed and nothing failed.<|im_end|>\n\
<|im_start|>user\n<system-reminder>The date is Saturday. Keep answers short.</system-reminder>\nThanks. Now, which crate was compiled last?<|im_end|>\n";
pub const FOLLOW_UP: &str = "<|im_start|>assistant\nThe last crate compiled was";

//! Shared helpers for integration tests that use the real models (fetched by
//! `make models` into the decache cache directory).
#![allow(dead_code)]
pub mod gguf_writer;
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

/// Our logits rows against llama.cpp's (one vector per row): asserts the
/// row count and the same top-1 on each; returns the largest |Δlogit|.
pub fn compare_rows(what: &str, ours: &[f32], theirs: &[Vec<f32>], n_vocab: usize) -> f32 {
    assert_eq!(ours.len(), theirs.len() * n_vocab, "{what}: rows");
    let mut worst = 0f32;
    for (i, row) in theirs.iter().enumerate() {
        let mine = &ours[i * n_vocab..(i + 1) * n_vocab];
        assert_eq!(argmax(mine), argmax(row), "{what}: top-1 differs at row {i}");
        worst = worst.max(max_abs_diff(mine, row));
    }
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

/// A small random-weight llama with SmolLM2's own vocabulary and chat
/// template (n_embd 64, 2 layers, its 8192-token context): for tests whose
/// model replies are scripted or whose subject is the engine's bookkeeping
/// (tool loops, decaching by meaning, crash safety), where the weights do not
/// matter but the tokens must be SmolLM2's. Every token costs a fraction of
/// the real model's, so such a test runs the same steps in seconds. Written
/// once into cargo's test tmp dir (atomically, so concurrent tests agree).
pub fn tiny_smollm2() -> PathBuf {
    use gguf_writer::{llama_tensors, Gguf, LlamaDims, Rng, Value};
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tiny-smollm2-vocab-v1.gguf");
    // Tests of one binary run on threads of one process: one writes, the others wait.
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    if out.exists() {
        return out;
    }
    let src = decache::gguf::GgufFile::open(&smollm2(), false).unwrap();
    let strs = |k: &str| src.get_str_array(k).unwrap().unwrap_or_else(|| panic!("SmolLM2 has no {k}"));
    let id = |k: &str| src.get_u32(k).unwrap();
    let (n_embd, n_layer, n_head, n_head_kv, n_ff) = (64u64, 2u64, 4u64, 2u64, 128u64);
    let head_dim = n_embd / n_head;
    let tokens = strs("tokenizer.ggml.tokens");
    let n_vocab = tokens.len() as u64;
    let types: Vec<i32> =
        src.get_i64_array("tokenizer.ggml.token_type").unwrap().unwrap().into_iter().map(|t| t as i32).collect();
    let mut g = Gguf::new();
    g.set("general.architecture", Value::str("llama"))
        .set("general.name", Value::str("tiny-smollm2-vocab"))
        .set("general.file_type", Value::U32(0))
        .set("llama.block_count", Value::U32(n_layer as u32))
        .set("llama.context_length", Value::U32(8192))
        .set("llama.embedding_length", Value::U32(n_embd as u32))
        .set("llama.feed_forward_length", Value::U32(n_ff as u32))
        .set("llama.attention.head_count", Value::U32(n_head as u32))
        .set("llama.attention.head_count_kv", Value::U32(n_head_kv as u32))
        .set("llama.rope.dimension_count", Value::U32(head_dim as u32))
        .set("llama.rope.freq_base", Value::F32(100000.0))
        .set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .set("tokenizer.ggml.model", Value::str(src.get_str("tokenizer.ggml.model").unwrap().unwrap()))
        .set("tokenizer.ggml.pre", Value::str(src.get_str("tokenizer.ggml.pre").unwrap().unwrap()))
        .set("tokenizer.ggml.tokens", Value::strs(&tokens))
        .set("tokenizer.ggml.token_type", Value::i32s(&types))
        .set("tokenizer.ggml.merges", Value::strs(&strs("tokenizer.ggml.merges")))
        .set("tokenizer.chat_template", Value::str(src.get_str("tokenizer.chat_template").unwrap().unwrap()));
    for k in ["bos", "eos", "unknown", "padding"] {
        if let Some(v) = id(&format!("tokenizer.ggml.{k}_token_id")) {
            g.set(&format!("tokenizer.ggml.{k}_token_id"), Value::U32(v));
        }
    }
    if let Some(b) = src.get_bool("tokenizer.ggml.add_bos_token").unwrap() {
        g.set("tokenizer.ggml.add_bos_token", Value::Bool(b));
    }
    let dims = LlamaDims { n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff };
    llama_tensors(&mut g, &dims, &mut Rng::new(0x5e01));
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    g.write(&tmp);
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// llama.cpp doing what decache's reuse did (`out`), on a cache that holds
/// `cached` at positions 0..: `seq_rm` over the deleted runs, then each
/// replaced span at the positions decache chose (after `seq_add` moved what
/// follows when it opened room), the gaps closed under `Shift` (as
/// `KvCache::close_gaps` walks them), then the rest after the last
/// position. llama.cpp decodes into a sequence only right after its last
/// position, so a span goes into sequence 1, which first shares the cells
/// before it, and then becomes sequence 0's (`seq_cp`): the same cells, and
/// it sees what precedes it and nothing after. `params` with `n_seq_max` 2
/// (sequences share one unified cache). Returns the spans' logits,
/// the rest's, and the position the rest started at.
pub fn oracle_reuse(
    oracle: &decache::ggml::oracle::OracleModel,
    cached: &[u32],
    new: &[u32],
    out: &decache::session::reuse::ReuseOutcome,
    policy: decache::session::PositionPolicy,
    params: &decache::ggml::oracle::OracleParams,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, i32) {
    use decache::ggml::oracle::{OracleContext, OracleParams};
    use decache::session::{reuse::dropped_runs, PositionPolicy};
    let p = OracleParams { n_seq_max: 2, ..params.clone() };
    let mut oc = OracleContext::new(oracle, &p).unwrap();
    let ids = |t: &[u32]| t.iter().map(|&t| t as i32).collect::<Vec<_>>();
    oc.decode(&ids(cached), &(0..cached.len() as i32).collect::<Vec<_>>(), false).unwrap();
    let kept = out.plan.kept(cached.len());
    let runs = dropped_runs(&kept);
    for &(a, b) in runs.iter().rev() {
        assert!(oc.seq_rm(a as i32, b as i32));
    }
    let mut live: Vec<i32> = (0..cached.len() as i32).filter(|&i| kept[i as usize]).collect();
    let (mut offset, mut spans) = (0, Vec::new());
    for r in &out.plan.replaced {
        if r.opened > 0 {
            let at = (r.cached + r.cached_len) as i32 + offset;
            oc.seq_add(at, -1, r.opened);
            live.iter_mut().filter(|p| **p >= at).for_each(|p| *p += r.opened);
            offset += r.opened;
        }
        let pos: Vec<i32> = (r.pos..r.pos + r.len as i32).collect();
        oc.seq_cp(0, 1, 0, r.pos);
        spans.push(oc.decode_seq(1, &ids(&new[r.new..r.new + r.len]), &pos, true).unwrap());
        oc.seq_cp(1, 0, r.pos, r.pos + r.len as i32);
        assert!(oc.seq_rm_in(1, -1, -1));
        live.extend(pos);
    }
    if policy == PositionPolicy::Shift && !runs.is_empty() {
        live.sort_unstable();
        let mut expect = 0;
        for k in 0..live.len() {
            let p = live[k];
            if p > expect {
                oc.seq_add(p, -1, expect - p);
                live[k..].iter_mut().for_each(|q| *q -= p - expect);
            }
            expect = live[k] + 1;
        }
    }
    let next = live.iter().max().map_or(0, |p| p + 1);
    let rest = &new[out.plan.reused..];
    let theirs = oc.decode(&ids(rest), &(next..next + rest.len() as i32).collect::<Vec<_>>(), true).unwrap();
    (spans.into_iter().flatten().collect(), theirs, next)
}

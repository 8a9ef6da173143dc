//! The subconscious cache against llama.cpp: the cache holds a conversation
//! `A B C`, the client sends `A C D` (it pruned `B`). We keep `A` and `C`,
//! delete `B` in place and prefill only `D`; the logits of `D` must equal
//! llama.cpp's after `llama_memory_seq_rm` over `B`'s positions (keep
//! policy), or after `seq_rm` + `seq_add` (shift). Also with two pruned spans.
mod common;
use common::*;
use decache::ggml::oracle::{OracleContext, OracleModel, OracleParams};
use decache::model::{LoadOptions, Model};
use decache::session::reuse::{dropped_runs, HitKind};
use decache::session::{PositionPolicy, Session, SessionConfig};
use std::sync::Arc;

const SYSTEM: &str = "<|im_start|>system\nYou are a coding agent. Use the tools; answer briefly.<|im_end|>\n";
const ASK: &str = "<|im_start|>user\nWhy does the parser test fail?<|im_end|>\n";
const REMINDER: &str = "<|im_start|>user\n<system-reminder>The todo list is empty. Use the todo tool when it helps.</system-reminder><|im_end|>\n";
const READ: &str = "<|im_start|>user\nsrc/parser.rs:\nfn parse(s: &str) -> Node { let t = lex(s); build(&t, 0) }\nfn build(t: &[Tok], d: usize) -> Node { if d > 64 { panic!(\"deep\") } Node::new(t, d) }<|im_end|>\n";
const ANSWER: &str =
    "<|im_start|>assistant\nThe build function panics when the nesting is deeper than 64 levels.<|im_end|>\n";
const LOG: &str = "<|im_start|>user\ntest parser::deep ... FAILED\ntest parser::flat ... ok\ntest result: FAILED. 1 passed; 1 failed<|im_end|>\n";
const NEXT: &str = "<|im_start|>user\nHow do I raise the limit?<|im_end|>\n<|im_start|>assistant\n";

fn toks(oracle: &OracleModel, parts: &[&str]) -> Vec<u32> {
    oracle.tokenize(&parts.concat(), false, true).iter().map(|&t| t as u32).collect()
}

/// Cache `cached`, serve `new`; compare with llama.cpp doing the same
/// deletions. Returns (kind, reused, removed, max |Δlogit|).
fn serve(
    model: &Arc<Model>,
    oracle: &OracleModel,
    cached: &[u32],
    new: &[u32],
    policy: PositionPolicy,
) -> (HitKind, usize, usize, f32) {
    let cfg = SessionConfig { n_ctx: 1024, n_threads: 2, ..SessionConfig::default() };
    let mut s = Session::new(model.clone(), cfg).unwrap();
    s.eval(cached, false).unwrap();
    let graphs = s.graphs_run();
    let out = s.reuse(new, Some(8), policy).unwrap();
    if policy == PositionPolicy::Keep {
        assert_eq!(s.graphs_run(), graphs, "reuse with the keep policy runs no graph");
    }
    let start = s.next_pos();
    let ours = s.eval(&new[out.plan.reused..], true).unwrap();

    // llama.cpp: the same cells deleted (positions = chain indices here),
    // latest run first so that shifting keeps earlier positions valid.
    let kept = out.plan.kept(cached.len());
    let p = OracleParams { n_ctx: 1024, n_threads: 2, ..OracleParams::default() };
    let mut oc = OracleContext::new(oracle, &p).unwrap();
    let ci: Vec<i32> = cached.iter().map(|&t| t as i32).collect();
    oc.decode(&ci, &(0..ci.len() as i32).collect::<Vec<_>>(), false).unwrap();
    let n = cached.len() as i32;
    let runs: Vec<(i32, i32)> = dropped_runs(&kept).into_iter().map(|(a, b)| (a as i32, b as i32)).collect();
    let mut next = kept.iter().rposition(|&k| k).map_or(0, |i| i as i32 + 1);
    for &(a, b) in runs.iter().rev() {
        assert!(oc.seq_rm(a, b));
        if policy != PositionPolicy::Keep && b < n {
            oc.seq_add(b, -1, -(b - a));
            next -= (b.min(next) - a).max(0);
        }
    }
    assert_eq!(start, next, "next position");
    let rest: Vec<i32> = new[out.plan.reused..].iter().map(|&t| t as i32).collect();
    let theirs = oc.decode(&rest, &(next..next + rest.len() as i32).collect::<Vec<_>>(), true).unwrap();
    let n_vocab = model.hparams.n_vocab as usize;
    let mut worst = 0f32;
    for (i, row) in theirs.iter().enumerate() {
        let mine = &ours[i * n_vocab..(i + 1) * n_vocab];
        assert_eq!(argmax(mine), argmax(row), "top-1 differs at prefilled token {i}");
        worst = worst.max(max_abs_diff(mine, row));
    }
    (out.kind(), out.plan.reused, out.removed, worst)
}

#[test]
fn subconscious_hits_match_llama_cpp_seq_rm() {
    let path = smollm2();
    let model = Arc::new(Model::load(&path, &LoadOptions::default()).unwrap());
    let oracle = OracleModel::load(&path).unwrap();
    // One pruned span: the reminder.
    let abc = toks(&oracle, &[SYSTEM, ASK, REMINDER, READ, ANSWER]);
    let acd = toks(&oracle, &[SYSTEM, ASK, READ, ANSWER, NEXT]);
    let b = toks(&oracle, &[REMINDER]).len();
    // Two pruned spans: the reminder and the file read.
    let multi = toks(&oracle, &[SYSTEM, ASK, REMINDER, ANSWER, READ, LOG]);
    let pruned = toks(&oracle, &[SYSTEM, ASK, ANSWER, LOG, NEXT]);
    let b2 = b + toks(&oracle, &[READ]).len();
    for policy in [PositionPolicy::Keep, PositionPolicy::Shift] {
        let (kind, reused, removed, worst) = serve(&model, &oracle, &abc, &acd, policy);
        eprintln!(
            "A B C -> A C D ({policy:?}): {} hit, {reused} of {} reused, {removed} removed, max |Δlogit| = {worst:.3e}",
            kind.name(),
            acd.len()
        );
        assert_eq!(kind, HitKind::Subconscious);
        assert_eq!(removed, b, "exactly the reminder is deleted");
        assert_eq!(reused, abc.len() - b, "everything but the reminder is reused");
        assert!(worst < 2e-2, "{worst}");

        let (kind, reused, removed, worst) = serve(&model, &oracle, &multi, &pruned, policy);
        eprintln!("two pruned spans ({policy:?}): {} hit, {reused} of {} reused, {removed} removed, max |Δlogit| = {worst:.3e}", kind.name(), pruned.len());
        assert_eq!(kind, HitKind::Subconscious);
        assert_eq!(removed, b2);
        assert_eq!(reused, multi.len() - b2);
        assert!(worst < 2e-2, "{worst}");
    }
    // A regenerated tail: the cache's last reply is not in the new input and is deleted.
    let cached = toks(&oracle, &[SYSTEM, ASK, ANSWER]);
    let new = toks(&oracle, &[SYSTEM, ASK, "<|im_start|>assistant\n"]);
    let (kind, reused, removed, worst) = serve(&model, &oracle, &cached, &new, PositionPolicy::Keep);
    assert_eq!(kind, HitKind::Prefix);
    assert_eq!(removed, cached.len() - reused);
    assert!(worst < 2e-2);
}

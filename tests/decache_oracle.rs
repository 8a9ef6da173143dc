//! Forgetting in place, against llama.cpp: prefill A B C, remove B (or
//! several spans, or a span inside one message), then evaluate D. The logits
//! of D must match llama.cpp's after `llama_memory_seq_rm` over the same
//! positions (keep policy) and after `seq_rm` + `seq_add` (shift policy).
mod common;
use common::*;
use decache::ggml::oracle::{OracleContext, OracleModel, OracleParams};
use decache::model::{LoadOptions, Model};
use decache::session::{Gap, PositionPolicy, Session, SessionConfig};
use std::sync::Arc;

struct Case {
    name: &'static str,
    /// Removed position ranges, as fractions of A B C's length.
    spans: Vec<(f32, f32)>,
}

fn run_case(model: &Arc<Model>, oracle: &OracleModel, case: &Case, policy: PositionPolicy) -> f32 {
    let abc = oracle.tokenize(CONVERSATION, false, true);
    let d = oracle.tokenize(FOLLOW_UP, false, true);
    run_tokens(model, oracle, case, policy, &abc, &d, 512)
}

/// Prefill `abc`, remove the case's spans under `policy`, evaluate `d`:
/// ours against llama.cpp's `seq_rm` (+ `seq_add`); the largest |Δlogit|.
fn run_tokens(
    model: &Arc<Model>,
    oracle: &OracleModel,
    case: &Case,
    policy: PositionPolicy,
    abc: &[i32],
    d: &[i32],
    n_ctx: usize,
) -> f32 {
    let n = abc.len() as i32;
    let mut spans: Vec<(i32, i32)> =
        case.spans.iter().map(|&(a, b)| ((a * n as f32) as i32, (b * n as f32) as i32)).collect();
    spans.sort_by_key(|s| std::cmp::Reverse(s.0)); // latest first, so earlier positions stay put
    let removed: i32 = spans.iter().map(|s| s.1 - s.0).sum();
    let n_vocab = model.hparams.n_vocab as usize;

    let cfg = SessionConfig { n_ctx, n_threads: 2, ..SessionConfig::default() };
    let mut s = Session::new(model.clone(), cfg).unwrap();
    s.eval(&abc.iter().map(|&t| t as u32).collect::<Vec<_>>(), false).unwrap();
    for &(p0, p1) in &spans {
        let r = s.remove_range(p0, p1, policy.gap()).unwrap();
        assert_eq!(r.cells, (p1 - p0) as usize, "{}: cells removed", case.name);
    }
    let ours = s.eval(&d.iter().map(|&t| t as u32).collect::<Vec<_>>(), true).unwrap();

    let p = OracleParams { n_ctx: n_ctx as u32, n_threads: 2, ..OracleParams::default() };
    let mut oc = OracleContext::new(oracle, &p).unwrap();
    oc.decode(abc, &(0..n).collect::<Vec<_>>(), false).unwrap();
    for &(p0, p1) in &spans {
        assert!(oc.seq_rm(p0, p1));
        if policy == PositionPolicy::Shift {
            oc.seq_add(p1, -1, -(p1 - p0));
        }
    }
    let start = if policy == PositionPolicy::Shift { n - removed } else { n };
    let theirs = oc.decode(d, &(start..start + d.len() as i32).collect::<Vec<_>>(), true).unwrap();

    let mut worst = 0f32;
    for (i, row) in theirs.iter().enumerate() {
        let mine = &ours[i * n_vocab..(i + 1) * n_vocab];
        assert_eq!(argmax(mine), argmax(row), "{} ({policy:?}): top-1 differs at D[{i}]", case.name);
        worst = worst.max(max_abs_diff(mine, row));
    }
    eprintln!(
        "{} ({policy:?}): {} of {n} tokens removed in {} span(s), max |Δlogit| over D = {worst:.3e}",
        case.name,
        removed,
        spans.len()
    );
    worst
}

#[test]
fn removal_matches_llama_cpp_seq_rm_keep_and_shift() {
    let path = smollm2();
    let model = Arc::new(Model::load(&path, &LoadOptions::default()).unwrap());
    let oracle = OracleModel::load(&path).unwrap();
    let cases = [
        Case { name: "middle span (the build log)", spans: vec![(0.25, 0.55)] },
        Case { name: "three spans", spans: vec![(0.12, 0.2), (0.35, 0.5), (0.7, 0.8)] },
        Case { name: "inside one message", spans: vec![(0.3, 0.36)] },
    ];
    for case in &cases {
        for policy in [PositionPolicy::Keep, PositionPolicy::Shift] {
            let worst = run_case(&model, &oracle, case, policy);
            assert!(worst < 2e-2, "{} ({policy:?}): max |Δlogit| {worst}", case.name);
        }
    }
}

#[test]
fn gemma3_removal_matches_llama_cpp_across_its_sliding_window() {
    // 900 tokens of prose: past the 512-position window of gemma-3's
    // sliding layers, so both kinds of layer see the removal. Keep only:
    // llama.cpp's sliding-window cache reuses cells that are out of the
    // window when it inserts, and after a shift its logits part from
    // decache's from the 8th new token on (see docs/architectures.md).
    let path = gemma3();
    let model = Arc::new(Model::load(&path, &LoadOptions::default()).unwrap());
    let oracle = OracleModel::load(&path).unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/perplexity.txt")).unwrap();
    let all = oracle.tokenize(&text, true, false);
    assert!(all.len() > 940, "the corpus is long enough");
    let (abc, d) = (&all[..900], &all[900..940]);
    let cases = [
        Case { name: "gemma3: a span inside the window", spans: vec![(0.7, 0.8)] },
        Case { name: "gemma3: a span behind the window", spans: vec![(0.2, 0.4)] },
    ];
    for case in &cases {
        {
            let policy = PositionPolicy::Keep;
            let worst = run_tokens(&model, &oracle, case, policy, abc, d, 1024);
            assert!(worst < 5e-2, "{} ({policy:?}): max |Δlogit| {worst}", case.name);
        }
    }
}

#[test]
fn removal_runs_no_graph_and_defrag_keeps_logits() {
    let path = smollm2();
    let model = Arc::new(Model::load(&path, &LoadOptions::default()).unwrap());
    let oracle = OracleModel::load(&path).unwrap();
    let abc: Vec<u32> = oracle.tokenize(CONVERSATION, false, true).iter().map(|&t| t as u32).collect();
    let d: Vec<u32> = oracle.tokenize(FOLLOW_UP, false, true).iter().map(|&t| t as u32).collect();
    let cfg = SessionConfig { n_ctx: 512, n_threads: 2, ..SessionConfig::default() };

    let mut s = Session::new(model.clone(), cfg.clone()).unwrap();
    s.eval(&abc, false).unwrap();
    let before = s.graphs_run();
    let live = s.n_live();
    s.remove_range(10, 60, Gap::Keep).unwrap();
    assert_eq!(s.graphs_run(), before, "removal with the keep policy must not run any graph");
    assert_eq!(s.n_live(), live - 50);
    assert!(s.fragmentation() > 0.2);

    // The same removal, then a defrag: identical logits for D.
    let reference = s.eval(&d, true).unwrap();
    let mut t = Session::new(model.clone(), cfg).unwrap();
    t.eval(&abc, false).unwrap();
    t.remove_range(10, 60, Gap::Keep).unwrap();
    let moved = t.defrag().unwrap();
    assert!(moved > 0);
    assert_eq!(t.fragmentation(), 0.0);
    let packed = t.eval(&d, true).unwrap();
    let diff = max_abs_diff(&reference, &packed);
    eprintln!("defrag moved {moved} cells; max |Δlogit| vs. unpacked = {diff:.3e}");
    assert!(diff < 1e-3, "defrag changed the logits by {diff}");
}

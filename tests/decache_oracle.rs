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

/// Boundary refresh: prefill A B C, remove B with the gap closed (shift),
/// re-evaluate the first `k` tokens of C. Their logits must be llama.cpp's
/// when it re-decodes them after `seq_rm` of B and of those `k` tokens,
/// seeing A alone (what a recompute without B gives them); D's after them
/// must match too. (llama.cpp decodes a sequence only at the position after
/// its last one, so a refresh across a kept gap, at positions past the gap,
/// cannot be asked of it: the next test checks that case against a fresh
/// decache prefill of A and C's first tokens at the same positions.)
#[test]
fn refresh_after_a_removal_matches_llama_cpp_re_decoding_after_seq_rm() {
    let path = smollm2();
    let model = Arc::new(Model::load(&path, &LoadOptions::default()).unwrap());
    let oracle = OracleModel::load(&path).unwrap();
    let abc = oracle.tokenize(CONVERSATION, false, true);
    let d = oracle.tokenize(FOLLOW_UP, false, true);
    let n = abc.len() as i32;
    let (p0, p1) = ((n as f32 * 0.25) as i32, (n as f32 * 0.55) as i32);
    let gap = p1 - p0;
    let n_vocab = model.hparams.n_vocab as usize;
    let u = |t: &[i32]| t.iter().map(|&x| x as u32).collect::<Vec<_>>();
    for k in [1usize, 8, 32] {
        for flash_attn in [true, false] {
            // Bit for bit against llama.cpp: with flash attention, ggml's
            // fused op at every step, as llama.cpp attends.
            let cfg = SessionConfig {
                n_ctx: 512,
                n_threads: 2,
                flash_attn,
                ggml_attention: true,
                ..SessionConfig::default()
            };
            let mut s = Session::new(model.clone(), cfg).unwrap();
            s.eval(&u(&abc), false).unwrap();
            s.remove_range(p0, p1, Gap::Close).unwrap();
            let r = s.refresh(&[p0], k).unwrap();
            assert_eq!(r.positions, (p0..p0 + k as i32).collect::<Vec<_>>(), "the first k after the gap");
            let ours_d = s.eval(&u(&d), true).unwrap();

            // Sequence 1 shares A's cells and re-decodes C's first k tokens
            // after it; they replace their stale cells in sequence 0, whose
            // rest of C closes the gap.
            let p = OracleParams { n_ctx: 512, n_threads: 2, flash_attn, n_seq_max: 2, ..OracleParams::default() };
            let mut oc = OracleContext::new(&oracle, &p).unwrap();
            oc.decode(&abc, &(0..n).collect::<Vec<_>>(), false).unwrap();
            assert!(oc.seq_rm(p0, p1 + k as i32));
            oc.seq_add(p1 + k as i32, -1, -gap);
            oc.seq_cp(0, 1, 0, p0);
            let again = &abc[p1 as usize..p1 as usize + k];
            let theirs = oc.decode_seq(1, again, &(p0..p0 + k as i32).collect::<Vec<_>>(), true).unwrap();
            oc.seq_cp(1, 0, p0, p0 + k as i32);
            let start = n - gap;
            let theirs_d = oc.decode(&d, &(start..start + d.len() as i32).collect::<Vec<_>>(), true).unwrap();
            let (mut refreshed, mut after) = (0f32, 0f32);
            for (i, row) in theirs.iter().enumerate() {
                refreshed = refreshed.max(max_abs_diff(&r.logits[i * n_vocab..(i + 1) * n_vocab], row));
            }
            for (i, row) in theirs_d.iter().enumerate() {
                let mine = &ours_d[i * n_vocab..(i + 1) * n_vocab];
                assert_eq!(argmax(mine), argmax(row), "k={k}: top-1 differs at D[{i}]");
                after = after.max(max_abs_diff(mine, row));
            }
            eprintln!(
                "refresh k={k} fa={flash_attn}: max |Δlogit| {refreshed:.3e} on the refreshed tokens, {after:.3e} on D"
            );
            assert_eq!(refreshed, 0.0, "k={k} fa={flash_attn}: refreshed tokens differ from llama.cpp's re-decode");
            assert_eq!(after, 0.0, "k={k} fa={flash_attn}: D differs after the refresh");
        }
    }
}

/// A refresh across a kept gap: the refreshed tokens' logits equal those
/// of a fresh session that evaluates A and C's first `k` tokens at the same
/// positions (the gap left open), bit for bit; and they differ from the
/// stale ones (the refresh changed something).
#[test]
fn refresh_across_a_kept_gap_equals_a_fresh_prefill_without_the_span() {
    let path = smollm2();
    let model = Arc::new(Model::load(&path, &LoadOptions::default()).unwrap());
    let oracle = OracleModel::load(&path).unwrap();
    let abc: Vec<u32> = oracle.tokenize(CONVERSATION, false, true).iter().map(|&t| t as u32).collect();
    let n = abc.len() as i32;
    let (p0, p1) = ((n as f32 * 0.25) as i32, (n as f32 * 0.55) as i32);
    let n_vocab = model.hparams.n_vocab as usize;
    let k = 16usize;
    let cfg = SessionConfig { n_ctx: 512, n_threads: 2, ..SessionConfig::default() };
    let mut s = Session::new(model.clone(), cfg.clone()).unwrap();
    let stale = s.eval(&abc, true).unwrap();
    s.remove_range(p0, p1, Gap::Keep).unwrap();
    let graphs = s.graphs_run();
    let r = s.refresh(&[p1], k).unwrap();
    assert_eq!(r.positions, (p1..p1 + k as i32).collect::<Vec<_>>());
    assert_eq!(s.graphs_run(), graphs + 1, "one graph for the refresh");
    assert_eq!(s.n_live(), (n - (p1 - p0)) as usize, "the refresh keeps every token");

    let mut fresh = Session::new(model.clone(), cfg).unwrap();
    let toks: Vec<u32> = abc[..p0 as usize].iter().chain(&abc[p1 as usize..p1 as usize + k]).copied().collect();
    let pos: Vec<i32> = (0..p0).chain(p1..p1 + k as i32).collect();
    let want = fresh.eval_at(&toks, &pos, true).unwrap();
    let want = &want[p0 as usize * n_vocab..];
    let diff = max_abs_diff(&r.logits, want);
    let moved = max_abs_diff(&r.logits, &stale[p1 as usize * n_vocab..(p1 as usize + k) * n_vocab]);
    eprintln!(
        "refresh across a kept gap: max |Δlogit| {diff:.3e} against a fresh prefill, {moved:.3} against the stale rows"
    );
    assert_eq!(diff, 0.0, "refreshed rows differ from a fresh prefill without the span");
    assert!(moved > 0.1, "the refresh changed nothing ({moved})");
}

//! The subconscious cache against llama.cpp: the cache holds a conversation
//! `A B C`, the client sends `A C D` (it pruned `B`). We keep `A` and `C`,
//! delete `B` in place and prefill only `D`; the logits of `D` must equal
//! llama.cpp's after `llama_memory_seq_rm` over `B`'s positions (keep
//! policy), or after `seq_rm` + `seq_add` (shift). Also with two pruned spans.
mod common;
use common::*;
use decache::ggml::oracle::{OracleContext, OracleModel, OracleParams};
use decache::model::{LoadOptions, Model};
use decache::session::reuse::{dropped_runs, HitKind, ReuseOptions};
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

// ---- replaced spans: `A B C` cached, `A B' C D` sent ---------------------

const CLEARED: &str = "[Old tool result content cleared]";
const READ_BODY: &str = "src/parser.rs:\nfn parse(s: &str) -> Node { let t = lex(s); build(&t, 0) }\nfn build(t: &[Tok], d: usize) -> Node { if d > 64 { panic!(\"deep\") } Node::new(t, d) }";
const LOG_BODY: &str =
    "test parser::deep ... FAILED\ntest parser::flat ... ok\ntest result: FAILED. 1 passed; 1 failed";
const DEEP: &str = "<|im_end|>\n<|im_start|>assistant\nThe deep test fails and the flat one passes.<|im_end|>\n";

/// The parts of the replaced-span cases, tokenized one by one and joined
/// as tokens, so that each part's length is exact.
struct Parts {
    a: Vec<u32>,
    b: Vec<u32>,
    b_new: Vec<u32>,
    c: Vec<u32>,
    user: Vec<u32>,
    b2: Vec<u32>,
    b2_new: Vec<u32>,
    c2: Vec<u32>,
    d: Vec<u32>,
    /// A reminder's body (short) inside `r_a`/`r_c`, and its longer re-rendering.
    r_a: Vec<u32>,
    r: Vec<u32>,
    r_new: Vec<u32>,
    r_c: Vec<u32>,
}

impl Parts {
    fn new(tok: &dyn Fn(&str) -> Vec<u32>) -> Parts {
        Parts {
            a: tok(&[SYSTEM, ASK, "<|im_start|>user\n"].concat()),
            b: tok(READ_BODY),
            b_new: tok(CLEARED),
            c: tok(&["<|im_end|>\n", ANSWER].concat()),
            user: tok("<|im_start|>user\n"),
            b2: tok(LOG_BODY),
            b2_new: tok("[Test log cleared: 1 passed, 1 failed]"),
            c2: tok(DEEP),
            d: tok(NEXT),
            r_a: tok(&[SYSTEM, ASK, "<|im_start|>user\n<system-reminder>"].concat()),
            r: tok("The todo list is empty."),
            r_new: tok("Todo: [x] read src/parser.rs [ ] raise the depth limit [ ] run the parser tests"),
            r_c: tok(&["</system-reminder><|im_end|>\n", READ, ANSWER].concat()),
        }
    }

    /// (name, cached, new, tokens evaluated in place, spans replaced under
    /// `Shift`/`Auto`, and under `Keep`).
    #[allow(clippy::type_complexity)]
    fn cases(&self) -> Vec<(&'static str, Vec<u32>, Vec<u32>, usize, usize, usize)> {
        let p = self;
        vec![
            (
                "one replaced span (B' shorter than B)",
                [&p.a[..], &p.b, &p.c].concat(),
                [&p.a[..], &p.b_new, &p.c, &p.d].concat(),
                p.b_new.len(),
                1,
                1,
            ),
            (
                "two replaced spans",
                [&p.a[..], &p.b, &p.c, &p.user, &p.b2, &p.c2].concat(),
                [&p.a[..], &p.b_new, &p.c, &p.user, &p.b2_new, &p.c2, &p.d].concat(),
                p.b_new.len() + p.b2_new.len(),
                2,
                2,
            ),
            (
                "B' longer than B",
                [&p.r_a[..], &p.r, &p.r_c].concat(),
                [&p.r_a[..], &p.r_new, &p.r_c, &p.d].concat(),
                p.r_new.len(),
                1,
                0,
            ),
        ]
    }
}

#[test]
fn replaced_spans_match_llama_cpp_decoding_them_in_place() {
    let path = smollm2();
    let model = Arc::new(Model::load(&path, &LoadOptions::default()).unwrap());
    let oracle = OracleModel::load(&path).unwrap();
    let n_vocab = model.hparams.n_vocab as usize;
    let parts = Parts::new(&|s| toks(&oracle, &[s]));
    for (name, cached, new, evaluated, replaced, replaced_keep) in parts.cases() {
        for policy in [PositionPolicy::Keep, PositionPolicy::Shift, PositionPolicy::Auto] {
            let cfg = SessionConfig { n_ctx: 1024, n_threads: 2, ..SessionConfig::default() };
            let mut s = Session::new(model.clone(), cfg).unwrap();
            s.eval(&cached, false).unwrap();
            let (out, span_logits) = s.reuse_with_logits(&new, &ReuseOptions::new(Some(8)), policy).unwrap();
            assert_eq!(s.live_tokens(), new[..out.plan.reused], "{name}: the cache holds the new input's start");
            let start = s.next_pos();
            let rest = s.eval(&new[out.plan.reused..], true).unwrap();
            // The tokens evaluated: B' (in place) and D, not C.
            let want = if policy == PositionPolicy::Keep { replaced_keep } else { replaced };
            assert_eq!(out.spans_replaced(), want, "{name} ({policy:?}): spans replaced");
            let tail = parts.d.len();
            if want == replaced {
                assert_eq!(out.plan.prefilled(new.len()), evaluated + tail, "{name} ({policy:?}): |B'| + |D|");
            } else {
                assert!(out.plan.prefilled(new.len()) > evaluated + tail, "{name}: Keep cannot open room");
            }
            let old =
                decache::session::reuse::plan_with(&cached, &new, &ReuseOptions { min_chunk: Some(8), replace: false });
            let params = OracleParams { n_ctx: 1024, n_threads: 2, ..OracleParams::default() };
            let (spans, theirs, next) = oracle_reuse(&oracle, &cached, &new, &out, policy, &params);
            assert_eq!(start, next, "{name} ({policy:?}): next position");
            let span_rows: Vec<f32> = span_logits.concat();
            let ws = compare_rows(&format!("{name} ({policy:?}) B'"), &span_rows, &spans, n_vocab);
            let wd = compare_rows(&format!("{name} ({policy:?}) D"), &rest, &theirs, n_vocab);
            eprintln!(
                "{name} ({policy:?}): {} hit, {} replaced (opened {:?}), prefilled {} (matcher without replaced spans: {}), \
                 max |Δlogit| B' {ws:.3e}, D {wd:.3e}",
                out.kind().name(),
                out.spans_replaced(),
                out.plan.replaced.iter().map(|r| r.opened).collect::<Vec<_>>(),
                out.plan.prefilled(new.len()),
                old.prefilled(new.len()),
            );
            assert!(ws < 2e-2 && wd < 2e-2, "{name} ({policy:?}): {ws} {wd}");
            if want > 0 {
                assert!(out.plan.prefilled(new.len()) < old.prefilled(new.len()));
            }
        }
    }
}

/// llama-server's prompt reuse with `--cache-reuse n` (tools/server,
/// `n_cache_reuse`), as a model over tokens: the common prefix of the
/// slot's tokens and the new prompt is kept; from there the cached tokens
/// are walked (`head_c`) against the prompt (`head_p`): a run of at least
/// `n` equal tokens is moved into place (`seq_rm` + `seq_add`) and both
/// heads pass it, otherwise only `head_c` moves on. The prompt is reused up
/// to the last chunk moved (new tokens in between end the reuse: `head_p`
/// never skips them), and at least one token is evaluated. `cache` becomes
/// the prompt; returns the tokens prefilled.
fn llama_server_cache_reuse(cache: &mut Vec<u32>, new: &[u32], n: usize) -> usize {
    let mut n_past = cache.iter().zip(new).take_while(|(a, b)| a == b).count();
    let (mut head_c, mut head_p) = (n_past, n_past);
    while head_c < cache.len() && head_p < new.len() {
        let m = cache[head_c..].iter().zip(&new[head_p..]).take_while(|(a, b)| a == b).count();
        if m >= n {
            n_past += m;
            head_c += m;
            head_p += m;
        } else {
            head_c += 1;
        }
    }
    if n_past == new.len() && n_past > 0 {
        n_past -= 1;
    }
    *cache = new.to_vec();
    new.len() - n_past
}

/// An agent conversation's requests as text, turn by turn: a system prompt,
/// then per turn a question, a tool call, its result (a file read) and,
/// from the next turn on, the answer. Tool results of the last `shown`
/// turns are shown; at each turn past those, the oldest one still shown is
/// replaced by a placeholder line (as Claude Code's context editing does).
fn agent_conversation(turns: usize, shown: usize) -> Vec<String> {
    let system = "<|im_start|>system\nYou are a coding agent for the `calc` crate. Read files before editing them, \
                  run the tests after every change, and answer in one or two sentences.<|im_end|>\n";
    let file = |t: usize| -> String {
        (0..8)
            .map(|i| {
                format!(
                    "pub fn op_{t}_{i}(a: i64, b: i64) -> Result<i64, CalcError> {{ checked_{}(a, b).ok_or(CalcError::Overflow({t}, {i})) }}\n",
                    ["add", "sub", "mul", "div"][(t + i) % 4]
                )
            })
            .collect()
    };
    let mut history: Vec<(usize, bool, String)> = Vec::new(); // (turn, is a tool result, message)
    let mut out = Vec::new();
    for t in 1..=turns {
        if t > 1 {
            history.push((
                t - 1,
                false,
                format!("<|im_start|>assistant\nI fixed op_{}_3; the tests pass.<|im_end|>\n", t - 1),
            ));
        }
        history.push((
            t,
            false,
            format!("<|im_start|>user\nStep {t}: fix the overflow in src/ops_{t}.rs.<|im_end|>\n"),
        ));
        history.push((
            t,
            false,
            format!(
                "<|im_start|>assistant\n<tool_call>\n{{\"name\": \"read\", \"arguments\": {{\"path\": \"src/ops_{t}.rs\"}}}}\n</tool_call><|im_end|>\n"
            ),
        ));
        history.push((t, true, format!("<|im_start|>tool\n{}<|im_end|>\n", file(t))));
        if t > shown {
            let placeholder = format!("<|im_start|>tool\n{CLEARED}<|im_end|>\n");
            if let Some(m) = history.iter_mut().find(|(_, tool, m)| *tool && *m != placeholder) {
                m.2 = placeholder;
            }
        }
        let body: String = history.iter().map(|(_, _, m)| m.as_str()).collect();
        out.push(format!("{system}{body}<|im_start|>assistant\n"));
    }
    out
}

#[test]
fn replay_of_an_agent_that_clears_old_tool_results_prefills_less() {
    // The weights do not matter for what is counted: the tiny model with
    // SmolLM2's vocabulary runs the same reuse over the same tokens.
    let model = Arc::new(Model::load(&tiny_smollm2(), &LoadOptions::default()).unwrap());
    let requests: Vec<Vec<u32>> =
        agent_conversation(12, 2).iter().map(|text| model.tokenizer.encode(text, false, true).unwrap()).collect();
    let cfg = SessionConfig { n_ctx: 4096, n_threads: 2, ..SessionConfig::default() };
    let old_opts = ReuseOptions { min_chunk: Some(8), replace: false };
    let new_opts = ReuseOptions::new(Some(8));
    let mut old = Session::new(model.clone(), cfg.clone()).unwrap();
    let mut new = Session::new(model.clone(), cfg).unwrap();
    let mut llama_cache = Vec::new();
    let (mut t_old, mut t_new, mut t_llama, mut t_prompt, mut t_replaced) = (0, 0, 0, 0, 0);
    eprintln!("| turn | prompt | old matcher (deleted spans only) | new matcher (replaced spans) | spans replaced | llama.cpp --cache-reuse 16 |");
    eprintln!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, tokens) in requests.iter().enumerate() {
        let serve = |s: &mut Session, opts: &ReuseOptions| {
            let out = s.reuse_with(tokens, opts, PositionPolicy::Keep).unwrap();
            assert_eq!(s.live_tokens(), tokens[..out.plan.reused]);
            s.eval(&tokens[out.plan.reused..], false).unwrap();
            assert_eq!(s.live_tokens(), *tokens);
            out
        };
        let (a, b) = (serve(&mut old, &old_opts), serve(&mut new, &new_opts));
        assert_eq!(a.spans_replaced(), 0);
        let c = llama_server_cache_reuse(&mut llama_cache, tokens, 16);
        let (pa, pb) = (a.plan.prefilled(tokens.len()), b.plan.prefilled(tokens.len()));
        eprintln!("| {} | {} | {pa} | {pb} | {} | {c} |", i + 1, tokens.len(), b.spans_replaced());
        if i >= 2 {
            assert_eq!(b.spans_replaced(), 1, "turn {}: one tool result replaced", i + 1);
        }
        (t_old, t_new, t_llama, t_prompt, t_replaced) =
            (t_old + pa, t_new + pb, t_llama + c, t_prompt + tokens.len(), t_replaced + b.spans_replaced());
    }
    eprintln!("| total | {t_prompt} | {t_old} | {t_new} | {t_replaced} | {t_llama} |");
    eprintln!(
        "new matcher: {:.2}x fewer tokens prefilled than the old one, {:.2}x fewer than llama.cpp --cache-reuse 16",
        t_old as f64 / t_new as f64,
        t_llama as f64 / t_new as f64
    );
    assert!(t_new < t_old && t_new < t_llama, "new {t_new}, old {t_old}, llama.cpp {t_llama}");
}

#[test]
fn replaced_spans_with_room_opened_replay_from_a_transcript() {
    // A reuse that deletes, evaluates in place and opens room (Shift, B'
    // longer than B) is recorded op by op; replaying the transcript on a
    // fresh session rebuilds the same cache: the same positions and tokens,
    // and the same logits for the next token.
    let model = Arc::new(Model::load(&tiny_smollm2(), &LoadOptions::default()).unwrap());
    let parts = Parts::new(&|s| model.tokenizer.encode(s, false, true).unwrap());
    let cfg = SessionConfig { n_ctx: 1024, n_threads: 2, ..SessionConfig::default() };
    let dir = tempfile::tempdir().unwrap();
    for (name, cached, new, _, _, _) in parts.cases() {
        for policy in [PositionPolicy::Keep, PositionPolicy::Shift, PositionPolicy::Auto] {
            let path = dir.path().join("reuse.jsonl");
            let mut s = Session::new(model.clone(), cfg.clone()).unwrap();
            decache::transcript::TranscriptWriter::attach(&mut s, &path, "serve", false).unwrap();
            s.eval(&cached, false).unwrap();
            let out = s.reuse(&new, Some(8), policy).unwrap();
            s.eval(&new[out.plan.reused..], false).unwrap();
            let mut t = Session::new(model.clone(), cfg.clone()).unwrap();
            let tr = decache::transcript::read(&path).unwrap();
            let ops: Vec<String> = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].as_str().unwrap().to_string())
                .collect();
            decache::transcript::replay::replay(&tr, &mut t).unwrap();
            assert_eq!(t.live_chain(), s.live_chain(), "{name} ({policy:?})");
            assert_eq!(t.next_pos(), s.next_pos());
            let opened = out.plan.replaced.iter().any(|r| r.opened > 0);
            assert_eq!(ops.iter().any(|o| o == "open_gap"), opened, "{name} ({policy:?}): {ops:?}");
            let (x, y) = (s.eval(&parts.d[..1], false).unwrap(), t.eval(&parts.d[..1], false).unwrap());
            assert_eq!(max_abs_diff(&x, &y), 0.0, "{name} ({policy:?})");
        }
    }
}

/// The server's `--refresh k`: after the reuse deletes the pruned spans, the
/// first `k` kept tokens after each gap are evaluated again without them.
/// The continuation then equals a session that removed the same spans and
/// refreshed by hand, and differs from the plain reuse.
#[test]
fn a_refreshing_reuse_refreshes_the_tokens_after_each_deleted_span() {
    let model = Arc::new(Model::load(&smollm2(), &LoadOptions::default()).unwrap());
    let oracle = OracleModel::load(&smollm2()).unwrap();
    let cached = toks(&oracle, &[SYSTEM, ASK, REMINDER, READ, ANSWER, LOG]);
    let new = toks(&oracle, &[SYSTEM, ASK, READ, ANSWER, NEXT]);
    let cfg = SessionConfig { n_ctx: 1024, n_threads: 2, ..SessionConfig::default() };
    let run = |k: usize| {
        let mut s = Session::new(model.clone(), cfg.clone()).unwrap();
        s.eval(&cached, false).unwrap();
        let out = s.reuse_refreshing(&new, &ReuseOptions::new(Some(8)), PositionPolicy::Keep, k).unwrap();
        let logits = s.eval(&new[out.plan.reused..], false).unwrap();
        (out, logits)
    };
    let (out, refreshed) = run(6);
    assert_eq!(out.kind(), HitKind::Subconscious);
    assert_eq!(out.refreshed, 6, "one gap (the reminder) before kept tokens: 6 refreshed");
    let (plain_out, plain) = run(0);
    assert_eq!((plain_out.refreshed, plain_out.plan.reused), (0, out.plan.reused));
    assert_ne!(plain, refreshed, "the refresh changes what follows");
    // By hand: the plain reuse, then `Session::refresh` at the gap.
    let mut s = Session::new(model.clone(), cfg).unwrap();
    s.eval(&cached, false).unwrap();
    let o = s.reuse(&new, Some(8), PositionPolicy::Keep).unwrap();
    let gap_end = toks(&oracle, &[SYSTEM, ASK, REMINDER]).len() as i32;
    s.refresh(&[gap_end], 6).unwrap();
    assert_eq!(s.eval(&new[o.plan.reused..], false).unwrap(), refreshed);
}

//! What forgetting means for a hybrid model's recurrent state (see
//! docs/DESIGN-hybrid.md), pinned on a random-weight `qwen35` file:
//! - removing a middle span deletes the attention layers' cells in place
//!   and leaves the recurrent state exactly as it was;
//! - removing the tail rewinds: the newest checkpoint at or before the last
//!   live token is restored, the live tokens after it evaluated again, and
//!   the logits that follow are those of a fresh prefill of the live
//!   tokens (checked against llama.cpp);
//! - what cannot be done (tokens before what the state absorbed, a
//!   boundary refresh) is refused by name, and nothing is lost;
//! - snapshots and session files carry the state; sequences of one cache
//!   keep their own.
#[path = "common/arch_check.rs"]
mod arch_check;
#[path = "common/gguf_writer.rs"]
mod gguf_writer;
#[path = "common/qwen35_file.rs"]
mod qwen35_file;
use arch_check::{compare, ours, ours_with, N_CTX};
use decache::ggml::oracle::{OracleContext, OracleModel, OracleParams};
use decache::model::{LoadOptions, Model};
use decache::sampling::SamplingParams;
use decache::session::{Gap, GenerateOptions, Session, SessionConfig};
use qwen35_file::{qwen35, Qwen35Shape};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn file(dir: &Path) -> PathBuf {
    let path = dir.join("qwen35.gguf");
    let s = Qwen35Shape { n_layer: 6, full_attention_interval: 3, ..Qwen35Shape::tiny() };
    qwen35(&s, 0x35aa).write(&path);
    path
}

fn toks(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * seed + 7) % 300).collect()
}

/// llama.cpp's logits for `chunks` decoded one after the other in a fresh
/// context (positions from 0), every row of the last chunk.
fn fresh_llama(path: &Path, chunks: &[&[u32]]) -> Vec<Vec<f32>> {
    let oracle = OracleModel::load(path).unwrap();
    let params = OracleParams { n_ctx: N_CTX as u32, n_threads: 2, flash_attn: true, ..OracleParams::default() };
    let mut oc = OracleContext::new(&oracle, &params).unwrap();
    let mut at = 0;
    let mut rows = Vec::new();
    for c in chunks {
        let ids: Vec<i32> = c.iter().map(|&t| t as i32).collect();
        rows = oc.decode(&ids, &(at..at + c.len() as i32).collect::<Vec<_>>(), true).unwrap();
        at += c.len() as i32;
    }
    rows
}

/// A session whose cache holds two sequences.
fn two_seqs(path: &Path) -> Session {
    let model = Arc::new(Model::load(path, &LoadOptions::default()).unwrap());
    let cfg = SessionConfig { n_ctx: N_CTX, n_threads: 2, flash_attn: true, n_seq: 2, ..SessionConfig::default() };
    Session::new(model, cfg).unwrap()
}

fn state(s: &Session) -> Vec<u8> {
    s.recurrent_state().expect("a hybrid model").1
}

#[test]
fn a_middle_removal_deletes_attention_cells_and_keeps_the_recurrent_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path());
    let mut s = ours(&path, true);
    s.eval(&toks(40, 37), false).unwrap();
    let (before, live) = (state(&s), s.n_live());
    let r = s.remove_range(10, 20, Gap::Keep).unwrap();
    assert_eq!(r.cells, 10, "the attention layers' cells of the span are removed");
    assert_eq!(s.n_live(), live - 10);
    assert_eq!(state(&s), before, "the recurrent state keeps what it absorbed");
    assert_eq!(s.recurrent_state().unwrap().0, 39, "it absorbed up to position 39");
    // And the next tokens see exactly that: llama.cpp's hybrid memory does
    // the same for such a removal (the parity test in hybrid_oracle.rs).
    let next = s.eval(&toks(4, 53), true).unwrap();
    assert!(next.iter().all(|x| x.is_finite()));
    assert_ne!(state(&s), before, "evaluating on moves the state");
}

#[test]
fn a_rewind_restores_a_checkpoint_and_matches_a_fresh_prefill() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path());
    let (a, b, d) = (toks(20, 37), toks(15, 41), toks(10, 53));
    let mut s = ours(&path, true);
    s.eval(&a, false).unwrap();
    s.eval(&b, false).unwrap();
    assert_eq!(s.recurrent_checkpoints(), vec![19, 34], "a checkpoint after each prompt");
    // A reply generated token by token (no checkpoints), then regenerated:
    // its tokens are removed and the state must be as it was after `b`.
    for t in [3u32, 5, 8, 13, 21, 34] {
        s.eval(&[t], false).unwrap();
    }
    s.remove_range(35, 41, Gap::Keep).unwrap();
    s.rewind(35).unwrap();
    let rw = s.sync_recurrent().unwrap().expect("a rewind");
    assert_eq!((rw.from, rw.reevaluated), (34, 0), "the checkpoint after b, nothing to evaluate again");
    let mine = s.eval(&d, true).unwrap();
    let theirs = fresh_llama(&path, &[&a, &b, &d]);
    let diff = compare("rewind to a checkpoint", &mine, &theirs);
    assert!(diff < 1e-3, "rewind through a checkpoint: max |Δlogit| {diff} against a fresh prefill");
    eprintln!("rewind to the checkpoint after b: max |Δlogit| {diff:.1e} against llama.cpp's fresh prefill of a b d");

    // A rewind into the middle of `b`: the checkpoint after `a` is restored
    // and the 5 live tokens of `b` before the cut are evaluated again.
    let mut s = ours(&path, true);
    s.eval(&a, false).unwrap();
    s.eval(&b, false).unwrap();
    s.remove_range(25, 35, Gap::Keep).unwrap();
    s.rewind(25).unwrap();
    let mine = s.eval(&d, true).unwrap();
    assert_eq!(s.recurrent_checkpoints(), vec![19, 24, 34], "the re-evaluation and d leave checkpoints");
    let theirs = fresh_llama(&path, &[&a, &b[..5], &d]);
    let diff = compare("rewind between checkpoints", &mine, &theirs);
    assert!(diff < 1e-3, "rewind between checkpoints: max |Δlogit| {diff}");
    eprintln!("rewind into b (5 tokens evaluated again): max |Δlogit| {diff:.1e} against a fresh prefill");
}

#[test]
fn a_rewind_without_checkpoints_starts_from_the_empty_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path());
    let (a, d) = (toks(12, 37), toks(6, 53));
    let mut s = ours(&path, true);
    for &t in &a {
        s.eval(&[t], false).unwrap();
    }
    assert!(s.recurrent_checkpoints().is_empty(), "single tokens leave no checkpoints");
    s.remove_range(8, 12, Gap::Keep).unwrap();
    s.rewind(8).unwrap();
    let mine = s.eval(&d, true).unwrap();
    let theirs = fresh_llama(&path, &[&a[..8], &d]);
    let diff = compare("rewind from empty", &mine, &theirs);
    assert!(diff < 1e-3, "rewind from the empty state: max |Δlogit| {diff}");
}

#[test]
fn what_a_recurrent_state_cannot_do_is_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path());
    let mut s = ours(&path, true);
    s.eval(&toks(30, 37), false).unwrap();
    s.remove_range(10, 20, Gap::Keep).unwrap();
    let (live, st) = (s.n_live(), state(&s));
    // Tokens inside the gap would come before what the state absorbed.
    let e = s.eval_at(&[1, 2], &[12, 13], false).unwrap_err().to_string();
    assert!(e.contains("position 12") && e.contains("recurrent"), "{e}");
    // A boundary refresh would absorb tokens a second time.
    let e = s.refresh(&[20], 4).unwrap_err().to_string();
    assert!(e.contains("refresh") && e.contains("hybrid"), "{e}");
    assert_eq!((s.n_live(), state(&s)), (live, st), "nothing was removed or absorbed");
    // The session goes on.
    assert!(s.eval(&[5], false).is_ok());
}

#[test]
fn snapshots_carry_the_recurrent_state_and_sequences_keep_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path());
    let (a, d) = (toks(25, 37), toks(5, 53));
    let mut s = ours_with(&path, true, true);
    s.eval(&a, false).unwrap();
    let snap = s.snapshot().unwrap();
    let cont = s.eval(&d, true).unwrap();
    // Restored into a fresh session of the same model: the same continuation.
    let mut t = ours_with(&path, true, true);
    t.restore(&snap).unwrap();
    assert_eq!(t.eval(&d, true).unwrap(), cont, "a restored snapshot goes on as the original");
    // A second sequence of the same cache, interleaved with the first, keeps
    // its own state: its logits are those of a session of its own.
    let mut u = two_seqs(&path);
    let mut v = u.sequence().unwrap();
    let b = toks(25, 41);
    u.eval(&a, false).unwrap();
    v.eval(&b, false).unwrap();
    let ud = u.eval(&d, true).unwrap();
    let vd = v.eval(&d, true).unwrap();
    assert_eq!(ud, cont, "sequence 0 is unaffected by sequence 1");
    let mut w = ours_with(&path, true, true);
    w.eval(&b, false).unwrap();
    assert_eq!(vd, w.eval(&d, true).unwrap(), "sequence 1 has a state of its own");
}

/// Sequences stepping together (one graph, one token each) read and write
/// their own rows of the recurrent state.
#[test]
fn sequences_decoding_together_match_decoding_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path());
    let prompts = [toks(9, 37), toks(13, 41)];
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut s = ours(&path, true);
            greedy(&mut s, p, 12)
        })
        .collect();
    let mut s0 = two_seqs(&path);
    let counter = s0.batch_counter();
    let mut s1 = s0.sequence().unwrap();
    let together: Vec<Vec<u32>> = std::thread::scope(|sc| {
        let h0 = sc.spawn(|| greedy(&mut s0, &prompts[0], 12));
        let h1 = sc.spawn(|| greedy(&mut s1, &prompts[1], 12));
        vec![h0.join().unwrap(), h1.join().unwrap()]
    });
    assert_eq!(together, alone);
    let (batches, subs) = counter.batch_stats();
    eprintln!("{subs} sub-batches in {batches} steps");
}

fn greedy(s: &mut Session, prompt: &[u32], n: usize) -> Vec<u32> {
    let opts = GenerateOptions {
        n_predict: Some(n),
        sampling: SamplingParams::greedy(),
        ignore_eos: true,
        ..GenerateOptions::default()
    };
    s.generate(prompt, &opts, &mut |_| true).unwrap().tokens
}

/// A conversation saved to a session file and loaded into a fresh session
/// goes on with the same logits: the file carries the recurrent state.
#[test]
fn a_session_file_carries_the_recurrent_state() {
    use decache::context::policy::DecachePolicy;
    use decache::context::segments::SegmentKind;
    use decache::session::conversation::Conversation;
    use decache::tokenizer::ChatTemplate;
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path());
    let conv = || Conversation::new(ours(&path, true), ChatTemplate::chatml(), DecachePolicy::default());
    let mut a = conv();
    a.push("system", "You are terse.", SegmentKind::System).unwrap();
    a.push("user", "Say something.", SegmentKind::User).unwrap();
    let saved = dir.path().join("chat.session");
    a.save(&saved).unwrap();
    let next = toks(6, 53);
    let want = a.session.eval(&next, true).unwrap();
    let mut b = conv();
    b.load(&saved).unwrap();
    assert_eq!(b.session.recurrent_state().unwrap().0, a.session.recurrent_state().unwrap().0 - 6);
    assert_eq!(b.session.eval(&next, true).unwrap(), want, "the loaded conversation goes on as the saved one");
    // A file whose recurrent state was cut short is refused by name.
    let mut bytes = std::fs::read(&saved).unwrap();
    bytes.truncate(bytes.len() - 4);
    std::fs::write(&saved, &bytes).unwrap();
    let e = conv().load(&saved).unwrap_err().to_string();
    assert!(e.contains("chat.session"), "{e}");
}

/// Qwen3.5's own chat template (from the llama.cpp sources `make llama-src`
/// fetches) drops the thinking of earlier turns when it renders the next
/// request. The subconscious match still hits: the dropped `<think>` span is
/// deleted in place (the recurrent state keeps its trace), the rest of the
/// turn is reused, only the new message is prefilled.
#[test]
fn qwen35_template_dropping_earlier_thinking_still_hits_the_cache() {
    use decache::session::reuse::HitKind;
    use decache::session::PositionPolicy;
    use decache::tokenizer::{ChatMessage, ChatTemplate};
    let templates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/llama.cpp-0.3.36/llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates");
    let src = std::fs::read_to_string(templates.join("Qwen3.5-4B.jinja"))
        .unwrap_or_else(|e| panic!("{}: {e} (make llama-src fetches it)", templates.display()));
    let t = ChatTemplate::new(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path());
    let model = Arc::new(Model::load(&path, &LoadOptions::default()).unwrap());
    let cfg = SessionConfig { n_ctx: 2048, n_threads: 2, flash_attn: true, ..SessionConfig::default() };
    let mut s = Session::new(model.clone(), cfg).unwrap();
    let tok = |text: &str| model.tokenizer.encode(text, false, true).unwrap();
    let thinking = "The user wants a sum. Two and two make four; answer in one word.";
    // The generation prompt opens the thinking; the model writes the rest.
    let generated = format!("{thinking}\n</think>\n\nFour: two pairs of one make four in all.");
    let reply = format!("<think>\n{generated}");
    let history = vec![ChatMessage::new("system", "You are terse."), ChatMessage::new("user", "What is two and two?")];
    // Turn 1 as the server caches it: the prompt, the generated reply, its end.
    let prompt1 = t.render(&history, true).unwrap();
    assert!(prompt1.ends_with("<|im_start|>assistant\n<think>\n"), "{prompt1:?}");
    let turn1 = format!("{prompt1}{generated}<|im_end|>\n");
    s.eval(&tok(&turn1), false).unwrap();
    let absorbed = s.recurrent_state().unwrap().0;
    // Turn 2 as the client sends it: the template drops turn 1's thinking.
    let mut next = history.clone();
    next.push(ChatMessage::new("assistant", reply.clone()));
    next.push(ChatMessage::new("user", "And three and three?"));
    let req = t.render(&next, true).unwrap();
    assert!(!req.contains(thinking) && req.contains("Four: two pairs"), "the template dropped the thinking: {req}");
    let new = tok(&req);
    // Chunks longer than 8 tokens, the server's default (--subconscious-min).
    let r = s.reuse(&new, Some(8), PositionPolicy::Keep).unwrap();
    assert_eq!(r.kind(), HitKind::Subconscious, "{:?}", r.plan);
    let dropped = tok(&format!("\n{thinking}\n")).len();
    assert!(r.removed >= dropped, "the thinking's {dropped} tokens are deleted in place ({} removed)", r.removed);
    let user2 = tok("<|im_start|>user\nAnd three and three?<|im_end|>\n<|im_start|>assistant\n<think>\n").len();
    let prefilled = r.plan.prefilled(new.len());
    assert!(prefilled <= user2 + 2, "only the new message is prefilled: {prefilled} of {} tokens", new.len());
    assert_eq!(s.recurrent_state().unwrap().0, absorbed, "the state keeps the thinking's trace");
    let logits = s.eval(&new[r.plan.reused..], false).unwrap();
    assert!(logits.iter().all(|x| x.is_finite()));
    eprintln!(
        "Qwen3.5 template, thinking dropped: {} of {} tokens reused, {} removed in place, {prefilled} prefilled",
        r.plan.reused,
        new.len(),
        r.removed
    );
}

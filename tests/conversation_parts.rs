//! Parts of messages: a `<system-reminder>` inside a user message and a
//! `<think>` block inside a reply are recorded as segments of their own
//! while the template is rendered, and forgetting one of them matches
//! llama.cpp's `seq_rm` over the same positions. A reply taken back leaves
//! the cache as if it had never been.
mod common;
use common::*;
use decache::context::policy::{DecachePolicy, Reason};
use decache::context::segments::SegmentKind;
use decache::ggml::oracle::{OracleContext, OracleModel, OracleParams};
use decache::model::{LoadOptions, Model};
use decache::sampling::SamplingParams;
use decache::session::conversation::Conversation;
use decache::session::{GenerateEvent, GenerateOptions, Session, SessionConfig};
use decache::tokenizer::ChatTemplate;
use std::sync::Arc;

fn conversation(model: &Arc<Model>, n_ctx: usize) -> Conversation {
    let cfg = SessionConfig { n_ctx, n_threads: 2, ..SessionConfig::default() };
    let template = ChatTemplate::new(model.tokenizer.chat_template().unwrap()).unwrap();
    let mut c = Conversation::new(Session::new(model.clone(), cfg).unwrap(), template, DecachePolicy::default());
    c.push("system", "You are a careful assistant. Answer briefly.", SegmentKind::System).unwrap();
    c
}

const USER: &str = "Which crate was compiled last?\n<system-reminder>\nThe date is Saturday.\nKeep answers short.\n</system-reminder>\nThe log: core, net, ui.";

#[test]
fn a_reminder_inside_a_message_is_its_own_segment_and_forgetting_it_matches_llama_cpp() {
    let path = smollm2();
    let model = Arc::new(Model::load(&path, &LoadOptions::default()).unwrap());
    let oracle = OracleModel::load(&path).unwrap();
    let mut c = conversation(&model, 512);
    c.push("user", USER, SegmentKind::User).unwrap();
    c.push("assistant", "<think>The log lists core, net, ui; ui is last.</think>The ui crate.", SegmentKind::Assistant)
        .unwrap();

    let kinds: Vec<&str> = c.segments.iter().map(|s| s.kind.name()).collect();
    assert_eq!(kinds, ["system", "user", "system reminder", "user", "assistant", "thinking", "assistant"]);
    let segs: Vec<_> = c.segments.iter().cloned().collect();
    assert!(segs.windows(2).all(|w| w[0].p1 == w[1].p0), "segments tile the context: {segs:?}");
    let reminder = &segs[2];
    assert_eq!(reminder.kind, SegmentKind::SystemReminder { key: "The date is Saturday.".into() });
    // The reminder's tokens spell exactly the block, tags included.
    let all: Vec<u32> = oracle.tokenize(&render(&c), false, true).iter().map(|&t| t as u32).collect();
    let text = model.tokenizer.decode(&all[reminder.p0 as usize..reminder.p1 as usize], true);
    assert!(text.contains("<system-reminder>") || text.contains("system-reminder>"), "{text:?}");
    assert!(text.trim_end().ends_with("</system-reminder>"), "{text:?}");
    let thinking = &segs[5];
    let think_text = model.tokenizer.decode(&all[thinking.p0 as usize..thinking.p1 as usize], true);
    assert!(think_text.contains("think>The log lists") && think_text.ends_with("</think>"), "{think_text:?}");
    assert_eq!(all.len(), c.session.next_pos() as usize, "the cache holds the template's rendering, token for token");

    // Forget the reminder, then evaluate the next question: logits as llama.cpp's after seq_rm.
    let ev = c.forget_segment(reminder.id, Reason::Manual).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].cells, reminder.len());
    let d: Vec<u32> = oracle
        .tokenize("<|im_start|>user\nAnd the first?<|im_end|>\n<|im_start|>assistant\n", false, true)
        .iter()
        .map(|&t| t as u32)
        .collect();
    let ours = c.session.eval(&d, true).unwrap();

    let p = OracleParams { n_ctx: 512, n_threads: 2, ..OracleParams::default() };
    let mut oc = OracleContext::new(&oracle, &p).unwrap();
    let toks: Vec<i32> = all.iter().map(|&t| t as i32).collect();
    oc.decode(&toks, &(0..toks.len() as i32).collect::<Vec<_>>(), false).unwrap();
    assert!(oc.seq_rm(reminder.p0, reminder.p1));
    let n = toks.len() as i32;
    let di: Vec<i32> = d.iter().map(|&t| t as i32).collect();
    let theirs = oc.decode(&di, &(n..n + di.len() as i32).collect::<Vec<_>>(), true).unwrap();
    let n_vocab = model.hparams.n_vocab as usize;
    let mut worst = 0f32;
    for (i, row) in theirs.iter().enumerate() {
        let mine = &ours[i * n_vocab..(i + 1) * n_vocab];
        assert_eq!(argmax(mine), argmax(row), "top-1 differs at D[{i}]");
        worst = worst.max(max_abs_diff(mine, row));
    }
    eprintln!(
        "reminder [{}, {}) forgotten inside its message: max |Δlogit| over D = {worst:.3e}",
        reminder.p0, reminder.p1
    );
    assert!(worst < 2e-2, "max |Δlogit| {worst}");
}

/// What the template renders for the conversation so far.
fn render(c: &Conversation) -> String {
    let tok = &c.session.model().tokenizer;
    let t = ChatTemplate::new(tok.chat_template().unwrap()).unwrap();
    t.render(c.messages(), false).unwrap()
}

#[test]
fn finished_thinking_is_forgotten_before_older_turns() {
    let model = Arc::new(Model::load(&smollm2(), &LoadOptions::default()).unwrap());
    let mut c = conversation(&model, 512);
    let think: String = (0..10).map(|i| format!("step {i}: consider option {i}. ")).collect();
    // Turns of question, thinking and answer until the cache passes its watermark.
    let mut events = Vec::new();
    for turn in 0..12 {
        events = c.push("user", &format!("Question {turn}: pick an option."), SegmentKind::User).unwrap();
        if !events.is_empty() {
            break;
        }
        events = c.push("assistant", &format!("<think>{think}</think>Option {turn}."), SegmentKind::Assistant).unwrap();
        if !events.is_empty() {
            break;
        }
    }
    assert!(!events.is_empty(), "nothing was forgotten at {} of 512 cells", c.session.n_live());
    assert!(events.iter().all(|e| e.reason == Reason::FinishedThinking && e.kind == "thinking"), "{events:?}");
    assert!(c.segments.iter().filter(|s| s.kind == SegmentKind::Assistant).all(|s| !s.fully_removed()), "answers stay");
}

#[test]
fn a_reply_taken_back_leaves_the_cache_as_before() {
    let model = Arc::new(Model::load(&smollm2(), &LoadOptions::default()).unwrap());
    let mut c = conversation(&model, 512);
    c.push("user", "Name three colours.", SegmentKind::User).unwrap();
    let (live, next, n_segs) = (c.session.n_live(), c.session.next_pos(), c.segments.iter().count());
    let opts =
        GenerateOptions { n_predict: Some(16), sampling: SamplingParams::greedy(), ..GenerateOptions::default() };
    let (first, _) = c.reply(&opts, &mut |_| true).unwrap();
    assert!(c.session.next_pos() > next);
    c.undo_reply().unwrap();
    assert_eq!((c.session.n_live(), c.session.next_pos(), c.segments.iter().count()), (live, next, n_segs));
    assert_eq!(c.messages().len(), 2);
    let (again, _) = c.reply(&opts, &mut |_| true).unwrap();
    assert_eq!(first.tokens, again.tokens, "greedy: the same reply from the same cache");
    assert!(c.undo_reply().is_ok());
    assert!(c.undo_reply().is_err(), "only the newest reply can be taken back");
    // A reply cut short still ends up whole in the cache (its last token too).
    let mut n = 0;
    let (cut, _) = c
        .reply(&opts, &mut |ev| {
            n += usize::from(matches!(ev, GenerateEvent::Token { .. }));
            n < 3
        })
        .unwrap();
    assert_eq!(cut.tokens.len(), 3);
    let all: Vec<u32> = model.tokenizer.encode(&render(&c), false, true).unwrap();
    assert_eq!(all.len(), c.session.next_pos() as usize, "cache and rendering agree after a cancelled reply");
}

/// With a boundary refresh, forgetting a segment re-evaluates the first `k`
/// kept tokens after it, at their own positions: the conversation then
/// continues exactly as a session that removed the span and refreshed by
/// hand, and differently from one that did not refresh.
#[test]
fn forgetting_with_a_refresh_reevaluates_the_tokens_after_the_gap() {
    let model = Arc::new(Model::load(&smollm2(), &LoadOptions::default()).unwrap());
    let build = |refresh: usize| {
        let mut c = conversation(&model, 512);
        c.refresh = refresh;
        c.push("user", USER, SegmentKind::User).unwrap();
        c.push("user", "And the one before it?", SegmentKind::User).unwrap();
        c
    };
    let reminder = |c: &Conversation| {
        c.segments
            .iter()
            .find(|s| matches!(s.kind, SegmentKind::SystemReminder { .. }))
            .map(|s| (s.id, s.p0, s.p1))
            .unwrap()
    };
    let next = model.tokenizer.encode("<|im_start|>assistant\n", false, true).unwrap();
    let mut a = build(8);
    let chain = a.session.live_chain();
    let (id, p0, p1) = reminder(&a);
    a.forget_segment(id, Reason::Manual).unwrap();
    assert_eq!(a.stats.tokens_refreshed, 8);
    let kept: Vec<_> = chain.iter().filter(|(p, _)| !(p0..p1).contains(p)).copied().collect();
    assert_eq!(a.session.live_chain(), kept, "the same tokens at the same positions");
    let with = a.session.eval(&next, false).unwrap();
    // By hand: the same removal, then `Session::refresh` of the 8 tokens.
    let mut b = build(0);
    b.session.remove_range(p0, p1, decache::session::Gap::Keep).unwrap();
    b.session.refresh(&[p1], 8).unwrap();
    assert_eq!(b.session.eval(&next, false).unwrap(), with);
    // Without the refresh the continuation differs.
    let mut c = build(0);
    let (id, ..) = reminder(&c);
    c.forget_segment(id, Reason::Manual).unwrap();
    assert_eq!(c.stats.tokens_refreshed, 0);
    assert_ne!(c.session.eval(&next, false).unwrap(), with);
}

/// A template that re-renders earlier messages (Qwen3's drops an earlier
/// reply's `<think>` block once the next user message comes) no longer
/// stops the conversation: the dropped thinking is forgotten in place
/// (reason "dropped by the chat template"), the cache holds the new
/// rendering's tokens, and the conversation goes on append-only from there.
#[test]
fn a_template_that_drops_earlier_thinking_is_followed_in_place() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/llama.cpp-0.3.36/llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates");
    let src = std::fs::read_to_string(dir.join("Qwen-Qwen3-0.6B.jinja"))
        .unwrap_or_else(|e| panic!("{}: {e} (make llama-src fetches it)", dir.display()));
    let model = Arc::new(Model::load(&tiny_smollm2(), &LoadOptions::default()).unwrap());
    let cfg = SessionConfig { n_ctx: 512, n_threads: 2, ..SessionConfig::default() };
    let template = ChatTemplate::new(&src).unwrap();
    let mut c = Conversation::new(Session::new(model.clone(), cfg).unwrap(), template, DecachePolicy::default());
    c.push("system", "You are a careful assistant.", SegmentKind::System).unwrap();
    c.push("user", "Which is larger, 7 or 9?", SegmentKind::User).unwrap();
    c.push("assistant", "<think>\nNine is two more than seven.\n</think>\n\n9 is larger.", SegmentKind::Assistant)
        .unwrap();
    let live = c.session.n_live();
    let events = c.push("user", "And 3 or 2?", SegmentKind::User).unwrap();
    assert!(!events.is_empty(), "the template dropped the thinking");
    assert!(events.iter().all(|e| e.reason == Reason::TemplateDropped), "{events:?}");
    let thinking = c.segments.iter().find(|s| s.kind == SegmentKind::Thinking).expect("the thinking was a segment");
    assert!(thinking.fully_removed(), "{thinking:?}");
    let dropped: usize = events.iter().map(|e| e.cells).sum();
    assert!(dropped >= (thinking.p1 - thinking.p0) as usize, "{dropped} cells for {:?}", thinking);
    assert!(c.session.n_live() < live + 20, "only the new message was added after the drop");
    // The cache holds what the template renders now, token for token.
    let t = ChatTemplate::new(&src).unwrap();
    let full = t.render(c.messages(), false).unwrap();
    assert!(!full.contains("Nine is two more"));
    let want = model.tokenizer.encode(&full, true, true).unwrap();
    let held: Vec<u32> = c.session.live_chain().into_iter().map(|(_, t)| t).collect();
    assert_eq!(held, want);
    // And it goes on.
    let events = c.push("assistant", "3 is larger.", SegmentKind::Assistant).unwrap();
    assert!(events.is_empty(), "{events:?}");
}

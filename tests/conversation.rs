//! A scripted agent-like chat through a small cache never stops at the
//! context limit: reminders, file reads and passing logs are forgotten in
//! place by meaning, the system prompt stays, and every deletion is reported.
mod common;
use decache::context::policy::{DecachePolicy, Reason};
use decache::context::segments::SegmentKind;
use decache::model::{LoadOptions, Model};
use decache::sampling::SamplingParams;
use decache::session::conversation::Conversation;
use decache::session::{GenerateOptions, Session, SessionConfig};
use decache::tokenizer::ChatTemplate;
use std::collections::BTreeMap;
use std::sync::Arc;

fn file_text(turn: u32) -> String {
    (0..12).map(|i| format!("fn step_{turn}_{i}(x: u32) -> u32 {{ x * {} + {i} }}\n", turn + 2)).collect()
}

fn test_log(turn: u32) -> String {
    let mut s: String = (0..10).map(|i| format!("test module_{turn}::case_{i} ... ok\n")).collect();
    s.push_str("test result: ok. 10 passed; 0 failed\n");
    s
}

#[test]
fn a_long_chat_through_a_small_cache_never_stops() {
    let model = Arc::new(Model::load(&common::smollm2(), &LoadOptions::default()).unwrap());
    let cfg = SessionConfig { n_ctx: 1536, n_threads: 2, ..SessionConfig::default() };
    let session = Session::new(model.clone(), cfg).unwrap();
    let template = ChatTemplate::new(model.tokenizer.chat_template().unwrap()).unwrap();
    let mut c = Conversation::new(session, template, DecachePolicy::default());
    c.push("system", "You are a coding assistant. Answer in one short sentence.", SegmentKind::System).unwrap();
    let opts =
        GenerateOptions { n_predict: Some(12), sampling: SamplingParams::greedy(), ..GenerateOptions::default() };
    let mut by_reason: BTreeMap<Reason, usize> = BTreeMap::new();
    let mut replies_with_text = 0;
    for turn in 1..=40u32 {
        let mut events = Vec::new();
        events.extend(
            c.push("user", &format!("Step {turn}: read src/lib.rs and run the tests."), SegmentKind::User).unwrap(),
        );
        events.extend(
            c.push(
                "user",
                "<system-reminder>Today is Saturday. Keep the todo list current.</system-reminder>",
                SegmentKind::SystemReminder { key: "daily".into() },
            )
            .unwrap(),
        );
        events.extend(c.push("tool", &file_text(turn), SegmentKind::FileRead { path: "src/lib.rs".into() }).unwrap());
        events.extend(c.push("tool", &test_log(turn), SegmentKind::CommandOutput { passed: Some(true) }).unwrap());
        let (gen, ev) = c.reply(&opts, &mut |_| true).unwrap();
        events.extend(ev);
        // A 135M model may answer with an immediate end of turn; count the others.
        replies_with_text += usize::from(!gen.tokens.is_empty());
        assert!(c.session.n_live() <= c.session.n_ctx());
        if std::env::var_os("SHOW_EVENTS").is_some() {
            for e in &events {
                eprintln!(
                    "turn {turn}: forgot {} [{}, {}) of segment {} ({}) for {:?}",
                    e.cells, e.p0, e.p1, e.segment, e.kind, e.reason
                );
            }
        }
        for e in &events {
            assert_ne!(e.kind, "system", "turn {turn}: the system prompt was forgotten");
            *by_reason.entry(e.reason).or_default() += e.cells;
        }
    }
    let st = &c.stats;
    eprintln!(
        "40 turns: {} tokens seen through {} cells, {} decached in {} events ({:.1} ms), {} defrags, {} gap closings; by reason: {by_reason:?}",
        st.tokens_seen, c.session.n_ctx(), st.tokens_decached, st.events, st.decache_time.as_secs_f64() * 1e3, st.defrags, st.gaps_closed
    );
    assert!(st.tokens_seen > 5 * c.session.n_ctx(), "only {} tokens seen", st.tokens_seen);
    assert!(replies_with_text >= 30, "only {replies_with_text} of 40 replies had text");
    assert!(by_reason.get(&Reason::SupersededReminder).copied().unwrap_or(0) > 0);
    assert!(by_reason.get(&Reason::StaleFileRead).copied().unwrap_or(0) > 0);
    assert!(by_reason.get(&Reason::PassingLog).copied().unwrap_or(0) > 0);
    assert!(st.gaps_closed >= 2, "22k positions through a model trained on 8192 must compact (auto policy)");
    assert!(c.session.next_pos() as u32 <= model.hparams.n_ctx_train, "positions passed the trained context");
    let sys = c.segments.iter().next().unwrap();
    assert!(sys.removed.is_empty(), "the system prompt lost tokens");
}

//! Session files: a conversation saved with its cache (holes from
//! forgetting included) loads into a fresh session, of the same or a larger
//! context, and goes on with the same logits; damaged or mismatched files
//! are refused with an error naming the file and the problem, and the
//! conversation that refused them is unchanged.
mod common;
use common::*;
use decache::context::policy::{DecachePolicy, Reason};
use decache::context::segments::SegmentKind;
use decache::ggml::GgmlType;
use decache::model::{LoadOptions, Model};
use decache::sampling::SamplingParams;
use decache::session::conversation::Conversation;
use decache::session::{GenerateOptions, Session, SessionConfig};
use decache::tokenizer::ChatTemplate;
use std::sync::Arc;

fn conversation(model: &Arc<Model>, cfg: &SessionConfig) -> Conversation {
    let template = ChatTemplate::new(model.tokenizer.chat_template().unwrap()).unwrap();
    Conversation::new(Session::new(model.clone(), cfg.clone()).unwrap(), template, DecachePolicy::default())
}

fn cfg(n_ctx: usize) -> SessionConfig {
    SessionConfig { n_ctx, n_threads: 2, ..SessionConfig::default() }
}

const NEXT: &str = "<|im_start|>user\nAnd in one word?<|im_end|>\n<|im_start|>assistant\n";

#[test]
fn a_saved_conversation_goes_on_with_the_same_logits() {
    let model = Arc::new(Model::load(&smollm2(), &LoadOptions::default()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.session");
    let mut a = conversation(&model, &cfg(512));
    a.push("system", "You are a terse assistant.", SegmentKind::System).unwrap();
    a.push("user", "Here is a log:\nok 1\nok 2\nok 3\nWhat is the sky's colour?", SegmentKind::User).unwrap();
    a.push("tool", "src/lib.rs:\nfn main() {}\n", SegmentKind::FileRead { path: "src/lib.rs".into() }).unwrap();
    let opts =
        GenerateOptions { n_predict: Some(12), sampling: SamplingParams::greedy(), ..GenerateOptions::default() };
    a.reply(&opts, &mut |_| true).unwrap();
    // A hole: the file read is forgotten before saving.
    let read = a.segments.iter().find(|s| matches!(s.kind, SegmentKind::FileRead { .. })).unwrap().id;
    a.forget_segment(read, Reason::Manual).unwrap();
    let info = a.save(&path).unwrap();
    assert_eq!(info.live, a.session.n_live());
    assert!(info.cells > info.live, "the hole is saved as a hole");
    assert!(!dir.path().join("chat.session.tmp").exists(), "the temporary file was renamed");

    let d = model.tokenizer.encode(NEXT, false, true).unwrap();
    for n_ctx in [512, 1024] {
        let mut b = conversation(&model, &cfg(n_ctx));
        let loaded = b.load(&path).unwrap();
        assert_eq!((loaded.cells, loaded.live), (info.cells, info.live));
        assert_eq!(b.session.next_pos(), a.session.next_pos());
        assert_eq!(b.messages(), a.messages());
        assert_eq!(b.turn(), a.turn());
        let segs = |c: &Conversation| c.segments.iter().map(|s| (s.id, s.p0, s.p1, s.live())).collect::<Vec<_>>();
        assert_eq!(segs(&b), segs(&a));
        let mut a2 = conversation(&model, &cfg(512));
        a2.load(&path).unwrap();
        let want = a2.session.eval(&d, true).unwrap();
        let got = b.session.eval(&d, true).unwrap();
        let diff = max_abs_diff(&want, &got);
        eprintln!("loaded into {n_ctx} cells: max |Δlogit| vs. the saved session = {diff:.3e}");
        assert!(diff < 1e-4, "n_ctx {n_ctx}: {diff}");
    }
    // And the original, continued without saving, agrees with a loaded copy.
    let want = a.session.eval(&d, true).unwrap();
    let mut c = conversation(&model, &cfg(512));
    c.load(&path).unwrap();
    assert!(max_abs_diff(&want, &c.session.eval(&d, true).unwrap()) < 1e-4);
    // The loaded conversation goes on as a conversation: a reply, then /regen.
    let mut c = conversation(&model, &cfg(512));
    c.load(&path).unwrap();
    c.push("user", "And in one word?", SegmentKind::User).unwrap();
    let (r1, _) = c.reply(&opts, &mut |_| true).unwrap();
    c.undo_reply().unwrap();
    let (r2, _) = c.reply(&opts, &mut |_| true).unwrap();
    assert_eq!(r1.tokens, r2.tokens);
}

#[test]
fn bad_session_files_are_refused_and_change_nothing() {
    let model = Arc::new(Model::load(&smollm2(), &LoadOptions::default()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.session");
    let mut a = conversation(&model, &cfg(512));
    a.push("system", "You are a terse assistant.", SegmentKind::System).unwrap();
    a.push("user", "Name a colour.", SegmentKind::User).unwrap();
    a.save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let hlen = u64::from_le_bytes(good[20..28].try_into().unwrap()) as usize;

    // The victim: a conversation with content of its own.
    let mut v = conversation(&model, &cfg(512));
    v.push("system", "Be kind.", SegmentKind::System).unwrap();
    v.push("user", "Hello there, how are you?", SegmentKind::User).unwrap();
    let before = (v.session.n_live(), v.session.next_pos(), v.messages().to_vec());

    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "not a decache session file"),
        ("gguf", b"GGUF\x03\0\0\0 and so on and so forth".to_vec(), "not a decache session file"),
        ("cut in the header", good[..28 + hlen / 2].to_vec(), "truncated"),
        ("cut in the body", good[..good.len() - 100].to_vec(), "truncated"),
    ];
    let mut version = good.clone();
    version[16] = 9;
    cases.push(("version", version, "format 9"));
    let mut flipped = good.clone();
    let last = flipped.len() - 7;
    flipped[last] ^= 0x40;
    cases.push(("flipped byte", flipped, "checksum"));
    let text = String::from_utf8_lossy(&good[28..28 + hlen]).into_owned();
    let fp = &model.info.fingerprint;
    let other = text.replacen(fp.as_str(), &"0".repeat(fp.len()), 1);
    cases.push(("other model", [&good[..28], other.as_bytes(), &good[28 + hlen..]].concat(), "not this one"));
    let junk = text.replacen("\"messages\"", "\"messagez\"", 1);
    cases.push(("bad header", [&good[..28], junk.as_bytes(), &good[28 + hlen..]].concat(), "header"));

    for (name, bytes, want) in &cases {
        let p = dir.path().join(format!("{}.session", name.replace(' ', "_")));
        std::fs::write(&p, bytes).unwrap();
        let err = v.load(&p).expect_err(name).to_string();
        assert!(err.contains(p.to_str().unwrap()) && err.contains(want), "{name}: {err}");
        assert_eq!(
            (v.session.n_live(), v.session.next_pos(), v.messages().to_vec()),
            before,
            "{name}: the conversation changed"
        );
    }
    let missing = v.load(&dir.path().join("nope.session")).unwrap_err().to_string();
    assert!(missing.contains("nope.session"), "{missing}");

    // A cache of another type, and a context too small for the saved cells.
    let mut q = conversation(&model, &SessionConfig { type_k: GgmlType::Q8_0, ..cfg(512) });
    let err = q.load(&path).unwrap_err().to_string();
    assert!(err.contains("-ctk f16"), "{err}");
    let mut small = conversation(&model, &cfg(16));
    let err = small.load(&path).unwrap_err().to_string();
    assert!(err.contains("-c "), "{err}");
    // The victim still works.
    let opts = GenerateOptions { n_predict: Some(4), sampling: SamplingParams::greedy(), ..GenerateOptions::default() };
    v.reply(&opts, &mut |_| true).unwrap();
}

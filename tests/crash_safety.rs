//! Crash safety: `decache chat` is killed with SIGKILL at 50 random points
//! while it generates, saves its session over the same file and writes its
//! transcript. After every kill the saved session is either the previous
//! complete one or the new complete one (it loads, and the conversation
//! goes on), and the transcript reads back with at most its last line torn
//! and replays bit-exact up to there.
mod common;
use decache::model::{LoadOptions, Model};
use decache::session::conversation::Conversation;
use decache::session::policy::DecachePolicy;
use decache::session::segments::SegmentKind;
use decache::session::{Session, SessionConfig};
use decache::tokenizer::ChatTemplate;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KILLS: usize = 50;

#[test]
fn sigkill_at_random_points_never_corrupts_a_saved_session_or_a_transcript() {
    let m = common::smollm2();
    let model = Arc::new(Model::load(&m, &LoadOptions::default()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("chat.session");
    let mut seed = 0x5eed_u64;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let (mut loaded, mut torn, mut replayed_tokens) = (0, 0, 0);
    for i in 0..KILLS {
        let t = dir.path().join(format!("t{i}.jsonl"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_decache"))
            .args(["chat", "-m", m.to_str().unwrap(), "-c", "512", "-t", "2", "-n", "12", "--temp", "0.8"])
            .args(["--transcript", t.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        {
            let mut stdin = child.stdin.take().unwrap();
            for k in 0..6 {
                writeln!(stdin, "Name a colour and a number, round {i}.{k}.").unwrap();
                writeln!(stdin, "/save {}", save.display()).unwrap();
            }
            // stdin stays open: the chat waits for more instead of exiting.
            std::mem::forget(stdin);
        }
        let wait = Duration::from_millis(150 + next(2500));
        let t0 = Instant::now();
        while t0.elapsed() < wait && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // The session file is complete or absent: never half-written.
        if save.exists() {
            let cfg = SessionConfig { n_ctx: 512, n_threads: 2, ..SessionConfig::default() };
            let template = ChatTemplate::new(model.tokenizer.chat_template().unwrap()).unwrap();
            let mut conv = Conversation::new(Session::new(model.clone(), cfg).unwrap(), template, DecachePolicy::default());
            conv.load(&save).unwrap_or_else(|e| panic!("kill {i}: the saved session does not load: {e}"));
            conv.push("user", "And one more?", SegmentKind::User).unwrap_or_else(|e| panic!("kill {i}: the loaded conversation cannot go on: {e}"));
            loaded += 1;
        }
        // The transcript reads back (a torn last line is reported, not trusted) and replays.
        // (Killed before its header: an empty file, which a read reports.)
        if std::fs::metadata(&t).is_ok_and(|m| m.len() > 0) {
            let tr = decache::transcript::read(&t).unwrap_or_else(|e| panic!("kill {i}: {e}"));
            torn += usize::from(tr.torn);
            let o = Command::new(env!("CARGO_BIN_EXE_decache")).args(["replay", t.to_str().unwrap()]).output().unwrap();
            let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            assert!(o.status.success() && out.contains("all bit-exact"), "kill {i}: {out}");
            replayed_tokens += out.split(" tokens, all").next().and_then(|p| p.rsplit(' ').next()).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
        }
    }
    eprintln!("{KILLS} kills: the session file loaded after {loaded}; {torn} transcripts had a torn last line; {replayed_tokens} tokens replayed bit-exact");
    assert!(loaded >= 10, "the kills should land after some saves ({loaded})");
    assert!(replayed_tokens > 100, "the kills should land after some generation ({replayed_tokens})");
}

//! Crash safety: `decache chat` is killed with SIGKILL at 50 random points
//! while it generates, saves its session over the same file and writes its
//! transcript. After every kill the saved session is either the previous
//! complete one or the new complete one (it loads, and the conversation
//! goes on), and the transcript reads back with at most its last line torn
//! and replays bit-exact up to there. Then `decache agent` and `decache
//! serve` are killed 50 times between them: the files the agent writes are
//! always a whole version, its session log reads back and resumes, every
//! transcript reads back, and every server's (and every fourth agent's)
//! replays bit-exact; a restarted server never overwrites the transcripts
//! of the one before.
mod common;
#[path = "common/http.rs"]
mod http;
use decache::context::policy::DecachePolicy;
use decache::context::segments::SegmentKind;
use decache::model::{LoadOptions, Model};
use decache::session::conversation::Conversation;
use decache::session::{Session, SessionConfig};
use decache::tokenizer::ChatTemplate;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kills per test: 20 in the README's test command, more with
/// `DECACHE_CRASH_KILLS` (`make crash-soak` runs 100).
fn kills() -> usize {
    std::env::var("DECACHE_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

#[test]
fn sigkill_at_random_points_never_corrupts_a_saved_session_or_a_transcript() {
    let m = common::smollm2();
    let model = Arc::new(Model::load(&m, &LoadOptions::default()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("chat.session");
    let mut next = lcg(0x5eed);
    let (mut loaded, mut torn, mut replayed_tokens) = (0, 0, 0);
    for i in 0..kills() {
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
        // Kill after a random count of generated tokens (0: during start-up
        // or the first prefill), then a random moment more: where the kill
        // lands follows the work done, not the wall clock (a loaded machine
        // would otherwise kill every chat before it generates anything).
        let want = next(40) as usize;
        let t0 = Instant::now();
        while tokens_written(&t) < want
            && t0.elapsed() < Duration::from_secs(120)
            && child.try_wait().unwrap().is_none()
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_after(&mut child, Duration::from_millis(next(300)));

        // The session file is complete or absent: never half-written.
        if save.exists() {
            let cfg = SessionConfig { n_ctx: 512, n_threads: 2, ..SessionConfig::default() };
            let template = ChatTemplate::new(model.tokenizer.chat_template().unwrap()).unwrap();
            let mut conv =
                Conversation::new(Session::new(model.clone(), cfg).unwrap(), template, DecachePolicy::default());
            conv.load(&save).unwrap_or_else(|e| panic!("kill {i}: the saved session does not load: {e}"));
            conv.push("user", "And one more?", SegmentKind::User)
                .unwrap_or_else(|e| panic!("kill {i}: the loaded conversation cannot go on: {e}"));
            loaded += 1;
        }
        let (t_torn, tokens) = check_transcript(&format!("chat kill {i}"), &t, true);
        torn += t_torn;
        replayed_tokens += tokens;
    }
    let n = kills();
    eprintln!("{n} kills: the session file loaded after {loaded}; {torn} transcripts had a torn last line; {replayed_tokens} tokens replayed bit-exact");
    assert!(loaded >= n / 5, "the kills should land after some saves ({loaded} of {n})");
    assert!(replayed_tokens > 100, "the kills should land after some generation ({replayed_tokens})");
}

/// Tokens a transcript being written holds so far.
fn tokens_written(t: &Path) -> usize {
    std::fs::read_to_string(t).map_or(0, |s| s.matches("\"type\":\"token\"").count())
}

/// A small deterministic random source: `next(n)` is in `0..n`.
fn lcg(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    }
}

/// A transcript left by a killed writer reads back (a torn last line is
/// reported, not trusted) and, if `replay`, replays bit-exact. Returns
/// (torn lines, tokens replayed). Killed before its header, a transcript is
/// empty.
fn check_transcript(what: &str, t: &Path, replay: bool) -> (usize, usize) {
    if !std::fs::metadata(t).is_ok_and(|m| m.len() > 0) {
        return (0, 0);
    }
    let tr = decache::transcript::read(t).unwrap_or_else(|e| panic!("{what}: {e}"));
    if !replay {
        return (usize::from(tr.torn), 0);
    }
    let o = Command::new(env!("CARGO_BIN_EXE_decache")).args(["replay", t.to_str().unwrap()]).output().unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && out.contains("all bit-exact"), "{what}: {out}");
    let tokens = out
        .split(" tokens, all")
        .next()
        .and_then(|p| p.rsplit(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    (usize::from(tr.torn), tokens)
}

/// Waits a random while (or until the child exits), then SIGKILLs it.
fn kill_after(child: &mut Child, wait: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < wait && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The versions of `notes.txt` the scripted agent writes, in order.
fn note_versions() -> Vec<String> {
    let v = |tag: &str| (0..60).map(|i| format!("{tag} line {i}\n")).collect::<String>();
    vec![v("original"), v("first"), v("second")]
}

fn tool_call(name: &str, args: serde_json::Value) -> String {
    format!("<tool_call>\n{}\n</tool_call>", serde_json::json!({"name": name, "arguments": args}))
}

fn agent(root: &Path, script: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_decache"));
    c.args([
        "agent",
        root.to_str().unwrap(),
        "-m",
        common::tiny_smollm2().to_str().unwrap(),
        "-c",
        "4096",
        "-t",
        "2",
        "--yes",
    ])
    .args(["--script", script.to_str().unwrap()])
    .args(extra)
    .stdin(Stdio::null());
    c
}

/// SIGKILLs at random points of the agent (scripted replies that write,
/// edit and run commands; the kill falls anywhere in the time a whole run
/// takes, measured first) and of the server (a client sending requests,
/// streamed and not), alternating, 50 in all.
#[test]
fn sigkill_of_agent_and_server_never_corrupts_files_logs_or_transcripts() {
    // Scripted agent replies and short server replies: a random-weight model
    // with SmolLM2's vocabulary makes each run (and each replay) quick, so
    // the kills land at as many points of a whole run in less time.
    let m = common::tiny_smollm2();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("proj");
    std::fs::create_dir_all(&root).unwrap();
    let versions = note_versions();
    std::fs::write(root.join("notes.txt"), &versions[0]).unwrap();
    let script = dir.path().join("script.txt");
    let replies = [
        tool_call("write_file", serde_json::json!({"path": "notes.txt", "content": versions[1]})),
        tool_call("run_command", serde_json::json!({"command": "wc -l notes.txt"})),
        tool_call(
            "edit_file",
            serde_json::json!({"path": "notes.txt", "old_string": "first", "new_string": "second", "replace_all": true}),
        ),
        tool_call("read_file", serde_json::json!({"path": "notes.txt", "limit": 5})),
        "The notes are rewritten.".to_string(),
    ];
    std::fs::write(&script, replies.join("\n---\n")).unwrap();

    // One whole run: what it does, and how long it takes here.
    let t0 = Instant::now();
    let o = agent(&root, &script, &["-p", "Rewrite the notes."]).output().unwrap();
    let whole = t0.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(root.join("notes.txt")).unwrap(), versions[2]);

    let tdir = dir.path().join("served");
    let mut next = lcg(0xa9e7);
    let mut seen = [0usize; 3];
    let (mut server_kills, mut torn, mut served_tokens) = (0, 0, 0);
    let mut served: std::collections::HashMap<std::path::PathBuf, u64> = Default::default();
    for i in 0..kills() {
        if i % 2 == 0 {
            std::fs::write(root.join("notes.txt"), &versions[0]).unwrap();
            let t = dir.path().join(format!("agent{i}.jsonl"));
            let mut child = agent(&root, &script, &["--transcript", t.to_str().unwrap(), "-p", "Rewrite the notes."])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            kill_after(&mut child, Duration::from_millis(next(whole.as_millis() as u64 * 6 / 5 + 1)));
            // The user's file is one whole version, never a torn one.
            let now = std::fs::read_to_string(root.join("notes.txt")).unwrap();
            let v = versions.iter().position(|v| *v == now);
            seen[v.unwrap_or_else(|| panic!("agent kill {i}: notes.txt is torn ({} bytes)", now.len()))] += 1;
            // The session log reads back (only a torn last line is skipped).
            if let Some(log) = decache::agent::log::latest(&root) {
                decache::agent::log::read(&log).unwrap_or_else(|e| panic!("agent kill {i}: {e}"));
            }
            // Replaying re-prefills the whole run: every fourth one is enough.
            torn += check_transcript(&format!("agent kill {i}"), &t, i % 8 == 0).0;
        } else {
            let s = http::Server::start(&[
                "-m",
                m.to_str().unwrap(),
                "-c",
                "1024",
                "-t",
                "2",
                "--transcripts",
                tdir.to_str().unwrap(),
            ]);
            let addr = s.addr.clone();
            std::thread::spawn(move || {
                for k in 0.. {
                    let body = serde_json::json!({
                        "messages": [{"role": "user", "content": format!("Count to {k}.")}],
                        "max_tokens": 16, "temperature": 0.7, "stream": k % 2 == 0,
                    })
                    .to_string();
                    let req = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    let Ok(mut c) = std::net::TcpStream::connect(&addr) else { break };
                    if c.write_all(req.as_bytes()).is_err() || c.read_to_end(&mut Vec::new()).is_err() {
                        break;
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(next(3000)));
            drop(s); // SIGKILL
            server_kills += 1;
            // Every server writes its own files into the same folder: none of
            // the earlier ones is overwritten, each still replays.
            let files: Vec<_> =
                std::fs::read_dir(&tdir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
            assert!(files.len() >= served.len(), "server kill {i}: transcripts of earlier servers are gone");
            for f in files {
                let len = std::fs::metadata(&f).unwrap().len();
                match served.get(&f) {
                    Some(&before) => {
                        assert_eq!(before, len, "server kill {i}: {} was written by two servers", f.display())
                    }
                    None => {
                        let (t_torn, tokens) = check_transcript(&format!("server kill {i}: {}", f.display()), &f, true);
                        torn += t_torn;
                        served_tokens += tokens;
                        served.insert(f, len);
                    }
                }
            }
        }
    }
    // After all that the agent resumes its last logged session and finishes.
    std::fs::write(&script, "Done before.").unwrap();
    let o = agent(&root, &script, &["--resume", "-p", "What did you do?"]).output().unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && out.contains("resumed") && out.contains("Done before."), "{out}");
    eprintln!(
        "a whole agent run took {whole:.1?}; {} agent kills left notes.txt original/first/second {seen:?}; {server_kills} server kills; \
         {torn} torn last lines; {} server transcripts, {served_tokens} generated tokens replayed bit-exact",
        kills() - server_kills,
        served.len()
    );
    assert!(served_tokens > 50, "the server kills should land after some generation ({served_tokens})");
}

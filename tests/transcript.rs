//! Transcripts: what `run`, `chat` and `agent` write with `--transcript`
//! replays bit-exact (`decache replay`), decaching included; a corrupted
//! line is an error naming it, a torn last line is reported and left out;
//! and a writer killed with SIGKILL mid-generation leaves a transcript that
//! is intact up to its last flushed line and replays.
mod common;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn decache(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_decache")).args(args).output().expect("run decache")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn replay(t: &Path) -> Output {
    decache(&["replay", t.to_str().unwrap()])
}

fn lines(t: &Path) -> Vec<String> {
    std::fs::read_to_string(t).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn run_chat_and_agent_transcripts_replay_bit_exact() {
    let m = common::smollm2();
    let m = m.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();

    let t = dir.path().join("run.jsonl");
    let o = decache(&["run", "-m", m, "-p", "Write a haiku about the sea", "-n", "32", "--temp", "0.8", "-t", "2", "--transcript", t.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let r = replay(&t);
    assert!(r.status.success() && text(&r).contains("32 tokens, all bit-exact"), "{}", text(&r));

    // A chat through a small cache: replies sampled with a random seed, and decaching.
    let t = dir.path().join("chat.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_decache"))
        .args(["chat", "-m", m, "-c", "512", "-t", "2", "-n", "48", "--temp", "0.7", "--transcript", t.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for i in 1..=7 {
            writeln!(stdin, "Tell me something about the number {i}, in detail.").unwrap();
        }
        writeln!(stdin, "/exit").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let l = lines(&t);
    let removes = l.iter().filter(|l| l.contains("\"type\":\"remove\"")).count();
    let reasons = l.iter().filter(|l| l.contains("\"note\":\"decache\"") && l.contains("\"reason\"")).count();
    assert!(removes > 0 && reasons == removes, "{removes} removals, {reasons} decache notes with a reason");
    let r = replay(&t);
    assert!(r.status.success() && text(&r).contains("7 generations") && text(&r).contains("all bit-exact"), "{}", text(&r));

    // The agent, with a scripted model and a real command.
    let root = dir.path().join("proj");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.txt"), "alpha\nbeta\n").unwrap();
    let script = dir.path().join("s.txt");
    std::fs::write(&script, "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"a.txt\"}}\n</tool_call>\n---\nIt has two lines.\n").unwrap();
    let t = dir.path().join("agent.jsonl");
    let o = decache(&["agent", root.to_str().unwrap(), "-m", m, "-c", "2048", "-t", "2", "--script", script.to_str().unwrap(), "-p", "Read a.txt",
        "--transcript", t.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let r = replay(&t);
    assert!(r.status.success() && text(&r).contains("all bit-exact"), "{}", text(&r));
    assert!(lines(&t).iter().any(|l| l.contains("\"note\":\"segment\"") && l.contains("FileRead")), "segments are annotated");

    // Corrupted inside: an error naming the line. Torn at the end: reported, left out.
    let l = lines(&t);
    let mut bad = l.clone();
    bad[3] = "{\"type\": \"eval\", \"tokens\": [1, 2".into();
    let tb = dir.path().join("bad.jsonl");
    std::fs::write(&tb, bad.join("\n") + "\n").unwrap();
    let r = replay(&tb);
    assert!(!r.status.success() && text(&r).contains("bad.jsonl line 4: not JSON"), "{}", text(&r));
    let mut wrong = l.clone();
    wrong[2] = "{\"type\": \"remove\", \"p0\": 5, \"policy\": \"keep\"}".into();
    std::fs::write(&tb, wrong.join("\n") + "\n").unwrap();
    let r = replay(&tb);
    assert!(!r.status.success() && text(&r).contains("line 3: 'remove' needs \"p1\""), "{}", text(&r));
    let all = std::fs::read_to_string(&t).unwrap();
    std::fs::write(&tb, &all[..all.len() - 7]).unwrap();
    let r = replay(&tb);
    assert!(text(&r).contains("last line was cut short"), "{}", text(&r));
}

#[test]
fn a_writer_killed_mid_generation_leaves_a_replayable_transcript() {
    let m = common::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("killed.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_decache"))
        .args(["run", "-m", m.to_str().unwrap(), "-p", "Once upon a time", "-n", "3000", "--ignore-eos", "--temp", "0.9", "-c", "4096", "-t", "2"])
        .args(["--transcript", t.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::fs::read_to_string(&t).map_or(0, |s| s.matches("\"type\":\"token\"").count()) < 60 {
        assert!(t0.elapsed() < Duration::from_secs(120), "the transcript did not grow");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let s = std::fs::read_to_string(&t).unwrap();
    let tokens = s.matches("\"type\":\"token\"").count();
    assert!(!s.contains("generate_end"), "the generation was still running");
    let r = replay(&t);
    let out = text(&r);
    assert!(r.status.success(), "{out}");
    let replayed: usize = out.split(" tokens, all bit-exact").next().and_then(|p| p.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    eprintln!("killed after {tokens} token lines; replayed {replayed} tokens bit-exact");
    assert!(replayed + 1 >= tokens && replayed >= 60, "{out}");
}

#[test]
fn shipped_transcripts_replay_bit_exact() {
    // Made with the commands in docs/transcript.md ("Shipped transcripts").
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let mut generations = 0;
    for f in &files {
        let r = replay(f);
        let out = text(&r);
        eprintln!("{}: {}", f.file_name().unwrap().to_string_lossy(), out.trim());
        assert!(r.status.success() && out.contains("all bit-exact"), "{}: {out}", f.display());
        generations += out.split(" generations").next().and_then(|p| p.rsplit(' ').next()).and_then(|n| n.parse::<usize>().ok()).unwrap();
    }
    assert!(generations >= 7, "the shipped transcripts hold sampled generations ({generations})");
    let chat = std::fs::read_to_string(dir.join("chat-decaching.jsonl")).unwrap();
    assert!(chat.contains("\"type\":\"remove\"") && chat.contains("\"note\":\"decache\""), "the chat transcript decaches");
}

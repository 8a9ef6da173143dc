//! `decache agent` from the command line: one request with `-p`, read-only
//! mode refusing writes, `--resume` continuing a logged session, and bad
//! setup (a missing folder, a broken `.decache/agent.toml`, a corrupted log)
//! answered with one clear line naming the place and a non-zero exit.
mod common;
use std::path::Path;
use std::process::{Command, Output};

fn agent(dir: &Path, script: &Path, extra: &[&str]) -> Output {
    // Scripted replies: the weights never matter, SmolLM2's vocabulary does.
    let m = common::tiny_smollm2();
    let mut args = vec![
        "agent",
        dir.to_str().unwrap(),
        "-m",
        m.to_str().unwrap(),
        "-c",
        "2048",
        "-t",
        "2",
        "--script",
        script.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_decache")).args(&args).output().expect("run decache")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn read_only_resume_and_bad_setup() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("proj");
    std::fs::create_dir_all(&root).unwrap();
    let script = dir.path().join("s.txt");
    std::fs::write(&script, "<tool_call>\n{\"name\": \"write_file\", \"arguments\": {\"path\": \"out.txt\", \"content\": \"x\"}}\n</tool_call>\n---\nI could not write it.\n").unwrap();

    // Read-only: the write is refused, the model is told, the session ends normally.
    let o = agent(&root, &script, &["--read-only", "-p", "Write out.txt"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("write_file is not allowed: the agent runs in read-only mode"), "{}", text(&o));
    assert!(text(&o).contains("I could not write it."));
    assert!(!root.join("out.txt").exists());

    // With --yes the same script writes; a second run resumes the logged session.
    let o = agent(&root, &script, &["--yes", "-p", "Write out.txt"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(root.join("out.txt")).unwrap(), "x");
    let logs: Vec<_> = std::fs::read_dir(root.join(".decache/sessions")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(logs.len(), 2, "one log per session");
    std::fs::write(dir.path().join("s2.txt"), "Done before.\n").unwrap();
    let o = agent(&root, &dir.path().join("s2.txt"), &["--resume", "-p", "What did you do?"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("resumed 6 messages from"), "{t}");
    assert!(t.contains("Done before."), "{t}");
    assert_eq!(
        std::fs::read_dir(root.join(".decache/sessions")).unwrap().count(),
        2,
        "the resumed session goes on in its log"
    );

    // Bad setup: one line naming the place, a non-zero exit.
    let o = agent(&dir.path().join("nowhere"), &script, &["-p", "hi"]);
    assert!(!o.status.success() && text(&o).contains("nowhere"), "{}", text(&o));
    std::fs::write(root.join(".decache/agent.toml"), "[[hook]]\nwhen = \"later\"\ntool = \"*\"\ncommand = \"true\"\n")
        .unwrap();
    let o = agent(&root, &script, &["-p", "hi"]);
    assert!(!o.status.success() && text(&o).contains("agent.toml") && text(&o).contains("later"), "{}", text(&o));
    std::fs::remove_file(root.join(".decache/agent.toml")).unwrap();
    let bad = root.join(".decache/sessions/bad.jsonl");
    std::fs::write(&bad, "{\"type\": \"start\"}\nnot json\n{\"type\": \"start\"}\n").unwrap();
    let o = agent(&root, &script, &["--resume", bad.to_str().unwrap(), "-p", "hi"]);
    assert!(!o.status.success() && text(&o).contains("bad.jsonl line 2: not JSON"), "{}", text(&o));
}

//! `decache agent` as a person uses it, in a real terminal (tmux): in a
//! fixture folder, a request that needs a command; the permission prompt is
//! answered; the result, the status line and the answer appear. The replies
//! come from a script (`--script`) so that the model surely asks for the
//! command; every token still goes through the model's cache.
mod common;
#[path = "common/tmux.rs"]
mod tmux;
use std::time::{Duration, Instant};
use tmux::Tmux;

#[test]
fn agent_in_a_terminal_asks_before_a_command_and_shows_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("proj");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("notes.txt"), "one\ntwo\nthree\nfour\n").unwrap();
    let script = dir.path().join("script.txt");
    std::fs::write(
        &script,
        "I will count the lines.\n<tool_call>\n{\"name\": \"run_command\", \"arguments\": {\"command\": \"wc -l notes.txt\"}}\n</tool_call>\n---\n\
         notes.txt has 4 lines.\n",
    )
    .unwrap();
    let cmd = format!(
        "{} agent {} -m {} -c 2048 -t 2 --script {}",
        env!("CARGO_BIN_EXE_decache"),
        root.display(),
        common::smollm2().display(),
        script.display()
    );
    let t = Tmux::start(&format!("decache-agent-{}", std::process::id()), &cmd);
    t.wait("the agent to start", |s| s.contains("decache agent:") && s.contains("> "));
    t.send(&["How many lines does notes.txt have?", "Enter"]);
    let s = t.wait("the permission prompt", |s| {
        s.contains("Allow run_command(command=wc -l notes.txt)? [y]es / [n]o / [a]lways")
    });
    assert!(s.contains("I will count the lines."), "the reply's prose streams before the call:\n{s}");
    assert!(s.contains("● run_command(command=wc -l notes.txt)"), "{s}");
    t.send(&["y", "Enter"]);
    let s = t.wait("the answer and its status line", |s| {
        s.contains("notes.txt has 4 lines.") && s.matches("── live ").count() >= 2
    });
    assert!(s.contains("⎿ exit 0"), "the command's result line:\n{s}");
    assert!(s.contains("4 notes.txt"), "the command's output:\n{s}");
    let status = s.lines().filter(|l| l.contains("── live ") && l.contains("/2048 tokens · step")).count();
    assert!(status >= 2, "a status line after each step:\n{s}");
    t.send(&["/exit", "Enter"]);
    let t0 = Instant::now();
    while t.alive() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!t.alive(), "/exit did not quit");
    let logs = std::fs::read_dir(root.join(".decache/sessions")).unwrap().count();
    assert_eq!(logs, 1, "the session was logged");
}

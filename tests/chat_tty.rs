//! `decache chat` as a person uses it, in a real terminal (tmux): a prompt
//! gets a streamed reply, /context draws the map, /forget removes a segment
//! and /stats shows it, Ctrl-C interrupts a long reply and the prompt comes
//! back, /exit quits.
mod common;
#[path = "common/tmux.rs"]
mod tmux;
use std::time::{Duration, Instant};
use tmux::Tmux;

/// Start `decache chat` with `flags` in a fresh tmux session.
fn start(name: &str, flags: &str) -> Tmux {
    let model = common::smollm2();
    let cmd = format!("{} chat -m {} -c 1024 -t 2 {flags}", env!("CARGO_BIN_EXE_decache"), model.display());
    let t = Tmux::start(&format!("decache-{name}-{}", std::process::id()), &cmd);
    t.wait("the chat to start", |s| s.contains("decache chat:"));
    t
}

fn quit(t: &Tmux) {
    t.send(&["/exit", "Enter"]);
    let t0 = Instant::now();
    while t.alive() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!t.alive(), "/exit did not quit");
}

#[test]
fn chat_in_a_terminal() {
    let t = start("chat", "--temp 0 -n 200 -sys 'You are a helpful assistant.'");

    let count = |s: &str, pat: &str| s.matches(pat).count();
    t.send(&["What is two plus two?", "Enter"]);
    let s = t.wait("the first reply", |s| count(s, "cells live]") == 1);
    let reply = s.split("What is two plus two?").nth(1).unwrap_or("");
    assert!(reply.trim().len() > 5, "no streamed reply:\n{s}");

    t.send(&["/context", "Enter"]);
    let s = t.wait("the context map", |s| s.contains("assistant") && s.contains("/1024 cells live"));
    for row in ["system", "user", "assistant"] {
        assert!(s.contains(row), "/context lacks a {row} row:\n{s}");
    }

    t.send(&["/forget 1", "Enter"]);
    t.wait("the forget notice", |s| s.contains("[forgot") && s.contains("segment 1 (user)"));
    t.send(&["/stats", "Enter"]);
    t.wait("the stats", |s| s.contains("decached:") && s.contains("forgotten on request"));

    t.send(&["Write a very long story about a lighthouse keeper and the sea.", "Enter"]);
    // Let the reply stream a little, then interrupt it.
    t.wait("the long reply to start", |s| s.split("the sea.").nth(1).is_some_and(|r| r.trim().len() > 20));
    t.send(&["C-c"]);
    let s = t.wait("the interrupted reply", |s| s.contains("(interrupted)"));
    assert!(t.alive(), "Ctrl-C ended the program:\n{s}");
    assert!(s.trim_end().ends_with('>'), "the prompt did not come back:\n{s}");

    quit(&t);
}

#[test]
fn regen_set_show_save_load_in_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chat.session");
    let t = start("cmds", "--temp 0 -n 24 -sys 'You are a helpful assistant.'");
    let count = |s: &str, pat: &str| s.matches(pat).count();
    t.send(&["Name a fruit.", "Enter"]);
    let s = t.wait("the first reply", |s| count(s, "cells live]") == 1);
    let first = s.split("Name a fruit.").nth(1).unwrap().split('[').next().unwrap().trim().to_string();
    assert!(first.len() > 2, "no reply:\n{s}");

    t.send(&["/regen", "Enter"]);
    let s = t.wait("the regenerated reply", |s| count(s, "cells live]") == 2);
    assert_eq!(count(&s, &first), 2, "greedy /regen should say the same again:\n{s}");
    let lives: Vec<&str> =
        s.lines().filter(|l| l.contains("cells live]")).map(|l| l.rsplit("; ").next().unwrap()).collect();
    assert_eq!(lives[0], lives[1], "/regen replaced the reply instead of adding one:\n{s}");

    t.send(&["/set temp 0.5", "Enter"]);
    t.wait("the set notice", |s| s.contains("(set temp = 0.5)"));
    t.send(&["/set decache-to 95", "Enter"]);
    t.wait("the refusal", |s| s.contains("must be below decache-at"));
    t.send(&["/show parameters", "Enter"]);
    t.wait("the parameters", |s| s.contains("temp 0.5  top-k 40") && s.contains("decache-at 90%  decache-to 70%"));
    t.send(&["/show template", "Enter"]);
    t.wait("the template", |s| s.contains("im_start"));

    t.send(&[&format!("/save {}", file.display()), "Enter"]);
    t.wait("the save notice", |s| s.contains("(saved ") && s.contains("chat.session"));
    t.send(&["/clear", "Enter"]);
    t.wait("the clear notice", |s| s.contains("(context cleared)"));
    t.send(&["/context", "Enter"]);
    let s = t.wait("the empty map", |s| count(s, "cells live, next position") == 1);
    let after_clear = s.rsplit("cells live, next position").next().unwrap();
    assert!(!after_clear.contains("assistant"), "/clear left a reply:\n{s}");
    t.send(&[&format!("/load {}", file.display()), "Enter"]);
    t.wait("the load notice", |s| s.contains("(loaded ") && s.contains("3 messages"));
    t.send(&["/context", "Enter"]);
    let s = t.wait("the loaded map", |s| count(s, "cells live, next position") == 2);
    assert!(s.rsplit("(loaded ").next().unwrap().contains("assistant"), "the loaded context has no reply:\n{s}");
    t.send(&["/forget assistant", "Enter"]);
    t.wait("the forget notice", |s| s.contains("(assistant): forgotten on request]"));
    t.send(&["/forget nonsense", "Enter"]);
    t.wait("the refusal", |s| s.contains("'nonsense' is neither"));
    quit(&t);
}

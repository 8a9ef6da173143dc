//! A program in a real terminal: a detached tmux session, keys sent to it,
//! its screen read back.
#![allow(dead_code)]
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Tmux(pub String);

impl Tmux {
    /// Run `cmd` in a new detached session `name` (200x60).
    pub fn start(name: &str, cmd: &str) -> Tmux {
        let t = Tmux(name.to_string());
        let st = Command::new("tmux").args(["new-session", "-d", "-s", &t.0, "-x", "200", "-y", "60", cmd]).status();
        assert!(st.map(|s| s.success()).unwrap_or(false), "tmux is needed for this test (make deps installs it)");
        t
    }

    pub fn tmux(&self, args: &[&str]) -> String {
        let out =
            Command::new("tmux").args(args).output().expect("tmux is needed for this test (make deps installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.0.as_str()];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-S", "-500", "-t", &self.0])
    }

    /// Wait until the screen satisfies `ok` (120 s at most: CI machines may be loaded).
    pub fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "timed out waiting for {what}; screen:\n{s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn alive(&self) -> bool {
        Command::new("tmux").args(["has-session", "-t", &self.0]).status().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).status();
    }
}

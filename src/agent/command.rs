//! `run_command`: a shell command in the project folder, with a timeout,
//! its output (stdout and stderr together) captured with head and tail
//! kept under a cap, and a cancel flag (Ctrl-C) that kills it and its
//! children. No process a command started outlives it: when it ends, its
//! process group and every process carrying its job mark are killed
//! (`sweep`), whether they stayed in the group or not.
use super::sweep;
use super::tools::{arg_str, opt_u64, Limits, ToolError, ToolOutput};
use super::workspace::Workspace;
use crate::context::segments::SegmentKind;
use serde_json::Value;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Output kept from a command: the first half of the cap, and a rolling
/// last half; the bytes between are counted.
#[derive(Default)]
struct Capture {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    dropped: usize,
    cap: usize,
}

impl Capture {
    fn push(&mut self, mut bytes: &[u8]) {
        let half = self.cap / 2;
        if self.head.len() < half {
            let n = (half - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        self.tail.extend(bytes);
        while self.tail.len() > half {
            self.tail.pop_front();
            self.dropped += 1;
        }
    }

    fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            s.push_str(&format!("\n[… {} bytes of output cut …]\n", self.dropped));
        }
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        s.push_str(&String::from_utf8_lossy(&tail));
        s
    }
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Exit(Option<i32>),
    TimedOut,
    Cancelled,
}

/// A finished shell command: its captured output and how it ended.
pub struct Shell {
    pub output: String,
    pub end: End,
    pub secs: f64,
}

/// Run `command` with `sh -c` in `dir`, with `env` added, for at most
/// `timeout`, keeping at most `cap` bytes of output (head and tail).
pub fn shell(
    dir: &std::path::Path,
    command: &str,
    env: &[(&str, String)],
    timeout: Duration,
    cap: usize,
    cancel: &AtomicBool,
) -> Result<Shell, ToolError> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("exec 2>&1\n{command}"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let mark = sweep::new_mark();
    cmd.env(sweep::MARK_VAR, &mark);
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start sh: {e}"))?;
    let running = sweep::Running::new(child.id());
    let capture = Arc::new(Mutex::new(Capture { cap, ..Capture::default() }));
    let reader = child.stdout.take().map(|mut out| {
        let capture = capture.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                capture.lock().unwrap_or_else(|e| e.into_inner()).push(&buf[..n]);
            }
        })
    });
    let t0 = Instant::now();
    let end = loop {
        match child.try_wait() {
            Ok(Some(status)) => break End::Exit(status.code()),
            Ok(None) => {}
            Err(e) => {
                kill_group(&mut child);
                return Err(format!("waiting for the command: {e}").into());
            }
        }
        if cancel.load(Ordering::Relaxed) {
            break End::Cancelled;
        }
        if t0.elapsed() >= timeout {
            break End::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Whatever ended it, nothing it started stays behind.
    kill_group(&mut child);
    drop(running);
    sweep::kill_marked(&mark, 200);
    sweep::kill_adopted();
    // Children that outlive the shell may hold the pipe open: give the reader a moment.
    if let Some(r) = reader {
        let t = Instant::now();
        while !r.is_finished() && t.elapsed() < Duration::from_millis(500) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let output = capture.lock().unwrap_or_else(|e| e.into_inner()).text();
    Ok(Shell { output, end, secs: t0.elapsed().as_secs_f64() })
}

pub fn run_command(ws: &Workspace, limits: &Limits, a: &Value, cancel: &AtomicBool) -> Result<ToolOutput, ToolError> {
    let command = arg_str(a, "command")?;
    if command.trim().is_empty() {
        return Err("the command is empty".into());
    }
    let timeout =
        opt_u64(a, "timeout_secs")?.map_or(limits.command_timeout, Duration::from_secs).min(limits.max_timeout);
    let Shell { output, end, secs } = shell(ws.root(), command, &[], timeout, limits.max_output_bytes, cancel)?;
    let (status, passed, summary) = match end {
        End::Exit(Some(c)) => (format!("[exit code {c}]"), Some(c == 0), format!("exit {c} in {secs:.1} s")),
        End::Exit(None) => ("[killed by a signal]".to_string(), Some(false), "killed by a signal".to_string()),
        End::TimedOut => (
            format!("[timed out after {} s; the command was killed]", timeout.as_secs_f64()),
            None,
            format!("timed out after {} s", timeout.as_secs_f64()),
        ),
        End::Cancelled => {
            ("[interrupted by the user; the command was killed]".to_string(), None, "interrupted".to_string())
        }
    };
    let body = if output.trim().is_empty() { String::new() } else { format!("{}\n", output.trim_end()) };
    Ok(ToolOutput {
        text: format!("$ {command}\n{body}{status}"),
        kind: SegmentKind::CommandOutput { passed },
        summary,
        wrote: None,
    })
}

/// Kill the command and its process group (the members that stayed in it).
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(child.id()) {
        // The command leads its own process group (see `shell`).
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn capture_keeps_head_and_tail() {
        let mut c = Capture { cap: 10, ..Capture::default() };
        c.push(b"0123456789abcdefghij");
        assert_eq!(c.text(), "01234\n[… 10 bytes of output cut …]\nfghij");
    }

    #[test]
    fn commands_run_in_the_folder_with_exit_codes_timeouts_and_caps() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::new(dir.path()).unwrap();
        let limits =
            Limits { command_timeout: Duration::from_millis(300), max_output_bytes: 1000, ..Limits::default() };
        let no = AtomicBool::new(false);
        let out = run_command(&ws, &limits, &json!({"command": "pwd; echo oops >&2; exit 3"}), &no).unwrap();
        assert!(out.text.contains(dir.path().canonicalize().unwrap().to_str().unwrap()), "{}", out.text);
        assert!(out.text.contains("oops") && out.text.ends_with("[exit code 3]"), "{}", out.text);
        assert_eq!(out.kind, SegmentKind::CommandOutput { passed: Some(false) });
        let t0 = Instant::now();
        let out = run_command(&ws, &limits, &json!({"command": "sleep 30 & sleep 30"}), &no).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5), "the timeout did not stop it");
        assert!(out.text.contains("timed out"), "{}", out.text);
        let out = run_command(&ws, &limits, &json!({"command": "yes line | head -c 1000000"}), &no).unwrap();
        assert!(out.text.len() < 1200 && out.text.contains("bytes of output cut"), "{}", out.text.len());
        let stop = AtomicBool::new(true);
        let out = run_command(&ws, &limits, &json!({"command": "sleep 30"}), &stop).unwrap();
        assert!(out.text.contains("interrupted"), "{}", out.text);
        assert!(run_command(&ws, &limits, &json!({"command": 5}), &no).unwrap_err().0.contains("must be a string"));
    }
}

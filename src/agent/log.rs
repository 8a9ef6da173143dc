//! The agent's session log: one JSON object a line, flushed as it happens,
//! under `.decache/sessions/` in the project folder. `--resume` reads it
//! back. Entries (field `type`):
//!
//! - `start`: `{"type": "start", "version": 1, "model": …, "n_ctx": …}`
//! - `message`: `{"type": "message", "role": …, "content": …, "kind": …}`:
//!   everything that entered the context, in order (`kind` is the segment kind)
//! - `call`: `{"type": "call", "name": …, "arguments": …, "ok": …, "summary": …}`
//! - `decache`: `{"type": "decache", "turn", "segment", "kind", "p0", "p1", "cells", "reason"}`
//! - `todos`: `{"type": "todos", "items": […]}`
//!
//! A line that does not parse is an error naming the file and line, except
//! a last line cut short (the writer was killed mid-write), which is skipped.
use super::tools::Todo;
use crate::context::segments::SegmentKind;
use crate::session::conversation::DecacheEvent;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct SessionLog {
    path: PathBuf,
    file: std::fs::File,
}

/// A message as logged.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Logged {
    pub role: String,
    pub content: String,
    pub kind: SegmentKind,
}

/// What a log holds for `--resume`.
#[derive(Debug, Default)]
pub struct Resumed {
    pub messages: Vec<Logged>,
    pub todos: Vec<Todo>,
    /// A torn last line was skipped.
    pub torn: bool,
}

impl SessionLog {
    /// A new log in `root/.decache/sessions/`, named by the time.
    pub fn create(root: &Path) -> Result<SessionLog, String> {
        let dir = root.join(".decache").join("sessions");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let stamp = crate::tokenizer::strftime_now("%Y%m%d-%H%M%S".into());
        let mut path = dir.join(format!("{stamp}.jsonl"));
        let mut n = 1;
        while path.exists() {
            n += 1;
            path = dir.join(format!("{stamp}-{n}.jsonl"));
        }
        SessionLog::append_to(&path)
    }

    /// Go on writing the log at `path` (after `--resume`).
    pub fn append_to(path: &Path) -> Result<SessionLog, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(SessionLog { path: path.to_path_buf(), file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write one entry and flush it. A failed write is reported once by the
    /// caller; the session goes on.
    pub fn write(&mut self, v: &Value) -> std::io::Result<()> {
        let mut line = v.to_string();
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()
    }
}

/// The `message` entry of something that entered the context.
pub fn message_entry(role: &str, content: &str, kind: &SegmentKind) -> Value {
    json!({"type": "message", "role": role, "content": content, "kind": kind})
}

/// The `decache` entry of a deletion.
pub fn decache_entry(e: &DecacheEvent) -> Value {
    json!({"type": "decache", "turn": e.turn, "segment": e.segment, "kind": e.kind, "p0": e.p0, "p1": e.p1,
        "cells": e.cells, "reason": e.reason.name()})
}

/// The newest log under `root/.decache/sessions/`.
pub fn latest(root: &Path) -> Option<PathBuf> {
    let dir = root.join(".decache").join("sessions");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    logs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    logs.pop()
}

/// Read a log back.
pub fn read(path: &Path) -> Result<Resumed, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Resumed::default();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: String| format!("{} line {}: {msg}", path.display(), i + 1);
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) if i + 1 == lines.len() && !complete => {
                out.torn = true;
                break;
            }
            Err(e) => return Err(at(format!("not JSON ({e})"))),
        };
        match v.get("type").and_then(Value::as_str) {
            Some("message") => {
                out.messages.push(serde_json::from_value(v).map_err(|e| at(format!("a bad message entry: {e}")))?)
            }
            Some("todos") => {
                out.todos =
                    serde_json::from_value(v["items"].clone()).map_err(|e| at(format!("a bad todos entry: {e}")))?;
            }
            Some("start" | "call" | "decache") => {}
            Some(t) => return Err(at(format!("unknown entry type '{t}'"))),
            None => return Err(at("an entry without a type".into())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_read_back_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SessionLog::create(dir.path()).unwrap();
        log.write(&json!({"type": "start", "version": 1})).unwrap();
        log.write(&message_entry("user", "hi", &SegmentKind::User)).unwrap();
        log.write(&message_entry("tool", "a.rs:\nfn a() {}", &SegmentKind::FileRead { path: "a.rs".into() })).unwrap();
        let path = log.path().to_path_buf();
        assert_eq!(latest(dir.path()).as_deref(), Some(path.as_path()));
        let r = read(&path).unwrap();
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[1].kind, SegmentKind::FileRead { path: "a.rs".into() });
        // Killed mid-write: the torn last line is skipped.
        std::fs::write(&path, format!("{}{{\"type\": \"mess", std::fs::read_to_string(&path).unwrap())).unwrap();
        let r = read(&path).unwrap();
        assert!(r.torn && r.messages.len() == 2);
        // Corruption inside is an error naming the line.
        let text = std::fs::read_to_string(&path).unwrap().replacen("\"role\"", "\"rolex\"", 1);
        std::fs::write(&path, text).unwrap();
        let e = read(&path).unwrap_err();
        assert!(e.contains("line 2") && e.contains("bad message"), "{e}");
    }
}

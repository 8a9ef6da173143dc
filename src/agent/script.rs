//! A scripted model for tests and demos (`decache agent --script FILE`):
//! the assistant's replies come from a list instead of being sampled, but
//! they go through the same conversation, so every token is evaluated into
//! the cache and decached like a real reply.
use super::Responder;
use crate::context::segments::SegmentKind;
use crate::error::{Error, Result};
use crate::session::conversation::{Conversation, DecacheEvent};
use std::collections::VecDeque;
use std::path::Path;

pub struct Scripted {
    replies: VecDeque<String>,
}

impl Scripted {
    pub fn new(replies: impl IntoIterator<Item = String>) -> Scripted {
        Scripted { replies: replies.into_iter().collect() }
    }

    /// Replies from a file, separated by lines holding only `---`.
    pub fn from_file(path: &Path) -> Result<Scripted> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
        let mut replies = Vec::new();
        let mut cur = Vec::new();
        for line in text.lines() {
            if line.trim_end() == "---" {
                replies.push(cur.join("\n"));
                cur.clear();
            } else {
                cur.push(line);
            }
        }
        if !cur.is_empty() {
            replies.push(cur.join("\n"));
        }
        Ok(Scripted::new(replies.into_iter().map(|r| r.trim().to_string())))
    }

    pub fn remaining(&self) -> usize {
        self.replies.len()
    }
}

impl Responder for Scripted {
    fn respond(
        &mut self,
        conv: &mut Conversation,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, Vec<DecacheEvent>)> {
        let text = self.replies.pop_front().unwrap_or_else(|| "(the script has no more replies)".to_string());
        on_text(&text);
        let events = conv.push("assistant", &text, SegmentKind::Assistant)?;
        Ok((text, events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_split_on_dashes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.txt");
        std::fs::write(&f, "one\n---\ntwo\nlines\n---\n").unwrap();
        let s = Scripted::from_file(&f).unwrap();
        assert_eq!(s.replies, ["one", "two\nlines"]);
        assert!(Scripted::from_file(&dir.path().join("none")).is_err());
    }
}

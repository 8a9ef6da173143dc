//! A scripted model for tests and demos (`decache agent --script FILE`):
//! the assistant's replies come from a list instead of being sampled, but
//! they go through the same conversation, so every token is evaluated into
//! the cache and decached like a real reply.
use super::Responder;
use crate::context::segments::SegmentKind;
use crate::error::Result;
use crate::script::{Cue, ReplyScript, NO_MORE};
use crate::session::conversation::{Conversation, DecacheEvent};
use std::path::Path;

pub struct Scripted {
    script: ReplyScript,
}

impl Scripted {
    pub fn new(replies: impl IntoIterator<Item = String>) -> Scripted {
        Scripted { script: ReplyScript::plain(replies) }
    }

    /// Replies from a file (see [`crate::script`]: separated by lines
    /// holding only `---`, with optional `@when` / `@keep` directives).
    pub fn from_file(path: &Path) -> Result<Scripted> {
        Ok(Scripted { script: ReplyScript::from_file(path)? })
    }

    pub fn remaining(&self) -> usize {
        self.script.remaining()
    }
}

impl Responder for Scripted {
    fn respond(
        &mut self,
        conv: &mut Conversation,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, Vec<DecacheEvent>)> {
        // The agent always offers its tools; the last message is what the
        // model answers (a tool result or the user's turn).
        let last = conv.messages().last().map_or("", |m| m.content.as_str());
        let text = self.script.next(&Cue { tools: true, last }).unwrap_or_else(|| NO_MORE.to_string());
        on_text(&text);
        let events = conv.push("assistant", &text, SegmentKind::Assistant)?;
        Ok((text, events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.txt");
        std::fs::write(&f, "one\n---\ntwo\nlines\n---\n").unwrap();
        let s = Scripted::from_file(&f).unwrap();
        assert_eq!(s.remaining(), 2);
        assert!(Scripted::from_file(&dir.path().join("none")).is_err());
        std::fs::write(&f, "@when never\nx").unwrap();
        assert!(Scripted::from_file(&f).is_err());
    }
}

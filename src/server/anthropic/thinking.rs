//! A reply that opens with `<think>…</think>`, split into its thinking and
//! its text as it streams (for a request with `thinking` on): text that may
//! still be the opening tag, or the closing one, is held until it is known.
//! Leading and trailing blank space of the thinking, and the blank space
//! between it and the text, are dropped, streamed or whole alike.

pub const OPEN: &str = "<think>";
pub const CLOSE: &str = "</think>";

/// A piece of a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Thinking(String),
    /// The thinking is over (closed, or the reply ended inside it).
    EndThinking,
    Text(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not known yet whether the reply opens with thinking.
    Start,
    Thinking {
        started: bool,
    },
    /// Between `</think>` and the first text.
    After,
    Text,
}

#[derive(Debug)]
pub struct ThinkSplit {
    state: State,
    held: String,
}

/// The length of the longest tail of `s` that is a head of `tag` (not all of it).
fn partial(s: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&n| s.len() >= n && s.is_char_boundary(s.len() - n) && s.ends_with(&tag[..n]))
        .unwrap_or(0)
}

impl Default for ThinkSplit {
    fn default() -> ThinkSplit {
        ThinkSplit::new(false)
    }
}

impl ThinkSplit {
    /// `open`: the prompt itself opened the thinking (a template whose
    /// generation prompt ends with `<think>`), so the reply starts inside it.
    pub fn new(open: bool) -> ThinkSplit {
        let state = if open { State::Thinking { started: false } } else { State::Start };
        ThinkSplit { state, held: String::new() }
    }

    /// Add streamed text; the pieces known now.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Start => {
                    let s = self.held.trim_start();
                    if let Some(rest) = s.strip_prefix(OPEN) {
                        self.held = rest.to_string();
                        self.state = State::Thinking { started: false };
                    } else if OPEN.starts_with(s) {
                        return out;
                    } else {
                        self.state = State::Text;
                    }
                }
                State::Thinking { started } => {
                    if !started {
                        self.held = self.held.trim_start().to_string();
                        if self.held.is_empty() {
                            return out;
                        }
                    }
                    if let Some(at) = self.held.find(CLOSE) {
                        let t = self.held[..at].trim_end();
                        if !t.is_empty() {
                            out.push(Piece::Thinking(t.to_string()));
                        }
                        out.push(Piece::EndThinking);
                        self.held = self.held[at + CLOSE.len()..].to_string();
                        self.state = State::After;
                        continue;
                    }
                    // Hold a possible start of `</think>` and the blank space before it.
                    let keep = partial(&self.held, CLOSE);
                    let cut = self.held[..self.held.len() - keep].trim_end().len();
                    if cut > 0 {
                        out.push(Piece::Thinking(self.held[..cut].to_string()));
                        self.held.drain(..cut);
                        self.state = State::Thinking { started: true };
                    }
                    return out;
                }
                State::After => {
                    let s = self.held.trim_start();
                    if s.is_empty() {
                        self.held.clear();
                        return out;
                    }
                    self.held = s.to_string();
                    self.state = State::Text;
                }
                State::Text => {
                    if !self.held.is_empty() {
                        out.push(Piece::Text(std::mem::take(&mut self.held)));
                    }
                    return out;
                }
            }
        }
    }

    /// The reply ended: what was held.
    pub fn finish(&mut self) -> Vec<Piece> {
        let held = std::mem::take(&mut self.held);
        match self.state {
            State::Start | State::Text if !held.is_empty() => vec![Piece::Text(held)],
            State::Thinking { started } => {
                let t = if started { held.trim_end() } else { held.trim() };
                let mut out = if t.is_empty() { Vec::new() } else { vec![Piece::Thinking(t.to_string())] };
                out.push(Piece::EndThinking);
                out
            }
            _ => Vec::new(),
        }
    }
}

/// A whole reply split: its thinking (if it opens with some) and its text.
pub fn split(reply: &str, open: bool) -> (Option<String>, String) {
    let mut s = ThinkSplit::new(open);
    let mut pieces = s.push(reply);
    pieces.extend(s.finish());
    join(pieces)
}

/// The pieces of a split reply joined per kind: its thinking (when it had
/// any, empty included) and its text.
fn join(pieces: Vec<Piece>) -> (Option<String>, String) {
    let (mut thinking, mut text) = (None::<String>, String::new());
    for p in pieces {
        match p {
            Piece::Thinking(t) => thinking.get_or_insert_with(String::new).push_str(&t),
            Piece::EndThinking => {
                thinking.get_or_insert_with(String::new);
            }
            Piece::Text(t) => text.push_str(&t),
        }
    }
    (thinking, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reply streamed in pieces of `n` characters, joined back per kind.
    fn streamed(reply: &str, n: usize, open: bool) -> (Option<String>, String) {
        let mut s = ThinkSplit::new(open);
        let chars: Vec<char> = reply.chars().collect();
        let mut pieces: Vec<Piece> = chars.chunks(n).flat_map(|c| s.push(&c.iter().collect::<String>())).collect();
        pieces.extend(s.finish());
        assert!(pieces.iter().filter(|p| **p == Piece::EndThinking).count() <= 1, "{pieces:?}");
        join(pieces)
    }

    #[test]
    fn thinking_is_split_off_whole_or_streamed() {
        let cases: &[(&str, bool, Option<&str>, &str)] = &[
            ("<think>\nThe user wants 4.\n</think>\n\nIt is 4.", false, Some("The user wants 4."), "It is 4."),
            ("  <think>a < b </thin k></think>ok", false, Some("a < b </thin k>"), "ok"),
            ("It is 4. <think>no</think>", false, None, "It is 4. <think>no</think>"),
            ("<thin", false, None, "<thin"),
            ("<think>cut short by max_tokens", false, Some("cut short by max_tokens"), ""),
            ("The prompt opened it.</think>\nDone.", true, Some("The prompt opened it."), "Done."),
            ("<think></think>Only text.", false, Some(""), "Only text."),
            ("ü <think>x</think>", false, None, "ü <think>x</think>"),
        ];
        for &(reply, open, thinking, text) in cases {
            let want = (thinking.map(str::to_string), text.to_string());
            assert_eq!(split(reply, open), want, "{reply}");
            for n in 1..6 {
                assert_eq!(streamed(reply, n, open), want, "{reply} in pieces of {n}");
            }
        }
    }
}

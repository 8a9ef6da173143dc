//! Holds the name of a tool call to the tools a request offers.
//!
//! A small model asked for a call often writes the call's shape right and
//! its name wrong (`BREM_NAME` for `get_weather`), and the client then gets
//! a call to a tool it never had. llama.cpp prevents it with a lazy grammar
//! that starts at the call's opening tag; this is the part of that grammar
//! that matters most, written as a sampler: once the text reads
//! `<tool_call>` then `{"name": "` (any spacing), only tokens that keep the
//! name on the way to one of the offered names (and then its closing quote)
//! stay candidates. Anything else in the text is left alone, and if no token
//! could continue (a vocabulary without the needed pieces) nothing is banned.

use std::sync::Arc;

use super::{Candidates, Sampler};

/// Where a call's name is opened: the tag, then the object's first key.
const OPEN: &[u8] = b"<tool_call>";
const HEAD: [&[u8]; 4] = [b"{", b"\"name\"", b":", b"\""];

/// What the text after `<tool_call>` is, so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// On its way to a name, or inside one that can still become an offered name.
    Open,
    /// Not a call in the shape this holds (`{"function": …}`, prose): let go.
    Off,
    /// A name that is no offered one, or cannot become one.
    Bad,
    /// An offered name, closed by its quote.
    Done,
}

/// The sampler: the offered names, every token's bytes, and the text since
/// the last `<tool_call>` (or, outside a call, the last few bytes, to find
/// the next tag).
#[derive(Clone, Debug)]
pub struct ToolNames {
    names: Vec<Vec<u8>>,
    pieces: Arc<[Vec<u8>]>,
    inside: bool,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    banned: Vec<usize>,
}

impl ToolNames {
    /// A sampler for these names; `pieces[id]` is the text of token `id`
    /// (empty for control tokens).
    pub fn new(names: &[String], pieces: Arc<[Vec<u8>]>) -> Self {
        let names = names.iter().map(|n| n.as_bytes().to_vec()).collect();
        ToolNames { names, pieces, inside: false, buf: Vec::new(), scratch: Vec::new(), banned: Vec::new() }
    }

    /// Judges `s`, the text after a `<tool_call>` tag.
    fn judge(&self, s: &[u8]) -> Verdict {
        let mut i = 0;
        for lit in HEAD {
            while s.get(i).is_some_and(u8::is_ascii_whitespace) {
                i += 1;
            }
            let rest = &s[i..];
            if rest.len() < lit.len() {
                return if lit.starts_with(rest) { Verdict::Open } else { Verdict::Off };
            }
            if !rest.starts_with(lit) {
                return Verdict::Off;
            }
            i += lit.len();
        }
        let name = &s[i..];
        match name.iter().position(|&b| b == b'"') {
            Some(q) if self.names.iter().any(|n| n[..] == name[..q]) => Verdict::Done,
            Some(_) => Verdict::Bad,
            None if self.names.iter().any(|n| n.starts_with(name)) => Verdict::Open,
            None => Verdict::Bad,
        }
    }
}

impl Sampler for ToolNames {
    fn name(&self) -> &'static str {
        "tool_names"
    }

    fn apply(&mut self, c: &mut Candidates) {
        if !self.inside || self.names.is_empty() || c.is_empty() {
            return;
        }
        // A control token (no text) may not cut a name short.
        let mut banned = std::mem::take(&mut self.banned);
        let mut s = std::mem::take(&mut self.scratch);
        // Inside the name already (past its opening quote): then any byte
        // that is no name's next one is Bad.
        s.clear();
        s.extend_from_slice(&self.buf);
        s.push(0);
        let in_name = self.judge(&s) == Verdict::Bad;
        banned.clear();
        for (i, t) in c.data.iter().enumerate() {
            let piece = self.pieces.get(t.id as usize).map_or(&[][..], |p| &p[..]);
            let bad = if piece.is_empty() {
                in_name
            } else {
                s.clear();
                s.extend_from_slice(&self.buf);
                s.extend_from_slice(piece);
                self.judge(&s) == Verdict::Bad
            };
            if bad {
                banned.push(i);
            }
        }
        if banned.len() < c.len() {
            for &i in &banned {
                c.data[i].logit = f32::NEG_INFINITY;
            }
            c.sorted = false;
            c.selected = None;
        }
        self.banned = banned;
        self.scratch = s;
    }

    fn accept(&mut self, token: u32) {
        let piece = self.pieces.get(token as usize).map_or(&[][..], |p| &p[..]);
        self.buf.extend_from_slice(piece);
        if !self.inside {
            match self.buf.windows(OPEN.len()).position(|w| w == OPEN) {
                Some(k) => {
                    self.buf.drain(..k + OPEN.len());
                    self.inside = true;
                }
                None => {
                    let keep = self.buf.len().min(OPEN.len() - 1);
                    self.buf.drain(..self.buf.len() - keep);
                    return;
                }
            }
        }
        if self.judge(&self.buf) != Verdict::Open {
            self.inside = false;
            let keep = self.buf.len().min(OPEN.len() - 1);
            self.buf.drain(..self.buf.len() - keep);
        }
    }

    fn reset(&mut self) {
        self.inside = false;
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::Greedy;

    /// A vocabulary of whole pieces; token i is `v[i]`.
    fn sampler(v: &[&str]) -> ToolNames {
        let pieces: Arc<[Vec<u8>]> = v.iter().map(|p| p.as_bytes().to_vec()).collect();
        ToolNames::new(&["get_weather".to_string(), "get_time".to_string()], pieces)
    }

    fn feed(s: &mut ToolNames, v: &[&str], text: &[&str]) {
        for t in text {
            s.accept(v.iter().position(|p| p == t).unwrap() as u32);
        }
    }

    /// The token greedy picks when every logit is equal but `favour`'s.
    fn pick(s: &mut ToolNames, n: usize, favour: usize) -> u32 {
        let mut logits = vec![0.0; n];
        logits[favour] = 5.0;
        let mut c = Candidates::from_logits(&logits);
        s.apply(&mut c);
        Greedy::new().apply(&mut c);
        c.selected_id().unwrap()
    }

    const V: [&str; 12] =
        ["<tool_call>", "\n", "{\"", "name", "\":", " \"", "BREM", "get_", "weather", "\",", "", "{\"function"];

    #[test]
    fn a_wrong_name_is_steered_to_an_offered_one() {
        let mut s = sampler(&V);
        feed(&mut s, &V, &["<tool_call>", "\n", "{\"", "name", "\":", " \""]);
        // The model wants BREM; only `get_` starts an offered name.
        assert_eq!(pick(&mut s, V.len(), 6), 7);
        feed(&mut s, &V, &["get_"]);
        assert_eq!(pick(&mut s, V.len(), 6), 8, "weather, not BREM");
        feed(&mut s, &V, &["weather"]);
        // A control token cannot end the name; only a closing quote can.
        let t = pick(&mut s, V.len(), 10);
        assert!(V[t as usize].starts_with('"'), "{:?}", V[t as usize]);
        feed(&mut s, &V, &["\","]);
        // The name is done: the rest is free.
        assert_eq!(pick(&mut s, V.len(), 6), 6);
    }

    #[test]
    fn text_outside_a_call_and_other_shapes_are_left_alone() {
        let mut s = sampler(&V);
        assert_eq!(pick(&mut s, V.len(), 6), 6, "no tag yet");
        feed(&mut s, &V, &["name", "\":", " \""]);
        assert_eq!(pick(&mut s, V.len(), 6), 6, "a name outside a call");
        feed(&mut s, &V, &["<tool_call>", "{\"function"]);
        assert_eq!(pick(&mut s, V.len(), 6), 6, "another shape of call");
        // The tag split across tokens still counts.
        let v = ["<tool", "_call>", "{\"name\": \"", "BREM", "get_time"];
        let mut s = sampler(&v);
        feed(&mut s, &v, &["<tool", "_call>", "{\"name\": \""]);
        assert_eq!(pick(&mut s, v.len(), 3), 4);
    }

    #[test]
    fn nothing_is_banned_when_nothing_could_continue() {
        let v = ["<tool_call>", "{\"name\": \"", "x", "y"];
        let mut s = sampler(&v);
        feed(&mut s, &v, &["<tool_call>", "{\"name\": \""]);
        assert_eq!(pick(&mut s, v.len(), 3), 3);
    }
}

//! A model's reply split as its chat format writes it, into reasoning,
//! text for the user and tool calls, whole or streamed, the same way for
//! every API. Harmony (gpt-oss's channels, `crate::harmony`) where the chat
//! template speaks it; otherwise a leading `<think>` block (where the API
//! asked for it) and Hermes calls (where tools were offered).
use super::anthropic::thinking::{self, Piece, ThinkSplit};
use super::tools::{self, CallFilter, ToolCall};
use crate::harmony;

/// How a reply is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Format {
    /// The chat template speaks harmony.
    pub harmony: bool,
    /// Hermes calls (`<tool_call>` blocks, a bare JSON call) are parsed from
    /// the text: tools were offered, and (with harmony) in the Hermes way.
    pub calls: bool,
    /// Outside harmony: split off a leading `<think>` block.
    pub think: bool,
    /// With `think`: the prompt itself opened the block.
    pub open: bool,
}

/// A whole reply split.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Whole {
    /// The reasoning, when the reply had some (empty included).
    pub reasoning: Option<String>,
    pub text: String,
    pub calls: Vec<ToolCall>,
}

fn log_malformed(m: &str) {
    tracing::warn!("the model's tool call is malformed and stays text: {m}");
}

impl Format {
    /// Split a whole reply. Outside harmony, a reply without calls is its
    /// text as it came (not trimmed).
    pub fn whole(&self, reply: &str) -> Whole {
        if self.harmony {
            let r = if self.calls { harmony::parse_with_hermes(reply) } else { harmony::parse(reply) };
            r.parsed.malformed.iter().for_each(|m| log_malformed(m));
            return Whole { reasoning: r.reasoning, text: r.parsed.text, calls: r.parsed.calls };
        }
        let (reasoning, reply) = if self.think { thinking::split(reply, self.open) } else { (None, reply.to_string()) };
        let p = if self.calls { tools::parse(&reply) } else { Default::default() };
        match p.calls.is_empty() {
            true => Whole { reasoning, text: reply, calls: Vec::new() },
            false => Whole { reasoning, text: p.text, calls: p.calls },
        }
    }

    /// A splitter for the streamed reply.
    pub fn splitter(&self) -> Split {
        let inner = match (self.harmony, self.think) {
            (true, _) => Inner::Harmony(harmony::Splitter::new()),
            (false, true) => Inner::Think(ThinkSplit::new(self.open)),
            (false, false) => Inner::Plain,
        };
        Split { inner, filter: CallFilter::new(self.calls), calls: Vec::new() }
    }
}

#[derive(Debug, Default)]
enum Inner {
    Harmony(harmony::Splitter),
    Think(ThinkSplit),
    #[default]
    Plain,
}

/// A streamed reply: reasoning and text as soon as they are known, text
/// that may be a Hermes call held, calls at the end.
#[derive(Debug, Default)]
pub struct Split {
    inner: Inner,
    filter: CallFilter,
    /// Harmony calls closed so far.
    calls: Vec<ToolCall>,
}

impl Split {
    /// Add streamed text; the pieces that can be shown now.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let pieces = match &mut self.inner {
            Inner::Harmony(h) => {
                let p = h.push(text);
                return self.harmony_pieces(p);
            }
            Inner::Think(s) => s.push(text),
            Inner::Plain => vec![Piece::Text(text.to_string())],
        };
        self.filtered(pieces)
    }

    /// The reply ended: the pieces held, and the calls.
    pub fn finish(&mut self) -> (Vec<Piece>, Vec<ToolCall>) {
        let mut pieces = match &mut self.inner {
            Inner::Harmony(h) => {
                let p = h.finish();
                self.harmony_pieces(p)
            }
            Inner::Think(s) => {
                let p = s.finish();
                self.filtered(p)
            }
            Inner::Plain => Vec::new(),
        };
        let (rest, hermes) = self.filter.finish();
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest));
        }
        let mut calls = std::mem::take(&mut self.calls);
        calls.extend(hermes);
        (pieces, calls)
    }

    /// Text pieces through the call filter.
    fn filtered(&mut self, pieces: Vec<Piece>) -> Vec<Piece> {
        pieces
            .into_iter()
            .filter_map(|p| match p {
                Piece::Text(t) => Some(self.filter.push(&t)).filter(|s| !s.is_empty()).map(Piece::Text),
                p => Some(p),
            })
            .collect()
    }

    /// Harmony's pieces as the APIs take them: calls kept for the end.
    fn harmony_pieces(&mut self, pieces: Vec<harmony::Piece>) -> Vec<Piece> {
        let mut out = Vec::new();
        for p in pieces {
            match p {
                harmony::Piece::Reasoning(t) => out.push(Piece::Thinking(t)),
                harmony::Piece::EndReasoning => out.push(Piece::EndThinking),
                harmony::Piece::Text(t) => out.extend(self.filtered(vec![Piece::Text(t)])),
                harmony::Piece::Call(c) => self.calls.push(c),
                harmony::Piece::Malformed(m) => log_malformed(&m),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `reply` streamed in pieces of `n` characters, joined back.
    fn streamed(f: Format, reply: &str, n: usize) -> Whole {
        let mut s = f.splitter();
        let chars: Vec<char> = reply.chars().collect();
        let mut pieces: Vec<Piece> = chars.chunks(n).flat_map(|c| s.push(&c.iter().collect::<String>())).collect();
        let (rest, calls) = s.finish();
        pieces.extend(rest);
        let mut w = Whole { calls, ..Whole::default() };
        for p in pieces {
            match p {
                Piece::Thinking(t) => w.reasoning.get_or_insert_with(String::new).push_str(&t),
                Piece::EndThinking => {
                    w.reasoning.get_or_insert_with(String::new);
                }
                Piece::Text(t) => w.text.push_str(&t),
            }
        }
        w
    }

    /// `reply` split whole as `want`, and streamed the same (but for the
    /// blank space before a Hermes call, which streamed prose keeps).
    fn check(f: Format, reply: &str, want: Whole) {
        assert_eq!(f.whole(reply), want, "{f:?} {reply}");
        let trimmed = Whole { text: want.text.trim_end().to_string(), ..want };
        for n in [1, 3, 1000] {
            let mut got = streamed(f, reply, n);
            got.text = got.text.trim_end().to_string();
            assert_eq!(got, trimmed, "{f:?} {reply} by {n}");
        }
    }

    fn whole(reasoning: Option<&str>, text: &str, calls: &[ToolCall]) -> Whole {
        Whole { reasoning: reasoning.map(str::to_string), text: text.to_string(), calls: calls.to_vec() }
    }

    #[test]
    fn every_format_splits_the_same_whole_or_streamed() {
        let harmony = Format { harmony: true, ..Format::default() };
        let hermes = Format { calls: true, ..Format::default() };
        let read = [ToolCall { name: "read".into(), arguments: json!({"path": "a"}) }];
        let call = "<tool_call>{\"name\": \"read\", \"arguments\": {\"path\": \"a\"}}</tool_call>";
        check(
            harmony,
            "<|channel|>analysis<|message|>Read it.<|end|><|start|>assistant<|channel|>commentary to=functions.read <|constrain|>json<|message|>{\"path\": \"a\"}<|call|>",
            whole(Some("Read it."), "", &read),
        );
        // Hermes calls count in a harmony reply only where tools were offered the Hermes way.
        check(harmony, "<|channel|>final<|message|>Hi <tool_call>", whole(None, "Hi <tool_call>", &[]));
        check(
            Format { calls: true, ..harmony },
            &format!("<|channel|>final<|message|>Sure. {call}"),
            whole(None, "Sure.", &read),
        );
        check(hermes, &format!("Let me look. {call}"), whole(None, "Let me look.", &read));
        check(
            Format { think: true, ..hermes },
            "<think>Hmm.</think>Plain answer. ",
            whole(Some("Hmm."), "Plain answer. ", &[]),
        );
        check(Format::default(), "<|channel|>final<|message|>raw", whole(None, "<|channel|>final<|message|>raw", &[]));
    }
}

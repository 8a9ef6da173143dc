//! OpenAI's harmony format, which gpt-oss writes: a reply is a run of
//! messages, each a header and a body,
//! `<|start|>assistant<|channel|>CHANNEL[ to=RECIPIENT][ <|constrain|>json]<|message|>BODY<|end|>`
//! (the first one's `<|start|>assistant` is the chat template's generation
//! prompt, so a completion opens with `<|channel|>`). The `analysis` channel
//! is reasoning; `final`, and `commentary` without a recipient (a preamble),
//! are text for the user; a message to `functions.NAME` (on any channel,
//! `to=` before or after the channel) is a tool call whose body is the JSON
//! arguments, ended by `<|call|>`. `<|return|>` and `<|call|>` end the turn
//! (they are end-of-generation tokens, so they rarely reach the text).
//!
//! [`Splitter`] splits such a reply as it streams: reasoning and text go out
//! as soon as their channel is known, a call's body is held until it closes.
//! [`parse`] splits a whole reply the same way. A reply without any harmony
//! marker is plain text.
mod history;

pub use history::{template_messages, template_tools};

use crate::toolcall::{self, Parsed, ToolCall};
use serde_json::{json, Value};

pub const START: &str = "<|start|>";
pub const CHANNEL: &str = "<|channel|>";
pub const MESSAGE: &str = "<|message|>";
pub const END: &str = "<|end|>";
pub const CALL: &str = "<|call|>";
pub const RETURN: &str = "<|return|>";
pub const CONSTRAIN: &str = "<|constrain|>";

/// What ends a message's body: its own end markers, or (where the model
/// left the end out) the head of the next message.
const BODY_ENDS: [&str; 5] = [END, CALL, RETURN, START, CHANNEL];

/// Put between two messages of one kind (two analysis messages, a preamble
/// and the final answer), whole or streamed.
const SEPARATOR: &str = "\n\n";

/// Whether a chat template speaks harmony (it writes channels): replies of
/// a model with such a template are split by this module.
pub fn is_harmony(template_source: &str) -> bool {
    template_source.contains(CHANNEL)
}

/// A piece of a reply, in the order the reply gives them.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// Analysis-channel text.
    Reasoning(String),
    /// The reasoning is over (text or a call follows, or the reply ended).
    EndReasoning,
    /// Text for the user: the final answer, or a commentary preamble.
    Text(String),
    /// A tool call, once its body closed.
    Call(ToolCall),
    /// A call whose arguments are no JSON object: what was wrong (its body
    /// comes as text, so nothing the model wrote is lost).
    Malformed(String),
}

/// A whole reply split: its reasoning (when it had an analysis message,
/// empty included), and its text, calls and malformed calls.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Reply {
    pub reasoning: Option<String>,
    pub parsed: Parsed,
}

/// Where a message's body goes.
#[derive(Clone, Debug, PartialEq)]
enum Body {
    Reasoning,
    Text,
    /// A call to this tool: the body is held until the message closes.
    Call(String),
    /// A message of another role than the assistant (the model writing a
    /// tool's answer or the user's next turn): dropped.
    Skip,
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    /// Nothing seen yet: a header comes, or the reply is plain text.
    Start,
    /// After a message's end, before the next one's `<|start|>`.
    Between,
    /// In a header, up to `<|message|>`.
    Header,
    /// In a body, up to one of `BODY_ENDS`.
    Body(Body),
}

/// A streamed harmony reply split into [`Piece`]s.
#[derive(Debug)]
pub struct Splitter {
    state: State,
    /// Text not yet given out: a header, a marker that may be starting, a call's body.
    held: String,
    /// Reasoning / text given out so far (a later message of the kind is separated).
    reasoned: bool,
    texted: bool,
    /// Nothing of the current message given out yet.
    fresh: bool,
    /// An analysis message opened and `EndReasoning` not given yet.
    reasoning_open: bool,
    /// Calls closed so far, well-formed or not (they are numbered in messages).
    n_calls: usize,
    /// How far into `held` a body holds no end marker (a held call's body
    /// is not searched again from its start on every push).
    searched: usize,
}

impl Default for Splitter {
    fn default() -> Splitter {
        Splitter::new()
    }
}

/// The length of the longest tail of `s` that is a head (not all) of one of `tags`.
fn partial(s: &str, tags: &[&str]) -> usize {
    tags.iter().flat_map(|t| (1..t.len()).filter(move |&n| s.len() >= n && s.ends_with(&t[..n]))).max().unwrap_or(0)
}

/// Whether `s` is a head (not all) of one of `tags`: more text decides.
fn may_become(s: &str, tags: &[&str]) -> bool {
    tags.iter().any(|t| t.len() > s.len() && t.starts_with(s))
}

/// What a header says: the role (the assistant's when left out, as in the
/// first message of a completion), the channel and the recipient.
fn body_of(header: &str) -> Body {
    let (before, after) = match header.find(CHANNEL) {
        Some(i) => (&header[..i], &header[i + CHANNEL.len()..]),
        None => (header, ""),
    };
    let first_word = |s: &str| -> Option<String> {
        s.split(|c: char| c.is_whitespace() || c == '<').find(|w| !w.is_empty()).map(str::to_string)
    };
    let role = first_word(before).filter(|w| !w.starts_with("to=")).unwrap_or_else(|| "assistant".into());
    if role != "assistant" {
        return Body::Skip;
    }
    let recipient = header.find("to=").and_then(|i| first_word(&header[i + 3..]));
    if let Some(r) = recipient {
        return Body::Call(r.strip_prefix("functions.").unwrap_or(&r).to_string());
    }
    match first_word(after).as_deref() {
        Some("analysis") => Body::Reasoning,
        _ => Body::Text,
    }
}

/// A call's arguments: its body as a JSON object (an empty body is `{}`).
fn arguments(body: &str) -> Result<Value, String> {
    let b = body.trim();
    if b.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(b) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(v) => Err(format!("its arguments must be a JSON object, not {}", kind(&v))),
        Err(e) => Err(format!("its arguments are not valid JSON ({e})")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Splitter {
    pub fn new() -> Splitter {
        Splitter {
            state: State::Start,
            held: String::new(),
            reasoned: false,
            texted: false,
            fresh: true,
            reasoning_open: false,
            n_calls: 0,
            searched: 0,
        }
    }

    /// Add streamed text; the pieces known now.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        let mut out = Vec::new();
        while self.step(&mut out) {}
        out
    }

    /// The reply ended: what was held. A body cut short is given as it
    /// is (a call's, parsed as far as it goes); a header cut short is dropped.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        let held = std::mem::take(&mut self.held);
        self.searched = 0;
        match std::mem::replace(&mut self.state, State::Between) {
            // No harmony at all (`<|cha` and nothing more): plain text.
            State::Start => self.give(Body::Text, &held, &mut out),
            State::Between | State::Header => {}
            State::Body(Body::Call(name)) => self.call(&name, &held, &mut out),
            State::Body(b) => self.give(b, &held, &mut out),
        }
        self.end_reasoning(&mut out);
        out
    }

    /// One step over `held`; false when more text is needed.
    fn step(&mut self, out: &mut Vec<Piece>) -> bool {
        match self.state.clone() {
            State::Start | State::Between => {
                let start = self.state == State::Start;
                if !start {
                    // Blank space between messages is nobody's.
                    let blank = self.held.len() - self.held.trim_start().len();
                    self.held.drain(..blank);
                }
                if let Some(rest) = self.held.strip_prefix(START) {
                    self.held = rest.to_string();
                    self.state = State::Header;
                    return true;
                }
                // The first header may lead with its recipient (the prompt
                // ended with `<|start|>assistant`, the model wrote ` to=…`).
                let opens: &[&str] = if start { &[START, CHANNEL, " to="] } else { &[START, CHANNEL] };
                if opens.iter().any(|o| self.held.starts_with(o)) {
                    self.state = State::Header;
                    return true;
                }
                if self.held.is_empty() || may_become(&self.held, opens) {
                    return false;
                }
                // Not harmony (at the start), or stray text between
                // messages: text for the user.
                self.open(Body::Text, out);
                true
            }
            State::Header => {
                let Some(at) = self.held.find(MESSAGE) else { return false };
                let body = body_of(&self.held[..at]);
                self.held.drain(..at + MESSAGE.len());
                self.open(body, out);
                true
            }
            State::Body(body) => {
                let from = self.searched;
                let end = BODY_ENDS.iter().filter_map(|t| self.held[from..].find(t).map(|at| (from + at, *t))).min();
                let Some((at, tag)) = end else {
                    // What may be the start of a marker is searched again.
                    let keep = partial(&self.held, &BODY_ENDS);
                    self.searched = self.held.len() - keep;
                    if !matches!(body, Body::Call(_) | Body::Skip) {
                        let given: String = self.held.drain(..self.searched).collect();
                        self.searched = 0;
                        self.give(body, &given, out);
                    }
                    return false;
                };
                self.searched = 0;
                let content: String = self.held.drain(..at).collect();
                match body {
                    Body::Call(name) => self.call(&name, &content, out),
                    b => self.give(b, &content, out),
                }
                // `<|channel|>` stays: it begins the next header.
                if tag != CHANNEL {
                    self.held.drain(..tag.len());
                }
                self.state = if tag == START || tag == CHANNEL { State::Header } else { State::Between };
                true
            }
        }
    }

    /// A message's body begins.
    fn open(&mut self, body: Body, out: &mut Vec<Piece>) {
        if body == Body::Reasoning {
            self.reasoning_open = true;
        } else {
            self.end_reasoning(out);
        }
        self.fresh = true;
        self.state = State::Body(body);
    }

    fn end_reasoning(&mut self, out: &mut Vec<Piece>) {
        if std::mem::take(&mut self.reasoning_open) {
            out.push(Piece::EndReasoning);
        }
    }

    /// Give out reasoning or text of the current message (a separator
    /// first where an earlier message of its kind was given).
    fn give(&mut self, body: Body, s: &str, out: &mut Vec<Piece>) {
        if s.is_empty() {
            return;
        }
        let (seen, piece): (&mut bool, fn(String) -> Piece) = match body {
            Body::Reasoning => (&mut self.reasoned, Piece::Reasoning),
            Body::Text => (&mut self.texted, Piece::Text),
            Body::Call(_) | Body::Skip => return,
        };
        let sep = std::mem::take(&mut self.fresh) && *seen;
        *seen = true;
        out.push(piece(if sep { format!("{SEPARATOR}{s}") } else { s.to_string() }));
    }

    /// A call's body closed: the call, or what was wrong with it (and the
    /// body as text).
    fn call(&mut self, name: &str, body: &str, out: &mut Vec<Piece>) {
        self.n_calls += 1;
        match arguments(body) {
            Ok(arguments) => out.push(Piece::Call(ToolCall { name: name.to_string(), arguments })),
            Err(why) => {
                let n = self.n_calls;
                out.push(Piece::Malformed(format!(
                    "tool call {n} ({name}): {why}: {}",
                    toolcall::cut(body.trim(), 200)
                )));
                self.give(Body::Text, body, out);
            }
        }
    }
}

/// A whole reply split.
pub fn parse(reply: &str) -> Reply {
    let mut s = Splitter::new();
    let mut pieces = s.push(reply);
    pieces.extend(s.finish());
    join(pieces)
}

/// [`parse`], and where the reply made no harmony call, the Hermes calls
/// (`<tool_call>` blocks, or a reply that is one JSON call) in its text:
/// for a model that was told of tools in the Hermes way (`decache agent`'s
/// system prompt, a template that does not render tools).
pub fn parse_with_hermes(reply: &str) -> Reply {
    let mut r = parse(reply);
    if r.parsed.calls.is_empty() {
        let h = toolcall::parse(&r.parsed.text);
        r.parsed.malformed.extend(h.malformed);
        if !h.calls.is_empty() {
            r.parsed.text = h.text;
            r.parsed.calls = h.calls;
        }
    }
    r
}

/// Pieces joined per kind.
pub fn join(pieces: impl IntoIterator<Item = Piece>) -> Reply {
    let mut r = Reply::default();
    for p in pieces {
        match p {
            Piece::Reasoning(t) => r.reasoning.get_or_insert_with(String::new).push_str(&t),
            Piece::EndReasoning => {
                r.reasoning.get_or_insert_with(String::new);
            }
            Piece::Text(t) => r.parsed.text.push_str(&t),
            Piece::Call(c) => r.parsed.calls.push(c),
            Piece::Malformed(m) => r.parsed.malformed.push(m),
        }
    }
    r
}

#[cfg(test)]
mod tests;

//! An eval set made into tokens: every annotated piece rendered through the
//! chat template and tokenized on its own, so that each strategy knows
//! exactly which tokens belong to which part and turn.
use super::set::{EvalSet, Message, Piece};
use crate::tokenizer::{ChatMessage, ChatTemplate, Tokenizer};

/// Tokens of one piece (or of a message's template wrapping).
#[derive(Clone, Debug)]
pub struct Span {
    pub tokens: Vec<u32>,
    pub turn: u32,
    /// The turn from which on these tokens are no longer cached.
    pub decached_from: Option<u32>,
    pub kind: String,
}

impl Span {
    /// Cached while turn `t` is evaluated.
    pub fn live_at(&self, t: u32) -> bool {
        self.turn <= t && self.decached_from.is_none_or(|d| d > t)
    }
}

/// The whole conversation as spans, turn by turn; the last turn is the
/// question, its last span the reference answer.
pub struct Script {
    pub spans: Vec<Span>,
    /// Turns including the question's.
    pub n_turns: u32,
    /// Tokens of the reference answer (the last span).
    pub n_answer: usize,
    template: ChatTemplate,
    /// The set's first message when it is a system message (compaction
    /// restarts from it).
    system: Option<ChatMessage>,
}

impl Script {
    pub fn build(set: &EvalSet, tok: &Tokenizer, template: &ChatTemplate) -> Result<Script, String> {
        let mut s = Script {
            spans: Vec::new(),
            n_turns: set.question_turn(),
            n_answer: 0,
            template: template.clone().with_vocab(tok),
            system: set.turns[0]
                .messages
                .first()
                .filter(|m| m.role == "system")
                .map(|m| ChatMessage::new("system", m.content())),
        };
        let mut msgs: Vec<ChatMessage> = Vec::new();
        let mut rendered = String::new();
        let encode = |text: &str, first: bool| tok.encode(text, first, true).map_err(|e| e.to_string());
        // Messages whose text the template has not printed yet (Gemma folds
        // the system prompt into the first user turn): placed with the next.
        let mut pending: Vec<(u32, &Message)> = Vec::new();
        for (ti, turn) in set.turns.iter().enumerate() {
            let t = ti as u32 + 1;
            for (mi, m) in turn.messages.iter().enumerate() {
                let at = format!("turn {t}, message {}", mi + 1);
                msgs.push(ChatMessage::new(m.role.clone(), m.content()));
                let full = s.render(&msgs, false).map_err(|e| format!("{at}: {e}"))?;
                let delta = full
                    .strip_prefix(rendered.as_str())
                    .ok_or_else(|| format!("{at}: the chat template renders earlier messages differently once this one is added (it is not append-only)"))?
                    .to_string();
                pending.push((t, m));
                let Some(places) = place(&delta, &pending) else {
                    continue;
                };
                let mut cursor = 0;
                for ((mt, pm), (start, pieces)) in pending.iter().zip(places) {
                    // The template's wrapping goes when the whole message goes.
                    let wrap_gone = pieces
                        .iter()
                        .map(|p| p.decached_from)
                        .collect::<Option<Vec<u32>>>()
                        .and_then(|v| v.into_iter().max());
                    let wrap_kind = pm.pieces()[0].kind.clone();
                    let mut push = |text: &str, kind: String, gone: Option<u32>| -> Result<(), String> {
                        if !text.is_empty() {
                            let tokens = encode(text, s.spans.is_empty()).map_err(|e| format!("{at}: {e}"))?;
                            s.spans.push(Span { tokens, turn: *mt, decached_from: gone, kind });
                        }
                        Ok(())
                    };
                    push(&delta[cursor..start], wrap_kind.clone(), wrap_gone)?;
                    cursor = start + pieces.iter().map(|p| p.text.len()).sum::<usize>();
                    for p in pieces {
                        push(&p.text, p.kind, p.decached_from)?;
                    }
                    cursor = cursor.min(delta.len());
                    if std::ptr::eq(*pm, m) {
                        push(&delta[cursor..], wrap_kind, wrap_gone)?;
                    }
                }
                pending.clear();
                rendered = full;
            }
        }
        if let Some((t, _)) = pending.first() {
            return Err(format!(
                "turn {t}: the chat template changes a message's text (beyond trimming it) or never prints it, so its \
                 parts cannot be placed; give it as the template prints it"
            ));
        }
        let q = s.n_turns;
        for m in &set.before_question {
            msgs.push(ChatMessage::new(m.role.clone(), m.content()));
            let full = s.render(&msgs, false).map_err(|e| format!("question turn: {e}"))?;
            let delta =
                full.strip_prefix(rendered.as_str()).ok_or("question turn: the chat template is not append-only")?;
            let kind = m.pieces()[0].kind.clone();
            s.spans.push(Span { tokens: encode(delta, false)?, turn: q, decached_from: None, kind });
            rendered = full;
        }
        msgs.push(ChatMessage::new("user", set.question.text.clone()));
        let full = s.render(&msgs, true).map_err(|e| format!("question: {e}"))?;
        let delta = full.strip_prefix(rendered.as_str()).ok_or("question: the chat template is not append-only")?;
        s.spans.push(Span { tokens: encode(delta, false)?, turn: q, decached_from: None, kind: "user".into() });
        let answer = tok.encode(&set.question.answer, false, false).map_err(|e| format!("answer: {e}"))?;
        s.n_answer = answer.len();
        s.spans.push(Span { tokens: answer, turn: q, decached_from: None, kind: "answer".into() });
        Ok(s)
    }

    fn render(&self, msgs: &[ChatMessage], generation_prompt: bool) -> Result<String, String> {
        self.template.render(msgs, generation_prompt).map_err(|e| e.to_string())
    }

    /// The tokens evaluated in turn `t`, in order.
    pub fn turn_tokens(&self, t: u32) -> Vec<u32> {
        self.spans.iter().filter(|s| s.turn == t).flat_map(|s| s.tokens.iter().copied()).collect()
    }

    /// Tokens of the whole conversation (what full context holds at the end).
    pub fn total_tokens(&self) -> usize {
        self.spans.iter().map(|s| s.tokens.len()).sum()
    }

    /// Tokens cached after turn `t` when the annotations are followed.
    pub fn live_after(&self, t: u32) -> usize {
        self.spans.iter().filter(|s| s.live_at(t)).map(|s| s.tokens.len()).sum()
    }

    /// The most tokens the annotated cache holds at once: the budget the
    /// strategies that do not read annotations (compaction, sliding window)
    /// get, so that all keep about as much.
    pub fn budget(&self) -> usize {
        (1..=self.n_turns).map(|t| self.live_after(t)).max().unwrap_or(0)
    }

    /// Text of a user message appended after any history, optionally
    /// opening the assistant's reply (for append-only templates the same
    /// wherever it goes).
    fn user_delta(&self, text: &str, generation_prompt: bool) -> Result<String, String> {
        let mut msgs: Vec<ChatMessage> = self.system.iter().cloned().collect();
        let before = if msgs.is_empty() { String::new() } else { self.render(&msgs, false)? };
        msgs.push(ChatMessage::new("user", text));
        let full = self.render(&msgs, generation_prompt)?;
        full.strip_prefix(before.as_str())
            .map(str::to_string)
            .ok_or_else(|| "the chat template is not append-only".into())
    }

    /// Compaction: the request that asks the model for a summary.
    pub fn summary_request(&self, tok: &Tokenizer) -> Result<Vec<u32>, String> {
        let ask = "Summarize the conversation so far for yourself in a few sentences: the task, the files, the errors and what was decided. Keep names exact.";
        tok.encode(&self.user_delta(ask, true)?, false, true).map_err(|e| e.to_string())
    }

    /// Compaction: the conversation restarted from a summary (the system
    /// message, then the summary as a user message).
    pub fn restart(&self, tok: &Tokenizer, summary: &str) -> Result<Vec<u32>, String> {
        let mut msgs: Vec<ChatMessage> = self.system.iter().cloned().collect();
        msgs.push(ChatMessage::new("user", format!("Summary of the conversation so far:\n{}", summary.trim())));
        tok.encode(&self.render(&msgs, false)?, true, true).map_err(|e| e.to_string())
    }
}

/// Where each of `msgs`' texts stands in `delta`, in order: its start and its
/// pieces, trimmed of the whitespace a template trims (leading, trailing)
/// when only the trimmed text is printed; None when one is not there.
fn place(delta: &str, msgs: &[(u32, &Message)]) -> Option<Vec<(usize, Vec<Piece>)>> {
    let mut out = Vec::new();
    let mut cursor = 0;
    for (_, m) in msgs {
        let content = m.content();
        let mut pieces = m.pieces();
        let start = match delta[cursor..].find(&content) {
            Some(i) => cursor + i,
            None => {
                let t = content.trim();
                let i = cursor + delta[cursor..].find(t).filter(|_| !t.is_empty())?;
                trim_pieces(
                    &mut pieces,
                    content.len() - content.trim_start().len(),
                    content.len() - content.trim_end().len(),
                );
                i
            }
        };
        cursor = start + pieces.iter().map(|p| p.text.len()).sum::<usize>();
        out.push((start, pieces));
    }
    Some(out)
}

/// Drop `lead` bytes from the front of the pieces and `trail` from the back.
fn trim_pieces(pieces: &mut [Piece], mut lead: usize, mut trail: usize) {
    for p in pieces.iter_mut() {
        let n = lead.min(p.text.len());
        p.text.drain(..n);
        lead -= n;
    }
    for p in pieces.iter_mut().rev() {
        let n = trail.min(p.text.len());
        p.text.truncate(p.text.len() - n);
        trail -= n;
    }
}

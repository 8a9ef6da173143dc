//! A conversation over one `Session`: messages rendered through the chat
//! template and appended as segments, replies generated, and stale context
//! forgotten in place when the cache nears its watermark. The CLI's chat,
//! the server and the agent drive this; it returns data and events only.
use super::reuse::{dropped_runs, plan_with, ReuseOptions};
use super::{Gap, GenerateEvent, GenerateOptions, Generation, PositionPolicy, Session};
use crate::context::parts::{join, message_layout, message_lines, Span, Units};
use crate::context::policy::{focus_words, DecachePolicy, Reason};
use crate::context::segments::{Line, Segment, SegmentKind, Segments};
use crate::error::{Error, Result};
use crate::kv::Pos;
use crate::tokenizer::{ChatMessage, ChatTemplate};
use std::time::{Duration, Instant};

/// One deletion, as reported to the caller and recorded in transcripts.
#[derive(Clone, Debug)]
pub struct DecacheEvent {
    pub turn: u32,
    pub segment: u64,
    pub kind: &'static str,
    pub p0: Pos,
    pub p1: Pos,
    pub cells: usize,
    pub reason: Reason,
}

/// Running totals for `/stats`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ConversationStats {
    /// Tokens ever evaluated (prompt and generated).
    pub tokens_seen: usize,
    pub tokens_decached: usize,
    pub decache_time: Duration,
    pub events: usize,
    pub defrags: usize,
    /// Times every gap in positions was closed (the `auto` policy).
    #[serde(alias = "compactions")]
    pub gaps_closed: usize,
    /// Tokens forgotten, by reason.
    pub by_reason: std::collections::BTreeMap<Reason, usize>,
    /// Decache rounds (one per make-room that forgot something).
    pub rounds: usize,
    /// Live tokens right after each round, summed: what dropping the cache
    /// and prefilling the kept text again would have evaluated.
    pub kept_tokens: usize,
    /// Prompt tokens evaluated by `push` and the time it took (the session's
    /// measured prefill speed).
    pub prefill_tokens: usize,
    pub prefill_time: Duration,
    /// Kept tokens re-evaluated after forgotten spans (boundary refresh).
    #[serde(default)]
    pub tokens_refreshed: usize,
}

impl ConversationStats {
    /// Prefill time that re-evaluating `kept_tokens` would have cost at this
    /// session's measured prefill speed (an estimate; `decache-endurance`
    /// measures it).
    pub fn estimated_time_saved(&self) -> Duration {
        if self.prefill_tokens == 0 {
            return Duration::ZERO;
        }
        self.prefill_time.mul_f64(self.kept_tokens as f64 / self.prefill_tokens as f64)
    }
}

/// What a saved conversation holds besides the cache (see `save.rs`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ConversationState {
    pub segments: Segments,
    pub messages: Vec<ChatMessage>,
    pub rendered: String,
    pub turn: u32,
    pub question: String,
    pub last_reply: Option<(Pos, usize)>,
    pub stats: ConversationStats,
}

/// Chunks of the cache a changed rendering keeps must be longer than this
/// (a turn's header alone never anchors one).
const RESYNC_MIN_CHUNK: usize = 4;

pub struct Conversation {
    pub session: Session,
    pub segments: Segments,
    pub policy: DecachePolicy,
    pub stats: ConversationStats,
    /// `Keep` never moves positions; `Auto` (and `Shift`) close all gaps
    /// once the next position would pass the model's trained context.
    pub positions: PositionPolicy,
    /// Boundary refresh: after forgetting, the first this many kept tokens
    /// after each gap are evaluated again without the forgotten span (0:
    /// off; not available on hybrid models).
    pub refresh: usize,
    template: ChatTemplate,
    messages: Vec<ChatMessage>,
    /// The template's rendering of `messages` (what the cache holds).
    rendered: String,
    turn: u32,
    /// Where the last reply starts (position, and length of `rendered`
    /// before it), while it is the newest message: what `/regen` cuts.
    last_reply: Option<(Pos, usize)>,
    /// The newest message of kind `User` (what a paste's lines are matched against).
    question: String,
}

impl Conversation {
    /// A conversation over `session`; `template` renders with the BOS and
    /// EOS pieces of the session's vocabulary.
    pub fn new(session: Session, template: ChatTemplate, policy: DecachePolicy) -> Conversation {
        let template = template.with_vocab(&session.model().tokenizer);
        Conversation {
            session,
            segments: Segments::default(),
            policy,
            stats: ConversationStats::default(),
            positions: PositionPolicy::Auto,
            refresh: 0,
            template,
            messages: Vec::new(),
            rendered: String::new(),
            turn: 0,
            last_reply: None,
            question: String::new(),
        }
    }

    pub(super) fn state(&self) -> ConversationState {
        ConversationState {
            segments: self.segments.clone(),
            messages: self.messages.clone(),
            rendered: self.rendered.clone(),
            turn: self.turn,
            question: self.question.clone(),
            last_reply: self.last_reply,
            stats: self.stats.clone(),
        }
    }

    /// Whether `st` fits this conversation over a cache whose next position
    /// is `next_pos`: this template renders its messages to its text, and
    /// its segments lie inside the cache.
    pub(super) fn check_state(&self, st: &ConversationState, next_pos: Pos) -> Result<()> {
        let again = self.template.render(&st.messages, false)?;
        if again != st.rendered {
            return Err(Error::InvalidArgument(
                "the saved messages render differently with this chat template (saved with another template?)".into(),
            ));
        }
        if let Some(s) = st.segments.iter().find(|s| s.p1 > next_pos || s.p0 > s.p1) {
            return Err(Error::InvalidArgument(format!(
                "segment {} spans positions {}..{} outside the saved cache",
                s.id, s.p0, s.p1
            )));
        }
        Ok(())
    }

    /// Take `st` as this conversation's state (checked by `check_state`).
    pub(super) fn set_state(&mut self, st: ConversationState) {
        self.segments = st.segments;
        self.messages = st.messages;
        self.rendered = st.rendered;
        self.turn = st.turn;
        self.question = st.question;
        self.last_reply = st.last_reply;
        self.stats = st.stats;
    }

    /// The chat template in use.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    pub fn turn(&self) -> u32 {
        self.turn
    }

    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// Count a new turn without a user message (an agent's tool round), so
    /// that what came before ages for the policy.
    pub fn next_turn(&mut self) {
        self.turn += 1;
    }

    /// The text the template adds for `extra` after what is cached
    /// (templates must be append-only, as ChatML-style ones are).
    fn delta(&self, extra: Option<&ChatMessage>, generation_prompt: bool) -> Result<String> {
        let mut msgs = self.messages.clone();
        msgs.extend(extra.cloned());
        let full = self.template.render(&msgs, generation_prompt)?;
        full.strip_prefix(self.rendered.as_str()).map(str::to_string).ok_or_else(|| {
            Error::Unsupported(
                "the chat template re-rendered earlier messages differently (it is not append-only)".into(),
            )
        })
    }

    fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        let first = self.rendered.is_empty();
        Ok(self.session.model().tokenizer.encode(text, first, true)?)
    }

    /// Append a message (`role` as the template knows it) whose meaning is
    /// `kind`. A `SegmentKind::User` message starts a new turn (reminders and
    /// tool results injected in a user role do not). Returns the deletions
    /// made to fit it.
    pub fn push(&mut self, role: &str, content: &str, kind: SegmentKind) -> Result<Vec<DecacheEvent>> {
        if kind.starts_turn() {
            self.turn += 1;
        }
        let msg = ChatMessage::new(role, content);
        let mut msgs = self.messages.clone();
        msgs.push(msg.clone());
        let full = self.template.render(&msgs, false)?;
        let (toks, mut events) = match full.strip_prefix(self.rendered.as_str()) {
            Some(delta) => (self.tokens(delta)?, Vec::new()),
            None => self.resync(&full)?,
        };
        events.extend(self.make_room(toks.len())?);
        let p0 = self.session.next_pos();
        let t0 = Instant::now();
        self.session.eval(&toks, false)?;
        self.stats.prefill_time += t0.elapsed();
        self.stats.prefill_tokens += toks.len();
        self.stats.tokens_seen += toks.len();
        if kind == SegmentKind::User {
            self.question = content.to_string();
        }
        self.record(kind, p0, &toks);
        self.messages.push(msg);
        self.rendered = full;
        self.last_reply = None;
        Ok(events)
    }

    /// Bring the cache to `full`, a rendering that changed earlier messages
    /// (templates that drop earlier turns' thinking once a new message
    /// comes, as Qwen3's and gpt-oss's do, or end a turn with another
    /// token): what the cache holds of `full`'s tokens stays where it is,
    /// what `full` no longer has is forgotten in place (decache events,
    /// reason "dropped by the chat template"), and the tokens of `full`
    /// after the last kept one are returned to be evaluated there.
    fn resync(&mut self, full: &str) -> Result<(Vec<u32>, Vec<DecacheEvent>)> {
        let all = self.session.model().tokenizer.encode(full, true, true)?;
        let chain = self.session.live_chain();
        let cached: Vec<u32> = chain.iter().map(|&(_, t)| t).collect();
        // Deletions only: the kept chunks stay in place, in order.
        let plan = plan_with(&cached, &all, &ReuseOptions { min_chunk: Some(RESYNC_MIN_CHUNK), replace: false });
        let mut items = Vec::new();
        for (a, b) in dropped_runs(&plan.kept(chain.len())) {
            let (p0, p1) = (chain[a].0, chain[b - 1].0 + 1);
            for s in self.segments.iter().filter(|s| s.p0 < p1 && p0 < s.p1) {
                items.push((s.id, p0.max(s.p0), p1.min(s.p1), Reason::TemplateDropped));
            }
        }
        // Highest first, so that closing a gap moves none still to remove.
        items.sort_by_key(|&(_, p0, _, _)| std::cmp::Reverse(p0));
        let mut events = Vec::new();
        self.apply(&items, &mut events)?;
        let resume = self.session.live_chain().last().map_or(0, |&(p, _)| p + 1);
        if self.session.next_pos() > resume {
            self.session.rewind(resume)?;
        }
        self.segments.truncate_from(resume);
        Ok((all[plan.reused..].to_vec(), events))
    }

    /// Record a message's tokens, cached from position `p0` on, as segments:
    /// its `<system-reminder>` and `<think>` blocks become segments of their
    /// own between the pieces of the message, and the lines of logs and
    /// pastes are kept with them.
    fn record(&mut self, kind: SegmentKind, p0: Pos, toks: &[u32]) {
        let tok = &self.session.model().tokenizer;
        let pieces: Vec<Vec<u8>> = toks.iter().map(|&t| tok.token_to_piece(t, true)).collect();
        let (text, starts) = join(&pieces);
        let units = Units::Tokens(&starts);
        let whole = matches!(kind, SegmentKind::System | SegmentKind::SystemReminder { .. } | SegmentKind::Thinking);
        for Span { block, a: t0, b: t1 } in message_layout(&text, units, whole) {
            let k = block.unwrap_or_else(|| kind.clone());
            let with_lines =
                matches!(k, SegmentKind::PastedLog | SegmentKind::CommandOutput { .. } | SegmentKind::SearchResult);
            if self.session.recording() {
                let v = serde_json::json!({"note": "segment", "kind": k, "turn": self.turn, "p0": p0 + t0 as Pos, "p1": p0 + t1 as Pos});
                self.session.note(&v);
            }
            let id = self.segments.push(k, self.turn, p0 + t0 as Pos, p0 + t1 as Pos);
            if with_lines {
                let lines = message_lines(&text, units, t0, t1)
                    .into_iter()
                    .map(|l| Line { p0: p0 + l.a as Pos, p1: p0 + l.b as Pos, text: l.text })
                    .collect();
                self.segments.set_lines(id, lines);
            }
        }
    }

    /// Generate the assistant's reply (at most `opts.n_predict` tokens,
    /// default 512), making room first. The reply becomes an assistant segment.
    pub fn reply(
        &mut self,
        opts: &GenerateOptions,
        on_event: &mut dyn FnMut(GenerateEvent<'_>) -> bool,
    ) -> Result<(Generation, Vec<DecacheEvent>)> {
        let header = self.delta(None, true)?;
        let header_toks = self.tokens(&header)?;
        let budget = opts.n_predict.unwrap_or(512).min(self.session.n_ctx() / 4);
        let events = self.make_room(header_toks.len() + budget + 8)?;
        let mut opts = opts.clone();
        opts.n_predict = Some(budget);
        let p0 = self.session.next_pos();
        let rendered_before = self.rendered.len();
        let gen = self.session.generate(&header_toks, &opts, on_event)?;
        // A reply cut short (cancelled, or the cache full) leaves its last
        // token unevaluated: cache it, so the cache holds what was said.
        let cached = (self.session.next_pos() - p0) as usize - header_toks.len();
        if cached < gen.tokens.len() {
            self.make_room(gen.tokens.len() - cached)?;
            self.session.eval(&gen.tokens[cached..], false)?;
        }
        self.stats.tokens_seen += header_toks.len() + gen.tokens.len();
        // Close the message as the template renders it (e.g. "<|im_end|>\n").
        let msg = ChatMessage::new("assistant", gen.text.clone());
        let tail = {
            let with = self.delta(Some(&msg), false)?;
            let said = format!("{header}{}", gen.text);
            with.strip_prefix(&said).map(str::to_string).unwrap_or_default()
        };
        let tail_toks = self.tokens(&tail)?;
        if !tail_toks.is_empty() {
            self.make_room(tail_toks.len())?;
            self.session.eval(&tail_toks, false)?;
            self.stats.tokens_seen += tail_toks.len();
        }
        let all: Vec<u32> = header_toks.iter().chain(&gen.tokens).chain(&tail_toks).copied().collect();
        // Positions may have been closed up while making room for the tail;
        // the reply's tokens are the newest, contiguous ones either way.
        let p0 = self.session.next_pos() - all.len() as Pos;
        self.record(SegmentKind::Assistant, p0, &all);
        self.last_reply = Some((p0, rendered_before));
        self.rendered.push_str(&header);
        self.rendered.push_str(&gen.text);
        self.rendered.push_str(&tail);
        self.messages.push(msg);
        Ok((gen, events))
    }

    /// Forget one segment now (the manual `/forget`).
    pub fn forget_segment(&mut self, id: u64, reason: Reason) -> Result<Vec<DecacheEvent>> {
        let s = self.segments.get(id).ok_or_else(|| Error::InvalidArgument(format!("no segment {id}")))?.clone();
        if s.kind == SegmentKind::System {
            return Err(Error::InvalidArgument("the system prompt is never forgotten".into()));
        }
        let mut out = Vec::new();
        self.apply(&[(s.id, s.p0, s.p1, reason)], &mut out)?;
        Ok(out)
    }

    /// Forget every segment `pick` chooses (by kind, turn, ...), except the
    /// system prompt and pinned ones. Returns the deletions (none if nothing matched).
    pub fn forget_where(&mut self, pick: impl Fn(&Segment) -> bool, reason: Reason) -> Result<Vec<DecacheEvent>> {
        let items: Vec<_> = self
            .segments
            .iter()
            .filter(|s| s.kind != SegmentKind::System && !s.pinned && !s.fully_removed() && pick(s))
            .map(|s| (s.id, s.p0, s.p1, reason))
            .collect();
        let mut out = Vec::new();
        self.apply(&items, &mut out)?;
        Ok(out)
    }

    /// Forget the tokens at positions `[p0, p1)`, across whatever segments
    /// hold them (the system prompt's tokens are refused).
    pub fn forget_positions(&mut self, p0: Pos, p1: Pos, reason: Reason) -> Result<Vec<DecacheEvent>> {
        if p1 <= p0 {
            return Err(Error::InvalidArgument(format!("empty position range [{p0}, {p1})")));
        }
        let mut items = Vec::new();
        for s in self.segments.iter().filter(|s| s.p0 < p1 && p0 < s.p1) {
            if s.kind == SegmentKind::System {
                return Err(Error::InvalidArgument(format!(
                    "positions [{p0}, {p1}) cover the system prompt, which is never forgotten"
                )));
            }
            items.push((s.id, p0.max(s.p0), p1.min(s.p1), reason));
        }
        let mut out = Vec::new();
        self.apply(&items, &mut out)?;
        Ok(out)
    }

    /// Take back the last reply (it must be the newest message): its cells
    /// are cut off the end, positions and all, so the next reply takes its
    /// place as if it had never been. Nothing is recomputed.
    pub fn undo_reply(&mut self) -> Result<()> {
        let (p0, rendered_len) = self
            .last_reply
            .take()
            .ok_or_else(|| Error::InvalidArgument("no reply to take back: the newest message is not a reply".into()))?;
        self.session.remove_range(p0, self.session.next_pos(), Gap::Close)?;
        self.segments.truncate_from(p0);
        self.messages.pop();
        self.rendered.truncate(rendered_len);
        Ok(())
    }

    /// The focus of the current question: the words of the newest user message.
    fn focus(&self) -> Vec<String> {
        focus_words(&self.question)
    }

    /// Forget by the policy if `n` more tokens would pass the watermark or
    /// not fit; defragment when the live cells are scattered.
    fn make_room(&mut self, n: usize) -> Result<Vec<DecacheEvent>> {
        let cells = self.session.n_ctx();
        let live = self.session.n_live();
        if n >= cells {
            return Err(Error::PromptTooLong { tokens: n, n_ctx: cells });
        }
        let mut events = Vec::new();
        if self.policy.should_decache(live + n, cells) || live + n > cells {
            let t0 = Instant::now();
            let plan = self.policy.plan(&self.segments, live + n, cells, self.turn, &self.focus());
            let items: Vec<_> = plan.iter().map(|f| (f.segment, f.p0, f.p1, f.reason)).collect();
            self.apply(&items, &mut events)?;
            if !items.is_empty() {
                self.stats.rounds += 1;
                self.stats.kept_tokens += self.session.n_live();
            }
            if self.session.fragmentation() > 0.5 {
                self.session.defrag()?;
                self.stats.defrags += 1;
            }
            self.stats.decache_time += t0.elapsed();
        }
        if let Some(closed) = self.session.prepare_positions(self.positions, n)? {
            // Segments move with their positions; a forgotten part shrinks to nothing.
            self.segments.remap(|p| closed.map(p));
            self.stats.gaps_closed += 1;
        }
        if self.session.n_live() + n > cells {
            return Err(Error::NothingToForget { live: self.session.n_live(), need: n, n_ctx: cells });
        }
        Ok(events)
    }

    fn apply(&mut self, items: &[(u64, Pos, Pos, Reason)], out: &mut Vec<DecacheEvent>) -> Result<()> {
        // Where the kept tokens after each gap start (for a boundary refresh).
        let mut starts: Vec<Pos> = Vec::new();
        for &(id, p0, p1, reason) in items {
            let gap = self.positions.gap();
            let r = self.session.remove_range(p0, p1, gap)?;
            self.segments.mark_removed(id, p0, p1);
            if gap == Gap::Close {
                // Later segments move down with their positions.
                let width = p1 - p0;
                let remap = |p: Pos| if p >= p1 { p - width } else { p.min(p0) };
                self.segments.remap(remap);
                starts.iter_mut().for_each(|s| *s = remap(*s));
                starts.push(p0);
            } else {
                starts.push(p1);
            }
            let kind = self.segments.get(id).map(|s| s.kind.name()).unwrap_or("?");
            self.stats.tokens_decached += r.cells;
            self.stats.events += 1;
            *self.stats.by_reason.entry(reason).or_default() += r.cells;
            if self.session.recording() {
                let v = serde_json::json!({"note": "decache", "turn": self.turn, "segment": id, "kind": kind, "p0": p0, "p1": p1,
                    "cells": r.cells, "reason": reason.name()});
                self.session.note(&v);
            }
            out.push(DecacheEvent { turn: self.turn, segment: id, kind, p0, p1, cells: r.cells, reason });
        }
        if self.refresh > 0 && !starts.is_empty() && !self.session.is_hybrid() {
            let r = self.session.refresh(&starts, self.refresh)?;
            self.stats.tokens_refreshed += r.positions.len();
            if self.session.recording() {
                let v = serde_json::json!({"note": "refresh", "turn": self.turn, "positions": r.positions});
                self.session.note(&v);
            }
        }
        Ok(())
    }
}

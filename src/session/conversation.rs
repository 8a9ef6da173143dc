//! A conversation over one `Session`: messages rendered through the chat
//! template and appended as segments, replies generated, and stale context
//! forgotten in place when the cache nears its watermark. The CLI's chat,
//! the server and the agent drive this; it returns data and events only.
use super::policy::{DecachePolicy, Reason};
use super::segments::{SegmentKind, Segments};
use super::{GenerateEvent, GenerateOptions, Generation, PositionPolicy, Session};
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
#[derive(Clone, Debug, Default)]
pub struct ConversationStats {
    /// Tokens ever evaluated (prompt and generated).
    pub tokens_seen: usize,
    pub tokens_decached: usize,
    pub decache_time: Duration,
    pub events: usize,
    pub defrags: usize,
    /// Times positions were closed up (the `auto` policy).
    pub compactions: usize,
}

pub struct Conversation {
    pub session: Session,
    pub segments: Segments,
    pub policy: DecachePolicy,
    pub stats: ConversationStats,
    /// `Keep` never moves positions; `Auto` (and `Shift`) close all gaps
    /// once the next position would pass the model's trained context.
    pub positions: PositionPolicy,
    template: ChatTemplate,
    messages: Vec<ChatMessage>,
    /// The template's rendering of `messages` (what the cache holds).
    rendered: String,
    turn: u32,
    bos: String,
    eos: String,
}

impl Conversation {
    pub fn new(session: Session, template: ChatTemplate, policy: DecachePolicy) -> Conversation {
        let tok = &session.model().tokenizer;
        let piece = |id: Option<u32>| id.map(|i| String::from_utf8_lossy(&tok.token_to_piece(i, true)).into_owned()).unwrap_or_default();
        let (bos, eos) = (piece(tok.bos()), piece(tok.eos()));
        Conversation {
            session,
            segments: Segments::default(),
            policy,
            stats: ConversationStats::default(),
            positions: PositionPolicy::Auto,
            template,
            messages: Vec::new(),
            rendered: String::new(),
            turn: 0,
            bos,
            eos,
        }
    }

    pub fn turn(&self) -> u32 {
        self.turn
    }

    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// The text the template adds for `extra` after what is cached
    /// (templates must be append-only, as ChatML-style ones are).
    fn delta(&self, extra: Option<&ChatMessage>, generation_prompt: bool) -> Result<String> {
        let mut msgs = self.messages.clone();
        msgs.extend(extra.cloned());
        let full = self.template.render(&msgs, generation_prompt, &self.bos, &self.eos)?;
        full.strip_prefix(self.rendered.as_str()).map(str::to_string).ok_or_else(|| {
            Error::Context("the chat template re-rendered earlier messages differently (it is not append-only)".into())
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
        if kind == SegmentKind::User {
            self.turn += 1;
        }
        let msg = ChatMessage::new(role, content);
        let delta = self.delta(Some(&msg), false)?;
        let toks = self.tokens(&delta)?;
        let events = self.make_room(toks.len())?;
        let p0 = self.session.next_pos();
        self.session.eval(&toks, false)?;
        self.stats.tokens_seen += toks.len();
        self.segments.push(kind, self.turn, p0, self.session.next_pos());
        self.messages.push(msg);
        self.rendered.push_str(&delta);
        Ok(events)
    }

    /// Generate the assistant's reply (at most `opts.n_predict` tokens,
    /// default 512), making room first. The reply becomes an assistant segment.
    pub fn reply(
        &mut self, opts: &GenerateOptions, on_event: &mut dyn FnMut(GenerateEvent<'_>) -> bool,
    ) -> Result<(Generation, Vec<DecacheEvent>)> {
        let header = self.delta(None, true)?;
        let header_toks = self.tokens(&header)?;
        let budget = opts.n_predict.unwrap_or(512).min(self.session.n_ctx() / 4);
        let events = self.make_room(header_toks.len() + budget + 8)?;
        let mut opts = opts.clone();
        opts.n_predict = Some(budget);
        let p0 = self.session.next_pos();
        let gen = self.session.generate(&header_toks, &opts, on_event)?;
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
        self.segments.push(SegmentKind::Assistant, self.turn, p0, self.session.next_pos());
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

    /// Forget by the policy if `n` more tokens would pass the watermark or
    /// not fit; defragment when the live cells are scattered.
    fn make_room(&mut self, n: usize) -> Result<Vec<DecacheEvent>> {
        let cells = self.session.n_ctx();
        let live = self.session.n_live();
        if n >= cells {
            return Err(Error::Context(format!("{n} tokens do not fit in a context of {cells} cells, even empty")));
        }
        let mut events = Vec::new();
        if self.policy.should_decache(live + n, cells) || live + n > cells {
            let t0 = Instant::now();
            let plan = self.policy.plan(&self.segments, live + n, cells, self.turn);
            let items: Vec<_> = plan.iter().map(|f| (f.segment, f.p0, f.p1, f.reason)).collect();
            self.apply(&items, &mut events)?;
            if self.session.fragmentation() > 0.5 {
                self.session.defrag()?;
                self.stats.defrags += 1;
            }
            self.stats.decache_time += t0.elapsed();
        }
        if self.positions != PositionPolicy::Keep && self.session.needs_compaction(n) {
            self.compact()?;
        }
        if self.session.n_live() + n > cells {
            return Err(Error::Context(format!(
                "nothing left to forget: {} live cells (system prompt, pinned and recent turns) and {n} new tokens exceed {cells}",
                self.session.n_live()
            )));
        }
        Ok(events)
    }

    /// Close every gap in positions (keys re-rotated, no recompute) and move
    /// the segments to the new positions: a position maps to the number of
    /// live positions below it, so forgotten parts shrink to nothing.
    fn compact(&mut self) -> Result<()> {
        let live = self.session.live_positions();
        let map = |p: Pos| live.partition_point(|&q| q < p) as Pos;
        self.segments.remap(map);
        self.session.compact_positions()?;
        self.stats.compactions += 1;
        Ok(())
    }

    fn apply(&mut self, items: &[(u64, Pos, Pos, Reason)], out: &mut Vec<DecacheEvent>) -> Result<()> {
        for &(id, p0, p1, reason) in items {
            let r = self.session.remove_range(p0, p1, PositionPolicy::Keep)?;
            self.segments.mark_removed(id, p0, p1);
            let kind = self.segments.get(id).map(|s| s.kind.name()).unwrap_or("?");
            self.stats.tokens_decached += r.cells;
            self.stats.events += 1;
            out.push(DecacheEvent { turn: self.turn, segment: id, kind, p0, p1, cells: r.cells, reason });
        }
        Ok(())
    }
}

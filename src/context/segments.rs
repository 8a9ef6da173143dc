//! Segments: spans of the context with a meaning (system prompt, user turn,
//! tool result, reminder, ...), so that the decache policy can forget by
//! meaning rather than by age. Pure data: positions, kinds, turns, pins;
//! positions are token positions for a `Conversation`, estimated ones for
//! the server's auto-pruning.
use crate::kv::Pos;
use serde::{Deserialize, Serialize};

/// What a span of the context is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentKind {
    System,
    User,
    Assistant,
    /// A reasoning block (`<think>…</think>`).
    Thinking,
    ToolCall,
    /// A file's content: re-readable, so safe to forget.
    FileRead {
        path: String,
    },
    /// A command's output; `passed` when the run is known to have succeeded.
    CommandOutput {
        passed: Option<bool>,
    },
    SearchResult,
    /// A `<system-reminder>` block; `key` identifies copies of the same reminder.
    SystemReminder {
        key: String,
    },
    /// Output of a hook; `applied` false when it did not apply.
    HookOutput {
        applied: bool,
    },
    /// Something long the user pasted (a log).
    PastedLog,
    /// A note the model kept in place of what it forgot (`forget`).
    Note,
}

impl SegmentKind {
    /// Whether a message of this kind starts a new turn (the user speaking).
    pub fn starts_turn(&self) -> bool {
        matches!(self, SegmentKind::User | SegmentKind::PastedLog)
    }

    pub fn name(&self) -> &'static str {
        match self {
            SegmentKind::System => "system",
            SegmentKind::User => "user",
            SegmentKind::Assistant => "assistant",
            SegmentKind::Thinking => "thinking",
            SegmentKind::ToolCall => "tool call",
            SegmentKind::FileRead { .. } => "file read",
            SegmentKind::CommandOutput { .. } => "command output",
            SegmentKind::SearchResult => "search result",
            SegmentKind::SystemReminder { .. } => "system reminder",
            SegmentKind::HookOutput { .. } => "hook output",
            SegmentKind::PastedLog => "pasted log",
            SegmentKind::Note => "note",
        }
    }
}

/// One span of the context, in positions `[p0, p1)` as it was written.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Segment {
    pub id: u64,
    pub kind: SegmentKind,
    pub turn: u32,
    pub p0: Pos,
    pub p1: Pos,
    pub pinned: bool,
    /// Position ranges of this segment already forgotten.
    pub removed: Vec<(Pos, Pos)>,
    /// The lines of a log or paste, `[p0, p1)` and text (empty for other kinds).
    pub lines: Vec<Line>,
}

/// One line of a segment, in positions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub p0: Pos,
    pub p1: Pos,
    pub text: String,
}

impl Segment {
    pub fn len(&self) -> usize {
        (self.p1 - self.p0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.p1 <= self.p0
    }

    /// Tokens of this segment still in the cache.
    pub fn live(&self) -> usize {
        self.len() - self.removed.iter().map(|r| (r.1 - r.0) as usize).sum::<usize>()
    }

    pub fn fully_removed(&self) -> bool {
        self.live() == 0
    }
}

/// The segments of one session, in order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Segments {
    items: Vec<Segment>,
    next_id: u64,
}

impl Segments {
    /// Record a new segment at `[p0, p1)`; returns its id.
    pub fn push(&mut self, kind: SegmentKind, turn: u32, p0: Pos, p1: Pos) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.items.push(Segment { id, kind, turn, p0, p1, pinned: false, removed: Vec::new(), lines: Vec::new() });
        id
    }

    /// The id the next segment will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Record the lines of segment `id` (for logs and pastes).
    pub fn set_lines(&mut self, id: u64, lines: Vec<Line>) {
        if let Some(s) = self.items.iter_mut().find(|s| s.id == id) {
            s.lines = lines;
        }
    }

    /// The newest segment, if any.
    pub fn last(&self) -> Option<&Segment> {
        self.items.last()
    }

    /// Drop the segments that start at or after `p` (the tail was cut off,
    /// e.g. a reply to regenerate).
    pub fn truncate_from(&mut self, p: Pos) {
        self.items.retain(|s| s.p0 < p);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Segment> {
        self.items.iter()
    }

    pub fn get(&self, id: u64) -> Option<&Segment> {
        self.items.iter().find(|s| s.id == id)
    }

    /// Pin or unpin a segment (pinned ones are never forgotten by the policy).
    pub fn set_pinned(&mut self, id: u64, pinned: bool) -> bool {
        match self.items.iter_mut().find(|s| s.id == id) {
            Some(s) => {
                s.pinned = pinned;
                true
            }
            None => false,
        }
    }

    /// Note that `[p0, p1)` of segment `id` was forgotten.
    pub fn mark_removed(&mut self, id: u64, p0: Pos, p1: Pos) {
        if let Some(s) = self.items.iter_mut().find(|s| s.id == id) {
            s.removed.push((p0.max(s.p0), p1.min(s.p1)));
        }
    }

    /// Move every segment through a monotonic position map (after gaps were
    /// closed); forgotten parts, which hold no live position, vanish.
    pub fn remap(&mut self, map: impl Fn(Pos) -> Pos) {
        for s in &mut self.items {
            s.p0 = map(s.p0);
            s.p1 = map(s.p1);
            s.removed.clear();
            for l in &mut s.lines {
                l.p0 = map(l.p0);
                l.p1 = map(l.p1);
            }
            s.lines.retain(|l| l.p0 < l.p1);
        }
    }

    pub fn live_tokens(&self) -> usize {
        self.items.iter().map(Segment::live).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_counts_follow_removals() {
        let mut s = Segments::default();
        let a = s.push(SegmentKind::System, 0, 0, 20);
        let b = s.push(SegmentKind::PastedLog, 1, 20, 120);
        s.mark_removed(b, 40, 100);
        assert_eq!(s.get(b).unwrap().live(), 40);
        assert_eq!(s.live_tokens(), 60);
        assert!(s.set_pinned(a, true));
        assert!(s.get(a).unwrap().pinned);
        assert!(!s.set_pinned(99, true));
        // Close the gap [60, 120): live positions are 0..60 plus nothing above.
        let live: Vec<Pos> = (0..60).collect();
        s.remap(|p| live.partition_point(|&q| q < p) as Pos);
        assert_eq!((s.get(b).unwrap().p0, s.get(b).unwrap().p1), (20, 60));
        assert_eq!(s.get(b).unwrap().live(), 40, "the forgotten middle vanished, the live part stayed");
        s.mark_removed(b, 0, 1000);
        assert_eq!(s.get(b).unwrap().removed.last(), Some(&(20, 60)), "clamped to the segment");
    }
}

//! What a session did, op by op, for whoever records it (transcripts):
//! every evaluation with its positions, every removal, defrag and position
//! gap closing, and each generation as it goes (its settings with the seed
//! actually used, then each token). Replaying the ops on the same model and
//! settings rebuilds the same cache and, step for step, the same tokens.
use super::{Gap, Session, StopReason};
use crate::kv::Pos;
use crate::sampling::SamplingParams;

/// One thing a session did.
#[derive(Debug)]
pub enum SessionOp<'a> {
    /// Tokens evaluated at these positions (outside a generation).
    Eval {
        tokens: &'a [u32],
        positions: &'a [Pos],
    },
    /// Positions `[p0, p1)` forgotten.
    Remove {
        p0: Pos,
        p1: Pos,
        gap: Gap,
    },
    /// Live tokens at `p0` or later moved up by `n` positions (room for
    /// a replaced span longer than the gap it fills).
    OpenGap {
        p0: Pos,
        n: Pos,
    },
    Defrag,
    CloseGaps,
    Clear,
    /// The next position was set back to `next_pos` (the tail after the
    /// last kept token was removed, as when a server reuses a cache).
    Rewind {
        next_pos: Pos,
    },
    /// The cache was saved under `tag` (the server's prompt cache): a
    /// replay keeps its own copy under the same tag.
    Saved {
        tag: u64,
    },
    /// A saved state was loaded: one saved under `tag` in this same
    /// transcript (a replay restores its own copy), or, without a tag, a
    /// state from elsewhere (a replay cannot follow this).
    Restore {
        tag: Option<u64>,
    },
    /// A generation begins: its prompt (evaluated first) and settings, with
    /// the seed the sampler really used.
    GenerateStart {
        prompt: &'a [u32],
        sampling: &'a SamplingParams,
        n_predict: Option<usize>,
        ignore_eos: bool,
        /// The tokens were scripted, not sampled (a replay feeds them back).
        forced: bool,
    },
    /// A token was sampled (and, unless the generation ends on it, evaluated).
    Token {
        id: u32,
    },
    /// The generation ended; `evaluated_last`: its last token was evaluated.
    GenerateEnd {
        stop: StopReason,
        evaluated_last: bool,
    },
    /// What the caller says about the context (a conversation's segments
    /// and decache events); not needed to replay.
    Note(&'a serde_json::Value),
}

/// Receives the ops of a session.
pub type Recorder = Box<dyn FnMut(SessionOp<'_>) + Send>;

impl Session {
    /// Send every later op to `rec` (replacing any recorder before it).
    pub fn set_recorder(&mut self, rec: Recorder) {
        self.recorder = Some(rec);
    }

    /// Record a note (when recording).
    pub fn note(&mut self, v: &serde_json::Value) {
        self.record(SessionOp::Note(v));
    }

    /// Whether ops are being recorded.
    pub fn recording(&self) -> bool {
        self.recorder.is_some()
    }

    pub(super) fn record(&mut self, op: SessionOp<'_>) {
        if let Some(r) = &mut self.recorder {
            if !self.generating || matches!(op, SessionOp::Token { .. } | SessionOp::GenerateEnd { .. }) {
                r(op);
            }
        }
    }
}

//! Forgetting in place: removing cells from the cache without recomputing
//! what remains, under a position policy, and packing the live cells.
use super::Session;
use crate::error::{Error, Result};
use crate::kv::Pos;
use std::time::{Duration, Instant};

/// What one removal does with the positions it frees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gap {
    /// Positions never change; later tokens continue after the highest one
    /// and the model sees a gap (no graph runs). Transcripts before the
    /// policy was split wrote `auto` for it.
    #[default]
    #[serde(alias = "auto")]
    Keep,
    /// Close the gap: later cells move down and their keys are re-rotated by
    /// RoPE (a small graph over the cached K, no recompute). Older
    /// transcripts wrote `shift`.
    #[serde(alias = "shift")]
    Close,
}

/// How a conversation (the chat, the agent, a server slot) treats
/// positions as it forgets: the policy its removals and `prepare_positions`
/// follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionPolicy {
    /// Every gap stays (positions only grow).
    #[default]
    Keep,
    /// Every removal closes its gap at once.
    Shift,
    /// Gaps stay until the next position would pass the model's trained
    /// context, then all are closed once.
    Auto,
}

impl PositionPolicy {
    /// What a removal under this policy does with its gap.
    pub fn gap(self) -> Gap {
        match self {
            PositionPolicy::Shift => Gap::Close,
            PositionPolicy::Keep | PositionPolicy::Auto => Gap::Keep,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PositionPolicy::Keep => "keep",
            PositionPolicy::Shift => "shift",
            PositionPolicy::Auto => "auto",
        }
    }
}

impl std::str::FromStr for PositionPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("unknown position policy '{s}' (keep, shift or auto)"))
    }
}

/// How positions moved when every gap was closed.
#[derive(Clone, Debug)]
pub struct ClosedGaps {
    /// The live positions before, in order.
    before: Vec<Pos>,
    /// Cells whose position changed.
    pub moved: usize,
}

impl ClosedGaps {
    /// Where position `p` went: to the number of live positions below it
    /// (a forgotten span shrinks to nothing).
    pub fn map(&self, p: Pos) -> Pos {
        self.before.partition_point(|&q| q < p) as Pos
    }
}

/// The outcome of one removal.
#[derive(Clone, Debug)]
pub struct Removal {
    /// Cells whose live bit was cleared.
    pub cells: usize,
    /// Cells whose position moved (shift policy).
    pub shifted: usize,
    pub took: Duration,
}

impl Session {
    /// Forget the tokens at positions `[p0, p1)`: their cells become
    /// invisible to every later query and free for reuse. With `Gap::Keep`
    /// this only clears live bits; with `Gap::Close` later positions close
    /// the gap and their keys are re-rotated once, before the next
    /// evaluation (several removals accumulate into one rotation, as in
    /// llama.cpp).
    pub fn remove_range(&mut self, p0: Pos, p1: Pos, gap_policy: Gap) -> Result<Removal> {
        if p0 < 0 || p1 < p0 {
            return Err(Error::InvalidArgument(format!("invalid position range [{p0}, {p1})")));
        }
        let t0 = Instant::now();
        let gap = p1.min(self.next_pos) - p0;
        let shift = gap_policy == Gap::Close && gap > 0;
        let seq = self.seq;
        let mut pool = self.shared.pool();
        let super::shared::Pool { kv, runner } = &mut *pool;
        if shift {
            kv.check_close_gap(seq, p0, p1, gap, self.next_pos)?;
            // Cells that move must be this sequence's own.
            kv.unshare(runner.sched(), seq, p1)?;
        }
        let cells = kv.remove_range(seq, p0, p1);
        let mut shifted = 0;
        if shift {
            shifted = kv.add_to_positions(seq, p1, -gap)?;
            self.next_pos -= gap;
        }
        drop(pool);
        self.record(super::record::SessionOp::Remove { p0, p1, gap: gap_policy });
        Ok(Removal { cells, shifted, took: t0.elapsed() })
    }

    /// Make room for `n` positions at `p0`: every live token at `p0` or
    /// later moves up by `n`, its key re-rotated before the next evaluation
    /// (as when a gap closes, the other way). Reuse does this under the
    /// `Shift` and `Auto` policies when a replaced span is longer than the
    /// gap its deleted tokens left. Returns the cells moved.
    pub fn open_gap(&mut self, p0: Pos, n: Pos) -> Result<usize> {
        if p0 < 0 || n < 0 {
            return Err(Error::InvalidArgument(format!("cannot open a gap of {n} positions at {p0}")));
        }
        let next = if self.next_pos > p0 { self.next_pos.checked_add(n) } else { Some(self.next_pos) };
        let next = next.ok_or_else(|| crate::kv::KvError::PositionRange("positions would overflow 32 bits".into()))?;
        let mut pool = self.shared.pool();
        let super::shared::Pool { kv, runner } = &mut *pool;
        kv.unshare(runner.sched(), self.seq, p0)?;
        let moved = kv.add_to_positions(self.seq, p0, n)?;
        drop(pool);
        self.next_pos = next;
        self.record(super::record::SessionOp::OpenGap { p0, n });
        Ok(moved)
    }

    /// Whether the cache can go on at position `q` exactly: false when a
    /// sliding-window layer would need a cell its pool has dropped.
    pub fn can_resume_at(&self, q: Pos) -> bool {
        self.shared.pool().kv.can_resume_at(self.seq, q)
    }

    /// The lowest position the sliding-window pool has dropped while the
    /// main pool still holds it (nothing below it is missing), if any.
    pub fn swa_dropped_from(&self) -> Option<Pos> {
        self.shared.pool().kv.swa_dropped_from(self.seq)
    }

    /// Whether `n` tokens from position `q` on find cells in every pool
    /// (the sliding-window pool may drop what no query from `q` on sees).
    pub fn can_place(&self, q: Pos, n: usize) -> bool {
        self.shared.pool().kv.can_place(self.seq, q, n)
    }

    /// Set the next position back to `p`, which must lie after every live
    /// token (what comes after the last kept token was removed).
    pub fn rewind(&mut self, p: Pos) -> Result<()> {
        if let Some(last) = self.shared.pool().kv.max_pos(self.seq).filter(|&last| last >= p) {
            return Err(Error::InvalidArgument(format!(
                "cannot rewind to position {p}: position {last} still holds a token"
            )));
        }
        if p < 0 {
            return Err(Error::InvalidArgument(format!("cannot rewind to a negative position ({p})")));
        }
        self.next_pos = p;
        self.record(super::record::SessionOp::Rewind { next_pos: p });
        Ok(())
    }

    /// Close every gap in positions (the `auto` policy's one-time step):
    /// live cells get positions 0.. in order, keys re-rotated.
    pub fn close_gaps(&mut self) -> Result<usize> {
        let mut pool = self.shared.pool();
        let super::shared::Pool { kv, runner } = &mut *pool;
        kv.unshare(runner.sched(), self.seq, 0)?;
        let (moved, next) = kv.close_gaps(self.seq)?;
        drop(pool);
        self.next_pos = next;
        self.record(super::record::SessionOp::CloseGaps);
        Ok(moved)
    }

    /// The live cells as (position, token), in position order: the text a
    /// cache-less engine would have to prefill to get where this session is.
    pub fn live_chain(&self) -> Vec<(Pos, u32)> {
        self.shared.pool().kv.live_chain(self.seq)
    }

    /// Tokens of the live cells in position order.
    pub fn live_tokens(&self) -> Vec<u32> {
        self.live_chain().into_iter().map(|(_, t)| t).collect()
    }

    /// Whether the next `n` tokens would pass the trained context (then a
    /// policy other than `Keep` closes every gap first).
    pub fn needs_closing_gaps(&self, n: usize) -> bool {
        (self.next_pos as i64 + n as i64) > self.model.hparams.n_ctx_train as i64
    }

    /// The one position rule before `n` more tokens are evaluated, for the
    /// conversation, the server and reuse alike: under `Shift` and `Auto`,
    /// if the next position would pass the model's trained context, close
    /// every gap (under `Shift` only gaps left by others remain by then).
    /// `Keep` never moves a position. Returns how positions moved, if they did.
    pub fn prepare_positions(&mut self, policy: PositionPolicy, n: usize) -> Result<Option<ClosedGaps>> {
        if policy == PositionPolicy::Keep || !self.needs_closing_gaps(n) {
            return Ok(None);
        }
        let before = self.live_chain().into_iter().map(|(p, _)| p).collect();
        let moved = self.close_gaps()?;
        Ok(Some(ClosedGaps { before, moved }))
    }

    /// Pack the live cells into a contiguous block so attention spans only
    /// them; logits are unchanged. Returns the cells moved.
    pub fn defrag(&mut self) -> Result<usize> {
        let mut pool = self.shared.pool();
        let super::shared::Pool { kv, runner } = &mut *pool;
        kv.apply_pending_shift(runner.sched(), &*self.model)?;
        let moved = kv.defrag(runner.sched(), &*self.model)?;
        drop(pool);
        self.record(super::record::SessionOp::Defrag);
        Ok(moved)
    }

    /// Graphs computed so far (steps, K-shifts, defrags): removal with the
    /// `Keep` policy adds none.
    pub fn graphs_run(&self) -> u64 {
        self.shared.pool().runner.graphs_run()
    }

    /// Share of the attended cell range that holds no live token.
    pub fn fragmentation(&self) -> f32 {
        self.shared.pool().kv.fragmentation()
    }
}

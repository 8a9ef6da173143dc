//! The session's side of hybrid models' recurrent state (`kv::recurrent`
//! holds the rules): before an evaluation, a sequence whose tail was
//! removed is rewound (the newest checkpoint at or before its last live
//! token restored, the live tokens after it evaluated again); tokens can
//! only be evaluated after everything the state absorbed; a checkpoint is
//! taken after each evaluation of several tokens.
use super::Session;
use crate::error::Result;
use crate::kv::{KvError, Pos};

/// What a rewind did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rewound {
    /// The last position the restored checkpoint had absorbed (-1: the empty state).
    pub from: Pos,
    /// Live tokens evaluated again after it.
    pub reevaluated: usize,
}

impl Session {
    /// Whether the model has recurrent layers (a hybrid model).
    pub fn is_hybrid(&self) -> bool {
        self.model.hparams.recurrent.is_some()
    }

    /// Bring the recurrent state in line with the live tokens, if the tail
    /// was removed since the last evaluation: restore the newest checkpoint
    /// at or before the last live token and evaluate the live tokens after
    /// it again (their attention cells too, which were computed from the
    /// state that is being undone). None when nothing had to be done.
    pub fn sync_recurrent(&mut self) -> Result<Option<Rewound>> {
        let seq = self.seq;
        let mut pool = self.shared.pool();
        let kv = &mut pool.kv;
        if !kv.recurrent().is_some_and(|r| r.needs_rewind(seq)) {
            return Ok(None);
        }
        let chain = kv.live_chain(seq);
        let to = chain.last().map_or(-1, |&(p, _)| p);
        let from = kv.recurrent_mut().expect("checked").rewind_to(seq, to);
        let redo: Vec<(Pos, u32)> = chain.into_iter().filter(|&(p, _)| p > from).collect();
        if let Some(&(p0, _)) = redo.first() {
            kv.remove_range(seq, p0, Pos::MAX);
        }
        drop(pool);
        let (positions, tokens): (Vec<Pos>, Vec<u32>) = redo.into_iter().unzip();
        if !tokens.is_empty() {
            tracing::info!(from, tokens = tokens.len(), "recurrent state rewound: evaluating the live tokens again");
            self.eval_unrecorded(&tokens, &positions, false)?;
            self.reevaluated += tokens.len() as u64;
        }
        Ok(Some(Rewound { from, reevaluated: tokens.len() }))
    }

    /// Before evaluating at `first`: rewind if needed, then refuse a
    /// position at or before what the recurrent state absorbed.
    pub(super) fn recurrent_before_eval(&mut self, first: Pos) -> Result<()> {
        if !self.is_hybrid() {
            return Ok(());
        }
        self.sync_recurrent()?;
        let last = self.shared.pool().kv.recurrent().map_or(-1, |r| r.last(self.seq));
        if first <= last {
            return Err(KvError::Recurrent(format!(
                "position {first} comes before position {last}, which this hybrid model's recurrent layers have \
                 already absorbed: their state takes tokens in order, so tokens cannot be inserted or re-evaluated \
                 before it (remove the tokens after {} first to rewind)",
                first - 1
            ))
            .into());
        }
        Ok(())
    }

    /// After evaluating `n` tokens: a checkpoint when there were several (a
    /// prompt or a turn, not one generated token).
    pub(super) fn recurrent_after_eval(&mut self, n: usize) {
        if n > 1 {
            let seq = self.seq;
            if let Some(r) = self.shared.pool().kv.recurrent_mut() {
                r.checkpoint(seq);
            }
        }
    }

    /// Tokens evaluated again by rewinds so far (a request's prefill counts them).
    pub fn reevaluated(&self) -> u64 {
        self.reevaluated
    }

    /// The recurrent state's checkpoints of this sequence: the last position
    /// each absorbed.
    pub fn recurrent_checkpoints(&self) -> Vec<Pos> {
        let pool = self.shared.pool();
        pool.kv.recurrent().map_or_else(Vec::new, |r| r.checkpoints(self.seq).iter().map(|c| c.last).collect())
    }

    /// This sequence's recurrent state as bytes (all layers), and the last
    /// position it absorbed; None for a model without recurrent layers.
    pub fn recurrent_state(&self) -> Option<(Pos, Vec<u8>)> {
        let pool = self.shared.pool();
        pool.kv.recurrent().map(|r| (r.last(self.seq), r.read(self.seq)))
    }
}

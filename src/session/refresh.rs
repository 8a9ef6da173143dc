//! Boundary refresh: after a removal, the first tokens after each gap
//! still hold keys and values computed while the forgotten span was in
//! view. Re-evaluating the first `k` of them, at their own positions with
//! the gap's content gone, gives them the K/V a recompute without the span
//! would give (the cost is `k` tokens per gap, never the whole suffix);
//! later tokens keep theirs.
use super::{Gap, Session};
use crate::error::Result;
use crate::kv::Pos;

/// What a refresh re-evaluated.
#[derive(Clone, Debug, Default)]
pub struct Refreshed {
    /// The positions re-evaluated, ascending.
    pub positions: Vec<Pos>,
    /// Their logits, one row each (`n_vocab` floats per row).
    pub logits: Vec<f32>,
}

impl Session {
    /// Re-evaluate the first `k` live tokens at or after each position in
    /// `starts` (the first position after each gap, as positions are now),
    /// in place: their cells are freed and the same tokens evaluated again
    /// at the same positions, each seeing only what is live before it.
    pub fn refresh(&mut self, starts: &[Pos], k: usize) -> Result<Refreshed> {
        if self.is_hybrid() && k > 0 && !starts.is_empty() {
            // Refused before anything is removed: the recurrent state cannot
            // take the same tokens a second time.
            return Err(crate::kv::KvError::Recurrent(
                "boundary refresh is not available for hybrid models: their recurrent layers absorb each token once, \
                 in order"
                    .into(),
            )
            .into());
        }
        let chain = self.live_chain();
        let mut picked: Vec<(Pos, u32)> = Vec::new();
        for &s in starts {
            let from = chain.partition_point(|&(p, _)| p < s);
            picked.extend(chain[from..(from + k).min(chain.len())].iter().copied());
        }
        picked.sort_unstable();
        picked.dedup();
        if picked.is_empty() {
            return Ok(Refreshed::default());
        }
        let (positions, tokens): (Vec<Pos>, Vec<u32>) = picked.into_iter().unzip();
        // Free each run of consecutive positions (without moving anything).
        let mut at = 0;
        while at < positions.len() {
            let mut end = at + 1;
            while end < positions.len() && positions[end] == positions[end - 1] + 1 {
                end += 1;
            }
            self.remove_range(positions[at], positions[end - 1] + 1, Gap::Keep)?;
            at = end;
        }
        let logits = self.eval_at(&tokens, &positions, true)?;
        Ok(Refreshed { positions, logits })
    }
}

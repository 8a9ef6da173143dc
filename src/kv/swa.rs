//! The sliding-window layers' own, smaller pool of cells. A layer whose
//! attention sees only the last `window` positions never needs older keys,
//! so its pool holds `window` + one micro-batch cells (rounded up) instead
//! of the whole context. Every token gets a cell in both pools; when this
//! pool is full, the oldest cells that no query from the batch on can see
//! any more are dropped. A cell is dropped only when room is needed, so the
//! pool keeps about a micro-batch of positions beyond the window: enough to
//! take back a short reply, or resume a little before the newest token,
//! exactly. Operations that would need a dropped cell (closing a gap that
//! brings old positions back into the window, resuming further back) are
//! refused with an error rather than answered differently from a full cache.
//!
//! With several sequences, a cell is dropped only when no sequence holding
//! it can see it any more: for a sequence in the batch, from its first query
//! in the batch on; for the others, from the position after their newest.
use super::cells::{Cells, Pos, SeqId};
use super::error::KvError;

#[derive(Clone, Debug)]
pub struct SwaPool {
    pub cells: Cells,
    /// Positions a query sees, its own included.
    pub window: u32,
}

impl SwaPool {
    pub fn new(size: usize, window: u32, n_seq: usize) -> SwaPool {
        SwaPool { cells: Cells::new(size, n_seq), window: window.max(1) }
    }

    /// The lowest position a query at `q` can see.
    pub fn reach(&self, q: Pos) -> Pos {
        (q as i64 - self.window as i64 + 1).max(0) as Pos
    }

    /// Free at least `n` cells for a batch whose first query of each of
    /// its sequences is `firsts` (sequence, position): if fewer are free,
    /// drop the oldest cells that no query of a sequence holding them can
    /// see from then on. Returns the cells dropped.
    pub fn make_room(&mut self, n: usize, firsts: &[(SeqId, Pos)]) -> Result<usize, KvError> {
        self.drop_oldest(n, firsts).map(|d| d.len())
    }

    /// `make_room`, returning the cells dropped, oldest first.
    fn drop_oldest(&mut self, n: usize, firsts: &[(SeqId, Pos)]) -> Result<Vec<usize>, KvError> {
        let free = self.cells.n_free();
        if free >= n {
            return Ok(Vec::new());
        }
        let need = n - free;
        // The lowest position each sequence may still see.
        let reach: Vec<Pos> = (0..self.cells.n_seq())
            .map(|s| match firsts.iter().filter(|f| f.0 == s).map(|f| f.1).min() {
                Some(q) => self.reach(q),
                None => self.cells.max_pos(s).map_or(Pos::MAX, |p| self.reach(p.saturating_add(1))),
            })
            .collect();
        let mut old: Vec<(Pos, usize)> = (0..self.cells.used_max_p1())
            .filter(|&i| self.cells.is_live(i))
            .filter(|&i| {
                let (bits, p) = (self.cells.seq_bits(i), self.cells.pos(i));
                (0..reach.len()).all(|s| bits & (1 << s) == 0 || p < reach[s])
            })
            .map(|i| (self.cells.pos(i), i))
            .collect();
        if old.len() < need {
            let from = firsts.iter().map(|f| f.1).min().unwrap_or(0);
            return Err(KvError::WindowFull {
                size: self.cells.size(),
                need: n,
                from,
                seen: self.cells.n_live() - old.len(),
            });
        }
        old.sort_unstable();
        let dropped: Vec<usize> = old[..need].iter().map(|&(_, i)| i).collect();
        for &i in &dropped {
            self.cells.remove(i);
        }
        Ok(dropped)
    }

    /// Cells for a batch's `n` tokens (first queries `firsts`), as placing
    /// them one token at a time gives them: the free cells first, lowest
    /// first, then the cells `make_room` drops, oldest first. (Given the
    /// lowest free cells after the drops, a batch's first tokens would take
    /// the cells its later ones freed, and the window layers would sum over
    /// the cells in another order than decoding token by token does.)
    pub fn cells_for(&mut self, n: usize, firsts: &[(SeqId, Pos)]) -> Result<Vec<usize>, KvError> {
        let free = self.cells.find_free(self.cells.n_free().min(n)).unwrap_or_default();
        let dropped = self.drop_oldest(n, firsts)?;
        Ok(free.into_iter().chain(dropped).take(n).collect())
    }

    /// The first position in `[lo, hi)` that `global` holds for `seq` and
    /// this pool has dropped, if any.
    pub fn missing(&self, global: &Cells, seq: SeqId, lo: Pos, hi: Pos) -> Option<Pos> {
        if hi <= lo {
            return None;
        }
        global.positions_in(seq, lo.max(0)..hi).find(|&p| !self.cells.has_pos(seq, p))
    }

    /// The first position that `seq`'s queries at `q_lo..=q_hi` would see,
    /// that `global` holds and this pool has dropped.
    pub fn missing_for(&self, global: &Cells, seq: SeqId, q_lo: Pos, q_hi: Pos) -> Option<Pos> {
        self.missing(global, seq, self.reach(q_lo), q_hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(n: usize, size: usize, window: u32) -> (Cells, SwaPool) {
        let mut g = Cells::new(64, 2);
        let mut s = SwaPool::new(size, window, 2);
        for p in 0..n as Pos {
            s.make_room(1, &[(0, p)]).unwrap();
            let i = s.cells.find_free(1).unwrap()[0];
            s.cells.fill(i, p as u32, p, 0);
            g.fill(p as usize, p as u32, p, 0);
        }
        (g, s)
    }

    #[test]
    fn the_pool_drops_only_what_no_later_query_sees_and_only_when_full() {
        // Window 4, 6 cells: positions 0..6 fill it without dropping anything.
        let (g, s) = both(6, 6, 4);
        assert_eq!(s.cells.n_live(), 6);
        assert_eq!(s.missing_for(&g, 0, 6, 6), None);
        // Ten tokens through 6 cells: 0..4 dropped, 4..10 kept (a query at 10 sees 7..=10).
        let (g, mut s) = both(10, 6, 4);
        assert_eq!(s.cells.positions_in(0, ..).collect::<Vec<_>>(), vec![4, 5, 6, 7, 8, 9]);
        assert_eq!(s.missing_for(&g, 0, 10, 10), None, "the window of the next query is whole");
        assert_eq!(s.missing_for(&g, 0, 6, 6), Some(3), "resuming at 6 would need 3..6 and 3 is gone");
        assert_eq!(s.missing_for(&g, 0, 7, 7), None);
        // Another sequence sharing 4..7 and idle at 7 still sees 4, 5, 6.
        s.cells.share_range(0, 1, 4, 7);
        assert!(s.make_room(1, &[(0, 10)]).is_err(), "sequence 1 still sees what sequence 0 no longer does");
        s.cells.clear_seq(1);
        // A batch of 4 from 10: 4, 5, 6 are out of reach of queries at 10 and later.
        assert_eq!(s.make_room(3, &[(0, 10)]).unwrap(), 3);
        assert!(s.make_room(6, &[(0, 10)]).is_err(), "7, 8, 9 are still seen from 10");
    }

    #[test]
    fn a_batch_takes_the_cells_its_tokens_one_by_one_would() {
        // Window 4, 8 cells, positions 0..6 in cells 0..6: a batch of 4 from 6
        // takes the free 6 and 7 first, then 0 and 1 as they are dropped,
        // as four lone steps would (not 0, 1, 6, 7: the lowest after the drops).
        let (_, mut s) = both(6, 8, 4);
        assert_eq!(s.cells_for(4, &[(0, 6)]).unwrap(), vec![6, 7, 0, 1]);
        let (_, lone) = both(10, 8, 4);
        let cells: Vec<usize> = (6..10).map(|p| lone.cells.cell_at(0, p).unwrap()).collect();
        assert_eq!(cells, vec![6, 7, 0, 1]);
        // Nothing is dropped when the batch is refused.
        let (_, mut s) = both(6, 8, 4);
        assert!(s.cells_for(6, &[(0, 6)]).is_err(), "3, 4, 5 are still seen from 6");
        assert_eq!(s.cells.n_live(), 6);
    }
}

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
use super::cells::{Cells, Pos};
use super::error::KvError;

#[derive(Clone, Debug)]
pub struct SwaPool {
    pub cells: Cells,
    /// Positions a query sees, its own included.
    pub window: u32,
}

impl SwaPool {
    pub fn new(size: usize, window: u32) -> SwaPool {
        SwaPool { cells: Cells::new(size), window: window.max(1) }
    }

    /// The lowest position a query at `q` can see.
    pub fn reach(&self, q: Pos) -> Pos {
        (q as i64 - self.window as i64 + 1).max(0) as Pos
    }

    /// Free at least `n` cells for a batch whose first query is at `q_min`:
    /// if fewer are free, drop the oldest cells that no query from `q_min`
    /// on can see. Returns the cells dropped.
    pub fn make_room(&mut self, n: usize, q_min: Pos) -> Result<usize, KvError> {
        let free = self.cells.n_free();
        if free >= n {
            return Ok(0);
        }
        let need = n - free;
        let reach = self.reach(q_min);
        let old: Vec<Pos> = self.cells.positions_in(..reach).take(need).collect();
        if old.len() < need {
            return Err(KvError::WindowFull {
                size: self.cells.size(),
                need: n,
                from: q_min,
                seen: self.cells.n_live() - old.len(),
            });
        }
        for p in &old {
            self.cells.remove_pos_range(*p, p + 1);
        }
        Ok(old.len())
    }

    /// The first position in `[lo, hi)` that `global` holds and this pool
    /// has dropped, if any.
    pub fn missing(&self, global: &Cells, lo: Pos, hi: Pos) -> Option<Pos> {
        if hi <= lo {
            return None;
        }
        global.positions_in(lo.max(0)..hi).find(|&p| !self.cells.has_pos(p))
    }

    /// The first position that queries at `q_lo..=q_hi` would see, that
    /// `global` holds and this pool has dropped.
    pub fn missing_for(&self, global: &Cells, q_lo: Pos, q_hi: Pos) -> Option<Pos> {
        self.missing(global, self.reach(q_lo), q_hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(n: usize, size: usize, window: u32) -> (Cells, SwaPool) {
        let mut g = Cells::new(64);
        let mut s = SwaPool::new(size, window);
        for p in 0..n as Pos {
            s.make_room(1, p).unwrap();
            let i = s.cells.find_free(1).unwrap()[0];
            s.cells.fill(i, p as u32, p);
            g.fill(p as usize, p as u32, p);
        }
        (g, s)
    }

    #[test]
    fn the_pool_drops_only_what_no_later_query_sees_and_only_when_full() {
        // Window 4, 6 cells: positions 0..6 fill it without dropping anything.
        let (g, s) = both(6, 6, 4);
        assert_eq!(s.cells.n_live(), 6);
        assert_eq!(s.missing_for(&g, 6, 6), None);
        // Ten tokens through 6 cells: 0..4 dropped, 4..10 kept (a query at 10 sees 7..=10).
        let (g, mut s) = both(10, 6, 4);
        assert_eq!(s.cells.positions_in(..).collect::<Vec<_>>(), vec![4, 5, 6, 7, 8, 9]);
        assert_eq!(s.missing_for(&g, 10, 10), None, "the window of the next query is whole");
        assert_eq!(s.missing_for(&g, 6, 6), Some(3), "resuming at 6 would need 3..6 and 3 is gone");
        assert_eq!(s.missing_for(&g, 7, 7), None);
        // A batch of 4 from 10: 4, 5, 6 are out of reach of queries at 10 and later.
        assert_eq!(s.make_room(3, 10).unwrap(), 3);
        assert!(s.make_room(6, 10).is_err(), "7, 8, 9 are still seen from 10");
    }
}

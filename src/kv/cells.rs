//! KV cells as plain data: token, position and live bit per slot. No ggml
//! here, so every rule about which cell is visible is unit-tested directly.

use super::error::KvError;
use std::collections::BTreeMap;

/// Position of a token in the sequence (32-bit, checked, never wraps).
pub type Pos = i32;

#[derive(Clone, Debug)]
pub struct Cells {
    token: Vec<u32>,
    pos: Vec<Pos>,
    live: Vec<bool>,
    /// Position change of each cell since its K rows were last rotated
    /// (applied by the K-shift graph, then cleared).
    shift: Vec<Pos>,
    has_shift: bool,
    /// Live cell of each position (one sequence: positions are unique), so a
    /// range removal visits only the cells it removes.
    by_pos: BTreeMap<Pos, usize>,
    n_live: usize,
    /// One past the highest live cell index (the attended range must cover it).
    used_max_p1: usize,
}

impl Cells {
    pub fn new(size: usize) -> Cells {
        Cells {
            token: vec![0; size],
            pos: vec![-1; size],
            live: vec![false; size],
            shift: vec![0; size],
            has_shift: false,
            by_pos: BTreeMap::new(),
            n_live: 0,
            used_max_p1: 0,
        }
    }

    pub fn size(&self) -> usize {
        self.live.len()
    }

    pub fn n_live(&self) -> usize {
        self.n_live
    }

    pub fn n_free(&self) -> usize {
        self.size() - self.n_live
    }

    pub fn used_max_p1(&self) -> usize {
        self.used_max_p1
    }

    pub fn is_live(&self, i: usize) -> bool {
        self.live[i]
    }

    pub fn pos(&self, i: usize) -> Pos {
        self.pos[i]
    }

    pub fn token(&self, i: usize) -> u32 {
        self.token[i]
    }

    /// The highest position held, if any cell is live.
    pub fn max_pos(&self) -> Option<Pos> {
        self.by_pos.last_key_value().map(|(&p, _)| p)
    }

    /// Indices of `n` free cells, lowest first, or `None` if fewer are free.
    pub fn find_free(&self, n: usize) -> Option<Vec<usize>> {
        if n > self.n_free() {
            return None;
        }
        Some((0..self.size()).filter(|&i| !self.live[i]).take(n).collect())
    }

    /// Live positions in `range`, lowest first.
    pub fn positions_in(&self, range: impl std::ops::RangeBounds<Pos>) -> impl DoubleEndedIterator<Item = Pos> + '_ {
        self.by_pos.range(range).map(|(&p, _)| p)
    }

    /// Whether a live cell holds position `pos`.
    pub fn has_pos(&self, pos: Pos) -> bool {
        self.by_pos.contains_key(&pos)
    }

    /// Occupy cell `i` with `token` at `pos` (a position not held already).
    pub fn fill(&mut self, i: usize, token: u32, pos: Pos) {
        assert!(!self.live[i], "cell {i} is already live");
        let prev = self.by_pos.insert(pos, i);
        assert!(prev.is_none(), "position {pos} is already held by cell {prev:?}");
        self.live[i] = true;
        self.token[i] = token;
        self.pos[i] = pos;
        self.shift[i] = 0;
        self.n_live += 1;
        self.used_max_p1 = self.used_max_p1.max(i + 1);
    }

    /// Clear the live bit of cell `i` (the cell becomes invisible and free).
    /// Returns whether it was live.
    pub fn remove(&mut self, i: usize) -> bool {
        if !self.live[i] {
            return false;
        }
        self.by_pos.remove(&self.pos[i]);
        self.live[i] = false;
        self.pos[i] = -1;
        self.n_live -= 1;
        while self.used_max_p1 > 0 && !self.live[self.used_max_p1 - 1] {
            self.used_max_p1 -= 1;
        }
        true
    }

    /// Clear the live bit of every cell whose position is in `[p0, p1)`;
    /// returns the cells removed. O(k log n) for k cells removed, no graph.
    pub fn remove_pos_range(&mut self, p0: Pos, p1: Pos) -> Vec<usize> {
        if p1 <= p0 {
            return Vec::new();
        }
        let hit: Vec<usize> = self.by_pos.range(p0..p1).map(|(_, &i)| i).collect();
        for &i in &hit {
            self.remove(i);
        }
        hit
    }

    /// Add `delta` to the position of every live cell at `p0` or later
    /// (closing a gap). Fails, changing nothing, if a position would leave
    /// the 32-bit range or go negative.
    pub fn shift_positions(&mut self, p0: Pos, delta: Pos) -> Result<usize, KvError> {
        if delta < 0 {
            let lo = p0.saturating_add(delta);
            if let Some((&p, _)) = self.by_pos.range(lo..p0).next() {
                return Err(KvError::PositionRange(format!(
                    "shifting positions from {p0} by {delta} would collide with position {p}"
                )));
            }
        }
        let cells: Vec<usize> = self.by_pos.range(p0..).map(|(_, &i)| i).collect();
        for &i in &cells {
            match self.pos[i].checked_add(delta) {
                Some(p) if p >= 0 => {}
                _ => {
                    return Err(KvError::PositionRange(format!(
                        "shifting position {} by {delta} leaves the valid range",
                        self.pos[i]
                    )))
                }
            }
        }
        for &i in &cells {
            self.by_pos.remove(&self.pos[i]);
        }
        for &i in &cells {
            self.pos[i] += delta;
            self.shift[i] += delta;
            self.by_pos.insert(self.pos[i], i);
        }
        self.has_shift |= !cells.is_empty() && delta != 0;
        Ok(cells.len())
    }

    /// Whether some cells' keys still need rotating to their new positions.
    pub fn has_shift(&self) -> bool {
        self.has_shift
    }

    /// The pending per-cell position changes (0 for others), cleared.
    pub fn take_shift(&mut self) -> Vec<Pos> {
        self.has_shift = false;
        std::mem::replace(&mut self.shift, vec![0; self.live.len()])
    }

    /// Moves `(from, to)` that pack the live cells into `0..n_live`, keeping
    /// their order: each hole below the end of the packed range takes the
    /// next live cell above it.
    pub fn defrag_moves(&self) -> Vec<(usize, usize)> {
        let mut moves = Vec::new();
        let mut to = 0;
        for from in 0..self.used_max_p1 {
            if self.live[from] {
                if from != to {
                    moves.push((from, to));
                }
                to += 1;
            }
        }
        moves
    }

    /// Apply moves from `defrag_moves` to the metadata (the caller moves the
    /// K/V rows with the same list).
    pub fn apply_moves(&mut self, moves: &[(usize, usize)]) {
        for &(from, to) in moves {
            debug_assert!(self.live[from] && !self.live[to]);
            self.token[to] = self.token[from];
            self.pos[to] = self.pos[from];
            self.by_pos.insert(self.pos[from], to);
            self.shift[to] = self.shift[from];
            self.live[to] = true;
            self.live[from] = false;
            self.pos[from] = -1;
            self.shift[from] = 0;
        }
        self.used_max_p1 = self.n_live;
    }

    /// Share of the attended range that is dead (0 = packed).
    pub fn fragmentation(&self) -> f32 {
        if self.used_max_p1 == 0 {
            return 0.0;
        }
        1.0 - self.n_live as f32 / self.used_max_p1 as f32
    }

    pub fn clear(&mut self) {
        self.live.iter_mut().for_each(|l| *l = false);
        self.pos.iter_mut().for_each(|p| *p = -1);
        self.shift.iter_mut().for_each(|s| *s = 0);
        self.has_shift = false;
        self.by_pos.clear();
        self.n_live = 0;
        self.used_max_p1 = 0;
    }

    /// Number of cells attention must span: the live range rounded up to
    /// `pad` (so graphs keep their shape across steps), capped at the size.
    pub fn n_kv(&self, pad: usize) -> usize {
        let pad = pad.max(1);
        let padded = self.used_max_p1.div_ceil(pad).max(1) * pad;
        padded.min(self.size())
    }

    /// Whether a query at position `q_pos` sees cell `i` (live and not in
    /// the future).
    pub fn visible(&self, i: usize, q_pos: Pos) -> bool {
        self.live[i] && self.pos[i] <= q_pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_remove_and_reuse() {
        let mut c = Cells::new(8);
        for i in 0..5 {
            c.fill(i, 100 + i as u32, i as Pos);
        }
        assert_eq!(c.n_live(), 5);
        assert_eq!(c.used_max_p1(), 5);
        assert!(c.remove(1));
        assert!(!c.remove(1), "removing twice reports nothing removed");
        assert_eq!(c.find_free(2), Some(vec![1, 5]));
        assert!(c.remove(4));
        assert_eq!(c.used_max_p1(), 4, "high-water mark drops when the top cell goes");
        assert_eq!(c.max_pos(), Some(3));
        assert_eq!(c.find_free(7), None);
    }

    #[test]
    fn visibility_follows_live_bit_and_causality() {
        let mut c = Cells::new(4);
        c.fill(0, 1, 0);
        c.fill(1, 2, 1);
        c.fill(2, 3, 2);
        assert!(c.visible(1, 1));
        assert!(!c.visible(2, 1), "future cell hidden");
        c.remove(1);
        assert!(!c.visible(1, 5), "removed cell hidden");
        assert!(!c.visible(3, 5), "empty cell hidden");
    }

    #[test]
    fn remove_range_shift_and_defrag() {
        let mut c = Cells::new(16);
        for i in 0..10 {
            c.fill(i, 100 + i as u32, i as Pos);
        }
        assert_eq!(c.remove_pos_range(3, 6), vec![3, 4, 5]);
        assert_eq!(c.n_live(), 7);
        assert_eq!(c.shift_positions(6, -3).unwrap(), 4);
        assert!(c.has_shift());
        assert_eq!((c.pos(6), c.pos(9)), (3, 6), "later cells close the gap");
        let sh = c.take_shift();
        assert_eq!(&sh[..10], &[0, 0, 0, 0, 0, 0, -3, -3, -3, -3]);
        assert!(!c.has_shift());
        assert!(c.fragmentation() > 0.29);
        let moves = c.defrag_moves();
        assert_eq!(moves, vec![(6, 3), (7, 4), (8, 5), (9, 6)]);
        c.apply_moves(&moves);
        assert_eq!(c.used_max_p1(), 7);
        assert_eq!(c.fragmentation(), 0.0);
        assert_eq!((0..7).map(|i| c.token(i)).collect::<Vec<_>>(), vec![100, 101, 102, 106, 107, 108, 109]);
        assert_eq!((0..7).map(|i| c.pos(i)).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5, 6]);
        assert!(c.shift_positions(0, i32::MIN).is_err(), "positions never wrap");
        assert!(c.shift_positions(4, -2).is_err(), "a shift may not land on held positions");
        assert!(c.has_pos(6) && !c.has_pos(7));
    }

    #[test]
    fn n_kv_is_padded_and_capped() {
        let mut c = Cells::new(1000);
        assert_eq!(c.n_kv(256), 256);
        for i in 0..300 {
            c.fill(i, 0, i as Pos);
        }
        assert_eq!(c.n_kv(256), 512);
        let small = Cells::new(100);
        assert_eq!(small.n_kv(256), 100);
    }
}

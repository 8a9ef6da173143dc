//! KV cells as plain data: token, position, the sequences that hold each
//! cell, and a pending position change per slot. No ggml here, so every rule
//! about which cell is visible to whom is unit-tested directly.
//!
//! One pool serves several sequences, as llama.cpp's unified cache does: a
//! cell is live while at least one sequence holds it, and a prefix cached
//! once (a shared system prompt) is held by every sequence that continues it,
//! copy-free (`share`). Positions are unique within a sequence, not across
//! the pool.

use super::error::KvError;
use std::collections::BTreeMap;

/// Position of a token in the sequence (32-bit, checked, never wraps).
pub type Pos = i32;

/// A sequence's id in a pool: `0..n_seq`.
pub type SeqId = usize;

/// Sequences one pool can hold at most (a cell's holders are a bit set).
pub const MAX_SEQ: usize = 64;

#[derive(Clone, Debug)]
pub struct Cells {
    token: Vec<u32>,
    pos: Vec<Pos>,
    /// Bit `s` set: sequence `s` holds the cell. Live iff non-zero.
    seqs: Vec<u64>,
    /// Position change of each cell since its K rows were last rotated
    /// (applied by the K-shift graph, then cleared).
    shift: Vec<Pos>,
    has_shift: bool,
    /// Per sequence, the cell of each position it holds, so a range
    /// removal visits only the cells it removes.
    by_pos: Vec<BTreeMap<Pos, usize>>,
    n_live: usize,
    /// One past the highest live cell index (the attended range must cover it).
    used_max_p1: usize,
}

fn bit(seq: SeqId) -> u64 {
    1u64 << seq
}

impl Cells {
    /// `size` cells for `n_seq` sequences (1..=MAX_SEQ).
    pub fn new(size: usize, n_seq: usize) -> Cells {
        let n_seq = n_seq.clamp(1, MAX_SEQ);
        Cells {
            token: vec![0; size],
            pos: vec![-1; size],
            seqs: vec![0; size],
            shift: vec![0; size],
            has_shift: false,
            by_pos: vec![BTreeMap::new(); n_seq],
            n_live: 0,
            used_max_p1: 0,
        }
    }

    pub fn size(&self) -> usize {
        self.seqs.len()
    }

    /// Sequences this pool can hold.
    pub fn n_seq(&self) -> usize {
        self.by_pos.len()
    }

    /// Cells some sequence holds.
    pub fn n_live(&self) -> usize {
        self.n_live
    }

    /// Cells sequence `seq` holds (shared ones included).
    pub fn n_held(&self, seq: SeqId) -> usize {
        self.by_pos[seq].len()
    }

    pub fn n_free(&self) -> usize {
        self.size() - self.n_live
    }

    pub fn used_max_p1(&self) -> usize {
        self.used_max_p1
    }

    pub fn is_live(&self, i: usize) -> bool {
        self.seqs[i] != 0
    }

    /// Whether sequence `seq` holds cell `i`.
    pub fn holds(&self, i: usize, seq: SeqId) -> bool {
        self.seqs[i] & bit(seq) != 0
    }

    /// Whether a sequence other than `seq` holds cell `i` too.
    pub fn shared_beyond(&self, i: usize, seq: SeqId) -> bool {
        self.seqs[i] & !bit(seq) != 0
    }

    /// The sequences holding cell `i`, as a bit set.
    pub fn seq_bits(&self, i: usize) -> u64 {
        self.seqs[i]
    }

    pub fn pos(&self, i: usize) -> Pos {
        self.pos[i]
    }

    pub fn token(&self, i: usize) -> u32 {
        self.token[i]
    }

    /// The highest position `seq` holds, if any.
    pub fn max_pos(&self, seq: SeqId) -> Option<Pos> {
        self.by_pos[seq].last_key_value().map(|(&p, _)| p)
    }

    /// The cell holding `seq`'s position `pos`.
    pub fn cell_at(&self, seq: SeqId, pos: Pos) -> Option<usize> {
        self.by_pos[seq].get(&pos).copied()
    }

    /// Indices of `n` free cells, lowest first, or `None` if fewer are free.
    pub fn find_free(&self, n: usize) -> Option<Vec<usize>> {
        if n > self.n_free() {
            return None;
        }
        Some((0..self.size()).filter(|&i| self.seqs[i] == 0).take(n).collect())
    }

    /// `seq`'s positions in `range`, lowest first.
    pub fn positions_in(
        &self,
        seq: SeqId,
        range: impl std::ops::RangeBounds<Pos>,
    ) -> impl DoubleEndedIterator<Item = Pos> + '_ {
        self.by_pos[seq].range(range).map(|(&p, _)| p)
    }

    /// `seq`'s (position, cell) pairs in `range`, lowest position first.
    pub fn cells_in(
        &self,
        seq: SeqId,
        range: impl std::ops::RangeBounds<Pos>,
    ) -> impl DoubleEndedIterator<Item = (Pos, usize)> + '_ {
        self.by_pos[seq].range(range).map(|(&p, &i)| (p, i))
    }

    /// Whether `seq` holds position `pos`.
    pub fn has_pos(&self, seq: SeqId, pos: Pos) -> bool {
        self.by_pos[seq].contains_key(&pos)
    }

    /// Occupy free cell `i` with `token` at `pos` for `seq` (a position
    /// `seq` does not hold already).
    pub fn fill(&mut self, i: usize, token: u32, pos: Pos, seq: SeqId) {
        assert!(self.seqs[i] == 0, "cell {i} is already live");
        let prev = self.by_pos[seq].insert(pos, i);
        assert!(prev.is_none(), "sequence {seq} already holds position {pos} in cell {prev:?}");
        self.seqs[i] = bit(seq);
        self.token[i] = token;
        self.pos[i] = pos;
        self.shift[i] = 0;
        self.n_live += 1;
        self.used_max_p1 = self.used_max_p1.max(i + 1);
    }

    /// Let `seq` hold live cell `i` too (at the cell's position, which `seq`
    /// must not hold). Nothing is copied.
    pub fn share(&mut self, i: usize, seq: SeqId) {
        assert!(self.seqs[i] != 0, "cell {i} is not live");
        if self.holds(i, seq) {
            return;
        }
        let prev = self.by_pos[seq].insert(self.pos[i], i);
        assert!(prev.is_none(), "sequence {seq} already holds position {}", self.pos[i]);
        self.seqs[i] |= bit(seq);
    }

    /// Free cell `i` for every sequence holding it. Returns whether it was live.
    pub fn remove(&mut self, i: usize) -> bool {
        let mut bits = self.seqs[i];
        if bits == 0 {
            return false;
        }
        while bits != 0 {
            let s = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            self.by_pos[s].remove(&self.pos[i]);
        }
        self.seqs[i] = 0;
        self.free_cell(i);
        true
    }

    /// `seq` lets go of cell `i`; the cell is freed when no sequence holds
    /// it any more. Returns whether `seq` held it.
    pub fn release(&mut self, i: usize, seq: SeqId) -> bool {
        if !self.holds(i, seq) {
            return false;
        }
        self.by_pos[seq].remove(&self.pos[i]);
        self.seqs[i] &= !bit(seq);
        if self.seqs[i] == 0 {
            self.free_cell(i);
        }
        true
    }

    fn free_cell(&mut self, i: usize) {
        self.pos[i] = -1;
        self.shift[i] = 0;
        self.n_live -= 1;
        while self.used_max_p1 > 0 && self.seqs[self.used_max_p1 - 1] == 0 {
            self.used_max_p1 -= 1;
        }
    }

    /// `seq` lets go of every position in `[p0, p1)`; returns the cells it
    /// held there (freed unless another sequence holds them). O(k log n)
    /// for k cells, no graph.
    pub fn remove_pos_range(&mut self, seq: SeqId, p0: Pos, p1: Pos) -> Vec<usize> {
        if p1 <= p0 {
            return Vec::new();
        }
        let hit: Vec<usize> = self.by_pos[seq].range(p0..p1).map(|(_, &i)| i).collect();
        for &i in &hit {
            self.release(i, seq);
        }
        hit
    }

    /// `seq` lets go of everything it holds.
    pub fn clear_seq(&mut self, seq: SeqId) -> usize {
        self.remove_pos_range(seq, Pos::MIN, Pos::MAX).len()
    }

    /// Let `dst` hold `src`'s cells at positions `[p0, p1)` too (positions
    /// `dst` holds already are skipped). Returns the cells shared.
    pub fn share_range(&mut self, src: SeqId, dst: SeqId, p0: Pos, p1: Pos) -> usize {
        if src == dst || p1 <= p0 {
            return 0;
        }
        let hit: Vec<(Pos, usize)> = self.cells_in(src, p0..p1).collect();
        let mut n = 0;
        for (p, i) in hit {
            if !self.has_pos(dst, p) {
                self.share(i, dst);
                n += 1;
            }
        }
        n
    }

    /// Add `delta` to the position of every cell `seq` holds at `p0` or
    /// later (closing a gap). The cells must be `seq`'s alone (a shared cell
    /// is copied first, see `KvCache::unshare`). Fails, changing nothing, if
    /// a position would leave the 32-bit range, go negative, or land on one
    /// `seq` holds.
    pub fn shift_positions(&mut self, seq: SeqId, p0: Pos, delta: Pos) -> Result<usize, KvError> {
        if delta < 0 {
            let lo = p0.saturating_add(delta);
            if let Some((&p, _)) = self.by_pos[seq].range(lo..p0).next() {
                return Err(KvError::PositionRange(format!(
                    "shifting positions from {p0} by {delta} would collide with position {p}"
                )));
            }
        }
        let cells: Vec<usize> = self.by_pos[seq].range(p0..).map(|(_, &i)| i).collect();
        for &i in &cells {
            if self.shared_beyond(i, seq) {
                return Err(KvError::Shared { seq, pos: self.pos[i] });
            }
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
        let map = &mut self.by_pos[seq];
        for &i in &cells {
            map.remove(&self.pos[i]);
        }
        for &i in &cells {
            self.pos[i] += delta;
            self.shift[i] += delta;
            map.insert(self.pos[i], i);
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
        let n = self.size();
        std::mem::replace(&mut self.shift, vec![0; n])
    }

    /// Moves `(from, to)` that pack the live cells into `0..n_live`, keeping
    /// their order: each hole below the end of the packed range takes the
    /// next live cell above it.
    pub fn defrag_moves(&self) -> Vec<(usize, usize)> {
        let mut moves = Vec::new();
        let mut to = 0;
        for from in 0..self.used_max_p1 {
            if self.seqs[from] != 0 {
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
            debug_assert!(self.seqs[from] != 0 && self.seqs[to] == 0);
            let mut bits = self.seqs[from];
            while bits != 0 {
                let s = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                self.by_pos[s].insert(self.pos[from], to);
            }
            self.token[to] = self.token[from];
            self.pos[to] = self.pos[from];
            self.shift[to] = self.shift[from];
            self.seqs[to] = self.seqs[from];
            self.seqs[from] = 0;
            self.pos[from] = -1;
            self.shift[from] = 0;
        }
        self.used_max_p1 = (0..self.size()).rev().find(|&i| self.seqs[i] != 0).map_or(0, |i| i + 1);
    }

    /// Give `seq` its own copy of the shared cell `from` in free cell `to`
    /// (the caller copies the K/V rows): `seq` lets go of `from`, which the
    /// other sequences keep.
    pub fn split_off(&mut self, from: usize, to: usize, seq: SeqId) {
        debug_assert!(self.holds(from, seq) && self.shared_beyond(from, seq) && self.seqs[to] == 0);
        let (token, pos, shift) = (self.token[from], self.pos[from], self.shift[from]);
        self.release(from, seq);
        self.fill(to, token, pos, seq);
        self.shift[to] = shift;
    }

    /// Share of the attended range that is dead (0 = packed).
    pub fn fragmentation(&self) -> f32 {
        if self.used_max_p1 == 0 {
            return 0.0;
        }
        1.0 - self.n_live as f32 / self.used_max_p1 as f32
    }

    pub fn clear(&mut self) {
        self.seqs.iter_mut().for_each(|s| *s = 0);
        self.pos.iter_mut().for_each(|p| *p = -1);
        self.shift.iter_mut().for_each(|s| *s = 0);
        self.has_shift = false;
        self.by_pos.iter_mut().for_each(BTreeMap::clear);
        self.n_live = 0;
        self.used_max_p1 = 0;
    }

    /// Number of cells attention must span: the live range rounded up to
    /// `pad` (so graphs keep their shape across steps), capped at the size.
    pub fn n_kv(&self, pad: usize) -> usize {
        self.padded(self.used_max_p1, pad)
    }

    /// The first `n` cells rounded up to a multiple of `pad` (at least one),
    /// within the pool.
    fn padded(&self, n: usize, pad: usize) -> usize {
        let pad = pad.max(1);
        (n.div_ceil(pad).max(1) * pad).min(self.size())
    }

    /// For each of `cells` (the cells just filled, in batch order), the
    /// `n_kv` a step of that token alone would have attended: the cells live
    /// before the batch and the batch's up to that one, padded as `n_kv`.
    pub fn n_kv_by_row(&self, cells: &[usize], pad: usize) -> Vec<usize> {
        let before =
            (0..self.used_max_p1).rev().find(|&i| self.seqs[i] != 0 && !cells.contains(&i)).map_or(0, |i| i + 1);
        let mut hi = before;
        cells
            .iter()
            .map(|&c| {
                hi = hi.max(c + 1);
                self.padded(hi, pad)
            })
            .collect()
    }

    /// Whether a query of `seq` at position `q_pos` sees cell `i` (held by
    /// `seq` and not in the future).
    pub fn visible(&self, i: usize, seq: SeqId, q_pos: Pos) -> bool {
        self.seqs[i] & bit(seq) != 0 && self.pos[i] <= q_pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_remove_and_reuse() {
        let mut c = Cells::new(8, 1);
        for i in 0..5 {
            c.fill(i, 100 + i as u32, i as Pos, 0);
        }
        assert_eq!(c.n_live(), 5);
        assert_eq!(c.used_max_p1(), 5);
        assert!(c.remove(1));
        assert!(!c.remove(1), "removing twice reports nothing removed");
        assert_eq!(c.find_free(2), Some(vec![1, 5]));
        assert!(c.remove(4));
        assert_eq!(c.used_max_p1(), 4, "high-water mark drops when the top cell goes");
        assert_eq!(c.max_pos(0), Some(3));
        assert_eq!(c.find_free(7), None);
    }

    #[test]
    fn each_row_of_a_batch_attends_what_its_token_alone_would() {
        let fill = |c: &mut Cells, cells: std::ops::Range<usize>| {
            for i in cells {
                c.fill(i, 0, i as Pos, 0);
            }
        };
        // Cells 0..510 live, a batch in 510..515: the first two rows alone
        // would attend 512 cells, the rest 768 (the padding step crossed).
        let mut c = Cells::new(1024, 1);
        fill(&mut c, 0..515);
        assert_eq!(c.n_kv(256), 768);
        assert_eq!(c.n_kv_by_row(&[510, 511, 512, 513, 514], 256), vec![512, 512, 768, 768, 768]);
        // A batch placed in a hole below live cells: every row sees up to those.
        let mut c = Cells::new(1024, 1);
        fill(&mut c, 0..100);
        fill(&mut c, 200..300);
        fill(&mut c, 100..103);
        assert_eq!(c.n_kv_by_row(&[100, 101, 102], 256), vec![512, 512, 512]);
        // Never past the pool.
        let mut c = Cells::new(300, 1);
        fill(&mut c, 0..300);
        assert_eq!(c.n_kv_by_row(&[298, 299], 256), vec![300, 300]);
    }

    #[test]
    fn visibility_follows_holders_and_causality() {
        let mut c = Cells::new(4, 2);
        c.fill(0, 1, 0, 0);
        c.fill(1, 2, 1, 0);
        c.fill(2, 3, 2, 0);
        assert!(c.visible(1, 0, 1));
        assert!(!c.visible(2, 0, 1), "future cell hidden");
        assert!(!c.visible(0, 1, 5), "another sequence's cell hidden");
        c.remove(1);
        assert!(!c.visible(1, 0, 5), "removed cell hidden");
        assert!(!c.visible(3, 0, 5), "empty cell hidden");
    }

    #[test]
    fn remove_range_shift_and_defrag() {
        let mut c = Cells::new(16, 1);
        for i in 0..10 {
            c.fill(i, 100 + i as u32, i as Pos, 0);
        }
        assert_eq!(c.remove_pos_range(0, 3, 6), vec![3, 4, 5]);
        assert_eq!(c.n_live(), 7);
        assert_eq!(c.shift_positions(0, 6, -3).unwrap(), 4);
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
        assert!(c.shift_positions(0, 0, i32::MIN).is_err(), "positions never wrap");
        assert!(c.shift_positions(0, 4, -2).is_err(), "a shift may not land on held positions");
        assert!(c.has_pos(0, 6) && !c.has_pos(0, 7));
    }

    #[test]
    fn a_shared_prefix_lives_while_any_sequence_holds_it() {
        let mut c = Cells::new(16, 3);
        for i in 0..6 {
            c.fill(i, 100 + i as u32, i as Pos, 0);
        }
        assert_eq!(c.share_range(0, 1, 0, 4), 4, "sequence 1 continues the first four");
        assert_eq!(c.n_live(), 6, "sharing copies nothing");
        assert_eq!((c.n_held(0), c.n_held(1)), (6, 4));
        // Sequence 1 goes on at 4 with its own tokens, in other cells.
        c.fill(6, 200, 4, 1);
        assert_eq!(c.cell_at(0, 4), Some(4));
        assert_eq!(c.cell_at(1, 4), Some(6));
        assert!(c.visible(4, 0, 9) && !c.visible(4, 1, 9), "each sees its own position 4");
        // Sequence 0 removes [1, 3): the cells stay, sequence 1 still holds them.
        assert_eq!(c.remove_pos_range(0, 1, 3), vec![1, 2]);
        assert_eq!(c.n_live(), 7);
        assert!(c.visible(1, 1, 9) && !c.visible(1, 0, 9));
        // Shared cells do not move for one sequence.
        assert_eq!(c.shift_positions(1, 0, 5), Err(KvError::Shared { seq: 1, pos: 0 }));
        assert_eq!(c.pos(0), 0, "a refused shift changes nothing");
        assert_eq!(c.shift_positions(0, 3, -2), Err(KvError::Shared { seq: 0, pos: 3 }), "cell 3 is shared");
        // Sequence 0 lets go of 3 and moves what is its own (4, 5) down to 1, 2.
        assert_eq!(c.remove_pos_range(0, 3, 4), vec![3]);
        assert_eq!(c.shift_positions(0, 4, -3).unwrap(), 2);
        assert_eq!((c.cell_at(0, 1), c.cell_at(1, 3)), (Some(4), Some(3)));
        // Letting go of a whole sequence frees what only it held.
        assert_eq!(c.clear_seq(1), 5);
        assert_eq!(c.n_live(), 3, "cells 0, 4, 5 stay with sequence 0");
        assert_eq!(c.positions_in(0, ..).collect::<Vec<_>>(), vec![0, 1, 2]);
        // Defrag keeps every holder's map right.
        c.share_range(0, 2, 0, 2);
        let moves = c.defrag_moves();
        assert_eq!(moves, vec![(4, 1), (5, 2)]);
        c.apply_moves(&moves);
        assert_eq!((c.cell_at(0, 1), c.cell_at(2, 1)), (Some(1), Some(1)));
        assert_eq!(c.used_max_p1(), 3);
    }

    #[test]
    fn splitting_off_a_shared_cell_gives_one_sequence_its_own() {
        let mut c = Cells::new(8, 2);
        c.fill(0, 7, 0, 0);
        c.share(0, 1);
        c.split_off(0, 3, 1);
        assert_eq!((c.cell_at(0, 0), c.cell_at(1, 0)), (Some(0), Some(3)));
        assert_eq!(c.token(3), 7);
        assert_eq!(c.n_live(), 2);
        assert_eq!(c.shift_positions(1, 0, 4).unwrap(), 1, "its own now, it can move");
    }

    #[test]
    fn n_kv_is_padded_and_capped() {
        let mut c = Cells::new(1000, 1);
        assert_eq!(c.n_kv(256), 256);
        for i in 0..300 {
            c.fill(i, 0, i as Pos, 0);
        }
        assert_eq!(c.n_kv(256), 512);
        let small = Cells::new(100, 1);
        assert_eq!(small.n_kv(256), 100);
    }
}

//! KV cells as plain data: token, position and live bit per slot. No ggml
//! here, so every rule about which cell is visible is unit-tested directly.

/// Position of a token in the sequence (32-bit, checked, never wraps).
pub type Pos = i32;

#[derive(Clone, Debug)]
pub struct Cells {
    token: Vec<u32>,
    pos: Vec<Pos>,
    live: Vec<bool>,
    n_live: usize,
    /// One past the highest live cell index (the attended range must cover it).
    used_max_p1: usize,
}

impl Cells {
    pub fn new(size: usize) -> Cells {
        Cells { token: vec![0; size], pos: vec![-1; size], live: vec![false; size], n_live: 0, used_max_p1: 0 }
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
        (0..self.used_max_p1).filter(|&i| self.live[i]).map(|i| self.pos[i]).max()
    }

    /// Indices of `n` free cells, lowest first, or `None` if fewer are free.
    pub fn find_free(&self, n: usize) -> Option<Vec<usize>> {
        if n > self.n_free() {
            return None;
        }
        Some((0..self.size()).filter(|&i| !self.live[i]).take(n).collect())
    }

    /// Occupy cell `i` with `token` at `pos`.
    pub fn fill(&mut self, i: usize, token: u32, pos: Pos) {
        assert!(!self.live[i], "cell {i} is already live");
        self.live[i] = true;
        self.token[i] = token;
        self.pos[i] = pos;
        self.n_live += 1;
        self.used_max_p1 = self.used_max_p1.max(i + 1);
    }

    /// Clear the live bit of cell `i` (the cell becomes invisible and free).
    /// Returns whether it was live.
    pub fn remove(&mut self, i: usize) -> bool {
        if !self.live[i] {
            return false;
        }
        self.live[i] = false;
        self.pos[i] = -1;
        self.n_live -= 1;
        while self.used_max_p1 > 0 && !self.live[self.used_max_p1 - 1] {
            self.used_max_p1 -= 1;
        }
        true
    }

    pub fn clear(&mut self) {
        self.live.iter_mut().for_each(|l| *l = false);
        self.pos.iter_mut().for_each(|p| *p = -1);
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

//! The attention mask, built from holders and positions: row `i` (query
//! token of sequence `q_seq[i]` at `q_pos[i]`) has 0 where a cell is visible
//! to it and -inf elsewhere.
use super::cells::{Cells, Pos, SeqId};

/// Fill `out` (n_tokens rows of n_kv) with the mask for queries of `q_seq` at `q_pos`.
/// With a `window`, a query at p also cannot see cells at p - window or
/// before (sliding-window layers: it sees `window` positions, its own
/// included, as llama.cpp's standard window does).
pub fn build_mask(cells: &Cells, n_kv: usize, q_pos: &[Pos], q_seq: &[SeqId], window: Option<u32>, out: &mut Vec<f32>) {
    out.clear();
    out.resize(n_kv * q_pos.len(), f32::NEG_INFINITY);
    for ((row, &qp), &qs) in out.chunks_exact_mut(n_kv).zip(q_pos).zip(q_seq) {
        for (j, m) in row.iter_mut().enumerate() {
            if cells.visible(j, qs, qp) && window.is_none_or(|w| (qp as i64 - cells.pos(j) as i64) < w as i64) {
                *m = 0.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_cells_are_masked() {
        let mut c = Cells::new(4, 1);
        for i in 0..4 {
            c.fill(i, 0, i as Pos, 0);
        }
        c.remove(1);
        let mut m = Vec::new();
        build_mask(&c, 4, &[2, 3], &[0, 0], None, &mut m);
        let inf = f32::NEG_INFINITY;
        assert_eq!(m, vec![0.0, inf, 0.0, inf, 0.0, inf, 0.0, 0.0]);
    }

    #[test]
    fn a_window_hides_positions_it_no_longer_covers() {
        let mut c = Cells::new(6, 1);
        for i in 0..6 {
            c.fill(i, 0, i as Pos * 2, 0); // positions 0 2 4 6 8 10
        }
        let mut m = Vec::new();
        build_mask(&c, 6, &[10], &[0], Some(5), &mut m);
        let inf = f32::NEG_INFINITY;
        // Position 10 with a window of 5 sees 6..=10.
        assert_eq!(m, vec![inf, inf, inf, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn each_row_sees_its_own_sequence() {
        let mut c = Cells::new(4, 2);
        c.fill(0, 0, 0, 0);
        c.share(0, 1);
        c.fill(1, 0, 1, 0);
        c.fill(2, 0, 1, 1);
        let mut m = Vec::new();
        build_mask(&c, 4, &[2, 2], &[0, 1], None, &mut m);
        let inf = f32::NEG_INFINITY;
        assert_eq!(m, vec![0.0, 0.0, inf, inf, 0.0, inf, 0.0, inf]);
    }
}

//! The attention mask, built from liveness and positions: row `i` (query
//! token at `q_pos[i]`) has 0 where a cell is visible and -inf elsewhere.
use super::cells::{Cells, Pos};

/// Fill `out` (n_tokens rows of n_kv) with the mask for queries at `q_pos`.
pub fn build_mask(cells: &Cells, n_kv: usize, q_pos: &[Pos], out: &mut Vec<f32>) {
    out.clear();
    out.resize(n_kv * q_pos.len(), f32::NEG_INFINITY);
    for (row, &qp) in out.chunks_exact_mut(n_kv).zip(q_pos) {
        for (j, m) in row.iter_mut().enumerate() {
            if cells.visible(j, qp) {
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
        let mut c = Cells::new(4);
        for i in 0..4 {
            c.fill(i, 0, i as Pos);
        }
        c.remove(1);
        let mut m = Vec::new();
        build_mask(&c, 4, &[2, 3], &mut m);
        let inf = f32::NEG_INFINITY;
        assert_eq!(m, vec![0.0, inf, 0.0, inf, 0.0, inf, 0.0, 0.0]);
    }
}

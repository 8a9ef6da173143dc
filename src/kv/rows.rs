//! Cells' V values read back as f32, for measuring how much a
//! re-evaluation changed what a cell holds (the adaptive boundary refresh).
//! V, not K: keys of a shifted span may still wait for their rotation.
use super::cache::KvCache;
use super::cells::{Pos, SeqId};

impl KvCache {
    /// `seq`'s V values at `positions` in layer `il`, `n_embd_v(il)` floats
    /// per position, in the order given. `None` when the layer holds no
    /// cells, the V cache is not a float type, or a position is not held.
    pub fn v_values(&self, seq: SeqId, il: usize, positions: &[Pos]) -> Option<Vec<f32>> {
        if !self.has_kv(il) || self.check_seq(seq).is_err() {
            return None;
        }
        let typ = self.type_v();
        let el = typ.row_bytes(1).filter(|_| typ.is_float())? as usize;
        let n = self.n_embd_v(il);
        let cells = self.pool_cells(self.pool_of(il));
        let size = self.layer_size(il);
        let vt = self.store().get(self.v(il));
        let mut bytes = vec![0u8; positions.len() * n * el];
        for (r, &p) in positions.iter().enumerate() {
            let cell = cells.cell_at(seq, p)?;
            let row = &mut bytes[r * n * el..(r + 1) * n * el];
            if self.v_trans() {
                for j in 0..n {
                    vt.read_bytes(&mut row[j * el..(j + 1) * el], (j * size + cell) * el);
                }
            } else {
                vt.read_bytes(row, cell * n * el);
            }
        }
        typ.floats(&bytes)
    }
}

/// The mean over rows of |new - old| / |old| (L2 norms), rows of `width`
/// values; 0 for no rows.
pub fn relative_change(old: &[f32], new: &[f32], width: usize) -> f64 {
    if width == 0 || old.len() != new.len() || old.is_empty() {
        return 0.0;
    }
    let rows = old.len() / width;
    let mut sum = 0.0;
    for r in 0..rows {
        let (a, b) = (&old[r * width..(r + 1) * width], &new[r * width..(r + 1) * width]);
        let d: f64 = a.iter().zip(b).map(|(x, y)| ((y - x) as f64).powi(2)).sum::<f64>().sqrt();
        let o: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        sum += if o > 0.0 { d / o } else { d };
    }
    sum / rows as f64
}

#[cfg(test)]
mod tests {
    use super::relative_change;

    #[test]
    fn relative_change_is_the_mean_of_the_rows_relative_distances() {
        let old = [3.0, 4.0, 1.0, 0.0];
        let new = [3.0, 4.0, 1.5, 0.0];
        assert_eq!(relative_change(&old, &old, 2), 0.0);
        assert!((relative_change(&old, &new, 2) - 0.25).abs() < 1e-12);
        assert_eq!(relative_change(&[], &[], 2), 0.0);
    }
}

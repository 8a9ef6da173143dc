//! The KV cache as plain bytes: a snapshot of the used cells (token,
//! position, live bit) and of their K rows and V columns, and its restore
//! into a cache of the same model and cache types. Restoring checks every
//! field first, so a bad snapshot leaves the cache as it was. (Pending key
//! rotations must be applied before a snapshot: `apply_pending_shift`.)
use super::cache::KvCache;
use super::cells::Pos;
use super::error::KvError;
use super::Pool;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The shape of a cache's contents: a snapshot only fits the same one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvLayout {
    pub n_layer: usize,
    pub n_embd_k: usize,
    pub n_embd_v: usize,
    pub type_k: String,
    pub type_v: String,
    /// Per layer: whether it keeps its rows in a sliding-window pool of its
    /// own (empty when the cache has no such pool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swa_layers: Vec<bool>,
}

impl KvLayout {
    /// Whether layer `il` keeps its rows in the sliding-window pool.
    pub fn in_swa(&self, il: usize) -> bool {
        self.swa_layers.get(il).copied().unwrap_or(false)
    }
}

/// Cells `0..used` of the sliding-window pool: positions and live bits
/// (their tokens are the main pool's at the same positions).
#[derive(Clone, Debug, Default)]
pub struct SwaCells {
    pub pos: Vec<Pos>,
    pub live: Vec<bool>,
}

/// Cells `0..used` of a cache (used = one past the highest live cell).
#[derive(Clone, Debug)]
pub struct KvSnapshot {
    pub layout: KvLayout,
    pub next_pos: Pos,
    pub tokens: Vec<u32>,
    pub pos: Vec<Pos>,
    pub live: Vec<bool>,
    /// The sliding-window pool's used cells, when the cache has that pool.
    pub swa: Option<SwaCells>,
    /// Per layer: the K rows of the used cells (of the layer's pool), then
    /// their V values (element-major: for each of `n_embd_v` elements,
    /// `used` values).
    pub k: Vec<Vec<u8>>,
    pub v: Vec<Vec<u8>>,
}

impl KvSnapshot {
    pub fn used(&self) -> usize {
        self.tokens.len()
    }

    /// Used cells of layer `il`'s pool.
    pub fn used_by(&self, il: usize) -> usize {
        match &self.swa {
            Some(s) if self.layout.in_swa(il) => s.pos.len(),
            _ => self.used(),
        }
    }

    /// Bytes of K and V held.
    pub fn data_bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(Vec::len).sum()
    }
}

impl KvCache {
    pub fn layout(&self) -> KvLayout {
        KvLayout {
            n_layer: self.n_layer(),
            n_embd_k: self.n_embd_k(),
            n_embd_v: self.n_embd_v(),
            type_k: self.type_k().name().to_string(),
            type_v: self.type_v().name().to_string(),
            swa_layers: if self.has_swa_pool() { self.swa_layers().to_vec() } else { Vec::new() },
        }
    }

    /// Bytes of one K row and of one V element.
    pub fn unit_bytes(&self) -> Result<(usize, usize), KvError> {
        let k_row = self.type_k().row_bytes(self.n_embd_k() as u64);
        if self.type_v().is_quantized() {
            return Err(KvError::Snapshot(format!("a {} V cache cannot be saved cell by cell", self.type_v().name())));
        }
        let v_el = self.type_v().row_bytes(1);
        match (k_row, v_el) {
            (Some(k), Some(v)) => Ok((k as usize, v as usize)),
            _ => Err(KvError::Snapshot("the cache types have no row size".into())),
        }
    }

    /// Copy the used cells out, with `next_pos` (the position the next
    /// token would take). Pending key rotations must have been applied.
    pub fn snapshot(&self, next_pos: Pos) -> Result<KvSnapshot, KvError> {
        let (k_row, v_el) = self.unit_bytes()?;
        let n_embd_v = self.n_embd_v();
        let mut k = Vec::with_capacity(self.n_layer());
        let mut v = Vec::with_capacity(self.n_layer());
        let store = self.store();
        for il in 0..self.n_layer() {
            let (size, used) = (self.layer_size(il), self.pool_cells(self.pool_of(il)).used_max_p1());
            let mut kb = vec![0u8; used * k_row];
            store.get(self.k(il)).read_bytes(&mut kb, 0);
            let vt = store.get(self.v(il));
            let mut vb = vec![0u8; n_embd_v * used * v_el];
            if self.v_trans() {
                for j in 0..n_embd_v {
                    vt.read_bytes(&mut vb[j * used * v_el..(j + 1) * used * v_el], j * size * v_el);
                }
            } else {
                // Rows per cell in the cache; element-major in a snapshot, whatever the attention.
                let mut rows = vec![0u8; n_embd_v * used * v_el];
                vt.read_bytes(&mut rows, 0);
                transpose_units(&rows, &mut vb, used, n_embd_v, v_el);
            }
            k.push(kb);
            v.push(vb);
        }
        let c = self.pool_cells(Pool::Global);
        let used = c.used_max_p1();
        let swa = self.has_swa_pool().then(|| {
            let p = self.pool_cells(Pool::Swa);
            let n = p.used_max_p1();
            SwaCells { pos: (0..n).map(|i| p.pos(i)).collect(), live: (0..n).map(|i| p.is_live(i)).collect() }
        });
        Ok(KvSnapshot {
            layout: self.layout(),
            next_pos,
            tokens: (0..used).map(|i| c.token(i)).collect(),
            pos: (0..used).map(|i| c.pos(i)).collect(),
            live: (0..used).map(|i| c.is_live(i)).collect(),
            swa,
            k,
            v,
        })
    }

    /// Replace the cache's contents with `snap`, after checking that it fits
    /// this cache (same layout, enough cells) and is consistent (lengths,
    /// token ids below `n_vocab`, unique positions below `next_pos`).
    pub fn restore(&mut self, snap: &KvSnapshot, n_vocab: u32) -> Result<(), KvError> {
        self.check_snapshot(snap, n_vocab)?;
        let (_, v_el) = self.unit_bytes()?;
        let n_embd_v = self.n_embd_v();
        let store = self.store();
        for il in 0..self.n_layer() {
            let (size, used) = (self.layer_size(il), snap.used_by(il));
            store.get(self.k(il)).write_bytes(&snap.k[il], 0);
            let vt = store.get(self.v(il));
            if self.v_trans() {
                for j in 0..n_embd_v {
                    vt.write_bytes(&snap.v[il][j * used * v_el..(j + 1) * used * v_el], j * size * v_el);
                }
            } else {
                let mut rows = vec![0u8; snap.v[il].len()];
                transpose_units(&snap.v[il], &mut rows, n_embd_v, used, v_el);
                vt.write_bytes(&rows, 0);
            }
        }
        self.clear();
        let mut token_at = std::collections::HashMap::new();
        let cells = self.pool_cells_mut(Pool::Global);
        for i in (0..snap.used()).filter(|&i| snap.live[i]) {
            cells.fill(i, snap.tokens[i], snap.pos[i]);
            token_at.insert(snap.pos[i], snap.tokens[i]);
        }
        if let (true, Some(sc)) = (self.has_swa_pool(), &snap.swa) {
            let pool = self.pool_cells_mut(Pool::Swa);
            for i in (0..sc.pos.len()).filter(|&i| sc.live[i]) {
                pool.fill(i, token_at[&sc.pos[i]], sc.pos[i]);
            }
        }
        Ok(())
    }

    fn check_snapshot(&self, snap: &KvSnapshot, n_vocab: u32) -> Result<(), KvError> {
        let bad = |msg: String| Err(KvError::Snapshot(msg));
        let mine = self.layout();
        if snap.layout != mine {
            return bad(format!("the saved cache is {:?}, this session's is {:?}", snap.layout, mine));
        }
        let used = snap.used();
        if used > self.size() {
            return bad(format!(
                "the saved cache uses {used} cells; this context has {} (give -c {used} or more)",
                self.size()
            ));
        }
        if snap.pos.len() != used || snap.live.len() != used {
            return bad(format!("{used} tokens but {} positions and {} live bits", snap.pos.len(), snap.live.len()));
        }
        let swa_size = self.has_swa_pool().then(|| self.pool_cells(Pool::Swa).size());
        let swa_pos: HashSet<Pos> = match (swa_size, &snap.swa) {
            (None, None) => HashSet::new(),
            (Some(pool_size), Some(sc)) => {
                if sc.pos.len() > pool_size || sc.live.len() != sc.pos.len() {
                    return bad(format!(
                        "the saved sliding-window pool uses {} cells ({} live bits); this one has {} (give the same -ub)",
                        sc.pos.len(),
                        sc.live.len(),
                        pool_size
                    ));
                }
                let mut seen = HashSet::new();
                for i in (0..sc.pos.len()).filter(|&i| sc.live[i]) {
                    if !seen.insert(sc.pos[i]) {
                        return bad(format!("sliding-window cell {i}: position {} is held by two cells", sc.pos[i]));
                    }
                }
                seen
            }
            _ => {
                return bad(
                    "the saved cache and this session differ in having a sliding-window pool (--swa-full)".into()
                )
            }
        };
        let (k_row, v_el) = self.unit_bytes()?;
        let n = self.n_layer();
        if snap.k.len() != n || snap.v.len() != n {
            return bad(format!("K and V data for {} and {} layers; the model has {n}", snap.k.len(), snap.v.len()));
        }
        for il in 0..n {
            let used = snap.used_by(il);
            if snap.k[il].len() != used * k_row || snap.v[il].len() != used * v_el * self.n_embd_v() {
                return bad(format!("layer {il}: K or V data of the wrong size for {used} cells"));
            }
        }
        if snap.next_pos < 0 {
            return bad(format!("next position {} is negative", snap.next_pos));
        }
        let mut seen = HashSet::new();
        for i in (0..used).filter(|&i| snap.live[i]) {
            let (t, p) = (snap.tokens[i], snap.pos[i]);
            if t >= n_vocab {
                return bad(format!("cell {i}: token id {t} is outside the vocabulary (0..{n_vocab})"));
            }
            if p < 0 || p >= snap.next_pos {
                return bad(format!("cell {i}: position {p} is outside 0..{}", snap.next_pos));
            }
            if !seen.insert(p) {
                return bad(format!("cell {i}: position {p} is held by two cells"));
            }
        }
        if let Some(p) = swa_pos.iter().find(|p| !seen.contains(p)) {
            return bad(format!("the sliding-window pool holds position {p}, which no live cell holds"));
        }
        Ok(())
    }
}

/// `src` holds `rows` rows of `cols` units of `unit` bytes; write its
/// transpose (`cols` rows of `rows` units) to `dst`.
fn transpose_units(src: &[u8], dst: &mut [u8], rows: usize, cols: usize, unit: usize) {
    for r in 0..rows {
        for c in 0..cols {
            let from = (r * cols + c) * unit;
            let to = (c * rows + r) * unit;
            dst[to..to + unit].copy_from_slice(&src[from..from + unit]);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transposing_twice_gives_back_the_units() {
        let src: Vec<u8> = (0..24).collect(); // 3 rows of 4 two-byte units
        let mut t = vec![0u8; 24];
        super::transpose_units(&src, &mut t, 3, 4, 2);
        assert_eq!(&t[..6], &[0, 1, 8, 9, 16, 17]); // column 0: unit 0 of each row
        let mut back = vec![0u8; 24];
        super::transpose_units(&t, &mut back, 4, 3, 2);
        assert_eq!(back, src);
    }
}

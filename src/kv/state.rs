//! The KV cache as plain bytes: a snapshot of the used cells (token,
//! position, live bit) and of their K rows and V columns, and its restore
//! into a cache of the same model and cache types. Restoring checks every
//! field first, so a bad snapshot leaves the cache as it was. (Pending key
//! rotations must be applied before a snapshot: `apply_pending_shift`.)
use super::cache::KvCache;
use super::cells::{Cells, Pos, SeqId};
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
    /// Per layer: whether it is recurrent (keeps a state, no cells); empty
    /// for models without recurrent layers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recurrent_layers: Vec<bool>,
    /// Per layer: the values per cell of its own K and V, (0, 0) for a
    /// layer that owns no cells; empty when every attention layer has
    /// `n_embd_k` and `n_embd_v` (models whose layers all have one shape).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub widths: Vec<(usize, usize)>,
}

impl KvLayout {
    /// Whether layer `il` keeps its rows in the sliding-window pool.
    pub fn in_swa(&self, il: usize) -> bool {
        self.swa_layers.get(il).copied().unwrap_or(false)
    }

    /// Whether layer `il` is recurrent (its K and V data are empty).
    pub fn is_recurrent(&self, il: usize) -> bool {
        self.recurrent_layers.get(il).copied().unwrap_or(false)
    }

    /// Values per cell of layer `il`'s own K and V ((0, 0): it owns none).
    pub fn widths(&self, il: usize) -> (usize, usize) {
        match self.widths.get(il) {
            _ if self.is_recurrent(il) => (0, 0),
            Some(&w) => w,
            None => (self.n_embd_k, self.n_embd_v),
        }
    }

    /// Whether layer `il` owns K and V cells (its data are not empty).
    pub fn owns(&self, il: usize) -> bool {
        self.widths(il).0 > 0
    }
}

/// One sequence's recurrent state (hybrid models): the position of the last
/// token it absorbed and every recurrent layer's state bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentSnapshot {
    pub last: Pos,
    pub data: Vec<u8>,
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
    /// The recurrent layers' state, for hybrid models.
    pub recurrent: Option<RecurrentSnapshot>,
}

impl KvSnapshot {
    pub fn used(&self) -> usize {
        self.tokens.len()
    }

    /// Used cells of layer `il`'s pool (none for a recurrent layer).
    pub fn used_by(&self, il: usize) -> usize {
        if !self.layout.owns(il) {
            return 0;
        }
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
        let owned: Vec<(usize, usize)> = (0..self.n_layer())
            .map(|il| if self.has_kv(il) { (self.n_embd_k(il), self.n_embd_v(il)) } else { (0, 0) })
            .collect();
        let n_embd_k = owned.iter().map(|w| w.0).max().unwrap_or(0);
        let n_embd_v = owned.iter().map(|w| w.1).max().unwrap_or(0);
        let uniform = (0..self.n_layer()).all(|il| {
            let r = self.recurrent().is_some_and(|r| r.is_recurrent(il));
            r || owned[il] == (n_embd_k, n_embd_v)
        });
        KvLayout {
            n_layer: self.n_layer(),
            n_embd_k,
            n_embd_v,
            widths: if uniform { Vec::new() } else { owned },
            type_k: self.type_k().name().to_string(),
            type_v: self.type_v().name().to_string(),
            swa_layers: if self.has_swa_pool() { self.swa_layers().to_vec() } else { Vec::new() },
            recurrent_layers: match self.recurrent() {
                Some(r) => (0..self.n_layer()).map(|il| r.is_recurrent(il)).collect(),
                None => Vec::new(),
            },
        }
    }

    /// Per layer: bytes of one cell's K row and of its V values ((0, 0)
    /// for a layer owning no cells).
    pub fn row_bytes(&self) -> Result<Vec<(usize, usize)>, KvError> {
        if self.type_v().is_quantized() {
            return Err(KvError::Snapshot(format!("a {} V cache cannot be saved cell by cell", self.type_v().name())));
        }
        let v_el = self.v_el()?;
        let layout = self.layout();
        (0..self.n_layer())
            .map(|il| {
                let (k, v) = layout.widths(il);
                match self.type_k().row_bytes(k as u64) {
                    Some(k_row) => Ok((k_row as usize, v * v_el)),
                    None => Err(KvError::Snapshot("the cache types have no row size".into())),
                }
            })
            .collect()
    }

    /// Bytes of one V value (of a cache whose V is not quantized).
    fn v_el(&self) -> Result<usize, KvError> {
        match self.type_v().row_bytes(1) {
            Some(v) if !self.type_v().is_quantized() => Ok(v as usize),
            _ => Err(KvError::Snapshot(format!("a {} V cache cannot be saved cell by cell", self.type_v().name()))),
        }
    }

    /// Copy `seq`'s cells out, in position order, with `next_pos` (the
    /// position the next token would take). Pending key rotations must have
    /// been applied.
    pub fn snapshot(&self, seq: SeqId, next_pos: Pos) -> Result<KvSnapshot, KvError> {
        self.check_seq(seq)?;
        let row_bytes = self.row_bytes()?;
        let v_el = self.v_el()?;
        // A sequence alone in its pool is saved cell for cell, holes
        // included, and restored in the same cells when they are free: where
        // a cell sits changes how attention's sums round, so the same layout
        // gives the same logits. Beside other sequences, only its own cells
        // are saved, in position order.
        let held = |pool: Pool| -> Vec<usize> {
            let c = self.pool_cells(pool);
            match (0..c.used_max_p1()).all(|i| !c.is_live(i) || (c.holds(i, seq) && !c.shared_beyond(i, seq))) {
                true => (0..c.used_max_p1()).collect(),
                false => c.cells_in(seq, ..).map(|(_, i)| i).collect(),
            }
        };
        let main = held(Pool::Global);
        let swa_held = self.has_swa_pool().then(|| held(Pool::Swa));
        let mut k = Vec::with_capacity(self.n_layer());
        let mut v = Vec::with_capacity(self.n_layer());
        let store = self.store();
        for (il, &(k_row, _)) in row_bytes.iter().enumerate() {
            if !self.has_kv(il) {
                k.push(Vec::new());
                v.push(Vec::new());
                continue;
            }
            let size = self.layer_size(il);
            let n_embd_v = self.n_embd_v(il);
            let cells = match (&swa_held, self.pool_of(il)) {
                (Some(sc), Pool::Swa) => sc,
                _ => &main,
            };
            let used = cells.len();
            let (kt, vt) = (store.get(self.k(il)), store.get(self.v(il)));
            let mut kb = vec![0u8; used * k_row];
            let mut vb = vec![0u8; n_embd_v * used * v_el];
            let mut rows = Vec::new();
            for (cell, at, n) in runs(cells) {
                kt.read_bytes(&mut kb[at * k_row..(at + n) * k_row], cell * k_row);
                if self.v_trans() {
                    for j in 0..n_embd_v {
                        let to = (j * used + at) * v_el;
                        vt.read_bytes(&mut vb[to..to + n * v_el], (j * size + cell) * v_el);
                    }
                } else {
                    rows.resize(n * n_embd_v * v_el, 0);
                    vt.read_bytes(&mut rows, cell * n_embd_v * v_el);
                    for r in 0..n {
                        for j in 0..n_embd_v {
                            let (from, to) = ((r * n_embd_v + j) * v_el, (j * used + at + r) * v_el);
                            vb[to..to + v_el].copy_from_slice(&rows[from..from + v_el]);
                        }
                    }
                }
            }
            k.push(kb);
            v.push(vb);
        }
        let c = self.pool_cells(Pool::Global);
        let swa = swa_held.map(|sc| {
            let p = self.pool_cells(Pool::Swa);
            SwaCells {
                pos: sc.iter().map(|&i| p.pos(i)).collect(),
                live: sc.iter().map(|&i| p.holds(i, seq)).collect(),
            }
        });
        Ok(KvSnapshot {
            layout: self.layout(),
            next_pos,
            tokens: main.iter().map(|&i| c.token(i)).collect(),
            pos: main.iter().map(|&i| c.pos(i)).collect(),
            live: main.iter().map(|&i| c.holds(i, seq)).collect(),
            swa,
            k,
            v,
            recurrent: self
                .recurrent()
                .map(|r| super::state::RecurrentSnapshot { last: r.last(seq), data: r.read(seq) }),
        })
    }

    /// Replace `seq`'s contents with `snap`, after checking that it fits
    /// this cache (same layout, enough cells beside the other sequences')
    /// and is consistent (lengths, token ids below `n_vocab`, unique
    /// positions below `next_pos`). The snapshot's live cells take free
    /// cells; its dead ones (older files kept them) are skipped.
    pub fn restore(&mut self, seq: SeqId, snap: &KvSnapshot, n_vocab: u32) -> Result<(), KvError> {
        self.check_seq(seq)?;
        self.check_snapshot(seq, snap, n_vocab)?;
        let row_bytes = self.row_bytes()?;
        let v_el = self.v_el()?;
        self.clear_seq(seq);
        // (snapshot index, cell) for each live cell of the snapshot, per pool.
        // The same cells when they are free, else the lowest free ones.
        let place = |c: &Cells, live: &[bool]| -> Vec<(usize, usize)> {
            let wanted: Vec<usize> = (0..live.len()).filter(|&i| live[i]).collect();
            if wanted.iter().all(|&i| i < c.size() && !c.is_live(i)) {
                return wanted.into_iter().map(|i| (i, i)).collect();
            }
            let free = c.find_free(wanted.len()).unwrap_or_default();
            wanted.into_iter().zip(free).collect()
        };
        let main = place(self.pool_cells(Pool::Global), &snap.live);
        let swa_main =
            snap.swa.as_ref().filter(|_| self.has_swa_pool()).map(|sc| place(self.pool_cells(Pool::Swa), &sc.live));
        let store = self.store();
        for il in (0..self.n_layer()).filter(|&il| self.has_kv(il)) {
            let size = self.layer_size(il);
            let (k_row, n_embd_v) = (row_bytes[il].0, self.n_embd_v(il));
            let used = snap.used_by(il);
            let pairs = match (&swa_main, self.pool_of(il)) {
                (Some(sp), Pool::Swa) => sp,
                _ => &main,
            };
            let (kt, vt) = (store.get(self.k(il)), store.get(self.v(il)));
            let mut rows = Vec::new();
            for (at, cell, n) in pair_runs(pairs) {
                kt.write_bytes(&snap.k[il][at * k_row..(at + n) * k_row], cell * k_row);
                if self.v_trans() {
                    for j in 0..n_embd_v {
                        let from = (j * used + at) * v_el;
                        vt.write_bytes(&snap.v[il][from..from + n * v_el], (j * size + cell) * v_el);
                    }
                } else {
                    rows.resize(n * n_embd_v * v_el, 0);
                    for r in 0..n {
                        for j in 0..n_embd_v {
                            let (to, from) = ((r * n_embd_v + j) * v_el, (j * used + at + r) * v_el);
                            rows[to..to + v_el].copy_from_slice(&snap.v[il][from..from + v_el]);
                        }
                    }
                    vt.write_bytes(&rows, cell * n_embd_v * v_el);
                }
            }
        }
        if let (Some(r), Some(rs)) = (self.recurrent_mut(), &snap.recurrent) {
            r.restore(seq, rs.last, &rs.data)?;
        }
        let mut token_at = std::collections::HashMap::new();
        let cells = self.pool_cells_mut(Pool::Global);
        for &(i, cell) in &main {
            cells.fill(cell, snap.tokens[i], snap.pos[i], seq);
            token_at.insert(snap.pos[i], snap.tokens[i]);
        }
        if let (Some(sp), Some(sc)) = (&swa_main, &snap.swa) {
            let pool = self.pool_cells_mut(Pool::Swa);
            for &(i, cell) in sp {
                pool.fill(cell, token_at[&sc.pos[i]], sc.pos[i], seq);
            }
        }
        Ok(())
    }

    fn check_snapshot(&self, seq: SeqId, snap: &KvSnapshot, n_vocab: u32) -> Result<(), KvError> {
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
        // Beside the other sequences: free cells, and those only `seq` holds now.
        let room = |c: &Cells| c.n_free() + c.cells_in(seq, ..).filter(|&(_, i)| !c.shared_beyond(i, seq)).count();
        let live = snap.live.iter().filter(|&&l| l).count();
        let main_room = room(self.pool_cells(Pool::Global));
        if live > main_room {
            return bad(format!(
                "the saved cache holds {live} tokens; this context has room for {main_room} beside the other sequences' \
                 ({} cells in all)",
                self.size()
            ));
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
                let (live, pool_room) = (sc.live.iter().filter(|&&l| l).count(), room(self.pool_cells(Pool::Swa)));
                if live > pool_room {
                    return bad(format!(
                        "the saved sliding-window pool holds {live} cells; this one has room for {pool_room} beside the other sequences'"
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
        let row_bytes = self.row_bytes()?;
        let n = self.n_layer();
        if snap.k.len() != n || snap.v.len() != n {
            return bad(format!("K and V data for {} and {} layers; the model has {n}", snap.k.len(), snap.v.len()));
        }
        for (il, &(k_row, v_col)) in row_bytes.iter().enumerate() {
            let used = snap.used_by(il);
            if snap.k[il].len() != used * k_row || snap.v[il].len() != used * v_col {
                return bad(format!("layer {il}: K or V data of the wrong size for {used} cells"));
            }
        }
        match (self.recurrent(), &snap.recurrent) {
            (None, None) => {}
            (Some(r), Some(rs)) if rs.data.len() == r.seq_bytes() && rs.last < snap.next_pos => {}
            (Some(r), Some(rs)) => {
                return bad(format!(
                    "the saved recurrent state holds {} bytes up to position {}; this model's holds {} below {}",
                    rs.data.len(),
                    rs.last,
                    r.seq_bytes(),
                    snap.next_pos
                ))
            }
            (Some(_), None) => return bad("the saved cache has no recurrent state; this model needs one".into()),
            (None, Some(_)) => return bad("the saved cache has a recurrent state; this model has none".into()),
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

/// Runs of consecutive cells: (first cell, index of its first row in the
/// list, length).
fn runs(cells: &[usize]) -> Vec<(usize, usize, usize)> {
    let pairs: Vec<(usize, usize)> = cells.iter().enumerate().map(|(at, &c)| (at, c)).collect();
    pair_runs(&pairs).into_iter().map(|(at, cell, n)| (cell, at, n)).collect()
}

/// Runs of (index, cell) pairs where both go up by one: (first index,
/// first cell, length).
fn pair_runs(pairs: &[(usize, usize)]) -> Vec<(usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for &(i, c) in pairs {
        match out.last_mut() {
            Some((i0, c0, n)) if *i0 + *n == i && *c0 + *n == c => *n += 1,
            _ => out.push((i, c, 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_join_consecutive_cells() {
        assert_eq!(super::runs(&[4, 5, 6, 9, 2, 3]), vec![(4, 0, 3), (9, 3, 1), (2, 4, 2)]);
        assert_eq!(super::pair_runs(&[(0, 7), (1, 8), (3, 9)]), vec![(0, 7, 2), (3, 9, 1)]);
        assert!(super::runs(&[]).is_empty());
    }
}

//! The KV cache: per-layer K and V tensors over pools of cells, and every
//! operation on them. K is stored row per cell ([n_embd_k_gqa, size]). V is
//! stored transposed (element-major, [size] per element) for plain
//! attention, as llama.cpp does, so that the KQV product reads contiguous
//! rows; with flash attention V is row per cell like K (the fused op reads
//! V rows).
//!
//! Global layers keep their rows in the main pool (the context's size).
//! Sliding-window layers, when the model has them and the context is larger
//! than their window needs, keep theirs in a smaller pool of their own (see
//! `super::swa`). Every operation that changes cells (placing tokens,
//! removing, moving positions, clearing) goes through `pools_mut`, so "do
//! it to both pools" is written once; the sliding-window pool's own rules
//! (what it may drop, what it can no longer show) are checked here too.
//!
//! The cache also runs its own graphs on the caller's scheduler: the K-shift
//! that re-rotates moved keys (`shift.rs`), defragmentation (`defrag.rs`),
//! and it fills the attention inputs of a step (`inputs.rs`).
use super::cells::{Cells, Pos, SeqId};
use super::error::KvError;
use super::recurrent::{RecurrentLayout, RecurrentStates};
use super::swa::SwaPool;
use crate::ggml::{BufferType, GgmlType, TensorId, TensorStore};

/// Attention spans the live range rounded up to this many cells, so graph
/// shapes stay stable across steps (llama.cpp pads the same way).
pub const N_KV_PAD: usize = 256;

/// Which pool of cells a layer's rows live in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Global,
    Swa,
}

/// The sliding-window layers' pool: which layers, their window, its cells.
#[derive(Clone, Debug)]
pub struct SwaLayout {
    pub layers: Vec<bool>,
    pub window: u32,
    pub size: usize,
}

/// What one layer keeps in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKv {
    /// K rows of `k` values and V rows of `v` values per cell (layers of
    /// one model may differ: Gemma 4's global and sliding-window layers).
    Cells { k: usize, v: usize },
    /// Attends over an earlier layer's cells and owns none (Gemma 4's
    /// shared-KV layers).
    Reads(usize),
    /// A recurrent layer: a state per sequence (`KvParams::recurrent`), no cells.
    Recurrent,
}

/// The shape of a cache.
#[derive(Clone, Debug)]
pub struct KvParams {
    /// Cells of the main pool (the context size).
    pub size: usize,
    /// Per layer: what it keeps.
    pub layers: Vec<LayerKv>,
    /// Attention head size (decides the Hadamard rotations of a quantized
    /// cache, which needs one head size for every layer).
    pub head_dim: usize,
    pub type_k: GgmlType,
    pub type_v: GgmlType,
    /// V is element-major (plain attention) rather than row per cell (flash attention).
    pub v_trans: bool,
    pub swa: Option<SwaLayout>,
    /// Sequences the pools hold (1..=`cells::MAX_SEQ`).
    pub n_seq: usize,
    /// Recurrent layers (hybrid models): they keep a state per sequence
    /// instead of K and V cells.
    pub recurrent: Option<RecurrentLayout>,
}

/// Where one micro-batch's tokens were placed: their cells in the main pool
/// and, when there is one, in the sliding-window pool.
#[derive(Clone, Debug)]
pub struct Placement {
    pub cells: Vec<usize>,
    pub swa_cells: Option<Vec<usize>>,
}

pub struct KvCache {
    cells: Cells,
    /// The sliding-window layers' own pool, when they have one.
    swa: Option<SwaPool>,
    /// Per layer: whether its rows live in the sliding-window pool.
    in_swa: Vec<bool>,
    /// Per layer: the index of its K/V pair in the store (None: recurrent,
    /// or reading another layer's).
    slot: Vec<Option<usize>>,
    /// Per layer: the layer whose cells it attends over (itself when it
    /// owns them).
    reads: Vec<usize>,
    /// Per layer: values per cell of its K and of its V (those of the layer
    /// it reads; 0 for a recurrent layer). A transposed V is as wide as
    /// the widest layer's in every layer, so that one set of element
    /// indices serves them all (as llama.cpp pads it).
    widths: Vec<(usize, usize)>,
    store: TensorStore,
    /// The recurrent layers' states, per sequence (hybrid models).
    recurrent: Option<RecurrentStates>,
    n_layer: usize,
    type_k: GgmlType,
    type_v: GgmlType,
    v_trans: bool,
    /// The Hadamard matrix for q/k when the K cache is quantized.
    pub(super) k_rotation: Option<Vec<f32>>,
    /// The Hadamard matrix for v and attention's output when the V cache is quantized.
    pub(super) v_rotation: Option<Vec<f32>>,
    /// Mask buffers, reused across steps.
    pub(super) mask: Vec<f32>,
    pub(super) mask_swa: Vec<f32>,
}

impl KvCache {
    /// `bufts`: per layer, the buffer type its K and V rows live in (its
    /// device's when the layer is offloaded, else the CPU's).
    pub fn new(p: KvParams, bufts: &[BufferType]) -> Result<KvCache, KvError> {
        let swa = p.swa.as_ref();
        let n_layer = p.layers.len();
        let in_swa: Vec<bool> =
            (0..n_layer).map(|il| swa.is_some_and(|s| s.layers.get(il).copied().unwrap_or(false))).collect();
        let v_max = p.layers.iter().map(|l| if let LayerKv::Cells { v, .. } = l { *v } else { 0 }).max().unwrap_or(0);
        let mut specs = Vec::with_capacity(2 * n_layer);
        let mut slot = Vec::with_capacity(n_layer);
        let mut reads = Vec::with_capacity(n_layer);
        let mut widths = Vec::with_capacity(n_layer);
        for (il, (&w, &l)) in in_swa.iter().zip(&p.layers).enumerate() {
            match l {
                LayerKv::Recurrent => {
                    slot.push(None);
                    reads.push(il);
                    widths.push((0, 0));
                }
                LayerKv::Reads(from) => {
                    // Checked by the model's hyper-parameters: an earlier
                    // layer with cells, in the same pool.
                    assert!(from < il && slot[from].is_some() && in_swa[from] == w, "layer {il} reads layer {from}");
                    slot.push(None);
                    reads.push(from);
                    widths.push(widths[from]);
                }
                LayerKv::Cells { k, v } => {
                    let v = if p.v_trans { v_max } else { v };
                    slot.push(Some(specs.len() / 2));
                    reads.push(il);
                    widths.push((k, v));
                    let rows = if w { swa.map_or(p.size, |s| s.size) } else { p.size } as i64;
                    let buft = *bufts.get(il).ok_or(KvError::Alloc { cells: p.size })?;
                    specs.push((format!("cache_k_l{il}"), p.type_k, vec![k as i64, rows], buft));
                    specs.push((format!("cache_v_l{il}"), p.type_v, vec![v as i64, rows], buft));
                }
            }
        }
        let store = TensorStore::allocate(&specs).ok_or(KvError::Alloc { cells: p.size })?;
        let k_rotation =
            super::rotation::k_rotation_size(p.head_dim, p.type_k.is_quantized()).map(super::rotation::hadamard);
        let v_rotation =
            super::rotation::v_rotation_size(p.head_dim, p.type_v.is_quantized()).map(super::rotation::hadamard);
        let recurrent = match &p.recurrent {
            Some(l) => Some(RecurrentStates::new(l, p.n_seq, bufts)?),
            None => None,
        };
        Ok(KvCache {
            cells: Cells::new(p.size, p.n_seq),
            swa: p.swa.map(|s| SwaPool::new(s.size, s.window, p.n_seq)),
            in_swa,
            slot,
            reads,
            widths,
            store,
            recurrent,
            n_layer,
            type_k: p.type_k,
            type_v: p.type_v,
            v_trans: p.v_trans,
            k_rotation,
            v_rotation,
            mask: Vec::new(),
            mask_swa: Vec::new(),
        })
    }

    // ---- shape -------------------------------------------------------

    /// Cells of the main pool (the context size).
    pub fn size(&self) -> usize {
        self.cells.size()
    }

    pub fn n_layer(&self) -> usize {
        self.n_layer
    }

    /// Values per cell of layer `il`'s K.
    pub fn n_embd_k(&self, il: usize) -> usize {
        self.widths[il].0
    }

    /// Values per cell of layer `il`'s V (the widest layer's when V is transposed).
    pub fn n_embd_v(&self, il: usize) -> usize {
        self.widths[il].1
    }

    /// Values per cell of the widest V (every layer's when V is transposed).
    pub fn n_embd_v_max(&self) -> usize {
        self.widths.iter().map(|w| w.1).max().unwrap_or(0)
    }

    pub fn type_k(&self) -> GgmlType {
        self.type_k
    }

    pub fn type_v(&self) -> GgmlType {
        self.type_v
    }

    /// V is element-major (plain attention) rather than row per cell.
    pub fn v_trans(&self) -> bool {
        self.v_trans
    }

    /// Whether sliding-window layers keep their rows in a pool of their own.
    pub fn has_swa_pool(&self) -> bool {
        self.swa.is_some()
    }

    /// The sliding-window layers' own pool, if they have one: how many
    /// layers keep their rows there, and its cells.
    pub fn swa_pool(&self) -> Option<(usize, usize)> {
        let p = self.swa.as_ref()?;
        Some((self.in_swa.iter().filter(|&&s| s).count(), p.cells.size()))
    }

    /// The pools there are: the main one, then the sliding-window one if any.
    pub fn pools(&self) -> &'static [Pool] {
        if self.swa.is_some() {
            &[Pool::Global, Pool::Swa]
        } else {
            &[Pool::Global]
        }
    }

    /// The pool layer `il` keeps its rows in.
    pub fn pool_of(&self, il: usize) -> Pool {
        if self.in_swa.get(il).copied().unwrap_or(false) {
            Pool::Swa
        } else {
            Pool::Global
        }
    }

    /// Per layer: whether it keeps its rows in the sliding-window pool (all
    /// false without one).
    pub fn swa_layers(&self) -> &[bool] {
        &self.in_swa
    }

    /// The layers of `pool` that own K and V rows (recurrent layers and
    /// layers reading another's hold none).
    pub fn layers(&self, pool: Pool) -> Vec<usize> {
        (0..self.n_layer).filter(|&il| self.has_kv(il) && self.pool_of(il) == pool).collect()
    }

    /// Whether layer `il` owns K and V rows.
    pub fn has_kv(&self, il: usize) -> bool {
        self.slot.get(il).is_some_and(Option::is_some)
    }

    /// The layer whose rows layer `il` attends over (itself when it owns them).
    pub fn reads(&self, il: usize) -> usize {
        self.reads[il]
    }

    /// The recurrent layers' states, for hybrid models.
    pub fn recurrent(&self) -> Option<&RecurrentStates> {
        self.recurrent.as_ref()
    }

    pub fn recurrent_mut(&mut self) -> Option<&mut RecurrentStates> {
        self.recurrent.as_mut()
    }

    pub(super) fn pool_cells(&self, pool: Pool) -> &Cells {
        match (pool, &self.swa) {
            (Pool::Swa, Some(s)) => &s.cells,
            _ => &self.cells,
        }
    }

    pub(super) fn pool_cells_mut(&mut self, pool: Pool) -> &mut Cells {
        match (pool, &mut self.swa) {
            (Pool::Swa, Some(s)) => &mut s.cells,
            _ => &mut self.cells,
        }
    }

    /// Every pool's cells, the main pool first: the one place where an
    /// operation is applied "to both pools".
    fn pools_mut(&mut self) -> impl Iterator<Item = &mut Cells> {
        std::iter::once(&mut self.cells).chain(self.swa.as_mut().map(|s| &mut s.cells))
    }

    /// Cells (rows of K and V) of layer `il`.
    pub fn layer_size(&self, il: usize) -> usize {
        self.pool_cells(self.pool_of(il)).size()
    }

    pub fn store(&self) -> &TensorStore {
        &self.store
    }

    /// Layer `il`'s K rows (those of the layer it reads).
    pub fn k(&self, il: usize) -> TensorId {
        self.store.nth(2 * self.slot[self.reads[il]].expect("an attention layer"))
    }

    /// Layer `il`'s V rows (those of the layer it reads).
    pub fn v(&self, il: usize) -> TensorId {
        self.store.nth(2 * self.slot[self.reads[il]].expect("an attention layer") + 1)
    }

    /// Where element `j` of cell `cell`'s V sits in a layer of `pool`,
    /// counted in elements, when V is transposed.
    pub fn v_index(&self, pool: Pool, cell: usize, j: usize) -> usize {
        debug_assert!(self.v_trans);
        j * self.pool_cells(pool).size() + cell
    }

    /// Bytes of K and V the cache holds, all layers (and the recurrent states).
    pub fn bytes(&self) -> usize {
        self.store.total_bytes() + self.recurrent.as_ref().map_or(0, RecurrentStates::bytes)
    }

    // ---- contents ----------------------------------------------------

    /// Sequences the cache holds.
    pub fn n_seq(&self) -> usize {
        self.cells.n_seq()
    }

    /// A clear error for a sequence id the cache does not have.
    pub fn check_seq(&self, seq: SeqId) -> Result<(), KvError> {
        match seq < self.n_seq() {
            true => Ok(()),
            false => Err(KvError::NoSequence { seq, n_seq: self.n_seq() }),
        }
    }

    /// Cells some sequence holds.
    pub fn n_live(&self) -> usize {
        self.cells.n_live()
    }

    /// Cells `seq` holds (shared ones included).
    pub fn n_held(&self, seq: SeqId) -> usize {
        self.cells.n_held(seq)
    }

    /// Cells free for new tokens.
    pub fn n_free(&self) -> usize {
        self.cells.n_free()
    }

    /// The highest position `seq` holds, if any.
    pub fn max_pos(&self, seq: SeqId) -> Option<Pos> {
        self.cells.max_pos(seq)
    }

    /// Share of the attended cell range that holds no live token.
    pub fn fragmentation(&self) -> f32 {
        self.cells.fragmentation()
    }

    /// Cells attention spans in the main pool and in the sliding-window
    /// pool (0 without one): the live ranges rounded up to `N_KV_PAD`.
    pub fn n_kv(&self) -> (usize, usize) {
        (self.cells.n_kv(N_KV_PAD), self.swa.as_ref().map_or(0, |p| p.cells.n_kv(N_KV_PAD)))
    }

    /// Per row of a placed batch, the cells a step of that token alone would
    /// have attended, in the global pool and in the sliding-window pool (0s
    /// when there is none): see `Cells::n_kv_by_row`.
    pub fn n_kv_by_row(&self, placed: &Placement) -> (Vec<usize>, Vec<usize>) {
        let global = self.cells.n_kv_by_row(&placed.cells, N_KV_PAD);
        let swa = match (&self.swa, &placed.swa_cells) {
            (Some(p), Some(c)) => p.cells.n_kv_by_row(c, N_KV_PAD),
            _ => vec![0; placed.cells.len()],
        };
        (global, swa)
    }

    /// `seq`'s cells as (position, token), in position order.
    pub fn live_chain(&self, seq: SeqId) -> Vec<(Pos, u32)> {
        self.cells.cells_in(seq, ..).map(|(p, i)| (p, self.cells.token(i))).collect()
    }

    // ---- placing tokens ----------------------------------------------

    /// Check that tokens of `seq` at `positions` (strictly increasing) can
    /// be evaluated: `seq` holds none of them, the sliding-window pool still
    /// has what their queries see, and there are free cells for all.
    pub fn check_new(&self, seq: SeqId, positions: &[Pos]) -> Result<(), KvError> {
        self.check_seq(seq)?;
        let (Some(&first), Some(&last)) = (positions.first(), positions.last()) else { return Ok(()) };
        if let Some(&p) = positions.iter().find(|&&p| p < 0 || self.cells.has_pos(seq, p)) {
            return Err(KvError::PositionTaken(p));
        }
        if let Some(swa) = &self.swa {
            if let Some(pos) = swa.missing_for(&self.cells, seq, first, last) {
                return Err(KvError::WindowDropped { query: first, pos, pool: swa.cells.size() });
            }
        }
        if positions.len() > self.cells.n_free() {
            return Err(KvError::Full { live: self.cells.n_live(), size: self.size(), need: positions.len() });
        }
        Ok(())
    }

    /// Give one micro-batch's tokens (of sequences `seqs`) cells in every
    /// pool (the sliding-window pool first drops what no query from this
    /// batch on can see, if it needs the room).
    pub fn place(&mut self, tokens: &[u32], positions: &[Pos], seqs: &[SeqId]) -> Result<Placement, KvError> {
        let full = || KvError::Full { live: self.cells.n_live(), size: self.size(), need: tokens.len() };
        let cells = self.cells.find_free(tokens.len()).ok_or_else(full)?;
        let swa_cells = match &mut self.swa {
            Some(p) => {
                let mut firsts: Vec<(SeqId, Pos)> = Vec::new();
                for (&s, &q) in seqs.iter().zip(positions) {
                    match firsts.iter_mut().find(|f| f.0 == s) {
                        Some(f) => f.1 = f.1.min(q),
                        None => firsts.push((s, q)),
                    }
                }
                let cells = p.cells_for(tokens.len(), &firsts)?;
                if cells.len() < tokens.len() {
                    return Err(KvError::Full { live: p.cells.n_live(), size: p.cells.size(), need: tokens.len() });
                }
                Some(cells)
            }
            None => None,
        };
        let placed = Placement { cells, swa_cells };
        for (pool, cells) in self.pools_mut().zip(placed.per_pool()) {
            for (((&c, &t), &p), &s) in cells.iter().zip(tokens).zip(positions).zip(seqs) {
                pool.fill(c, t, p, s);
            }
        }
        Ok(placed)
    }

    /// Whether `n` tokens of `seq` whose first position is `q` find cells
    /// in every pool: free ones, and in the sliding-window pool also the
    /// cells only `seq` holds that it may drop because no query from `q` on
    /// sees them (`place` drops them as it needs, micro-batch by
    /// micro-batch, whose reach only grows).
    pub fn can_place(&self, seq: SeqId, q: Pos, n: usize) -> bool {
        n <= self.cells.n_free()
            && self.swa.as_ref().is_none_or(|p| {
                let c = &p.cells;
                n <= c.n_free() + c.cells_in(seq, ..p.reach(q)).filter(|&(_, i)| !c.shared_beyond(i, seq)).count()
            })
    }

    /// Take back a placement whose step failed.
    pub fn unplace(&mut self, placed: &Placement) {
        for (pool, cells) in self.pools_mut().zip(placed.per_pool()) {
            for &c in cells {
                pool.remove(c);
            }
        }
    }

    // ---- forgetting and positions ------------------------------------

    /// Forget everything, every sequence's.
    pub fn clear(&mut self) {
        self.pools_mut().for_each(Cells::clear);
        let n_seq = self.n_seq();
        if let Some(r) = &mut self.recurrent {
            (0..n_seq).for_each(|seq| r.clear_seq(seq));
        }
    }

    /// `seq` lets go of everything it holds (cells other sequences hold stay
    /// theirs). Returns the main pool's cells it held.
    pub fn clear_seq(&mut self, seq: SeqId) -> usize {
        self.remove_range(seq, Pos::MIN, Pos::MAX)
    }

    /// `seq` lets go of its tokens at positions `[p0, p1)` in every pool
    /// (a cell is freed when no sequence holds it any more); returns the
    /// main pool's cells it held there. No graph runs.
    pub fn remove_range(&mut self, seq: SeqId, p0: Pos, p1: Pos) -> usize {
        let removed: Vec<usize> = self.pools_mut().map(|c| c.remove_pos_range(seq, p0, p1).len()).collect();
        if let Some(r) = &mut self.recurrent {
            r.removed(seq, p0, p1);
        }
        removed[0]
    }

    /// Let `dst` hold `src`'s tokens at positions `[p0, p1)` too, in every
    /// pool, copy-free (llama.cpp's `seq_cp`): `dst` goes on from a prefix
    /// `src` computed. Positions `dst` holds already are skipped. Returns
    /// the main pool's cells shared.
    pub fn share_range(&mut self, src: SeqId, dst: SeqId, p0: Pos, p1: Pos) -> Result<usize, KvError> {
        self.check_seq(src)?;
        self.check_seq(dst)?;
        if self.recurrent.is_some() && p0 > 0 {
            return Err(KvError::Recurrent(format!(
                "positions {p0}..{p1} cannot be shared without the tokens before them: the recurrent layers' state \
                 holds the whole prefix"
            )));
        }
        let shared: Vec<usize> = self.pools_mut().map(|c| c.share_range(src, dst, p0, p1)).collect();
        if let Some(r) = &mut self.recurrent {
            r.share(src, dst, p1);
        }
        Ok(shared[0])
    }

    /// Add `delta` to the position of every token of `seq` at `p0` or
    /// later, in every pool; their keys are re-rotated before the next graph
    /// (`apply_pending_shift`). The cells must be `seq`'s alone (`unshare`
    /// copies the shared ones first). Returns the main pool's cells moved.
    pub fn add_to_positions(&mut self, seq: SeqId, p0: Pos, delta: Pos) -> Result<usize, KvError> {
        // Checked in every pool before any moves: a refusal changes nothing.
        for c in self.pools_mut() {
            if let Some((p, _)) = c.cells_in(seq, p0..).find(|&(_, i)| c.shared_beyond(i, seq)) {
                return Err(KvError::Shared { seq, pos: p });
            }
        }
        let mut moved = None;
        for c in self.pools_mut() {
            let n = c.shift_positions(seq, p0, delta)?;
            moved.get_or_insert(n);
        }
        if let Some(r) = &mut self.recurrent {
            r.shifted(seq, p0, delta);
        }
        Ok(moved.unwrap_or(0))
    }

    /// Whether closing the gap `[p0, p1)` (of `gap` positions below the next
    /// position `next`) keeps every position the next query will see: the
    /// query moves back by `gap`, so positions below `p0` come closer to it.
    pub fn check_close_gap(&self, seq: SeqId, p0: Pos, p1: Pos, gap: Pos, next: Pos) -> Result<(), KvError> {
        let Some(swa) = &self.swa else { return Ok(()) };
        let q_new = next - gap;
        let lost = swa
            .missing(&self.cells, seq, swa.reach(q_new), p0)
            .or_else(|| swa.missing(&self.cells, seq, swa.reach(next).max(p1), next));
        match lost {
            Some(pos) => Err(KvError::WindowShift { gap: Some((p0, p1)), pos, window: swa.window }),
            None => Ok(()),
        }
    }

    /// Close every gap in `seq`'s positions: its tokens get positions 0..
    /// in order, keys re-rotated before the next graph. Returns the cells
    /// moved and the next free position.
    pub fn close_gaps(&mut self, seq: SeqId) -> Result<(usize, Pos), KvError> {
        if let Some(swa) = &self.swa {
            // After closing, the next query sits right after the live cells
            // and sees the last window - 1 of them: all must be there.
            let recent: Vec<Pos> = self.cells.positions_in(seq, ..).rev().take(swa.window as usize - 1).collect();
            if let Some(pos) = recent.into_iter().find(|&p| !swa.cells.has_pos(seq, p)) {
                return Err(KvError::WindowShift { gap: None, pos, window: swa.window });
            }
        }
        let mut live: Vec<Pos> = self.cells.positions_in(seq, ..).collect();
        let mut moved = 0;
        // Walk from the lowest position, shifting everything above each gap down.
        let mut expect: Pos = 0;
        for k in 0..live.len() {
            let p = live[k];
            if p > expect {
                moved += self.add_to_positions(seq, p, expect - p)?;
                live[k..].iter_mut().for_each(|e| *e -= p - expect);
            }
            expect = live[k] + 1;
        }
        Ok((moved, expect))
    }

    /// Whether `seq` can go on at position `q` exactly: false when a
    /// sliding-window layer would need a cell its pool has dropped.
    pub fn can_resume_at(&self, seq: SeqId, q: Pos) -> bool {
        self.swa.as_ref().is_none_or(|swa| swa.missing_for(&self.cells, seq, q, q).is_none())
    }

    /// The lowest position of `seq` the sliding-window pool has dropped
    /// while the main pool still holds it (nothing below it is missing), if any.
    pub fn swa_dropped_from(&self, seq: SeqId) -> Option<Pos> {
        let swa = self.swa.as_ref()?;
        swa.missing(&self.cells, seq, 0, Pos::MAX)
    }
}

impl Placement {
    /// Several micro-batches' placements as one (in order).
    pub fn concat(parts: &[Placement]) -> Placement {
        let cells = parts.iter().flat_map(|p| p.cells.iter().copied()).collect();
        let swa_cells =
            parts.iter().map(|p| p.swa_cells.clone()).collect::<Option<Vec<Vec<usize>>>>().map(|v| v.concat());
        Placement { cells, swa_cells }
    }

    /// The cells of each pool there is, the main pool first (as `pools_mut`).
    fn per_pool(&self) -> impl Iterator<Item = &[usize]> {
        std::iter::once(self.cells.as_slice()).chain(self.swa_cells.as_deref())
    }
}

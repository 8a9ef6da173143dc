//! The KV cache: per-layer K and V tensors over pools of cells. K is stored
//! row per cell ([n_embd_k_gqa, size]). V is stored transposed
//! (element-major, [size] per element) for plain attention, as llama.cpp
//! does, so that the KQV product reads contiguous rows; with flash
//! attention V is row per cell like K (the fused op reads V rows).
//!
//! Global layers keep their rows in the main pool (`cells`, the context's
//! size). Sliding-window layers, when the model has them and the context is
//! larger than their window needs, keep theirs in a smaller pool of their
//! own (`swa`, see `super::swa`).
use super::cells::Cells;
use super::swa::SwaPool;
use crate::ggml::{BufferType, GgmlType, TensorId, TensorStore};

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

pub struct KvCache {
    pub cells: Cells,
    /// The sliding-window layers' own pool, when they have one.
    pub swa: Option<SwaPool>,
    /// Per layer: whether its rows live in the sliding-window pool.
    in_swa: Vec<bool>,
    store: TensorStore,
    pub n_layer: usize,
    pub n_embd_k: usize,
    pub n_embd_v: usize,
    pub type_k: GgmlType,
    pub type_v: GgmlType,
    /// V is element-major (plain attention) rather than row per cell.
    pub v_trans: bool,
}

impl KvCache {
    /// `bufts`: per layer, the buffer type its K and V rows live in (its
    /// device's when the layer is offloaded, else the CPU's).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        size: usize, n_layer: usize, n_embd_k: usize, n_embd_v: usize, type_k: GgmlType, type_v: GgmlType, v_trans: bool,
        bufts: &[BufferType], swa: Option<SwaLayout>,
    ) -> Option<KvCache> {
        let in_swa: Vec<bool> = (0..n_layer).map(|il| swa.as_ref().is_some_and(|s| s.layers.get(il).copied().unwrap_or(false))).collect();
        let mut specs = Vec::with_capacity(2 * n_layer);
        for (il, &w) in in_swa.iter().enumerate() {
            let rows = if w { swa.as_ref().map_or(size, |s| s.size) } else { size } as i64;
            let buft = *bufts.get(il)?;
            specs.push((format!("cache_k_l{il}"), type_k, vec![n_embd_k as i64, rows], buft));
            specs.push((format!("cache_v_l{il}"), type_v, vec![n_embd_v as i64, rows], buft));
        }
        let store = TensorStore::allocate(&specs)?;
        let swa = swa.map(|s| SwaPool::new(s.size, s.window));
        Some(KvCache { cells: Cells::new(size), swa, in_swa, store, n_layer, n_embd_k, n_embd_v, type_k, type_v, v_trans })
    }

    /// Cells of the main pool (the context size).
    pub fn size(&self) -> usize {
        self.cells.size()
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

    /// The layers of `pool`.
    pub fn layers(&self, pool: Pool) -> Vec<usize> {
        (0..self.n_layer).filter(|&il| self.pool_of(il) == pool).collect()
    }

    pub fn pool_cells(&self, pool: Pool) -> &Cells {
        match (pool, &self.swa) {
            (Pool::Swa, Some(s)) => &s.cells,
            _ => &self.cells,
        }
    }

    pub fn pool_cells_mut(&mut self, pool: Pool) -> &mut Cells {
        match (pool, &mut self.swa) {
            (Pool::Swa, Some(s)) => &mut s.cells,
            _ => &mut self.cells,
        }
    }

    /// Cells (rows of K and V) of layer `il`.
    pub fn layer_size(&self, il: usize) -> usize {
        self.pool_cells(self.pool_of(il)).size()
    }

    pub fn store(&self) -> &TensorStore {
        &self.store
    }

    pub fn k(&self, il: usize) -> TensorId {
        self.store.nth(2 * il)
    }

    pub fn v(&self, il: usize) -> TensorId {
        self.store.nth(2 * il + 1)
    }

    /// Where element `j` of cell `cell`'s V sits in a layer of `pool`,
    /// counted in elements.
    pub fn v_index(&self, pool: Pool, cell: usize, j: usize) -> usize {
        if self.v_trans {
            j * self.pool_cells(pool).size() + cell
        } else {
            cell * self.n_embd_v + j
        }
    }

    pub fn bytes(&self) -> usize {
        self.store.total_bytes()
    }
}

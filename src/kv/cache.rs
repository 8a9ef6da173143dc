//! The KV cache: per-layer K and V tensors over a fixed number of cells.
//! K is stored row per cell ([n_embd_k_gqa, size]). V is stored transposed
//! (element-major, [size] per element) for plain attention, as llama.cpp
//! does, so that the KQV product reads contiguous rows; with flash
//! attention V is row per cell like K (the fused op reads V rows).
use super::cells::Cells;
use crate::ggml::{BufferType, GgmlType, TensorId, TensorStore};

pub struct KvCache {
    pub cells: Cells,
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
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        size: usize, n_layer: usize, n_embd_k: usize, n_embd_v: usize, type_k: GgmlType, type_v: GgmlType, v_trans: bool,
        buft: BufferType,
    ) -> Option<KvCache> {
        let mut specs = Vec::with_capacity(2 * n_layer);
        for il in 0..n_layer {
            specs.push((format!("cache_k_l{il}"), type_k, vec![n_embd_k as i64, size as i64]));
            specs.push((format!("cache_v_l{il}"), type_v, vec![n_embd_v as i64, size as i64]));
        }
        let store = TensorStore::allocate(&specs, buft)?;
        Some(KvCache { cells: Cells::new(size), store, n_layer, n_embd_k, n_embd_v, type_k, type_v, v_trans })
    }

    pub fn size(&self) -> usize {
        self.cells.size()
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

    /// Where element `j` of cell `cell`'s V sits, counted in elements.
    pub fn v_index(&self, cell: usize, j: usize) -> usize {
        if self.v_trans {
            j * self.size() + cell
        } else {
            cell * self.n_embd_v + j
        }
    }

    pub fn bytes(&self) -> usize {
        self.store.total_bytes()
    }
}

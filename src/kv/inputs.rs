//! The attention inputs of one step that come from the cache: where the new
//! tokens' K and V go in each pool, the masks, and the Hadamard matrices of
//! a quantized cache. The cache creates them for a graph (`new_inputs`) and
//! fills them once the graph is allocated (`set_inputs`).
use super::cache::{KvCache, Placement, Pool};
use super::cells::{Pos, SeqId};
use super::mask::build_mask;
use crate::ggml::{Context, GgmlType, Tensor};

/// The cache's inputs of a step, by name. `T` is a tensor while the graph is
/// built, and the tensor's index among the graph's kept tensors afterwards.
#[derive(Clone, Copy, Debug)]
pub struct KvInputs<T> {
    /// Cells of the new tokens' K rows in the main pool.
    pub k_idxs: T,
    /// Destinations of their V: cells, or every element of each when V is transposed.
    pub v_idxs: T,
    /// The same in the sliding-window pool, when there is one.
    pub k_idxs_swa: Option<T>,
    pub v_idxs_swa: Option<T>,
    /// The attention mask over the main pool's attended cells.
    pub mask: T,
    /// The mask of sliding-window layers, when the model has them (over
    /// their own pool's cells when they have one).
    pub mask_swa: Option<T>,
    /// The Hadamard matrix rotating q and k, when the K cache is quantized.
    pub k_rot: Option<T>,
    /// The Hadamard matrix rotating v and attention's output, when the V cache is quantized.
    pub v_rot: Option<T>,
}

impl<T: Copy> KvInputs<T> {
    /// The same inputs through `f` (tensor to index, or back).
    pub fn map<U>(&self, mut f: impl FnMut(T) -> U) -> KvInputs<U> {
        KvInputs {
            k_idxs: f(self.k_idxs),
            v_idxs: f(self.v_idxs),
            k_idxs_swa: self.k_idxs_swa.map(&mut f),
            v_idxs_swa: self.v_idxs_swa.map(&mut f),
            mask: f(self.mask),
            mask_swa: self.mask_swa.map(&mut f),
            k_rot: self.k_rot.map(&mut f),
            v_rot: self.v_rot.map(&mut f),
        }
    }
}

impl KvCache {
    /// Inputs for `n_tokens` new tokens attending over `n_kv` cells of the
    /// main pool and `n_kv_swa` of the sliding-window pool (when there is
    /// one); `window_layers`: whether the model has sliding-window layers
    /// (they get their own mask even without a pool of their own).
    pub fn new_inputs<'c>(
        &self,
        ctx: &'c Context,
        n_tokens: usize,
        n_kv: usize,
        n_kv_swa: usize,
        window_layers: bool,
        head_dim: usize,
    ) -> KvInputs<Tensor<'c>> {
        let nt = n_tokens as i64;
        // A transposed V is written element by element; a V of rows, cell by cell.
        let n_v_idxs = if self.v_trans() { nt * self.n_embd_v_max() as i64 } else { nt };
        let n_kv_swa = if self.has_swa_pool() { n_kv_swa } else { n_kv };
        let pool = self.has_swa_pool();
        let input = |name: &str, typ, ne: &[i64]| ctx.new_input_aligned(name, typ, ne);
        let square = |name: &str, n: usize| input(name, GgmlType::F32, &[n as i64, n as i64]);
        KvInputs {
            k_idxs: input("inp_k_idxs", GgmlType::I64, &[nt]),
            v_idxs: input("inp_v_idxs", GgmlType::I64, &[n_v_idxs]),
            k_idxs_swa: pool.then(|| input("inp_k_idxs_swa", GgmlType::I64, &[nt])),
            v_idxs_swa: pool.then(|| input("inp_v_idxs_swa", GgmlType::I64, &[n_v_idxs])),
            mask: input("inp_kq_mask", GgmlType::F32, &[n_kv as i64, nt]),
            mask_swa: window_layers.then(|| input("inp_kq_mask_swa", GgmlType::F32, &[n_kv_swa as i64, nt])),
            k_rot: super::rotation::k_rotation_size(head_dim, self.type_k().is_quantized())
                .map(|n| square("inp_k_rot", n)),
            v_rot: super::rotation::v_rotation_size(head_dim, self.type_v().is_quantized())
                .map(|n| square("inp_v_rot", n)),
        }
    }

    /// Fill `inp` for tokens of `seqs` at `positions` placed at `placed`;
    /// `window`: the sliding-window layers' window, when the model has them.
    pub fn set_inputs(
        &mut self,
        inp: &KvInputs<Tensor<'_>>,
        placed: &Placement,
        positions: &[Pos],
        seqs: &[SeqId],
        window: Option<u32>,
    ) {
        inp.k_idxs.write_i64(&placed.cells.iter().map(|&c| c as i64).collect::<Vec<_>>());
        inp.v_idxs.write_i64(&self.v_idxs(Pool::Global, &placed.cells));
        if let (Some(sc), Some(ks), Some(vs)) = (&placed.swa_cells, inp.k_idxs_swa, inp.v_idxs_swa) {
            ks.write_i64(&sc.iter().map(|&c| c as i64).collect::<Vec<_>>());
            vs.write_i64(&self.v_idxs(Pool::Swa, sc));
        }
        let (n_kv, n_kv_swa) = self.n_kv();
        let mut mask = std::mem::take(&mut self.mask);
        build_mask(self.pool_cells(Pool::Global), n_kv, positions, seqs, None, &mut mask);
        inp.mask.write_f32(&mask);
        self.mask = mask;
        if let (Some(w), Some(t)) = (window, inp.mask_swa) {
            let mut mask = std::mem::take(&mut self.mask_swa);
            match self.has_swa_pool() {
                true => build_mask(self.pool_cells(Pool::Swa), n_kv_swa, positions, seqs, Some(w), &mut mask),
                false => build_mask(self.pool_cells(Pool::Global), n_kv, positions, seqs, Some(w), &mut mask),
            }
            t.write_f32(&mask);
            self.mask_swa = mask;
        }
        if let (Some(h), Some(t)) = (&self.k_rotation, inp.k_rot) {
            t.write_f32(h);
        }
        if let (Some(h), Some(t)) = (&self.v_rotation, inp.v_rot) {
            t.write_f32(h);
        }
    }

    /// Destinations of the new tokens' V in a pool: their cells, or every
    /// element of each when V is transposed.
    fn v_idxs(&self, pool: Pool, cells: &[usize]) -> Vec<i64> {
        if !self.v_trans() {
            return cells.iter().map(|&c| c as i64).collect();
        }
        let n_embd_v = self.n_embd_v_max();
        let mut v = Vec::with_capacity(cells.len() * n_embd_v);
        for &c in cells {
            v.extend((0..n_embd_v).map(|j| self.v_index(pool, c, j) as i64));
        }
        v
    }
}

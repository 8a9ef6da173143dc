//! The K-shift: after positions moved (closing a gap), the cached keys of
//! the moved cells are re-rotated by RoPE to their new positions, in one
//! small graph over every layer of the pools that moved, run on the
//! caller's scheduler. How one layer's keys are rotated is the model's
//! business (`KShift`); which cells moved and by how much is the cache's.
use super::cache::{KvCache, Pool};
use super::cells::Pos;
use crate::ggml::{ComputeError, Context, GgmlType, OwnedGraph, Scheduler, Tensor};

/// Rotates one layer's cached keys by per-cell position deltas.
pub trait KShift {
    /// The node that rotates `k` (layer `il`'s whole K tensor) in place by
    /// `shift` (one i32 per cell); `k_rot` is the Hadamard matrix of a
    /// quantized K cache. `n_ctx` is the cache's size (some models pick
    /// their RoPE factors by it).
    fn k_shift<'c>(
        &'c self,
        ctx: &'c Context,
        il: usize,
        n_ctx: usize,
        k: Tensor<'c>,
        shift: Tensor<'c>,
        k_rot: Option<Tensor<'c>>,
    ) -> Tensor<'c>;
}

impl KvCache {
    /// Rotate the keys of cells whose positions changed (one graph over all
    /// layers), if any did; called before every evaluation, defrag and
    /// snapshot. Returns whether a graph ran.
    pub fn apply_pending_shift(&mut self, sched: &mut Scheduler, model: &dyn KShift) -> Result<bool, ComputeError> {
        // Pending position changes per pool (a pool without layers has no keys to rotate).
        let mut work: Vec<(Pool, Vec<Pos>)> = Vec::new();
        for &pool in self.pools() {
            if self.pool_cells(pool).has_shift() {
                let shift = self.pool_cells_mut(pool).take_shift();
                if !self.layers(pool).is_empty() {
                    work.push((pool, shift));
                }
            }
        }
        if work.is_empty() {
            return Ok(false);
        }
        let nodes = 4 * self.n_layer() + 8;
        let ctx = Context::new(nodes, nodes);
        let kv = &*self;
        let g = OwnedGraph::build(ctx, |ctx, _| {
            let mut gf = ctx.new_graph(nodes);
            let k_rot = kv.k_rotation.as_ref().map(|h| {
                let n = (h.len() as f64).sqrt() as i64;
                ctx.new_input("k_rot", GgmlType::F32, &[n, n])
            });
            let mut keep = Vec::new();
            for &(pool, _) in &work {
                let size = kv.pool_cells(pool).size() as i64;
                let inp_shift = ctx.new_input("k_shift", GgmlType::I32, &[size]);
                for il in kv.layers(pool) {
                    let k = kv.store().get(kv.k(il));
                    gf.expand(model.k_shift(ctx, il, kv.size(), k, inp_shift, k_rot));
                }
                keep.push(inp_shift);
            }
            keep.extend(k_rot);
            (gf, keep)
        });
        sched.alloc(&g.graph())?;
        for (i, (_, shift)) in work.iter().enumerate() {
            g.tensor(i).write_i32(shift);
        }
        if let Some(h) = &self.k_rotation {
            g.tensor(work.len()).write_f32(h);
        }
        sched.compute(&g.graph())?;
        Ok(true)
    }
}

//! Moving live cells into a contiguous block: K rows and V values (rows,
//! or columns when V is transposed) are gathered from their old cells and scattered to the new ones
//! with one ggml graph over the layers of one pool.
use super::cells::{Pos, SeqId};
use super::{KShift, KvCache, KvError, Pool};
use crate::ggml::{ComputeError, Context, GgmlType, Graph, OwnedGraph, Scheduler, Tensor};

/// Inputs of a defrag graph: source and destination indices for K rows and
/// for V elements.
struct DefragInputs<'c> {
    pub k_src: Tensor<'c>,
    pub k_dst: Tensor<'c>,
    pub v_src: Tensor<'c>,
    pub v_dst: Tensor<'c>,
}

/// Build the graph moving `n_moves` cells in every layer of `pool`.
fn build<'c>(ctx: &'c Context, gf: &mut Graph<'c>, kv: &'c KvCache, pool: Pool, n_moves: usize) -> DefragInputs<'c> {
    let n = n_moves as i64;
    // V rows move as K's do; a transposed V moves element by element.
    let nv = if kv.v_trans() { n * kv.n_embd_v_max() as i64 } else { n };
    let inp = DefragInputs {
        k_src: ctx.new_input("defrag_k_src", GgmlType::I32, &[n]),
        k_dst: ctx.new_input("defrag_k_dst", GgmlType::I64, &[n]),
        v_src: ctx.new_input("defrag_v_src", GgmlType::I32, &[nv]),
        v_dst: ctx.new_input("defrag_v_dst", GgmlType::I64, &[nv]),
    };
    let store = kv.store();
    for il in kv.layers(pool) {
        let k = store.get(kv.k(il));
        let moved = ctx.get_rows(k, inp.k_src);
        gf.expand(ctx.set_rows(k, moved, inp.k_dst));
        let v = store.get(kv.v(il));
        let v1 = if kv.v_trans() { ctx.reshape(v, &[1, v.nelements()]) } else { v };
        let moved = ctx.get_rows(v1, inp.v_src);
        gf.expand(ctx.set_rows(v1, moved, inp.v_dst));
    }
    inp
}

/// Index lists for `moves` in `pool` (K and V rows: cells; a transposed V:
/// every element of each cell).
fn indices(kv: &KvCache, pool: Pool, moves: &[(usize, usize)]) -> (Vec<i32>, Vec<i64>, Vec<i32>, Vec<i64>) {
    let k_src: Vec<i32> = moves.iter().map(|m| m.0 as i32).collect();
    let k_dst: Vec<i64> = moves.iter().map(|m| m.1 as i64).collect();
    if !kv.v_trans() {
        return (k_src.clone(), k_dst.clone(), k_src, k_dst);
    }
    let n_embd_v = kv.n_embd_v_max();
    let mut v_src = Vec::with_capacity(moves.len() * n_embd_v);
    let mut v_dst = Vec::with_capacity(moves.len() * n_embd_v);
    for &(from, to) in moves {
        for j in 0..n_embd_v {
            v_src.push(kv.v_index(pool, from, j) as i32);
            v_dst.push(kv.v_index(pool, to, j) as i64);
        }
    }
    (k_src, k_dst, v_src, v_dst)
}

impl KvCache {
    /// Pack the live cells of every pool into a contiguous block so
    /// attention spans only them (pending key rotations are applied first);
    /// logits are unchanged. Returns the cells moved.
    pub fn defrag(&mut self, sched: &mut Scheduler, model: &dyn KShift) -> Result<usize, ComputeError> {
        self.apply_pending_shift(sched, model)?;
        let mut moved = 0;
        for &pool in self.pools() {
            let moves = self.pool_cells(pool).defrag_moves();
            if moves.is_empty() {
                continue;
            }
            self.copy_cells(sched, pool, &moves)?;
            self.pool_cells_mut(pool).apply_moves(&moves);
            moved += moves.len();
        }
        Ok(moved)
    }

    /// Give `seq` its own copy of every cell it shares with other
    /// sequences at positions `p0` and later, in every pool (one copy graph
    /// per pool), so that they can move for `seq` alone; the other
    /// sequences keep the originals. Returns the main pool's cells copied.
    pub fn unshare(&mut self, sched: &mut Scheduler, seq: SeqId, p0: Pos) -> Result<usize, UnshareError> {
        let mut copied = 0;
        for &pool in self.pools() {
            let c = self.pool_cells(pool);
            let shared: Vec<usize> =
                c.cells_in(seq, p0..).filter(|&(_, i)| c.shared_beyond(i, seq)).map(|(_, i)| i).collect();
            if shared.is_empty() {
                continue;
            }
            let free = c.find_free(shared.len()).ok_or(KvError::Full {
                live: c.n_live(),
                size: c.size(),
                need: shared.len(),
            })?;
            let moves: Vec<(usize, usize)> = shared.into_iter().zip(free).collect();
            self.copy_cells(sched, pool, &moves)?;
            let c = self.pool_cells_mut(pool);
            for &(from, to) in &moves {
                c.split_off(from, to, seq);
            }
            if pool == Pool::Global {
                copied = moves.len();
            }
        }
        Ok(copied)
    }

    /// Copy the K and V rows of cells `from` to cells `to` for each move,
    /// in every layer of `pool` (one graph); the metadata is the caller's.
    fn copy_cells(&self, sched: &mut Scheduler, pool: Pool, moves: &[(usize, usize)]) -> Result<(), ComputeError> {
        if self.layers(pool).is_empty() {
            return Ok(());
        }
        let nodes = 8 * self.n_layer() + 8;
        let ctx = Context::new(nodes, nodes);
        let g = OwnedGraph::build(ctx, |ctx, _| {
            let mut gf = ctx.new_graph(nodes);
            let inp = build(ctx, &mut gf, self, pool, moves.len());
            (gf, vec![inp.k_src, inp.k_dst, inp.v_src, inp.v_dst])
        });
        sched.alloc(&g.graph())?;
        let (k_src, k_dst, v_src, v_dst) = indices(self, pool, moves);
        g.tensor(0).write_i32(&k_src);
        g.tensor(1).write_i64(&k_dst);
        g.tensor(2).write_i32(&v_src);
        g.tensor(3).write_i64(&v_dst);
        sched.compute(&g.graph())?;
        Ok(())
    }
}

/// Why cells could not be unshared: no free cells for the copies, or the
/// copy graph failed.
#[derive(Debug, thiserror::Error)]
pub enum UnshareError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Compute(#[from] ComputeError),
}

//! Forgetting in place: removing cells from the cache without recomputing
//! what remains, under a position policy, and packing the live cells.
use super::Session;
use crate::error::{Error, Result};
use crate::ggml::{Context, GgmlType, OwnedGraph};
use crate::kv::{defrag, Pool, Pos};
use crate::model::blocks;
use std::time::{Duration, Instant};

/// What happens to positions after a removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PositionPolicy {
    /// Positions never change; later tokens continue after the highest one
    /// and the model sees a gap (no graph runs).
    #[default]
    Keep,
    /// Close the gap: later cells move down and their keys are re-rotated by
    /// RoPE (a small graph over the cached K, no recompute).
    Shift,
    /// Keep until the next position would pass the model's trained context,
    /// then close all gaps once.
    Auto,
}

impl std::str::FromStr for PositionPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "keep" => Ok(PositionPolicy::Keep),
            "shift" => Ok(PositionPolicy::Shift),
            "auto" => Ok(PositionPolicy::Auto),
            _ => Err(format!("unknown position policy '{s}' (keep, shift or auto)")),
        }
    }
}

/// The outcome of one removal.
#[derive(Clone, Debug)]
pub struct Removal {
    /// Cells whose live bit was cleared.
    pub cells: usize,
    /// Cells whose position moved (shift policy).
    pub shifted: usize,
    pub took: Duration,
}

impl Session {
    /// Forget the tokens at positions `[p0, p1)`: their cells become
    /// invisible to every later query and free for reuse. With `Keep` this
    /// only clears live bits; with `Shift` later positions close the gap and
    /// their keys are re-rotated once, before the next evaluation (several
    /// removals accumulate into one rotation, as in llama.cpp).
    pub fn remove_range(&mut self, p0: Pos, p1: Pos, policy: PositionPolicy) -> Result<Removal> {
        if p0 < 0 || p1 < p0 {
            return Err(Error::InvalidArgument(format!("invalid position range [{p0}, {p1})")));
        }
        let t0 = Instant::now();
        let gap = p1.min(self.next_pos) - p0;
        let shift = policy == PositionPolicy::Shift && gap > 0;
        if shift {
            self.check_swa_shift(p0, p1, gap)?;
        }
        let cells = self.kv.cells.remove_pos_range(p0, p1).len();
        if let Some(swa) = &mut self.kv.swa {
            swa.cells.remove_pos_range(p0, p1);
        }
        let mut shifted = 0;
        if shift {
            shifted = self.kv.cells.shift_positions(p1, -gap).map_err(Error::Context)?;
            if let Some(swa) = &mut self.kv.swa {
                swa.cells.shift_positions(p1, -gap).map_err(Error::Context)?;
            }
            self.next_pos -= gap;
        }
        self.record(super::record::SessionOp::Remove { p0, p1, policy });
        Ok(Removal { cells, shifted, took: t0.elapsed() })
    }

    /// Closing the gap `[p0, p1)` (of `gap` positions up to the next one)
    /// moves the next query back by `gap`: positions below `p0` come closer
    /// to it. Refuse if the sliding-window layers have dropped one that would
    /// then lie inside their window (a full cache would still show it).
    fn check_swa_shift(&self, p0: Pos, p1: Pos, gap: Pos) -> Result<()> {
        let Some(swa) = &self.kv.swa else { return Ok(()) };
        let (q, q_new) = (self.next_pos, self.next_pos - gap);
        let lost = swa.missing(&self.kv.cells, swa.reach(q_new), p0).or_else(|| swa.missing(&self.kv.cells, swa.reach(q).max(p1), q));
        match lost {
            Some(p) => Err(Error::Context(format!(
                "closing the gap [{p0}, {p1}) would bring position {p} back into the sliding window ({} positions), \
                 but the sliding-window layers have already dropped it: remove with the keep policy, or use --swa-full",
                swa.window
            ))),
            None => Ok(()),
        }
    }

    /// Whether the cache can go on at position `q` exactly: false when a
    /// sliding-window layer would need a cell its pool has dropped.
    pub fn can_resume_at(&self, q: Pos) -> bool {
        self.kv.swa.as_ref().is_none_or(|swa| swa.missing_for(&self.kv.cells, q, q).is_none())
    }

    /// The lowest position the sliding-window pool has dropped while the
    /// main pool still holds it (nothing below it is missing), if any.
    pub fn swa_dropped_from(&self) -> Option<Pos> {
        let swa = self.kv.swa.as_ref()?;
        swa.missing(&self.kv.cells, 0, Pos::MAX)
    }

    /// Set the next position back to `p`, which must lie after every live
    /// token (what comes after the last kept token was removed).
    pub fn rewind(&mut self, p: Pos) -> Result<()> {
        if let Some(last) = self.kv.cells.max_pos().filter(|&last| last >= p) {
            return Err(Error::InvalidArgument(format!("cannot rewind to position {p}: position {last} still holds a token")));
        }
        if p < 0 {
            return Err(Error::InvalidArgument(format!("cannot rewind to a negative position ({p})")));
        }
        self.next_pos = p;
        self.record(super::record::SessionOp::Rewind { next_pos: p });
        Ok(())
    }

    /// Close every gap in positions (the `auto` policy's one-time compaction):
    /// live cells get positions 0.. in order, keys re-rotated.
    pub fn compact_positions(&mut self) -> Result<usize> {
        if let Some(swa) = &self.kv.swa {
            // After compaction the next query sits right after the live
            // cells and sees the last window - 1 of them: all must be there.
            let recent: Vec<Pos> = self.kv.cells.positions_in(..).rev().take(swa.window as usize - 1).collect();
            if let Some(p) = recent.into_iter().find(|&p| !swa.cells.has_pos(p)) {
                return Err(Error::Context(format!(
                    "closing every gap would bring position {p} back into the sliding window ({} positions), \
                     but the sliding-window layers have already dropped it: keep positions, or use --swa-full",
                    swa.window
                )));
            }
        }
        let mut live: Vec<(Pos, usize)> =
            (0..self.kv.cells.used_max_p1()).filter(|&i| self.kv.cells.is_live(i)).map(|i| (self.kv.cells.pos(i), i)).collect();
        live.sort_unstable();
        let mut moved = 0;
        // Walk from the lowest position, shifting everything above each gap down.
        let mut expect: Pos = 0;
        let mut k = 0;
        while k < live.len() {
            let p = live[k].0;
            if p > expect {
                moved += self.kv.cells.shift_positions(p, expect - p).map_err(Error::Context)?;
                if let Some(swa) = &mut self.kv.swa {
                    swa.cells.shift_positions(p, expect - p).map_err(Error::Context)?;
                }
                for e in live.iter_mut().skip(k) {
                    e.0 -= p - expect;
                }
            }
            // Tokens sharing a position (none in one sequence) keep sharing it.
            expect = live[k].0 + 1;
            k += 1;
        }
        self.next_pos = expect;
        self.record(super::record::SessionOp::CompactPositions);
        Ok(moved)
    }

    /// The live cells as (position, token), in position order: the text a
    /// cache-less engine would have to prefill to get where this session is.
    pub fn live_chain(&self) -> Vec<(Pos, u32)> {
        let c = &self.kv.cells;
        let mut v: Vec<(Pos, u32)> = (0..c.used_max_p1()).filter(|&i| c.is_live(i)).map(|i| (c.pos(i), c.token(i))).collect();
        v.sort_unstable();
        v
    }

    /// Tokens of the live cells in position order.
    pub fn live_tokens(&self) -> Vec<u32> {
        self.live_chain().into_iter().map(|(_, t)| t).collect()
    }

    /// Whether the next `n` tokens would pass the trained context under
    /// `Auto` (then positions should be compacted first).
    pub fn needs_compaction(&self, n: usize) -> bool {
        (self.next_pos as i64 + n as i64) > self.model.hparams.n_ctx_train as i64
    }

    /// Rotate the keys of cells whose positions changed (one graph over all
    /// layers), if any did; called before every evaluation and defrag.
    pub(super) fn apply_pending_shift(&mut self) -> Result<()> {
        // Pending position changes per pool (a pool without layers has no keys to rotate).
        let mut work: Vec<(Pool, Vec<Pos>)> = Vec::new();
        for &pool in self.kv.pools() {
            if self.kv.pool_cells(pool).has_shift() {
                let shift = self.kv.pool_cells_mut(pool).take_shift();
                if !self.kv.layers(pool).is_empty() {
                    work.push((pool, shift));
                }
            }
        }
        if work.is_empty() {
            return Ok(());
        }
        let hp = self.model.hparams.clone();
        let nodes = 4 * hp.n_layer as usize + 8;
        let ctx = Context::new(nodes, nodes);
        let (kv, model) = (&self.kv, &self.model);
        let g = OwnedGraph::build(ctx, |ctx, _| {
            let mut gf = ctx.new_graph(nodes);
            let k_rot = crate::kv::rotation::k_rotation_size(hp.head_dim as usize, kv.type_k.is_quantized())
                .map(|n| ctx.new_input("k_rot", GgmlType::F32, &[n as i64, n as i64]));
            let factors = model.rope_factors_name(kv.size()).and_then(|n| model.weights.id(n)).map(|id| model.weights.get(id));
            let mut keep = Vec::new();
            for &(pool, _) in &work {
                let size = kv.pool_cells(pool).size() as i64;
                let inp_shift = ctx.new_input("k_shift", GgmlType::I32, &[size]);
                for il in kv.layers(pool) {
                    let k = kv.store().get(kv.k(il));
                    // A pure rotation: the attention factor (Phi-3 long
                    // contexts) was applied when the key was first roped.
                    // llama.cpp's K-shift applies it again on every shift.
                    let rope = crate::ggml::RopeParams { attn_factor: 1.0, ..model.rope_params(il) };
                    let t = blocks::k_shift(ctx, k, inp_shift, &rope, factors, hp.head_dim as i64, hp.n_head_kv as i64, k_rot);
                    gf.expand(t);
                }
                keep.push(inp_shift);
            }
            keep.extend(k_rot);
            (gf, keep)
        });
        self.step_graph = None; // the scheduler's allocation now belongs to this graph
        self.sched.alloc(&g.graph())?;
        for (i, (_, shift)) in work.iter().enumerate() {
            g.tensor(i).write_i32(shift);
        }
        if let Some(h) = &self.k_rotation {
            g.tensor(work.len()).write_f32(h);
        }
        self.sched.compute(&g.graph())?;
        self.graphs_run += 1;
        Ok(())
    }

    /// Pack the live cells into a contiguous block so attention spans only
    /// them; logits are unchanged. Returns the cells moved.
    pub fn defrag(&mut self) -> Result<usize> {
        self.apply_pending_shift()?;
        self.record(super::record::SessionOp::Defrag);
        let mut moved = 0;
        for &pool in self.kv.pools() {
            let moves = self.kv.pool_cells(pool).defrag_moves();
            if moves.is_empty() {
                continue;
            }
            if self.kv.layers(pool).is_empty() {
                self.kv.pool_cells_mut(pool).apply_moves(&moves);
                continue;
            }
            let nodes = 8 * self.kv.n_layer + 8;
            let ctx = Context::new(nodes, nodes);
            let kv = &self.kv;
            let g = OwnedGraph::build(ctx, |ctx, _| {
                let mut gf = ctx.new_graph(nodes);
                let inp = defrag::build(ctx, &mut gf, kv, pool, moves.len());
                (gf, vec![inp.k_src, inp.k_dst, inp.v_src, inp.v_dst])
            });
            self.step_graph = None;
            self.sched.alloc(&g.graph())?;
            let (k_src, k_dst, v_src, v_dst) = defrag::indices(&self.kv, pool, &moves);
            g.tensor(0).write_i32(&k_src);
            g.tensor(1).write_i64(&k_dst);
            g.tensor(2).write_i32(&v_src);
            g.tensor(3).write_i64(&v_dst);
            self.sched.compute(&g.graph())?;
            self.graphs_run += 1;
            self.kv.pool_cells_mut(pool).apply_moves(&moves);
            moved += moves.len();
        }
        Ok(moved)
    }

    /// Graphs computed so far (steps, K-shifts, defrags): removal with the
    /// `Keep` policy adds none.
    pub fn graphs_run(&self) -> u64 {
        self.graphs_run
    }

    /// Share of the attended cell range that holds no live token.
    pub fn fragmentation(&self) -> f32 {
        self.kv.cells.fragmentation()
    }
}

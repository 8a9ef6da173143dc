//! Boundary refresh: after a removal, the first tokens after each gap
//! still hold keys and values computed while the forgotten span was in
//! view. Re-evaluating the first `k` of them, at their own positions with
//! the gap's content gone, gives them the K/V a recompute without the span
//! would give (the cost is `k` tokens per gap, never the whole suffix);
//! later tokens keep theirs. `Reach::Auto` goes on chunk by chunk while
//! the re-evaluated tokens' values still change as much as the first
//! chunk's did (measured in `decache eval` as `shift+refresh:auto`: closer
//! to a recompute than a fixed count, at a higher cost; see docs/eval.md).
use super::{Gap, Session};
use crate::error::Result;
use crate::kv::rows::relative_change;
use crate::kv::Pos;

/// How far a boundary refresh reaches after each gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reach {
    /// The first `k` live tokens (0: none).
    Tokens(usize),
    /// Chunks of `AUTO_CHUNK` tokens, as long as the last chunk's values in
    /// an early layer moved by at least `AUTO_TOLERANCE` times the first
    /// chunk's change (relative L2), at most `AUTO_MAX` tokens per gap.
    Auto,
}

/// Tokens per step of an automatic refresh.
pub const AUTO_CHUNK: usize = 16;
/// An automatic refresh stops after a chunk whose values changed by less
/// than this share of the gap's first chunk's change.
pub const AUTO_TOLERANCE: f64 = 0.5;
/// Most tokens an automatic refresh re-evaluates after one gap.
pub const AUTO_MAX: usize = 256;

impl From<usize> for Reach {
    fn from(k: usize) -> Reach {
        Reach::Tokens(k)
    }
}

impl std::fmt::Display for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reach::Tokens(k) => write!(f, "{k}"),
            Reach::Auto => f.write_str("auto"),
        }
    }
}

impl std::str::FromStr for Reach {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Reach, String> {
        match s {
            "auto" => Ok(Reach::Auto),
            n => n.parse().map(Reach::Tokens).map_err(|_| format!("'{s}' is neither a token count nor auto")),
        }
    }
}

impl Reach {
    /// Whether it refreshes anything.
    pub fn is_on(self) -> bool {
        self != Reach::Tokens(0)
    }
}

/// What a refresh re-evaluated.
#[derive(Clone, Debug, Default)]
pub struct Refreshed {
    /// The positions re-evaluated, ascending.
    pub positions: Vec<Pos>,
    /// Their logits, one row each (`n_vocab` floats per row).
    pub logits: Vec<f32>,
}

impl Session {
    /// Re-evaluate the first `k` live tokens at or after each position in
    /// `starts` (the first position after each gap, as positions are now),
    /// in place: their cells are freed and the same tokens evaluated again
    /// at the same positions, each seeing only what is live before it.
    pub fn refresh(&mut self, starts: &[Pos], reach: impl Into<Reach>) -> Result<Refreshed> {
        let reach = reach.into();
        if self.is_hybrid() && reach.is_on() && !starts.is_empty() {
            // Refused before anything is removed: the recurrent state cannot
            // take the same tokens a second time.
            return Err(crate::kv::KvError::Recurrent(
                "boundary refresh is not available for hybrid models: their recurrent layers absorb each token once, \
                 in order"
                    .into(),
            )
            .into());
        }
        let k = match reach {
            Reach::Tokens(k) => k,
            Reach::Auto => return self.refresh_auto(starts),
        };
        let chain = self.live_chain();
        let mut picked: Vec<(Pos, u32)> = Vec::new();
        for &s in starts {
            let from = chain.partition_point(|&(p, _)| p < s);
            picked.extend(chain[from..(from + k).min(chain.len())].iter().copied());
        }
        picked.sort_unstable();
        picked.dedup();
        if picked.is_empty() {
            return Ok(Refreshed::default());
        }
        self.refresh_picked(picked)
    }

    /// Re-evaluate `picked` (position, token) pairs, ascending, in place.
    fn refresh_picked(&mut self, picked: Vec<(Pos, u32)>) -> Result<Refreshed> {
        let (positions, tokens): (Vec<Pos>, Vec<u32>) = picked.into_iter().unzip();
        // Free each run of consecutive positions (without moving anything).
        let mut at = 0;
        while at < positions.len() {
            let mut end = at + 1;
            while end < positions.len() && positions[end] == positions[end - 1] + 1 {
                end += 1;
            }
            self.remove_range(positions[at], positions[end - 1] + 1, Gap::Keep)?;
            at = end;
        }
        let logits = self.eval_at(&tokens, &positions, true)?;
        Ok(Refreshed { positions, logits })
    }

    /// The layer whose values an automatic refresh watches: the first one
    /// holding cells from an eighth of the depth on. (In the last layers
    /// every kept token's values move by 20-60% after a removal, far from
    /// the gap as well; an early layer's change falls off with distance, as
    /// CacheBlend selects tokens by.)
    fn auto_probe_layer(&self) -> Option<usize> {
        let pool = self.shared.pool();
        let n = pool.kv.n_layer();
        (n / 8..n).find(|&il| pool.kv.has_kv(il))
    }

    fn v_values(&self, il: usize, positions: &[Pos]) -> Option<Vec<f32>> {
        self.shared.pool().kv.v_values(self.seq, il, positions)
    }

    fn kv_width_v(&self, il: usize) -> usize {
        self.shared.pool().kv.n_embd_v(il)
    }

    /// The automatic reach: after each gap (ascending), chunk by chunk,
    /// until a chunk's values moved by less than the tolerance's share of
    /// the first chunk's.
    fn refresh_auto(&mut self, starts: &[Pos]) -> Result<Refreshed> {
        let chain = self.live_chain();
        let il = self.auto_probe_layer();
        let mut starts = starts.to_vec();
        starts.sort_unstable();
        let mut done: Vec<Pos> = Vec::new();
        let mut rows: Vec<(Pos, Vec<f32>)> = Vec::new();
        let n_vocab = self.model().hparams.n_vocab as usize;
        for s in starts {
            let mut from = chain.partition_point(|&(p, _)| p < s);
            let mut reached = 0;
            let mut first_change: Option<f64> = None;
            while reached < AUTO_MAX && from < chain.len() {
                let chunk: Vec<(Pos, u32)> = chain[from..(from + AUTO_CHUNK).min(chain.len())]
                    .iter()
                    .copied()
                    .filter(|(p, _)| done.binary_search(p).is_err())
                    .collect();
                from += AUTO_CHUNK;
                if chunk.is_empty() {
                    continue;
                }
                let positions: Vec<Pos> = chunk.iter().map(|&(p, _)| p).collect();
                let before = il.and_then(|il| self.v_values(il, &positions));
                let r = self.refresh_picked(chunk)?;
                reached += positions.len();
                for (i, &p) in r.positions.iter().enumerate() {
                    rows.push((p, r.logits[i * n_vocab..(i + 1) * n_vocab].to_vec()));
                    let at = done.binary_search(&p).unwrap_or_else(|e| e);
                    done.insert(at, p);
                }
                let after = il.and_then(|il| self.v_values(il, &positions));
                let change = match (before, after, il) {
                    (Some(b), Some(a), Some(il)) => relative_change(&b, &a, self.kv_width_v(il)),
                    // Nothing to measure with (a quantized V cache): one chunk.
                    _ => break,
                };
                tracing::debug!(target: "decache::refresh", gap = s, at = positions[0], change, "refreshed a chunk");
                let first = *first_change.get_or_insert(change);
                if first == 0.0 || change < AUTO_TOLERANCE * first {
                    break;
                }
            }
        }
        rows.sort_by_key(|(p, _)| *p);
        Ok(Refreshed {
            positions: rows.iter().map(|(p, _)| *p).collect(),
            logits: rows.into_iter().flat_map(|(_, l)| l).collect(),
        })
    }
}

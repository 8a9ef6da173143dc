//! The subconscious cache: reuse what the cache holds for a new token
//! sequence even when the client pruned its history. The cache holds a chain
//! `A B C`; the new input is `A C D`: `A` (the common prefix) and `C` (a
//! chunk of the cached chain longer than a threshold that continues the new
//! input right after `A`) are kept as they are, `B` is deleted in place,
//! only `D` is prefilled. The match repeats, so `A B1 C1 B2 C2` → `A C1 C2 D`
//! hits too; cached tokens the new input no longer holds are deleted.
use super::{Gap, PositionPolicy, Session};
use crate::error::Result;
use std::collections::HashMap;

/// A run of the new input found in the cached chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Index in the cached chain.
    pub cached: usize,
    /// Index in the new input.
    pub new: usize,
    pub len: usize,
}

/// How a new input maps onto the cached chain: the chunks, in order, cover
/// `new[..reused]` contiguously.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReusePlan {
    pub chunks: Vec<Chunk>,
    /// Length of the common prefix (the first chunk, when it starts at 0 in both).
    pub prefix: usize,
    /// Tokens of the new input already in the cache.
    pub reused: usize,
}

/// What kind of hit a request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HitKind {
    /// Nothing reused.
    Miss,
    /// Only a common prefix reused.
    Prefix,
    /// Chunks after a pruned span reused too.
    Subconscious,
}

impl HitKind {
    pub fn name(self) -> &'static str {
        match self {
            HitKind::Miss => "miss",
            HitKind::Prefix => "prefix",
            HitKind::Subconscious => "subconscious",
        }
    }
}

/// The runs of `false` in `keep`, as index ranges `[a, b)`.
pub fn dropped_runs(keep: &[bool]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < keep.len() {
        let start = i;
        while i < keep.len() && !keep[i] {
            i += 1;
        }
        if i > start {
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

impl ReusePlan {
    /// Which of `n` cached tokens the plan keeps.
    pub fn kept(&self, n: usize) -> Vec<bool> {
        let mut keep = vec![false; n];
        for c in &self.chunks {
            keep[c.cached..c.cached + c.len].iter_mut().for_each(|k| *k = true);
        }
        keep
    }

    pub fn kind(&self) -> HitKind {
        match (self.reused, self.chunks.len()) {
            (0, _) => HitKind::Miss,
            (_, 1) if self.prefix > 0 => HitKind::Prefix,
            _ => HitKind::Subconscious,
        }
    }
}

/// Plan the reuse of `cached` (the chain the cache holds, in position order)
/// for `new`. After the common prefix, chunks longer than `min_chunk` tokens
/// are matched greedily (the longest that continues the new input, later in
/// the chain than the previous one); `min_chunk = None` plans a plain prefix
/// match. At most `new.len() - 1` tokens are reused, so that the last one is
/// evaluated and gives logits.
pub fn plan(cached: &[u32], new: &[u32], min_chunk: Option<usize>) -> ReusePlan {
    let limit = new.len().saturating_sub(1);
    let prefix = cached.iter().zip(new).take_while(|(a, b)| a == b).count().min(limit);
    let mut out = ReusePlan { chunks: Vec::new(), prefix, reused: prefix };
    if prefix > 0 {
        out.chunks.push(Chunk { cached: 0, new: 0, len: prefix });
    }
    let Some(min) = min_chunk else { return out };
    let k = min.max(1);
    if cached.len() < k {
        return out;
    }
    // Where each k-gram of the cached chain starts (candidates for a chunk).
    let mut grams: HashMap<&[u32], Vec<usize>> = HashMap::new();
    for j in 0..=cached.len() - k {
        grams.entry(&cached[j..j + k]).or_default().push(j);
    }
    let (mut ci, mut ni) = (prefix, prefix);
    while ni + k <= limit {
        let Some(starts) = grams.get(&new[ni..ni + k]) else { break };
        let best = starts
            .iter()
            .filter(|&&j| j >= ci)
            .map(|&j| (cached[j..].iter().zip(&new[ni..limit]).take_while(|(a, b)| a == b).count(), j))
            .max_by_key(|&(len, j)| (len, std::cmp::Reverse(j)));
        match best {
            Some((len, j)) if len > min => {
                out.chunks.push(Chunk { cached: j, new: ni, len });
                out.reused += len;
                ci = j + len;
                ni += len;
            }
            _ => break,
        }
    }
    out
}

/// What `Session::reuse` did.
#[derive(Clone, Debug)]
pub struct ReuseOutcome {
    pub plan: ReusePlan,
    /// Cells deleted (cached tokens the new input does not hold where they are).
    pub removed: usize,
    /// Pruned spans: runs of the cached chain deleted between or after the chunks.
    pub spans_removed: usize,
}

impl ReuseOutcome {
    pub fn kind(&self) -> HitKind {
        self.plan.kind()
    }
}

impl Session {
    /// Make the cache ready for `new`: keep what the plan reuses, delete the
    /// rest in place, and set the next position after the last kept token.
    /// Under `Shift` the gaps it made are closed (as every removal closes
    /// its own under that policy); under `Keep` and `Auto` they stay, and
    /// the caller's `prepare_positions` decides when they close. The caller
    /// then evaluates `new[outcome.plan.reused..]`.
    pub fn reuse(&mut self, new: &[u32], min_chunk: Option<usize>, policy: PositionPolicy) -> Result<ReuseOutcome> {
        let chain = self.live_chain();
        let tokens: Vec<u32> = chain.iter().map(|&(_, t)| t).collect();
        let resume_at =
            |keep: &[bool]| chain.iter().zip(keep).filter(|(_, &k)| k).map(|(&(p, _), _)| p + 1).max().unwrap_or(0);
        let mut plan = plan(&tokens, new, min_chunk);
        if !self.can_resume_at(resume_at(&plan.kept(chain.len()))) {
            // The sliding-window layers have dropped cells the new tokens
            // would see there: reuse only what lies before the first dropped
            // position (as llama.cpp's server re-processes such prompts).
            let cut = self.swa_dropped_from().map_or(0, |d| chain.partition_point(|&(p, _)| p < d));
            plan = self::plan(&tokens[..cut], new, None);
        }
        let keep = plan.kept(chain.len());
        let runs = dropped_runs(&keep);
        let mut removed = 0;
        for &(a, b) in runs.iter().rev() {
            removed += self.remove_range(chain[a].0, chain[b - 1].0 + 1, Gap::Keep)?.cells;
        }
        self.rewind(resume_at(&keep))?;
        if policy.gap() == Gap::Close && !runs.is_empty() {
            self.close_gaps()?;
        }
        Ok(ReuseOutcome { plan, removed, spans_removed: runs.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(r: std::ops::Range<u32>) -> Vec<u32> {
        r.collect()
    }

    fn cat(parts: &[&[u32]]) -> Vec<u32> {
        parts.concat()
    }

    #[test]
    fn dropped_runs_are_the_gaps_between_kept_tokens() {
        assert_eq!(dropped_runs(&[true, false, false, true, false]), vec![(1, 3), (4, 5)]);
        assert_eq!(dropped_runs(&[false, true]), vec![(0, 1)]);
        assert!(dropped_runs(&[true, true]).is_empty() && dropped_runs(&[]).is_empty());
    }

    #[test]
    fn a_pruned_span_is_skipped_and_the_rest_reused() {
        let (a, b, c, d) = (seq(0..20), seq(100..140), seq(200..230), seq(300..310));
        let p = plan(&cat(&[&a, &b, &c]), &cat(&[&a, &c, &d]), Some(8));
        assert_eq!(p.chunks, vec![Chunk { cached: 0, new: 0, len: 20 }, Chunk { cached: 60, new: 20, len: 30 }]);
        assert_eq!((p.prefix, p.reused, p.kind()), (20, 50, HitKind::Subconscious));
        // Prefix-only caching reuses A alone.
        let q = plan(&cat(&[&a, &b, &c]), &cat(&[&a, &c, &d]), None);
        assert_eq!((q.reused, q.kind()), (20, HitKind::Prefix));
    }

    #[test]
    fn several_pruned_spans_hit_and_short_chunks_do_not() {
        let (a, b1, c1, b2, c2, d) =
            (seq(0..10), seq(50..60), seq(60..75), seq(100..120), seq(120..140), seq(900..905));
        let p = plan(&cat(&[&a, &b1, &c1, &b2, &c2]), &cat(&[&a, &c1, &c2, &d]), Some(8));
        assert_eq!(p.chunks.len(), 3);
        assert_eq!(p.reused, 10 + 15 + 20);
        // A chunk of exactly the threshold (8) is not enough (template boilerplate).
        let p = plan(&cat(&[&a, &b1, &seq(60..68)]), &cat(&[&a, &seq(60..68), &d]), Some(8));
        assert_eq!((p.reused, p.kind()), (10, HitKind::Prefix));
    }

    #[test]
    fn the_last_token_is_always_left_to_evaluate() {
        let a = seq(0..30);
        let p = plan(&a, &a, Some(8));
        assert_eq!(p.reused, 29);
        let p = plan(&cat(&[&a, &seq(40..60)]), &cat(&[&seq(0..10), &seq(40..60)]), Some(8));
        assert_eq!(p.reused, 29, "10 of A, then 19 of the chunk, the last token left out");
        assert_eq!(plan(&a, &[], Some(8)).reused, 0);
        assert_eq!(plan(&[], &a, Some(8)).kind(), HitKind::Miss);
        // A cache that only shares a chunk (no prefix) is still a hit.
        let p = plan(&cat(&[&seq(500..520), &seq(0..30)]), &cat(&[&seq(0..30), &seq(40..45)]), Some(8));
        assert_eq!((p.prefix, p.reused, p.kind()), (0, 30, HitKind::Subconscious));
    }

    #[test]
    fn chunks_move_forward_only_and_prefer_the_longest() {
        // C appears twice in the cache; the longer continuation wins.
        let c = seq(200..212);
        let cached = cat(&[&seq(0..5), &c, &seq(700..701), &c, &seq(212..220)]);
        let new = cat(&[&seq(0..5), &c, &seq(212..220), &seq(900..902)]);
        let p = plan(&cached, &new, Some(8));
        assert_eq!(p.chunks[0], Chunk { cached: 0, new: 0, len: 17 }, "prefix runs through the first C");
        // Then 212..220 (8 tokens) is too short alone: the rest is prefilled.
        assert_eq!(p.reused, 17);
        let p = plan(&cached, &cat(&[&c, &seq(212..220), &seq(900..902), &[1]]), Some(8));
        assert_eq!(p.chunks, vec![Chunk { cached: 18, new: 0, len: 20 }], "the longer copy of C is taken");
    }
}

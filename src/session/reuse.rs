//! The subconscious cache: reuse what the cache holds for a new token
//! sequence even when the client pruned its history. The cache holds a chain
//! `A B C`; the new input is `A C D`: `A` (the common prefix) and `C` (a
//! chunk of the cached chain longer than a threshold that continues the new
//! input right after `A`) are kept as they are, `B` is deleted in place,
//! only `D` is prefilled. The match repeats, so `A B1 C1 B2 C2` → `A C1 C2 D`
//! hits too; cached tokens the new input no longer holds are deleted.
//!
//! Clients often *replace* a pruned span instead of deleting it (an old
//! tool result becomes `[Old tool result content cleared]`, a reminder is
//! rendered again): `A B C` → `A B' C D`. The new tokens between two
//! matched chunks are a *replaced span*: `B` is deleted, `B'` is evaluated
//! in place, at the positions right after `A` (inside the gap `B` left when
//! it fits; otherwise, where the position policy lets positions move, `C`
//! and what follows move up to make room), and `C` is still reused. `B'`
//! attends to `A` and what precedes it, never to `C`; `C`'s keys and values
//! were computed while `B` preceded it (the accepted "subconscious" trace).
//! Only `B'` and `D` are evaluated.
use super::{Gap, PositionPolicy, Session};
use crate::error::Result;
use crate::kv::Pos;
use std::cmp::Reverse;
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

/// New tokens between two matched chunks (or before the first chunk when
/// there is no common prefix) that the cache does not hold where they
/// stand: the client replaced `cached[cached..cached + cached_len]` (`B`,
/// deleted; empty for an insertion) by `new[new..new + len]` (`B'`), which
/// `Session::reuse` evaluates in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replaced {
    /// Index in the new input, and its tokens.
    pub new: usize,
    pub len: usize,
    /// Index in the cached chain of the tokens it replaces, and their count.
    pub cached: usize,
    pub cached_len: usize,
    /// Where it went (set by `Session::reuse`, 0 in a plan alone): the
    /// position of its first token (the others follow it)...
    pub pos: Pos,
    /// ...and how many positions the cells after it were moved up to make
    /// room (0 when it fit in the gap).
    pub opened: Pos,
}

/// How a new input maps onto the cached chain: the chunks and the replaced
/// spans between them, in order, cover `new[..reused]` contiguously.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReusePlan {
    pub chunks: Vec<Chunk>,
    /// New tokens between chunks, evaluated in place by `Session::reuse`.
    pub replaced: Vec<Replaced>,
    /// Length of the common prefix (the first chunk, when it starts at 0 in both).
    pub prefix: usize,
    /// Tokens of the new input the cache holds once the plan is carried
    /// out: the chunks' (kept as they are) and the replaced spans' (evaluated
    /// in place). The caller evaluates `new[reused..]` after it.
    pub reused: usize,
}

/// What kind of hit a request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HitKind {
    /// Nothing reused.
    Miss,
    /// Only a common prefix reused.
    Prefix,
    /// Chunks after a pruned (deleted or replaced) span reused too.
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

/// How the matcher works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReuseOptions {
    /// Chunks after the common prefix must be longer than this many tokens
    /// (so that chat-template boilerplate alone never matches); `None`
    /// plans a plain prefix match.
    pub min_chunk: Option<usize>,
    /// Look past new tokens for the next chunk and evaluate them in place
    /// (replaced spans). Off, the match ends at the first new token after
    /// a chunk (deleted spans only: the matcher before replaced spans, and the one
    /// hybrid models use, whose recurrent state takes tokens in order).
    pub replace: bool,
}

impl ReuseOptions {
    /// Chunks longer than `min_chunk` tokens, replaced spans evaluated in place.
    pub fn new(min_chunk: Option<usize>) -> ReuseOptions {
        ReuseOptions { min_chunk, replace: true }
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
            (_, 1) if self.prefix > 0 && self.replaced.is_empty() => HitKind::Prefix,
            _ => HitKind::Subconscious,
        }
    }

    /// Tokens the replaced spans evaluate in place.
    pub fn evaluated(&self) -> usize {
        self.replaced.iter().map(|r| r.len).sum()
    }

    /// Tokens of the new input whose keys and values come from the cache
    /// as they are (the chunks').
    pub fn cached(&self) -> usize {
        self.reused - self.evaluated()
    }

    /// Tokens evaluated to serve a new input of `n` tokens: the replaced
    /// spans in place, then `new[reused..]`.
    pub fn prefilled(&self, n: usize) -> usize {
        n - self.reused + self.evaluated()
    }

    /// Stop the plan before replaced span `i`: it and everything after it
    /// are left to the caller (evaluated after the last kept token).
    pub fn stop_before(&mut self, i: usize) {
        let at = self.replaced[i].new;
        self.replaced.truncate(i);
        self.chunks.retain(|c| c.new < at);
        self.reused = at;
    }
}

/// Candidates examined per k-gram while looking past new tokens for the
/// next chunk (the nearest in the cached chain first), so that a very
/// repetitive input stays linear.
const SCAN_CANDIDATES: usize = 64;

/// Plan the reuse of `cached` (the chain the cache holds, in position order)
/// for `new`, chunks longer than `min_chunk` tokens and replaced spans
/// between them (see `plan_with`).
pub fn plan(cached: &[u32], new: &[u32], min_chunk: Option<usize>) -> ReusePlan {
    plan_with(cached, new, &ReuseOptions::new(min_chunk))
}

/// Plan the reuse of `cached` for `new`: the better of two matchers (see
/// `plans`), the one that keeps more cached tokens as they are.
pub fn plan_with(cached: &[u32], new: &[u32], opts: &ReuseOptions) -> ReusePlan {
    best(plans(cached, new, opts))
}

/// Of several plans for the same input, the one that keeps the most cached
/// tokens (the fewest evaluated); on a tie the fewer replaced spans, then
/// the later in the list.
fn best(plans: Vec<ReusePlan>) -> ReusePlan {
    plans.into_iter().max_by_key(|p| (p.cached(), Reverse(p.replaced.len()))).unwrap_or_default()
}

/// Most anchors the heaviest-chain matcher weighs (it is quadratic in
/// them); past this the greedy plan stands alone.
const MAX_ANCHORS: usize = 2048;

/// Plans for reusing `cached` for `new`, all after the common prefix (at
/// most `new.len() - 1` tokens are reused, so that the last one is
/// evaluated and gives logits):
///
/// - the greedy walk: chunks longer than `min_chunk` tokens, each the
///   longest that continues the new input, later in the chain than the
///   previous one; when none continues it and `replace` is on, the next new
///   position where one starts is looked for, and the new tokens before it
///   form a replaced span (the cached tokens they skip are deleted);
/// - with `replace` on, the heaviest chain: of all the runs the two share,
///   the in-order set that covers the most tokens. The greedy walk takes a
///   short chunk that skips a long one; a client that moves a block later
///   (aider re-sends its ~800-token reminder after the conversation every
///   turn, where the cache holds it before the last reply) loses the block
///   to it, the heaviest chain keeps the block and evaluates the reply and
///   the new turn in place before it.
pub fn plans(cached: &[u32], new: &[u32], opts: &ReuseOptions) -> Vec<ReusePlan> {
    let limit = new.len().saturating_sub(1);
    let prefix = cached.iter().zip(new).take_while(|(a, b)| a == b).count().min(limit);
    let start = ReusePlan { chunks: Vec::new(), replaced: Vec::new(), prefix, reused: prefix };
    let Some(min) = opts.min_chunk else { return vec![with_chunks(start, &[])] };
    let k = min.max(1);
    if cached.len() < k {
        return vec![with_chunks(start, &[])];
    }
    // Where each k-gram of the cached chain starts (candidates for a chunk), in order.
    let mut grams: HashMap<&[u32], Vec<usize>> = HashMap::new();
    for j in 0..=cached.len() - k {
        grams.entry(&cached[j..j + k]).or_default().push(j);
    }
    let run = |j: usize, ni: usize| cached[j..].iter().zip(&new[ni..limit]).take_while(|(a, b)| a == b).count();
    // The longest chunk longer than `min` at `new[ni..]`, from `cached[ci..]` on.
    let chunk_at = |ni: usize, ci: usize, cap: usize| -> Option<(usize, usize)> {
        let starts = grams.get(&new[ni..ni + k])?;
        let from = starts.partition_point(|&j| j < ci);
        starts[from..]
            .iter()
            .take(cap)
            .map(|&j| (run(j, ni), j))
            .max_by_key(|&(len, j)| (len, Reverse(j)))
            .filter(|&(len, _)| len > min)
    };
    let mut greedy = Vec::new();
    let (mut ci, mut ni) = (prefix, prefix);
    while ni + k <= limit && ci + k <= cached.len() {
        // A chunk right here (what was skipped in the cache is deleted), or
        // past new tokens (a replaced span).
        let found = match chunk_at(ni, ci, usize::MAX) {
            Some((len, j)) => Some((ni, len, j)),
            None if opts.replace => {
                (ni + 1..=limit - k).find_map(|n2| chunk_at(n2, ci, SCAN_CANDIDATES).map(|(len, j)| (n2, len, j)))
            }
            None => None,
        };
        let Some((at, len, j)) = found else { break };
        greedy.push(Chunk { cached: j, new: at, len });
        ci = j + len;
        ni = at + len;
    }
    let mut out = vec![with_chunks(start.clone(), &greedy)];
    if !opts.replace || limit < prefix + k {
        return out;
    }
    // Anchors: the maximal shared runs longer than `min` that start after
    // the prefix (a run whose previous tokens also agree is inside another).
    let mut anchors = Vec::new();
    for ni in prefix..=limit - k {
        let Some(starts) = grams.get(&new[ni..ni + k]) else { continue };
        let from = starts.partition_point(|&j| j < prefix);
        for &j in starts[from..].iter().take(SCAN_CANDIDATES) {
            if ni > prefix && j > prefix && new[ni - 1] == cached[j - 1] {
                continue;
            }
            let len = run(j, ni);
            if len > min {
                anchors.push(Chunk { cached: j, new: ni, len });
            }
        }
        if anchors.len() > MAX_ANCHORS {
            return out;
        }
    }
    out.insert(0, with_chunks(start, &heaviest_chain(&anchors, min)));
    out
}

/// The in-order chain of `anchors` (sorted by their new index) covering the
/// most tokens: each after the previous one in both sequences, an anchor
/// that overlaps its predecessor cut at its start (and kept only if still
/// longer than `min`).
fn heaviest_chain(anchors: &[Chunk], min: usize) -> Vec<Chunk> {
    // For each anchor: the best total ending with it, its predecessor, and
    // how much of its start that predecessor cuts.
    let mut best: Vec<(usize, Option<usize>, usize)> = Vec::with_capacity(anchors.len());
    for (bi, b) in anchors.iter().enumerate() {
        let mut top = (b.len, None, 0);
        for (ai, a) in anchors[..bi].iter().enumerate() {
            if a.new >= b.new || a.cached >= b.cached {
                continue;
            }
            let cut = (a.new + a.len).saturating_sub(b.new).max((a.cached + a.len).saturating_sub(b.cached));
            if b.len <= cut + min {
                continue;
            }
            let total = best[ai].0 + b.len - cut;
            if total > top.0 {
                top = (total, Some(ai), cut);
            }
        }
        best.push(top);
    }
    let Some(mut i) = (0..best.len()).max_by_key(|&i| (best[i].0, Reverse(i))) else { return Vec::new() };
    let mut chain = Vec::new();
    loop {
        let (_, prev, cut) = best[i];
        let a = anchors[i];
        chain.push(Chunk { cached: a.cached + cut, new: a.new + cut, len: a.len - cut });
        match prev {
            Some(p) => i = p,
            None => break,
        }
    }
    chain.reverse();
    chain
}

/// `start` (the prefix) followed by `chunks` (in order in both sequences):
/// the new tokens between two chunks are replaced spans (the cached tokens
/// between them deleted).
fn with_chunks(mut plan: ReusePlan, chunks: &[Chunk]) -> ReusePlan {
    let (mut ci, mut ni) = (plan.prefix, plan.prefix);
    if plan.prefix > 0 {
        plan.chunks.push(Chunk { cached: 0, new: 0, len: plan.prefix });
    }
    for &c in chunks {
        if c.new > ni {
            plan.replaced.push(Replaced {
                new: ni,
                len: c.new - ni,
                cached: ci,
                cached_len: c.cached - ci,
                pos: 0,
                opened: 0,
            });
        }
        plan.chunks.push(c);
        plan.reused = c.new + c.len;
        ci = c.cached + c.len;
        ni = c.new + c.len;
    }
    plan
}

/// Give each replaced span of `plan` its positions, for a cache whose chain
/// has the positions `pos` (in order): right after the previous chunk's last
/// token, in the gap its deleted tokens leave. When the gap is too small the
/// policy decides: under `Keep` positions never move, so the plan stops
/// before the span (it and everything after it are evaluated after the last
/// kept token, as without replaced spans); under `Shift` and `Auto` the
/// cells after the gap move up by what is missing. `free`: cells free once
/// the plan's deletions are done; a span they cannot hold stops the plan too.
pub fn place_replaced(plan: &mut ReusePlan, pos: &[Pos], policy: PositionPolicy, mut free: usize) {
    let mut offset: Pos = 0;
    for i in 0..plan.replaced.len() {
        let r = plan.replaced[i];
        let before = if r.cached == 0 { -1 } else { pos[r.cached - 1] + offset };
        let after = pos[r.cached + r.cached_len] + offset;
        let need = (r.len as i64 - (after - before - 1) as i64).max(0);
        if (need > 0 && policy == PositionPolicy::Keep) || need > Pos::MAX as i64 || r.len > free {
            plan.stop_before(i);
            return;
        }
        free -= r.len;
        plan.replaced[i].pos = before + 1;
        plan.replaced[i].opened = need as Pos;
        offset += need as Pos;
    }
}

/// What `Session::reuse` did.
#[derive(Clone, Debug)]
pub struct ReuseOutcome {
    pub plan: ReusePlan,
    /// Cells deleted (cached tokens the new input does not hold where they are).
    pub removed: usize,
    /// Pruned spans: runs of the cached chain deleted between or after the
    /// chunks, those replaced by new tokens left out.
    pub spans_removed: usize,
    /// Kept tokens evaluated again by a boundary refresh.
    pub refreshed: usize,
}

impl ReuseOutcome {
    pub fn kind(&self) -> HitKind {
        self.plan.kind()
    }

    /// Spans of new tokens evaluated in place between reused chunks.
    pub fn spans_replaced(&self) -> usize {
        self.plan.replaced.len()
    }

    /// Tokens evaluated in place (the replaced spans').
    pub fn evaluated(&self) -> usize {
        self.plan.evaluated()
    }
}

impl Session {
    /// Make the cache ready for `new`: keep the chunks the plan reuses,
    /// delete the rest in place, evaluate the replaced spans in place, and
    /// set the next position after the last kept token. Under `Shift` the
    /// gaps it made are closed (as every removal closes its own under that
    /// policy); under `Keep` and `Auto` they stay, and the caller's
    /// `prepare_positions` decides when they close. The caller then
    /// evaluates `new[outcome.plan.reused..]`.
    pub fn reuse(&mut self, new: &[u32], min_chunk: Option<usize>, policy: PositionPolicy) -> Result<ReuseOutcome> {
        self.reuse_with(new, &ReuseOptions::new(min_chunk), policy)
    }

    /// `reuse` with the matcher's options (`replace: false` is the matcher
    /// before replaced spans).
    pub fn reuse_with(&mut self, new: &[u32], opts: &ReuseOptions, policy: PositionPolicy) -> Result<ReuseOutcome> {
        self.reuse_inner(new, opts, policy, 0, None)
    }

    /// `reuse_with`, then a boundary refresh of the first `k` kept tokens
    /// after each span the reuse deleted (`Session::refresh`; not on hybrid
    /// models, nor when the reuse moved cells to make room, where the gaps'
    /// positions moved).
    pub fn reuse_refreshing(
        &mut self,
        new: &[u32],
        opts: &ReuseOptions,
        policy: PositionPolicy,
        k: usize,
    ) -> Result<ReuseOutcome> {
        self.reuse_inner(new, opts, policy, k, None)
    }

    /// `reuse_with`, also returning the logits of every token of each
    /// replaced span (rows of n_vocab, one vector per span).
    pub fn reuse_with_logits(
        &mut self,
        new: &[u32],
        opts: &ReuseOptions,
        policy: PositionPolicy,
    ) -> Result<(ReuseOutcome, Vec<Vec<f32>>)> {
        let mut logits = Vec::new();
        let out = self.reuse_inner(new, opts, policy, 0, Some(&mut logits))?;
        Ok((out, logits))
    }

    fn reuse_inner(
        &mut self,
        new: &[u32],
        opts: &ReuseOptions,
        policy: PositionPolicy,
        refresh: usize,
        mut logits: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<ReuseOutcome> {
        let chain = self.live_chain();
        let tokens: Vec<u32> = chain.iter().map(|&(_, t)| t).collect();
        let pos: Vec<Pos> = chain.iter().map(|&(p, _)| p).collect();
        let resume_at =
            |keep: &[bool]| pos.iter().zip(keep).filter(|(_, &k)| k).map(|(&p, _)| p + 1).max().unwrap_or(0);
        // A recurrent state takes tokens in order: a span replaced in place
        // would come before cached tokens it has absorbed. Hybrid models
        // match chunks with deletions only; what follows the last chunk is
        // prefilled after it (the state rewinds there first if the cached
        // tail goes).
        let hybrid_opts = ReuseOptions { replace: false, ..*opts };
        let opts = if self.is_hybrid() { &hybrid_opts } else { opts };
        // Each matcher's plan as the position policy and the free cells let
        // it be carried out; the best of them.
        let placed = plans(&tokens, new, opts).into_iter().map(|mut plan| {
            let free = self.n_free() + plan.kept(chain.len()).iter().filter(|&&k| !k).count();
            place_replaced(&mut plan, &pos, policy, free);
            plan
        });
        let mut plan = best(placed.collect());
        // Where the plan goes on from cached tokens: the first position of
        // each replaced span, then after the last kept token. The
        // sliding-window layers must hold what a query there sees (checked
        // before anything moves, so a gap not yet made only adds caution).
        let mut resumes: Vec<Pos> =
            plan.replaced.iter().map(|r| if r.cached == 0 { 0 } else { pos[r.cached - 1] + 1 }).collect();
        resumes.push(resume_at(&plan.kept(chain.len())));
        match resumes.iter().position(|&q| !self.can_resume_at(q)) {
            None => {}
            // Stop before the span whose start could be resumed from.
            Some(i) if i > 0 => plan.stop_before(i - 1),
            Some(_) => {
                // The sliding-window layers have dropped cells the new tokens
                // would see there: reuse only what lies before the first dropped
                // position (as llama.cpp's server re-processes such prompts).
                let cut = self.swa_dropped_from().map_or(0, |d| chain.partition_point(|&(p, _)| p < d));
                plan = self::plan_with(&tokens[..cut], new, &ReuseOptions { min_chunk: None, replace: false });
            }
        }
        let keep = plan.kept(chain.len());
        let runs = dropped_runs(&keep);
        let mut removed = 0;
        for &(a, b) in runs.iter().rev() {
            removed += self.remove_range(pos[a], pos[b - 1] + 1, Gap::Keep)?.cells;
        }
        // The replaced spans, in position order: each sees what precedes it.
        let mut offset: Pos = 0;
        let mut stop = None;
        for (i, r) in plan.replaced.iter().enumerate() {
            if r.opened > 0 {
                self.open_gap(pos[r.cached + r.cached_len] + offset, r.opened)?;
                offset += r.opened;
            }
            if !self.can_place(r.pos, r.len) {
                // The sliding-window pool cannot hold it there (what follows
                // it is still in its window): stop before it.
                stop = Some(i);
                break;
            }
            let positions: Vec<Pos> = (r.pos..r.pos + r.len as Pos).collect();
            let out = self.eval_at(&new[r.new..r.new + r.len], &positions, logits.is_some())?;
            if let Some(l) = logits.as_deref_mut() {
                l.push(out);
            }
        }
        if let Some(i) = stop {
            removed += self.remove_range(plan.replaced[i].pos, Pos::MAX, Gap::Keep)?.cells;
            plan.stop_before(i);
        }
        let mut refreshed = 0;
        if refresh > 0 && !self.is_hybrid() && plan.replaced.iter().all(|r| r.opened == 0) {
            let keep = plan.kept(chain.len());
            let starts: Vec<Pos> = dropped_runs(&keep)
                .into_iter()
                .filter(|&(_, b)| b < chain.len() && keep[b])
                .map(|(_, b)| pos[b])
                .collect();
            if !starts.is_empty() {
                refreshed = self.refresh(&starts, refresh)?.positions.len();
            }
        }
        let last = self.shared.pool().kv.max_pos(self.seq);
        self.rewind(last.map_or(0, |p| p + 1))?;
        if policy.gap() == Gap::Close && !runs.is_empty() {
            self.close_gaps()?;
        }
        let replaced_runs = plan.replaced.iter().filter(|r| r.cached_len > 0).count();
        let spans_removed = dropped_runs(&plan.kept(chain.len())).len() - replaced_runs;
        Ok(ReuseOutcome { plan, removed, spans_removed, refreshed })
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

    #[test]
    fn a_replaced_span_is_evaluated_and_the_chunk_after_it_reused() {
        let (a, b, b2, c, d) = (seq(0..20), seq(100..140), seq(500..505), seq(200..230), seq(300..310));
        let (cached, new) = (cat(&[&a, &b, &c]), cat(&[&a, &b2, &c, &d]));
        let p = plan(&cached, &new, Some(8));
        assert_eq!(p.chunks, vec![Chunk { cached: 0, new: 0, len: 20 }, Chunk { cached: 60, new: 25, len: 30 }]);
        assert_eq!(p.replaced, vec![Replaced { new: 20, len: 5, cached: 20, cached_len: 40, pos: 0, opened: 0 }]);
        assert_eq!((p.reused, p.evaluated(), p.cached(), p.kind()), (55, 5, 50, HitKind::Subconscious));
        assert_eq!(p.prefilled(new.len()), b2.len() + d.len(), "B' and D, not C");
        assert_eq!(p.kept(cached.len()).iter().filter(|&&k| !k).count(), b.len(), "B is deleted");
        // The matcher before replaced spans stops at B'.
        let old = plan_with(&cached, &new, &ReuseOptions { min_chunk: Some(8), replace: false });
        assert_eq!((old.reused, old.kind(), old.prefilled(new.len())), (20, HitKind::Prefix, 5 + 30 + 10));
        assert!(old.replaced.is_empty());
    }

    #[test]
    fn several_edits_insertions_and_a_changed_start_are_replaced_spans() {
        let (a, b1, c1, b2, c2, d) =
            (seq(0..10), seq(50..60), seq(60..75), seq(100..120), seq(120..140), seq(900..905));
        let cached = cat(&[&a, &b1, &c1, &b2, &c2]);
        let new = cat(&[&a, &seq(700..703), &c1, &seq(710..740), &c2, &d]);
        let p = plan(&cached, &new, Some(8));
        assert_eq!(p.replaced.len(), 2);
        assert_eq!((p.replaced[0].len, p.replaced[0].cached_len), (3, 10));
        assert_eq!(
            (p.replaced[1].new, p.replaced[1].len, p.replaced[1].cached, p.replaced[1].cached_len),
            (28, 30, 35, 20)
        );
        assert_eq!(p.prefilled(new.len()), 3 + 30 + 5);
        // An insertion: nothing cached is deleted.
        let p = plan(&cat(&[&a, &c1]), &cat(&[&a, &seq(700..704), &c1, &d]), Some(8));
        assert_eq!(p.replaced, vec![Replaced { new: 10, len: 4, cached: 10, cached_len: 0, pos: 0, opened: 0 }]);
        assert_eq!(p.reused, 10 + 4 + 15);
        // A changed system prompt: no prefix, the start is a replaced span.
        let p = plan(&cat(&[&seq(800..812), &c2]), &cat(&[&seq(600..609), &c2, &d]), Some(8));
        assert_eq!((p.prefix, p.replaced[0].cached, p.replaced[0].cached_len, p.replaced[0].len), (0, 0, 12, 9));
        assert_eq!((p.reused, p.kind()), (29, HitKind::Subconscious));
        // New tokens followed by no chunk are the tail, not a replaced span;
        // a chunk of exactly the threshold after new tokens does not count.
        let p = plan(&cat(&[&a, &b1, &c1]), &cat(&[&a, &seq(700..720), &seq(60..68), &d]), Some(8));
        assert_eq!((p.reused, p.replaced.len()), (10, 0));
    }

    #[test]
    fn a_block_moved_later_is_kept_where_the_greedy_walk_loses_it() {
        // aider: the cache holds S F Q R A (R its long reminder, A the
        // reply); the next request is S Q A U F Q2 R D.
        let (s, f, q, r, a) = (seq(0..20), seq(100..130), seq(200..215), seq(300..700), seq(800..830));
        let (u, q2, d) = (seq(900..940), seq(1000..1010), seq(1100..1105));
        let cached = cat(&[&s, &f, &q, &r, &a]);
        let new = cat(&[&s, &q, &a, &u, &f, &q2, &r, &d]);
        let opts = ReuseOptions::new(Some(8));
        let [heavy, greedy] = <[ReusePlan; 2]>::try_from(plans(&cached, &new, &opts)).unwrap();
        // Greedy: S, then Q, then A (deleting R): everything after A is prefilled.
        assert_eq!(greedy.prefilled(new.len()), new.len() - 65);
        // Heaviest chain: S, F and R kept; Q A U and then Q2 evaluated in place.
        let kept: Vec<(usize, usize, usize)> = heavy.chunks.iter().map(|c| (c.cached, c.new, c.len)).collect();
        assert_eq!(kept, vec![(0, 0, 20), (20, 105, 30), (65, 145, 400)]);
        let spans: Vec<(usize, usize, usize, usize)> =
            heavy.replaced.iter().map(|r| (r.new, r.len, r.cached, r.cached_len)).collect();
        assert_eq!(spans, vec![(20, 85, 20, 0), (135, 10, 50, 15)]);
        assert_eq!(heavy.prefilled(new.len()), 85 + 10 + 5);
        assert_eq!(plan(&cached, &new, Some(8)), heavy, "the better plan is the plan");
        // Q2 needs 10 positions where Q (15) was deleted: it fits; Q A U need
        // 85 where nothing was: Shift opens them, Keep stops before them.
        let pos: Vec<Pos> = (0..cached.len() as Pos).collect();
        let mut p = heavy.clone();
        place_replaced(&mut p, &pos, PositionPolicy::Shift, 1000);
        assert_eq!(p.replaced.iter().map(|r| (r.pos, r.opened)).collect::<Vec<_>>(), vec![(20, 85), (135, 0)]);
        // Under Keep the greedy plan, carried out whole, is the better one.
        let mut both = plans(&cached, &new, &opts);
        both.iter_mut().for_each(|p| place_replaced(p, &pos, PositionPolicy::Keep, 1000));
        assert_eq!(best(both), greedy);
    }

    #[test]
    fn replaced_spans_fit_in_the_gap_or_move_what_follows_under_shift_only() {
        let (a, b, c, d) = (seq(0..20), seq(100..140), seq(200..230), seq(300..310));
        let cached = cat(&[&a, &b, &c]);
        let pos: Vec<Pos> = (0..cached.len() as Pos).collect();
        // Shorter than B: right after A, the rest of the gap stays.
        let mut p = plan(&cached, &cat(&[&a, &seq(500..505), &c, &d]), Some(8));
        place_replaced(&mut p, &pos, PositionPolicy::Keep, 1000);
        assert_eq!((p.replaced[0].pos, p.replaced[0].opened), (20, 0));
        // Longer than B (45 > 40): Keep stops before it, Shift and Auto open 5 positions.
        let long = cat(&[&a, &seq(500..545), &c, &d]);
        for (policy, opened) in [(PositionPolicy::Shift, 5), (PositionPolicy::Auto, 5)] {
            let mut p = plan(&cached, &long, Some(8));
            place_replaced(&mut p, &pos, policy, 1000);
            assert_eq!((p.replaced[0].pos, p.replaced[0].opened, p.reused), (20, opened, 95));
        }
        let mut p = plan(&cached, &long, Some(8));
        place_replaced(&mut p, &pos, PositionPolicy::Keep, 1000);
        assert_eq!((p.replaced.len(), p.chunks.len(), p.reused, p.kind()), (0, 1, 20, HitKind::Prefix));
        // Too few free cells stops the plan the same way.
        let mut p = plan(&cached, &long, Some(8));
        place_replaced(&mut p, &pos, PositionPolicy::Shift, 44);
        assert_eq!(p.reused, 20);
        // Two spans: the second goes after the first one's opening.
        let cached = cat(&[&a, &b, &c, &seq(400..410), &d]);
        let pos: Vec<Pos> = (0..cached.len() as Pos).collect();
        let new = cat(&[&a, &seq(500..550), &c, &seq(600..620), &d, &[1]]);
        let mut p = plan(&cached, &new, Some(8));
        place_replaced(&mut p, &pos, PositionPolicy::Shift, 1000);
        let got: Vec<(Pos, Pos)> = p.replaced.iter().map(|r| (r.pos, r.opened)).collect();
        assert_eq!(got, vec![(20, 10), (100, 10)], "C moved up 10; the second gap (10) needs 10 more");
    }
}

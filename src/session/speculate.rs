//! Draft-free speculative decoding: the context itself proposes what comes
//! next. When the last few tokens occurred before (a file being re-emitted
//! with one change, an answer quoting its input, a tool call repeating its
//! arguments), the tokens that followed them then are proposed as a draft;
//! the generation loop evaluates the sampled token and the draft in one batch
//! and keeps the longest prefix the model agrees with (prompt-lookup decoding,
//! llama.cpp's `--spec-type ngram-*`).
//!
//! The draft only decides what is evaluated, never what is generated: every
//! token is still sampled from its own row of logits, in order, through the
//! same sampler, so greedy output is the plain output and sampled output is
//! drawn from the same distribution (with the same random stream).
use std::collections::HashMap;

/// When to speculate (`--spec`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpecMode {
    /// Never: one token per evaluation (the default: greedy output then
    /// matches llama.cpp's plain decoding token for token, where a draft's
    /// batch rows can round differently at a near-tie; `auto` pays on
    /// copying work, docs/BENCHMARKS.md, "Speculative decoding").
    #[default]
    Off,
    /// Whenever the context offers a draft.
    On,
    /// Whenever the context offers a draft, unless drafting does not pay:
    /// when, after a window of drafts, even the best draft length is expected
    /// to yield fewer tokens per unit of time than plain steps (from the
    /// measured acceptance and cost of a draft token), or, before any plain
    /// step was timed, the window kept fewer than half its tokens. Drafting then pauses, longer
    /// each time, and resumes by itself.
    Auto,
}

impl SpecMode {
    pub fn from_name(s: &str) -> Option<SpecMode> {
        match s {
            "off" | "0" | "none" => Some(SpecMode::Off),
            "on" | "1" | "ngram" => Some(SpecMode::On),
            "auto" => Some(SpecMode::Auto),
            _ => None,
        }
    }
}

/// Speculation settings of one generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecParams {
    pub mode: SpecMode,
    /// Longest draft (`--draft-max`).
    pub draft_max: usize,
    /// Tokens that must match before a draft is proposed (`--spec-ngram-size-n`).
    pub ngram: usize,
}

impl Default for SpecParams {
    fn default() -> Self {
        SpecParams { mode: SpecMode::Off, draft_max: 64, ngram: 3 }
    }
}

/// What speculation did during one generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecStats {
    /// Batches that carried a draft.
    pub drafts: usize,
    /// Draft tokens evaluated.
    pub drafted: usize,
    /// Draft tokens the model agreed with (kept).
    pub accepted: usize,
}

/// Longest earlier match looked at when choosing between occurrences.
const MATCH_LOOKBACK: usize = 64;
/// Occurrences of each n-gram remembered (the most recent ones).
const OCCURRENCES: usize = 64;
/// After a draft, an occurrence this close after where its copy stopped is
/// taken first: the text being copied goes on there (a file re-emitted with
/// an edit resumes right after the edited span).
const CURSOR_WINDOW: usize = 64;
/// Under `auto`, the window of recent drafts whose speed decides.
const AUTO_WINDOW: usize = 4;
/// Under `auto`, before a plain step has been timed: drafting pauses when
/// fewer than this share of the window's drafted tokens were kept (on the
/// CPU a batch of 8 costs about 4 single steps, so a draft must mostly hold)...
const AUTO_MIN_RATE: f64 = 0.5;
/// Weight of the newest plain step in the running mean of their time.
const STEP_EMA: f64 = 0.2;
/// ... for this many generated tokens at first, doubling each time.
const AUTO_PAUSE: usize = 16;
/// What a draft token adds to a batch's time, in plain steps, until drafts
/// were timed (between a repacked Q4_K model's 0.15 and SmolLM2's 0.5 here).
const BETA_PRIOR: f64 = 0.3;
/// Weight the counts of accepted tokens and failed drafts keep per draft.
const ACCEPT_DECAY: f64 = 0.7;

/// Proposes drafts from the token history and learns from their fate.
#[derive(Debug)]
pub struct Drafter {
    params: SpecParams,
    /// Every token of the context so far, in order.
    history: Vec<u32>,
    /// Where the n-grams of the history ended (exclusive), by a hash of
    /// their tokens (the last few occurrences of each).
    index: HashMap<u64, Vec<usize>>,
    /// Draft length to try next: the one that yields most tokens per unit
    /// of time, given how often drafts hold and what a draft token costs.
    len: usize,
    /// Draft tokens accepted and drafts that ended in a rejection (decayed
    /// counts): a draft token holds with probability about
    /// accepted / (accepted + failures).
    accepted_w: f64,
    failed_w: f64,
    /// What a batch costs beyond a plain step, in plain steps, for its
    /// number of draft tokens (fitted to timed drafts).
    cost: CostFit,
    /// Where the last draft was copied from, and where its copy stopped
    /// (the first token not kept, or the end of the draft).
    source: Option<usize>,
    cursor: Option<usize>,
    /// Recent drafts: (drafted, accepted).
    recent: Vec<(usize, usize)>,
    /// Running mean of a plain step's time (seconds), once one was timed.
    step_secs: Option<f64>,
    /// Generated tokens to wait before the next draft (`auto`), and the next pause.
    paused: usize,
    pause: usize,
    pub stats: SpecStats,
}

impl Drafter {
    /// A drafter over `history` (the cached context and the prompt).
    pub fn new(params: SpecParams, history: Vec<u32>) -> Drafter {
        let mut d = Drafter {
            params,
            history: Vec::with_capacity(history.len() + 256),
            index: HashMap::new(),
            len: params.draft_max.clamp(1, 8),
            accepted_w: 0.0,
            failed_w: 0.0,
            cost: CostFit::default(),
            source: None,
            cursor: None,
            recent: Vec::new(),
            step_secs: None,
            paused: 0,
            pause: AUTO_PAUSE,
            stats: SpecStats::default(),
        };
        for t in history {
            d.push(t);
        }
        d
    }

    fn ngram(&self) -> usize {
        self.params.ngram.max(1)
    }

    /// One more token of the context (sampled, or part of the history).
    pub fn push(&mut self, t: u32) {
        self.history.push(t);
        let n = self.ngram();
        let end = self.history.len();
        if end >= n {
            let v = self.index.entry(key(&self.history[end - n..])).or_default();
            v.push(end);
            if v.len() > OCCURRENCES {
                v.remove(0);
            }
        }
        self.paused = self.paused.saturating_sub(1);
    }

    /// A draft to follow the history (whose last token is the one about to
    /// be evaluated), at most `room` tokens; empty when there is none.
    pub fn propose(&mut self, room: usize) -> Vec<u32> {
        let n = self.ngram();
        let h = &self.history;
        let want = self.len.min(room).min(self.params.draft_max);
        if self.params.mode == SpecMode::Off || want == 0 || h.len() < n || self.paused > 0 {
            return Vec::new();
        }
        let end = h.len();
        let Some(ends) = self.index.get(&key(&h[end - n..])) else { return Vec::new() };
        // Earlier occurrences (not the current one) and how far back each
        // matches the history.
        let cands: Vec<(usize, usize)> = ends
            .iter()
            .rev()
            .filter(|&&e| e < end && h[e - n..e] == h[end - n..])
            .map(|&e| (e, (n..MATCH_LOOKBACK.min(e)).take_while(|&k| h[e - 1 - k] == h[end - 1 - k]).count() + n))
            .collect();
        // The source: where the last draft's copy stopped, when the history
        // goes on right there; else the nearest occurrence after it; else
        // the longest match backwards, then the most recent.
        let exact = self.cursor.filter(|&c| cands.iter().any(|&(e, _)| e == c));
        let near =
            self.cursor.and_then(|c| cands.iter().map(|&(e, _)| e).filter(|&e| e >= c && e - c <= CURSOR_WINDOW).min());
        let longest = cands.iter().fold(None, |b: Option<(usize, usize)>, &(e, m)| match b {
            Some((_, bm)) if bm >= m => b,
            _ => Some((e, m)),
        });
        let Some(src) = exact.or(near).or(longest.map(|b| b.0)) else { return Vec::new() };
        self.source = Some(src);
        // What followed the source, continued past the end of the history by
        // the draft itself (text repeating with a period shorter than the
        // draft is drafted whole). Unless the copy goes on where it stopped,
        // the draft ends where the occurrences still agreeing with it
        // disagree: the source's next token must have at least half their
        // weight (their match length), so the varying part of repeated lines
        // is left to the model instead of guessed.
        let next = |e: usize, draft: &[u32]| {
            if e + draft.len() < end {
                h[e + draft.len()]
            } else {
                draft[e + draft.len() - end]
            }
        };
        let mut alive: Vec<(usize, usize)> = if exact.is_some() { Vec::new() } else { cands };
        let mut draft: Vec<u32> = Vec::with_capacity(want);
        while draft.len() < want {
            let t = next(src, &draft);
            if alive.len() > 1 {
                let total: usize = alive.iter().map(|&(_, m)| m).sum();
                let agree: usize = alive.iter().filter(|&&(e, _)| next(e, &draft) == t).map(|&(_, m)| m).sum();
                if agree * 2 < total {
                    break;
                }
                alive.retain(|&(e, _)| next(e, &draft) == t);
            }
            draft.push(t);
        }
        draft
    }

    /// The draft length that yields most tokens per plain step's time: with
    /// a draft token holding with probability r (each only if those before
    /// it held), a draft of k yields 1 + r + ... + r^k tokens for a batch
    /// costing 1 + alpha + beta k plain steps (a batch's fixed extra cost
    /// and each draft token's, as fitted).
    fn best_len(&self) -> usize {
        self.best().0
    }

    /// The best draft length and its expected tokens per plain step's time
    /// (below 1.0: slower than plain decoding).
    fn best(&self) -> (usize, f64) {
        // A weak prior: one held token against a quarter of a failure.
        let r = (self.accepted_w + 1.0) / (self.accepted_w + self.failed_w + 1.25);
        let (mut best, mut best_rate) = (1, 0.0);
        let (mut yield_k, mut p) = (1.0, 1.0);
        for k in 1..=self.params.draft_max.max(1) {
            p *= r;
            yield_k += p;
            let rate = yield_k / (1.0 + self.cost.extra(k));
            if rate > best_rate {
                (best, best_rate) = (k, rate);
            }
        }
        (best, best_rate)
    }

    /// A plain step (one token, no draft) took `secs`.
    pub fn plain_step(&mut self, secs: f64) {
        self.step_secs = Some(self.step_secs.map_or(secs, |m| m + STEP_EMA * (secs - m)));
    }

    /// The fate of a draft of `drafted` tokens: `accepted` were kept, and
    /// its batch (with the token before it) took `secs`.
    pub fn record(&mut self, drafted: usize, accepted: usize, secs: f64) {
        if drafted == 0 {
            return;
        }
        self.stats.drafts += 1;
        self.stats.drafted += drafted;
        self.stats.accepted += accepted;
        tracing::trace!(target: "decache::spec", at = self.history.len(), drafted, accepted, source = ?self.source, len = self.len, "draft");
        self.cursor = self.source.take().map(|e| e + accepted);
        self.accepted_w = self.accepted_w * ACCEPT_DECAY + accepted as f64;
        self.failed_w = self.failed_w * ACCEPT_DECAY + f64::from(u8::from(accepted < drafted));
        // Under `auto` the cost is measured; `on` keeps the prior (its
        // lengths then follow acceptance alone, the same from run to run).
        if let Some(step) = self.step_secs.filter(|_| self.params.mode == SpecMode::Auto) {
            // The batch held the token before the draft, as a plain step does.
            self.cost.add(drafted, secs / step.max(1e-9) - 1.0);
        }
        self.len = self.best_len();
        if self.params.mode != SpecMode::Auto {
            return;
        }
        self.recent.push((drafted, accepted));
        if self.recent.len() > AUTO_WINDOW {
            self.recent.remove(0);
        }
        let (d, a) = self.recent.iter().fold((0, 0), |(d, a), &(x, y)| (d + x, a + y));
        // Once steps are timed: whether even the best draft length is
        // expected to yield less than plain decoding (acceptance and a draft
        // token's cost, both measured), which is steadier than the window's
        // own wall-clock time on a shared machine.
        let loses = match self.step_secs {
            Some(_) => self.best().1 < 1.0,
            None => (a as f64) < AUTO_MIN_RATE * d as f64,
        };
        if self.recent.len() == AUTO_WINDOW && loses {
            self.paused = self.pause;
            self.pause = (self.pause * 2).min(1024);
            self.recent.clear();
        } else if a * 2 >= d {
            self.pause = AUTO_PAUSE;
        }
    }
}

/// A batch's cost beyond a plain step, in plain steps, as a line in its
/// number of draft tokens k: alpha + beta k, fitted by least squares with
/// older drafts weighing less. On the CPU the first draft token costs most
/// (gemma-3: 0.75 of a step, then 0.3 each), so a line through the origin
/// would keep drafts shorter than they should be.
#[derive(Clone, Copy, Debug)]
struct CostFit {
    /// Decayed sums of weights, k, y, k², k·y.
    s: [f64; 5],
}

/// Weight a timed draft keeps per newer one.
const COST_DECAY: f64 = 0.9;

impl Default for CostFit {
    fn default() -> Self {
        CostFit { s: [0.0; 5] }
    }
}

impl CostFit {
    fn add(&mut self, k: usize, y: f64) {
        let (k, y) = (k as f64, y.clamp(0.0, 4.0 * k as f64));
        for (s, v) in self.s.iter_mut().zip([1.0, k, y, k * k, k * y]) {
            *s = *s * COST_DECAY + v;
        }
    }

    /// alpha and beta: the prior (0, BETA_PRIOR) until drafts were timed;
    /// until their lengths differ enough to fit a line, the prior's slope
    /// (or less) with the rest of the measured cost as the fixed part. (A
    /// line through the origin there made one slow batch of a 1-token draft
    /// cost a step per draft token: every later draft was 1 token long, so
    /// the lengths never differed and the line was never fitted.)
    fn line(&self) -> (f64, f64) {
        let [w, k, y, kk, ky] = self.s;
        if w < 1e-9 {
            return (0.0, BETA_PRIOR);
        }
        let det = w * kk - k * k;
        if det > 0.5 * w * w {
            let beta = ((w * ky - k * y) / det).clamp(0.02, 2.0);
            let alpha = ((y - beta * k) / w).clamp(0.0, 2.0);
            (alpha, beta)
        } else {
            let beta = (ky / kk.max(1e-9)).clamp(0.02, BETA_PRIOR);
            (((y - beta * k) / w).clamp(0.0, 2.0), beta)
        }
    }

    fn extra(&self, k: usize) -> f64 {
        let (alpha, beta) = self.line();
        alpha + beta * k as f64
    }
}

/// A hash of an n-gram (collisions only cost a draft that fails).
fn key(ngram: &[u32]) -> u64 {
    ngram.iter().fold(0xcbf2_9ce4_8422_2325, |h, &t| (h ^ u64::from(t)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drafter(mode: SpecMode, h: &[u32]) -> Drafter {
        Drafter::new(SpecParams { mode, draft_max: 8, ngram: 2 }, h.to_vec())
    }

    #[test]
    fn a_repeated_ngram_proposes_what_followed_it() {
        let mut d = drafter(SpecMode::On, &[1, 2, 3, 4, 5, 6, 9, 1, 2]);
        assert_eq!(d.propose(8), vec![3, 4, 5, 6, 9, 1, 2, 3], "past the end, the period repeats");
        assert_eq!(d.propose(3), vec![3, 4, 5], "the room bounds the draft");
        d.push(7);
        assert!(d.propose(8).is_empty(), "[2, 7] never occurred");
    }

    #[test]
    fn the_longer_match_wins_over_the_more_recent() {
        // [5, 1, 2] occurred first and is what the history ends with; [8, 1, 2] is more recent.
        let mut d = drafter(SpecMode::On, &[5, 1, 2, 30, 8, 1, 2, 40, 5, 1, 2]);
        assert_eq!(d.propose(2), vec![30, 8]);
    }

    #[test]
    fn after_a_draft_the_copy_goes_on_where_it_stopped() {
        // The source [1, 2, 3, 4, 5, 6] then a later, longer-matching copy of [5, 6] going elsewhere.
        let h = [1, 2, 3, 4, 5, 6, 7, 8, 40, 41, 4, 5, 6, 90, 91, 92, 1, 2, 3];
        let mut d = drafter(SpecMode::On, &h);
        assert_eq!(d.propose(3), vec![4, 5, 6], "drafted from the start of the source");
        // The model kept 4 and wrote 9 instead of 5, then went back to the source's 5, 6.
        d.record(3, 1, 0.01);
        for t in [4, 9, 5, 6] {
            d.push(t);
        }
        // [5, 6] occurs at the source (continuing 7, 8) and later (continuing 90):
        // the one right after where the copy stopped wins over the more recent one.
        assert_eq!(d.propose(2), vec![7, 8]);
        let mut fresh = drafter(SpecMode::On, &h.iter().chain(&[4, 9, 5, 6]).copied().collect::<Vec<u32>>());
        assert_eq!(fresh.propose(2), vec![90, 91], "without a cursor: the most recent");
    }

    #[test]
    fn the_draft_ends_where_earlier_occurrences_disagree() {
        // Three lines `7 8 X 9 6` with a different X: after `7 8` nothing
        // says which X comes, so nothing is drafted; after X, `9 6 7 8`
        // follows every time, and the draft stops before the next X.
        let mut d = drafter(SpecMode::On, &[7, 8, 1, 9, 6, 7, 8, 2, 9, 6, 7, 8, 3, 9, 6, 7, 8]);
        assert!(d.propose(8).is_empty(), "the lines disagree on what follows [7, 8]");
        d.push(4);
        d.push(9);
        assert!(d.propose(8).is_empty(), "[4, 9] never occurred");
        d.push(6);
        assert_eq!(d.propose(8), vec![7, 8], "[9, 6] is followed by 7 8, then the lines disagree");
        // Where the copy goes on exactly where the last draft stopped, it is
        // trusted whatever other occurrences say: it was copied from the
        // fourth `7 8`, which the line just written (X = 4) followed.
        d.record(2, 2, 0.01);
        d.push(7);
        d.push(8);
        assert_eq!(d.propose(3), vec![4, 9, 6]);
    }

    #[test]
    fn a_batch_cost_with_a_fixed_part_is_fitted_as_such() {
        // Batches costing 0.5 + 0.25 k steps beyond a plain one.
        let mut c = CostFit::default();
        assert_eq!(c.line(), (0.0, BETA_PRIOR), "the prior until a draft is timed");
        c.add(4, 1.5);
        let (a, b) = c.line();
        assert!((a - 0.3).abs() < 1e-9 && b == BETA_PRIOR, "one length: the prior's slope, the rest fixed: {a} {b}");
        assert!((c.extra(4) - 1.5).abs() < 1e-9, "the measured length costs what it measured");
        for k in [2, 8, 16, 4, 32, 2] {
            c.add(k, 0.5 + 0.25 * k as f64);
        }
        let (a, b) = c.line();
        assert!((a - 0.5).abs() < 1e-6 && (b - 0.25).abs() < 1e-6, "{a} {b}");
        assert!((c.extra(10) - 3.0).abs() < 1e-6);
    }

    #[test]
    fn slow_one_token_drafts_do_not_keep_drafts_at_one_token() {
        // The first timed drafts were 1 token long and their batches cost a
        // whole extra step each; every draft held.
        let h = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        let mut d = drafter(SpecMode::Auto, &h);
        d.plain_step(0.01);
        for _ in 0..6 {
            d.record(1, 1, 0.02);
        }
        assert!(d.best_len() > 1, "drafts stay at one token: {:?}", d.cost.line());
    }

    #[test]
    fn off_never_drafts_and_auto_pauses_after_failures() {
        let h = [1, 2, 3, 1, 2];
        assert!(drafter(SpecMode::Off, &h).propose(8).is_empty());
        let mut d = drafter(SpecMode::Auto, &h);
        for _ in 0..AUTO_WINDOW {
            assert!(!d.propose(8).is_empty());
            d.record(4, 0, 0.01);
        }
        assert!(d.propose(8).is_empty(), "four failed drafts pause drafting");
        for _ in 0..AUTO_PAUSE {
            d.push(1);
        }
        d.push(2);
        assert!(!d.propose(8).is_empty(), "the pause ends by itself");
        assert_eq!(d.stats, SpecStats { drafts: 4, drafted: 16, accepted: 0 });
    }

    #[test]
    fn auto_weighs_the_drafts_speed_against_plain_steps() {
        let h = [1, 2, 3, 4, 5, 6, 7, 8, 1, 2];
        // Half the tokens kept, but each draft token costing a step and a
        // half: not even a one-token draft pays.
        let mut d = drafter(SpecMode::Auto, &h);
        d.plain_step(0.010);
        for _ in 0..AUTO_WINDOW {
            assert!(!d.propose(8).is_empty());
            d.record(4, 2, 0.070);
        }
        assert!(d.propose(8).is_empty(), "3 tokens per 70 ms is slower than one per 10 ms");
        // A quarter kept, but batches as cheap as a plain step: a gain.
        let mut d = drafter(SpecMode::Auto, &h);
        d.plain_step(0.010);
        for _ in 0..AUTO_WINDOW {
            d.record(8, 2, 0.012);
        }
        assert!(!d.propose(8).is_empty(), "3 tokens per 12 ms beats one per 10 ms");
        // --spec on never pauses.
        let mut d = drafter(SpecMode::On, &h);
        d.plain_step(0.010);
        for _ in 0..AUTO_WINDOW {
            d.record(8, 0, 1.0);
        }
        assert!(!d.propose(8).is_empty());
    }

    #[test]
    fn the_draft_grows_while_accepted_and_shrinks_when_not() {
        let mut d =
            Drafter::new(SpecParams { mode: SpecMode::On, draft_max: 64, ngram: 2 }, (0..200).chain(0..3).collect());
        d.plain_step(0.010);
        // Drafts that hold, each token costing a fifth of a step: longer drafts.
        let mut last = d.propose(64).len();
        for _ in 0..6 {
            d.record(last, last, 0.010 * (1.0 + 0.2 * last as f64));
            let next = d.propose(64).len();
            assert!(next >= last, "{next} after {last} held");
            last = next;
        }
        assert!(last >= 16, "{last}");
        // Drafts that fail at once: shorter ones.
        let long = last;
        for _ in 0..6 {
            d.record(last, 0, 0.010 * (1.0 + 0.2 * last as f64));
            last = d.propose(64).len();
        }
        assert!(last * 4 <= long, "{last} after {long}");
        // Under auto, where a draft token is timed to cost as much as a step,
        // even good odds keep drafts short.
        let mut d =
            Drafter::new(SpecParams { mode: SpecMode::Auto, draft_max: 64, ngram: 2 }, (0..200).chain(0..3).collect());
        d.plain_step(0.010);
        for _ in 0..8 {
            let k = d.best_len();
            d.record(k, k * 9 / 10, 0.010 * (1.0 + k as f64));
        }
        assert!(d.best_len() <= 4, "{}", d.best_len());
    }
}

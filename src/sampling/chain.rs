//! A sequence of samplers that is itself a sampler.

use std::fmt;

use super::{
    Candidates, Dist, Greedy, MinP, Penalties, Sampler, SamplingError, SamplingParams, Temperature, TopK, TopP,
};

/// Samplers applied in order; accepting a token forwards it to each of them.
///
/// Its [`Sampler::apply`] runs every sampler on the candidates. [`sample`]
/// additionally builds the candidates from logits and returns the selected
/// token id.
///
/// [`sample`]: SamplerChain::sample
#[derive(Default)]
pub struct SamplerChain {
    samplers: Vec<Box<dyn Sampler>>,
    /// The candidates of the last [`SamplerChain::sample`], kept to reuse the
    /// allocation and for callers that want probabilities.
    last: Candidates,
}

impl fmt::Debug for SamplerChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamplerChain").field("samplers", &self.names()).finish()
    }
}

impl SamplerChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a sampler at the end of the chain.
    pub fn push(&mut self, s: Box<dyn Sampler>) {
        self.samplers.push(s);
    }

    /// Puts a sampler before all others (a constraint, which must see every
    /// candidate).
    pub fn push_front(&mut self, s: Box<dyn Sampler>) {
        self.samplers.insert(0, s);
    }

    /// The chain llama.cpp's common code builds from these parameters.
    ///
    /// Penalties always come first. Then, if `temperature <= 0`: greedy.
    /// Otherwise: top-k, top-p, min-p, temperature, dist(seed). Disabled
    /// samplers (top_k <= 0, top_p >= 1, min_p <= 0, neutral penalties) are
    /// left out. It does not validate; odd values never panic (see
    /// [`SamplerChain::try_from_params`] for a checked version).
    pub fn from_params(p: &SamplingParams) -> Self {
        let mut chain = Self::new();
        let penalties = Penalties::new(p.repeat_last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty);
        if !penalties.is_disabled() {
            chain.push(Box::new(penalties));
        }
        if p.is_greedy() {
            chain.push(Box::new(Greedy::new()));
            return chain;
        }
        if p.top_k > 0 {
            chain.push(Box::new(TopK::new(p.top_k)));
        }
        if p.top_p < 1.0 {
            chain.push(Box::new(TopP::new(p.top_p)));
        }
        if p.min_p > 0.0 {
            chain.push(Box::new(MinP::new(p.min_p)));
        }
        chain.push(Box::new(Temperature::new(p.temperature)));
        chain.push(Box::new(Dist::new(p.seed)));
        chain
    }

    /// [`SamplerChain::from_params`] after [`SamplingParams::validate`].
    pub fn try_from_params(p: &SamplingParams) -> Result<Self, SamplingError> {
        p.validate()?;
        Ok(Self::from_params(p))
    }

    /// Number of samplers in the chain.
    pub fn len(&self) -> usize {
        self.samplers.len()
    }

    /// `true` when the chain holds no sampler.
    pub fn is_empty(&self) -> bool {
        self.samplers.is_empty()
    }

    /// Names of the samplers, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.samplers.iter().map(|s| s.name()).collect()
    }

    /// Samples one token from the logits of one position and returns its id,
    /// or `None` if there is no candidate (empty logits). The token is NOT
    /// accepted: call [`SamplerChain::accept`] with the token actually used.
    ///
    /// If no sampler in the chain selects a token (a chain without greedy or
    /// dist), the best remaining candidate is taken.
    pub fn try_sample(&mut self, logits: &[f32]) -> Option<u32> {
        // Greedy alone: the arg-max of the logits, without building the
        // candidate list (gemma-3's 262,144 rows per token; a draft's batch
        // samples one per row). Same choice: the highest logit (NaN as
        // -inf), ties to the lowest id.
        if self.samplers.len() == 1 && self.samplers[0].name() == "greedy" {
            self.last.data.clear();
            return argmax(logits);
        }
        let mut c = std::mem::take(&mut self.last);
        c.fill_from_logits(logits);
        self.apply(&mut c);
        if c.selected.is_none_or(|i| i >= c.len()) {
            c.selected = c.argmax();
        }
        let id = c.selected_id();
        self.last = c;
        id
    }

    /// Like [`SamplerChain::try_sample`], but returns token `0` when the
    /// logits are empty (a caller bug; it never panics).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        self.try_sample(logits).unwrap_or(0)
    }

    /// The candidates as the chain left them after the last sample: the
    /// surviving tokens and, when the last sampler computed them (dist), their
    /// probabilities. Empty after a sample by a greedy-only chain.
    pub fn last_candidates(&self) -> &Candidates {
        &self.last
    }

    /// Feeds a token that was actually emitted (or given) to every sampler,
    /// e.g. the penalties' history.
    pub fn accept(&mut self, token: u32) {
        Sampler::accept(self, token);
    }

    /// Clears the state of every sampler (history, random generator).
    pub fn reset(&mut self) {
        Sampler::reset(self);
    }

    /// The seed actually used by the first sampler that has one (dist), so a
    /// random seed can be recorded and replayed.
    pub fn seed(&self) -> Option<u64> {
        Sampler::seed(self)
    }
}

/// The index of the highest logit (NaN counts as -inf; ties: the first).
/// Two passes the compiler turns into vector code (a verified draft takes
/// one per row of gemma-3's 262,144 logits): the maximum, lane by lane (a
/// NaN never compares greater), then the first block, and in it the first
/// logit, equal to it.
fn argmax(logits: &[f32]) -> Option<u32> {
    const LANES: usize = 16;
    if logits.is_empty() {
        return None;
    }
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let blocks = logits.chunks_exact(LANES);
    let tail = blocks.remainder();
    for block in blocks {
        for (m, &x) in lanes.iter_mut().zip(block) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = lanes.iter().chain(tail).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    if max == f32::NEG_INFINITY {
        // Every logit is -inf or NaN: all tie, the first wins.
        return Some(0);
    }
    let block = logits.chunks(LANES).position(|b| b.iter().fold(false, |hit, &x| hit | (x == max)))?;
    let within = logits[block * LANES..].iter().position(|&x| x == max)?;
    Some((block * LANES + within) as u32)
}

impl Sampler for SamplerChain {
    fn name(&self) -> &'static str {
        "chain"
    }

    fn apply(&mut self, c: &mut Candidates) {
        for s in &mut self.samplers {
            s.apply(c);
        }
    }

    fn accept(&mut self, token: u32) {
        for s in &mut self.samplers {
            s.accept(token);
        }
    }

    fn reset(&mut self) {
        for s in &mut self.samplers {
            s.reset();
        }
    }

    fn seed(&self) -> Option<u64> {
        self.samplers.iter().find_map(|s| s.seed())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn greedy_argmax_takes_the_first_highest_and_skips_nan() {
        let slow = |v: &[f32]| {
            let mut best: Option<(usize, f32)> = None;
            for (i, &l) in v.iter().enumerate() {
                let l = if l.is_nan() { f32::NEG_INFINITY } else { l };
                if best.is_none_or(|(_, b)| l > b) {
                    best = Some((i, l));
                }
            }
            best.map(|(i, _)| i as u32)
        };
        assert_eq!(super::argmax(&[]), None);
        let mut cases: Vec<Vec<f32>> = vec![
            vec![f32::NAN; 40],
            vec![f32::NEG_INFINITY; 3],
            vec![f32::NAN, f32::NEG_INFINITY, f32::NAN],
            vec![1.0, 5.0, 5.0],
            vec![f32::NAN, 2.0, f32::INFINITY, f32::INFINITY],
        ];
        // Pseudo-random rows of several lengths, with ties, NaNs and the
        // maximum in the tail past the last full block.
        let mut x = 12345u64;
        for len in [1usize, 15, 16, 17, 33, 1000, 4099] {
            let v: Vec<f32> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    match x >> 60 {
                        0 => f32::NAN,
                        1 => 7.0,
                        _ => ((x >> 33) % 1000) as f32 / 100.0,
                    }
                })
                .collect();
            cases.push(v.clone());
            let mut tail = v;
            tail.push(99.0);
            cases.push(tail);
        }
        for v in &cases {
            assert_eq!(super::argmax(v), slow(v), "{v:?}");
        }
    }

    use super::*;

    fn logits(n: usize, salt: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + salt) * 1.618).sin() * 4.0).collect()
    }

    #[test]
    fn a_greedy_only_chain_takes_the_candidates_arg_max() {
        // The fast path skips the candidate list: same token on ties and NaN.
        let mut chain = SamplerChain::from_params(&SamplingParams { temperature: 0.0, ..Default::default() });
        for l in [
            vec![1.0, 3.0, 3.0, f32::NAN, 2.0],
            vec![f32::NAN, f32::NAN],
            vec![f32::NEG_INFINITY, -1.0, f32::INFINITY, f32::INFINITY],
            vec![-5.0],
        ] {
            let mut c = Candidates::from_logits(&l);
            Greedy::new().apply(&mut c);
            assert_eq!(chain.try_sample(&l), c.selected_id(), "{l:?}");
        }
        assert_eq!(chain.try_sample(&[]), None);
    }

    #[test]
    fn temperature_zero_equals_greedy() {
        for t in [0.0, -0.5] {
            let p = SamplingParams { temperature: t, seed: 3, ..Default::default() };
            let mut chain = SamplerChain::from_params(&p);
            assert_eq!(chain.names(), vec!["greedy"]);
            for salt in 0..20 {
                let l = logits(300, salt as f32);
                let mut c = Candidates::from_logits(&l);
                Greedy::new().apply(&mut c);
                assert_eq!(chain.sample(&l), c.selected_id().unwrap());
            }
        }
    }

    #[test]
    fn default_order_is_llama_cpp_common() {
        let p = SamplingParams { repeat_penalty: 1.1, ..Default::default() };
        let chain = SamplerChain::from_params(&p);
        assert_eq!(chain.names(), vec!["penalties", "top_k", "top_p", "min_p", "temperature", "dist"]);
        assert!(chain.seed().is_some());
        let g = SamplerChain::from_params(&SamplingParams { repeat_penalty: 1.1, ..SamplingParams::greedy() });
        assert_eq!(g.names(), vec!["penalties", "greedy"]);
        assert_eq!(g.seed(), None);
    }

    #[test]
    fn greedy_chain_still_applies_penalties() {
        let p = SamplingParams { repeat_penalty: 4.0, ..SamplingParams::greedy() };
        let mut chain = SamplerChain::from_params(&p);
        let l = [1.0, 3.0, 2.0];
        assert_eq!(chain.sample(&l), 1);
        chain.accept(1); // 3.0 / 4 = 0.75 < 2.0
        assert_eq!(chain.sample(&l), 2);
        chain.reset();
        assert_eq!(chain.sample(&l), 1);
    }

    #[test]
    fn same_seed_same_sequence_through_the_chain() {
        let run = |seed: u64| {
            let p = SamplingParams { seed, temperature: 1.5, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() };
            let mut chain = SamplerChain::from_params(&p);
            (0..200)
                .map(|i| {
                    let t = chain.sample(&logits(64, (i % 7) as f32));
                    chain.accept(t);
                    t
                })
                .collect::<Vec<u32>>()
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    #[test]
    fn picks_respect_filters() {
        let p = SamplingParams { top_k: 3, seed: 5, temperature: 5.0, ..Default::default() };
        let mut chain = SamplerChain::from_params(&p);
        let l = logits(1000, 0.0);
        let mut c = Candidates::from_logits(&l);
        c.keep_top(3);
        let top3: Vec<u32> = c.data.iter().map(|t| t.id).collect();
        for _ in 0..300 {
            assert!(top3.contains(&chain.sample(&l)));
        }
        let last = chain.last_candidates();
        assert!(last.len() <= 3);
        assert!((last.data.iter().map(|t| t.p).sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn odd_inputs_never_panic() {
        let mut chain = SamplerChain::from_params(&SamplingParams::default());
        assert_eq!(chain.try_sample(&[]), None);
        assert_eq!(chain.sample(&[]), 0);
        assert!(chain.try_sample(&[f32::NAN; 8]).is_some());
        assert_eq!(chain.sample(&[f32::NAN, 1.0, f32::NAN]), 1);
        let wild = SamplingParams {
            temperature: 1e-30,
            top_k: i32::MAX,
            top_p: 7.0,
            min_p: -3.0,
            repeat_penalty: 0.0,
            repeat_last_n: -100,
            frequency_penalty: f32::NAN,
            presence_penalty: f32::INFINITY,
            seed: 0,
            tool_names: Vec::new(),
        };
        assert!(wild.validate().is_err());
        let mut chain = SamplerChain::from_params(&wild);
        for i in 0..5 {
            let t = chain.sample(&[0.5, f32::INFINITY, -1.0, f32::NEG_INFINITY, 2.0]);
            assert!(t < 5);
            chain.accept(i);
        }
        assert!(SamplerChain::try_from_params(&wild).is_err());
    }

    #[test]
    fn empty_chain_falls_back_to_argmax() {
        let mut chain = SamplerChain::new();
        assert!(chain.is_empty());
        assert_eq!(chain.sample(&[0.0, 9.0, 1.0]), 1);
        chain.push(Box::new(TopK::new(2)));
        assert_eq!(chain.len(), 1);
        assert_eq!(chain.sample(&[0.0, 9.0, 1.0]), 1);
    }
}

//! Random draw from the softmax of the remaining candidates.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Candidates, Sampler};

/// The seed that asks for a random seed (drawn from the operating system),
/// like llama.cpp's `LLAMA_DEFAULT_SEED`. The seed actually used can be read
/// back with [`Sampler::seed`] and recorded to replay the session.
pub const RANDOM_SEED: u64 = u64::MAX;

/// Draws one candidate with probability softmax(logit) and selects it; the
/// `p` of every candidate is set to its (normalised) probability.
///
/// The generator is `StdRng` seeded with `seed_from_u64`: the same seed gives
/// the same sequence of picks with the same build (the `rand` crate does not
/// promise that `StdRng` stays the same across its versions).
#[derive(Clone, Debug)]
pub struct Dist {
    seed: u64,
    seed_used: u64,
    rng: StdRng,
}

fn effective_seed(seed: u64) -> u64 {
    if seed == RANDOM_SEED {
        // never RANDOM_SEED itself, so that a recorded seed replays exactly
        StdRng::from_os_rng().random_range(0..RANDOM_SEED)
    } else {
        seed
    }
}

impl Dist {
    /// A dist sampler; [`RANDOM_SEED`] picks a random seed.
    pub fn new(seed: u64) -> Self {
        let seed_used = effective_seed(seed);
        Dist { seed, seed_used, rng: StdRng::seed_from_u64(seed_used) }
    }
}

impl Sampler for Dist {
    fn name(&self) -> &'static str {
        "dist"
    }

    fn apply(&mut self, c: &mut Candidates) {
        if c.is_empty() {
            c.selected = None;
            return;
        }
        c.softmax();
        // one draw per step, whatever the number of candidates, so the
        // sequence of draws does not depend on how the list was cut
        let r: f64 = self.rng.random();
        let mut total = 0.0f64;
        for t in &c.data {
            total += t.p as f64;
        }
        let target = r * total;
        let mut cum = 0.0f64;
        let mut last_positive = None;
        for (i, t) in c.data.iter().enumerate() {
            if t.p > 0.0 {
                cum += t.p as f64;
                last_positive = Some(i);
                if cum > target {
                    c.selected = Some(i);
                    return;
                }
            }
        }
        // only rounding can get here
        c.selected = last_positive.or_else(|| c.argmax());
    }

    fn reset(&mut self) {
        self.seed_used = effective_seed(self.seed);
        self.rng = StdRng::seed_from_u64(self.seed_used);
    }

    fn seed(&self) -> Option<u64> {
        Some(self.seed_used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(seed: u64, n: usize, logits: &[f32]) -> Vec<u32> {
        let mut d = Dist::new(seed);
        (0..n)
            .map(|_| {
                let mut c = Candidates::from_logits(logits);
                d.apply(&mut c);
                c.selected_id().unwrap()
            })
            .collect()
    }

    #[test]
    fn same_seed_same_draws_different_seed_different() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let a = draws(42, 200, &logits);
        assert_eq!(a, draws(42, 200, &logits));
        assert_ne!(a, draws(43, 200, &logits));
    }

    #[test]
    fn reset_replays_and_random_seed_is_recorded() {
        let logits = [0.0f32; 10];
        let mut d = Dist::new(7);
        let pick = |d: &mut Dist| {
            let mut c = Candidates::from_logits(&logits);
            d.apply(&mut c);
            c.selected_id().unwrap()
        };
        let first: Vec<u32> = (0..20).map(|_| pick(&mut d)).collect();
        d.reset();
        let again: Vec<u32> = (0..20).map(|_| pick(&mut d)).collect();
        assert_eq!(first, again);

        let mut r = Dist::new(RANDOM_SEED);
        let used = r.seed().unwrap();
        assert_ne!(used, RANDOM_SEED);
        let a: Vec<u32> = (0..20).map(|_| pick(&mut r)).collect();
        let mut replay = Dist::new(used);
        let b: Vec<u32> = (0..20).map(|_| pick(&mut replay)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn frequencies_match_softmax() {
        let logits = [1.0f32, 2.0, 0.0, -1.0, 1.5];
        let mut c = Candidates::from_logits(&logits);
        c.softmax();
        let n = 20_000;
        let mut hist = [0usize; 5];
        for id in draws(1234, n, &logits) {
            hist[id as usize] += 1;
        }
        for (i, &h) in hist.iter().enumerate() {
            let p = c.data[i].p as f64;
            let freq = h as f64 / n as f64;
            // 5 standard deviations of a binomial proportion
            let tol = 5.0 * (p * (1.0 - p) / n as f64).sqrt();
            assert!((freq - p).abs() < tol, "id {i}: freq {freq} vs p {p}");
        }
    }

    #[test]
    fn never_picks_impossible_tokens_and_handles_odd_lists() {
        let logits = [f32::NEG_INFINITY, 0.0, f32::NAN, f32::NEG_INFINITY];
        assert!(draws(5, 500, &logits).iter().all(|&id| id == 1));
        let mut d = Dist::new(1);
        let mut e = Candidates::from_logits(&[]);
        d.apply(&mut e);
        assert_eq!(e.selected, None);
        // all -inf: uniform, still a valid pick
        let mut c = Candidates::from_logits(&[f32::NEG_INFINITY; 3]);
        d.apply(&mut c);
        assert!(c.selected.is_some());
        let mut one = Candidates::from_logits(&[3.0]);
        d.apply(&mut one);
        assert_eq!(one.selected_id(), Some(0));
        assert_eq!(one.data[0].p, 1.0);
    }
}

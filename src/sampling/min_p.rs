//! Min-p: drop candidates much less likely than the best one.

use super::{Candidates, Sampler};

/// Keeps the candidates whose probability is at least `min_p` times the
/// probability of the best candidate (`logit >= max_logit + ln(min_p)`);
/// the best candidate is always kept. The order of the list is preserved.
///
/// `min_p <= 0` (or NaN) disables it; `min_p > 1` keeps only the best.
#[derive(Clone, Debug)]
pub struct MinP {
    p: f32,
}

impl MinP {
    /// A min-p sampler.
    pub fn new(p: f32) -> Self {
        MinP { p }
    }
}

impl Sampler for MinP {
    fn name(&self) -> &'static str {
        "min_p"
    }

    fn apply(&mut self, c: &mut Candidates) {
        if c.is_empty() || self.p.is_nan() || self.p <= 0.0 {
            return;
        }
        let Some(best) = c.argmax() else { return };
        let best_id = c.data[best].id;
        let threshold = c.data[best].logit + self.p.ln();
        c.data.retain(|t| t.id == best_id || t.logit >= threshold);
        c.selected = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(logits: &[f32], p: f32) -> Vec<u32> {
        let mut c = Candidates::from_logits(logits);
        MinP::new(p).apply(&mut c);
        c.data.iter().map(|t| t.id).collect()
    }

    #[test]
    fn drops_tokens_below_fraction_of_best() {
        // probabilities proportional to 1, 0.5, 0.1, 0.04, 0.2
        let l: Vec<f32> = [1.0f32, 0.5, 0.1, 0.04, 0.2].iter().map(|x| x.ln()).collect();
        assert_eq!(kept(&l, 0.05), vec![0, 1, 2, 4]);
        assert_eq!(kept(&l, 0.15), vec![0, 1, 4]);
        assert_eq!(kept(&l, 0.3), vec![0, 1]);
        assert_eq!(kept(&l, 0.9), vec![0]);
        // and every kept token really satisfies p >= min_p * p_max
        let mut c = Candidates::from_logits(&l);
        MinP::new(0.15).apply(&mut c);
        let mut full = Candidates::from_logits(&l);
        full.softmax();
        for t in &c.data {
            assert!(full.data[t.id as usize].p >= 0.15 * full.data[0].p);
        }
    }

    #[test]
    fn edge_values() {
        let l = [0.0, 2.0, 1.0];
        assert_eq!(kept(&l, 0.0), vec![0, 1, 2]);
        assert_eq!(kept(&l, f32::NAN), vec![0, 1, 2]);
        assert_eq!(kept(&l, 2.0), vec![1]);
        assert!(kept(&[], 0.1).is_empty());
        let all_neg_inf = [f32::NEG_INFINITY; 3];
        assert_eq!(kept(&all_neg_inf, 0.1).len(), 3);
    }
}

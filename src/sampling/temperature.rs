//! Temperature scaling of the logits.

use super::{Candidates, Sampler};

/// Divides every logit by the temperature: below 1 sharpens the distribution,
/// above 1 flattens it.
///
/// A temperature `<= 0` keeps only the best candidate (highest logit, ties to
/// the lowest id), like llama.cpp, so a following `dist` is deterministic. A
/// NaN temperature leaves the logits untouched.
#[derive(Clone, Debug)]
pub struct Temperature {
    temp: f32,
}

impl Temperature {
    /// A temperature sampler.
    pub fn new(temp: f32) -> Self {
        Temperature { temp }
    }
}

impl Sampler for Temperature {
    fn name(&self) -> &'static str {
        "temperature"
    }

    fn apply(&mut self, c: &mut Candidates) {
        if c.is_empty() || self.temp.is_nan() || self.temp == 1.0 {
            return;
        }
        if self.temp <= 0.0 {
            if let Some(best) = c.argmax() {
                let t = c.data[best];
                c.data.clear();
                c.data.push(t);
                c.sorted = true;
                c.selected = None;
            }
            return;
        }
        let temp = self.temp;
        // dividing by a positive number keeps the order
        c.data.iter_mut().for_each(|t| t.logit /= temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probs(logits: &[f32], temp: f32) -> Vec<f32> {
        let mut c = Candidates::from_logits(logits);
        Temperature::new(temp).apply(&mut c);
        c.softmax();
        c.data.iter().map(|t| t.p).collect()
    }

    #[test]
    fn scales_logits() {
        let mut c = Candidates::from_logits(&[2.0, -4.0]);
        Temperature::new(0.5).apply(&mut c);
        assert_eq!(c.data[0].logit, 4.0);
        assert_eq!(c.data[1].logit, -8.0);
    }

    #[test]
    fn low_temperature_sharpens_high_flattens() {
        let logits = [1.0, 2.0, 0.5];
        let base = probs(&logits, 1.0);
        let sharp = probs(&logits, 0.5);
        let flat = probs(&logits, 2.0);
        assert!(sharp[1] > base[1] && base[1] > flat[1]);
        assert!(sharp[2] < base[2] && base[2] < flat[2]);
    }

    #[test]
    fn zero_and_negative_keep_only_the_best() {
        for t in [0.0, -1.0] {
            let mut c = Candidates::from_logits(&[1.0, 3.0, 3.0, 2.0]);
            Temperature::new(t).apply(&mut c);
            assert_eq!(c.len(), 1);
            assert_eq!(c.data[0].id, 1);
        }
        let mut c = Candidates::from_logits(&[]);
        Temperature::new(0.0).apply(&mut c);
        assert!(c.is_empty());
    }
}

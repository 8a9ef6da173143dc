//! Top-k: keep the k candidates with the highest logits.

use super::{Candidates, Sampler};

/// Keeps the `k` best candidates, sorted by descending logit (ties: lower id
/// first). `k <= 0` disables it; a `k` not smaller than the list leaves the
/// list as it is (unsorted if it was).
#[derive(Clone, Debug)]
pub struct TopK {
    k: i32,
}

impl TopK {
    /// A top-k sampler.
    pub fn new(k: i32) -> Self {
        TopK { k }
    }
}

impl Sampler for TopK {
    fn name(&self) -> &'static str {
        "top_k"
    }

    fn apply(&mut self, c: &mut Candidates) {
        if self.k <= 0 {
            return;
        }
        let k = self.k as usize;
        if k < c.len() {
            c.keep_top(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(c: &Candidates) -> Vec<u32> {
        c.data.iter().map(|t| t.id).collect()
    }

    #[test]
    fn keeps_exactly_k_best() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32).collect();
        let mut c = Candidates::from_logits(&logits);
        TopK::new(5).apply(&mut c);
        assert_eq!(c.len(), 5);
        assert!(c.sorted);
        let expect: Vec<f32> = (995..1000).rev().map(|v| v as f32).collect();
        assert_eq!(c.data.iter().map(|t| t.logit).collect::<Vec<_>>(), expect);
    }

    #[test]
    fn disabled_and_oversized_k() {
        let mut c = Candidates::from_logits(&[1.0, 3.0, 2.0]);
        TopK::new(0).apply(&mut c);
        assert_eq!(ids(&c), vec![0, 1, 2]);
        TopK::new(-3).apply(&mut c);
        assert_eq!(ids(&c), vec![0, 1, 2]);
        TopK::new(100).apply(&mut c);
        assert_eq!(ids(&c), vec![0, 1, 2]);
        TopK::new(3).apply(&mut c);
        assert_eq!(ids(&c), vec![0, 1, 2]);
        TopK::new(2).apply(&mut c);
        assert_eq!(ids(&c), vec![1, 2]);
        let mut e = Candidates::from_logits(&[]);
        TopK::new(4).apply(&mut e);
        assert!(e.is_empty());
    }
}

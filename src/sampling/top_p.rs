//! Top-p (nucleus): keep the smallest set of best candidates whose
//! probability mass reaches p.

use super::{Candidates, Sampler};

/// Above this many unsorted candidates, top-p first tries a partial sort of
/// the best [`PARTIAL`] before falling back to a full sort.
const ADAPTIVE_MIN: usize = 1024;
/// Size of the partial sort tried first on large lists.
const PARTIAL: usize = 256;

/// Keeps the shortest prefix of the candidates, sorted by descending
/// probability, whose cumulative probability is `>= p`; always at least one.
///
/// `p >= 1` (or NaN) disables it; `p <= 0` keeps only the best candidate.
/// After it runs, `p` of each kept candidate holds its probability over the
/// list as it was before the cut (not renormalised), and the list is sorted.
#[derive(Clone, Debug)]
pub struct TopP {
    p: f32,
}

impl TopP {
    /// A top-p sampler.
    pub fn new(p: f32) -> Self {
        TopP { p }
    }
}

/// Length of the shortest prefix of `c.data[..n]` with mass `>= p`, if any.
fn cut(c: &Candidates, n: usize, p: f64) -> Option<usize> {
    let mut cum = 0.0f64;
    for (i, t) in c.data[..n].iter().enumerate() {
        cum += t.p as f64;
        if cum >= p {
            return Some(i + 1);
        }
    }
    None
}

impl Sampler for TopP {
    fn name(&self) -> &'static str {
        "top_p"
    }

    fn apply(&mut self, c: &mut Candidates) {
        if c.is_empty() || self.p.is_nan() || self.p >= 1.0 {
            return;
        }
        let p = self.p as f64;
        c.softmax();
        if !c.sorted && c.len() > ADAPTIVE_MIN {
            c.sort_prefix(PARTIAL);
            if let Some(n) = cut(c, PARTIAL, p) {
                c.data.truncate(n);
                c.sorted = true;
                c.selected = None;
                return;
            }
        }
        c.sort();
        // rounding may leave the total a hair under p: then keep everything
        let n = cut(c, c.len(), p).unwrap_or(c.len());
        c.data.truncate(n);
        c.selected = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(logits: &[f32], p: f32) -> Vec<u32> {
        let mut c = Candidates::from_logits(logits);
        TopP::new(p).apply(&mut c);
        c.data.iter().map(|t| t.id).collect()
    }

    #[test]
    fn keeps_smallest_prefix_reaching_p() {
        // probabilities 0.5, 0.25, 0.125, 0.125 for ids 2, 0, 1, 3
        let l = [0.25f32.ln(), 0.125f32.ln(), 0.5f32.ln(), 0.125f32.ln()];
        assert_eq!(kept(&l, 0.3), vec![2]);
        assert_eq!(kept(&l, 0.49), vec![2]);
        assert_eq!(kept(&l, 0.51), vec![2, 0]);
        assert_eq!(kept(&l, 0.74), vec![2, 0]);
        assert_eq!(kept(&l, 0.76), vec![2, 0, 1]);
        assert_eq!(kept(&l, 0.99), vec![2, 0, 1, 3]);
    }

    #[test]
    fn edge_values_of_p() {
        let l = [1.0, 3.0, 2.0];
        assert_eq!(kept(&l, 0.0), vec![1]);
        assert_eq!(kept(&l, -1.0), vec![1]);
        assert_eq!(kept(&l, 1.0), vec![0, 1, 2]);
        assert_eq!(kept(&l, 1.5), vec![0, 1, 2]);
        assert_eq!(kept(&l, f32::NAN), vec![0, 1, 2]);
        assert!(kept(&[], 0.5).is_empty());
    }

    #[test]
    fn large_list_matches_full_sort() {
        // many candidates: the adaptive path (partial sort) must agree with a
        // plain sort, whether the cut falls inside the first 256 or not
        let logits: Vec<f32> = (0..5000).map(|i| (((i * 7919) % 5000) as f32) / 300.0).collect();
        for p in [0.3f32, 0.9, 0.999] {
            let got = kept(&logits, p);
            let mut c = Candidates::from_logits(&logits);
            c.softmax();
            c.sort();
            let mut cum = 0.0f64;
            let mut n = 0;
            for t in &c.data {
                cum += t.p as f64;
                n += 1;
                if cum >= p as f64 {
                    break;
                }
            }
            let expect: Vec<u32> = c.data[..n].iter().map(|t| t.id).collect();
            assert_eq!(got, expect, "p = {p}");
        }
    }
}

//! The candidate list that samplers filter, reorder and finally select from.

use std::cmp::Ordering;

/// One candidate token: its id, its (possibly modified) logit and, once some
/// sampler has computed it, its probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenData {
    /// Token id in the model's vocabulary.
    pub id: u32,
    /// Logit, as modified by the samplers applied so far.
    pub logit: f32,
    /// Probability; only meaningful right after a sampler that computes it
    /// (see [`Candidates::softmax`]); `0.0` otherwise.
    pub p: f32,
}

/// The candidates of one sampling step.
///
/// Samplers shrink `data`, reorder it, rewrite logits and probabilities, and a
/// final sampler (greedy or dist) sets `selected`.
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    /// The remaining candidates.
    pub data: Vec<TokenData>,
    /// `true` when `data` is sorted by descending logit (ties: lower id first).
    pub sorted: bool,
    /// Index into `data` of the chosen token, once a selecting sampler ran.
    pub selected: Option<usize>,
}

/// A logit as used for ordering: NaN counts as negative infinity.
pub(crate) fn key(logit: f32) -> f32 {
    if logit.is_nan() {
        f32::NEG_INFINITY
    } else {
        logit
    }
}

/// The order of a sorted candidate list: higher logit first, then lower id.
/// It is total, so unstable sorts and selections are deterministic.
pub(crate) fn order_desc(a: &TokenData, b: &TokenData) -> Ordering {
    key(b.logit).total_cmp(&key(a.logit)).then(a.id.cmp(&b.id))
}

impl Candidates {
    /// Builds one candidate per logit, with `id` = index. NaN logits become
    /// negative infinity (the token can never be picked unless all are NaN).
    pub fn from_logits(logits: &[f32]) -> Self {
        let mut c = Candidates::default();
        c.fill_from_logits(logits);
        c
    }

    /// Like [`Candidates::from_logits`] but reuses this list's allocation.
    pub fn fill_from_logits(&mut self, logits: &[f32]) {
        self.data.clear();
        self.data.extend(logits.iter().enumerate().map(|(i, &l)| TokenData { id: i as u32, logit: key(l), p: 0.0 }));
        self.sorted = false;
        self.selected = None;
    }

    /// Number of remaining candidates.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// `true` when no candidate remains.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The id of the selected token, if a selecting sampler ran.
    pub fn selected_id(&self) -> Option<u32> {
        self.selected.and_then(|i| self.data.get(i)).map(|t| t.id)
    }

    /// Index of the highest logit; ties go to the lowest id. `None` if empty.
    pub fn argmax(&self) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, t) in self.data.iter().enumerate() {
            match best {
                None => best = Some(i),
                Some(b) if order_desc(t, &self.data[b]) == Ordering::Less => best = Some(i),
                Some(_) => {}
            }
        }
        best
    }

    /// Sorts all candidates by descending logit (ties: lower id first).
    pub fn sort(&mut self) {
        if !self.sorted {
            self.data.sort_unstable_by(order_desc);
            self.sorted = true;
        }
    }

    /// Puts the `k` best candidates, sorted, at the front; the rest follow in
    /// no particular order. Does not change `sorted` unless `k` covers all.
    pub fn sort_prefix(&mut self, k: usize) {
        if self.sorted || k == 0 {
            return;
        }
        if k >= self.data.len() {
            self.sort();
            return;
        }
        self.data.select_nth_unstable_by(k - 1, order_desc);
        self.data[..k].sort_unstable_by(order_desc);
    }

    /// Keeps only the `k` best candidates, sorted. Does nothing if `k` is not
    /// smaller than the number of candidates, apart from sorting them.
    pub fn keep_top(&mut self, k: usize) {
        self.sort_prefix(k);
        self.data.truncate(k);
        self.sorted = true;
        self.selected = None;
    }

    /// Sets `p` of every candidate to its softmax probability over the
    /// current logits, without reordering.
    ///
    /// Odd inputs never give NaN: if the highest logit is `+inf`, the `+inf`
    /// candidates share the mass equally; if every logit is `-inf` (or NaN),
    /// the mass is uniform.
    pub fn softmax(&mut self) {
        let n = self.data.len();
        if n == 0 {
            return;
        }
        let max = self.data.iter().map(|t| key(t.logit)).fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            let u = 1.0 / n as f32;
            self.data.iter_mut().for_each(|t| t.p = u);
            return;
        }
        if max == f32::INFINITY {
            let n_inf = self.data.iter().filter(|t| t.logit == f32::INFINITY).count();
            let u = 1.0 / n_inf as f32;
            for t in &mut self.data {
                t.p = if t.logit == f32::INFINITY { u } else { 0.0 };
            }
            return;
        }
        let mut sum = 0.0f64;
        for t in &mut self.data {
            let e = (key(t.logit) - max).exp();
            t.p = e;
            sum += e as f64;
        }
        // sum >= 1 because the maximum contributes exp(0) = 1.
        let inv = (1.0 / sum) as f32;
        self.data.iter_mut().for_each(|t| t.p *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_logits_assigns_ids_and_cleans_nan() {
        let c = Candidates::from_logits(&[1.0, f32::NAN, -2.0]);
        assert_eq!(c.len(), 3);
        assert_eq!(c.data[1].id, 1);
        assert_eq!(c.data[1].logit, f32::NEG_INFINITY);
        assert!(!c.sorted);
        assert_eq!(c.selected, None);
    }

    #[test]
    fn softmax_sums_to_one_and_orders_like_logits() {
        let mut c = Candidates::from_logits(&[0.0, 1.0, 2.0, -1.0]);
        c.softmax();
        let sum: f32 = c.data.iter().map(|t| t.p).sum();
        assert!((sum - 1.0).abs() < 1e-6);
        assert!(c.data[2].p > c.data[1].p && c.data[1].p > c.data[0].p);
        let expect = (2.0f32).exp() / [0.0f32, 1.0, 2.0, -1.0].iter().map(|x| x.exp()).sum::<f32>();
        assert!((c.data[2].p - expect).abs() < 1e-6);
    }

    #[test]
    fn softmax_handles_infinities() {
        let mut c = Candidates::from_logits(&[f32::NEG_INFINITY; 4]);
        c.softmax();
        assert!(c.data.iter().all(|t| (t.p - 0.25).abs() < 1e-7));
        let mut c = Candidates::from_logits(&[f32::INFINITY, 0.0, f32::INFINITY]);
        c.softmax();
        assert_eq!(c.data.iter().map(|t| t.p).collect::<Vec<_>>(), vec![0.5, 0.0, 0.5]);
    }

    #[test]
    fn sort_and_keep_top_break_ties_by_id() {
        let mut c = Candidates::from_logits(&[1.0, 3.0, 3.0, 2.0, 3.0]);
        c.keep_top(2);
        assert_eq!(c.data.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1, 2]);
        let mut c = Candidates::from_logits(&[1.0, 3.0, 3.0, 2.0, 3.0]);
        c.sort();
        assert_eq!(c.data.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1, 2, 4, 3, 0]);
    }

    #[test]
    fn argmax_first_max_and_empty() {
        assert_eq!(Candidates::from_logits(&[]).argmax(), None);
        assert_eq!(Candidates::from_logits(&[0.0, 5.0, 5.0]).argmax(), Some(1));
        assert_eq!(Candidates::from_logits(&[f32::NAN, f32::NAN]).argmax(), Some(0));
    }
}

//! Greedy selection: the arg-max.

use super::{Candidates, Sampler};

/// Selects the candidate with the highest logit; ties go to the lowest id
/// (llama.cpp keeps the first maximum, which is the lowest id for a fresh
/// candidate list). Leaves `selected` at `None` when there is no candidate.
#[derive(Clone, Debug, Default)]
pub struct Greedy;

impl Greedy {
    /// A greedy sampler.
    pub fn new() -> Self {
        Greedy
    }
}

impl Sampler for Greedy {
    fn name(&self) -> &'static str {
        "greedy"
    }

    fn apply(&mut self, c: &mut Candidates) {
        c.selected = c.argmax();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax() {
        let logits = [0.3, -1.0, 2.5, 2.4, f32::NAN, 0.0];
        let mut c = Candidates::from_logits(&logits);
        Greedy::new().apply(&mut c);
        assert_eq!(c.selected_id(), Some(2));
        // the list itself is left as it was
        assert_eq!(c.len(), logits.len());
    }

    #[test]
    fn greedy_ties_pick_lowest_id_even_when_shuffled() {
        let mut c = Candidates::from_logits(&[1.0, 7.0, 7.0, 7.0]);
        c.data.reverse();
        Greedy::new().apply(&mut c);
        assert_eq!(c.selected_id(), Some(1));
    }

    #[test]
    fn greedy_on_empty_selects_nothing() {
        let mut c = Candidates::from_logits(&[]);
        Greedy::new().apply(&mut c);
        assert_eq!(c.selected, None);
    }
}

//! Fixed additive biases on chosen tokens (OpenAI's `logit_bias`).

use std::collections::HashMap;

use super::{Candidates, Sampler};

/// Adds a fixed bias to the logits of chosen tokens; `-inf` bans a token.
/// Biases for ids absent from the candidates are ignored.
#[derive(Clone, Debug, Default)]
pub struct LogitBias {
    bias: HashMap<u32, f32>,
}

impl LogitBias {
    /// A sampler adding `bias` to the logit of `id` for each pair; biases for
    /// the same id add up.
    pub fn new(biases: impl IntoIterator<Item = (u32, f32)>) -> Self {
        let mut bias = HashMap::new();
        for (id, b) in biases {
            *bias.entry(id).or_insert(0.0) += b;
        }
        LogitBias { bias }
    }
}

impl Sampler for LogitBias {
    fn name(&self) -> &'static str {
        "logit_bias"
    }

    fn apply(&mut self, c: &mut Candidates) {
        if self.bias.is_empty() || c.is_empty() {
            return;
        }
        // a fresh candidate list has id == index: no need to scan it all
        let direct = self.bias.keys().all(|&id| c.data.get(id as usize).is_some_and(|t| t.id == id));
        if direct {
            for (&id, &b) in &self.bias {
                c.data[id as usize].logit += b;
            }
        } else {
            for t in &mut c.data {
                if let Some(b) = self.bias.get(&t.id) {
                    t.logit += b;
                }
            }
        }
        c.sorted = false;
        c.selected = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::Greedy;

    #[test]
    fn biases_shift_and_ban() {
        let mut lb = LogitBias::new([(0, 5.0), (2, f32::NEG_INFINITY), (0, 1.0), (99, 3.0)]);
        let mut c = Candidates::from_logits(&[0.0, 1.0, 10.0]);
        lb.apply(&mut c);
        let l: Vec<f32> = c.data.iter().map(|t| t.logit).collect();
        assert_eq!(l, vec![6.0, 1.0, f32::NEG_INFINITY]);
        Greedy::new().apply(&mut c);
        assert_eq!(c.selected_id(), Some(0));
    }
}

//! Repetition, frequency and presence penalties over recent tokens.

use std::collections::{HashMap, VecDeque};

use super::{Candidates, Sampler};

/// Penalises tokens that appear among the last `last_n` accepted tokens.
///
/// For a token seen `count > 0` times in that window:
/// - repetition: a positive logit is divided by `repeat`, a non-positive one
///   multiplied by it (so `repeat > 1` always makes the token less likely);
/// - then `count * frequency + presence` is subtracted from the logit.
///
/// `last_n == 0`, or `repeat == 1` with both other penalties `0`, disables
/// it. A negative `last_n` means every token accepted since the last reset
/// (llama.cpp's `-1` means "the context size"; the session has no fixed one).
#[derive(Clone, Debug)]
pub struct Penalties {
    last_n: i32,
    repeat: f32,
    frequency: f32,
    presence: f32,
    /// The window, oldest first (unused when the window is unbounded).
    history: VecDeque<u32>,
    /// Occurrences of each token in the window; never holds zero.
    counts: HashMap<u32, u32>,
}

impl Penalties {
    /// A penalties sampler; see the type's documentation for the meaning.
    pub fn new(last_n: i32, repeat: f32, frequency: f32, presence: f32) -> Self {
        Penalties { last_n, repeat, frequency, presence, history: VecDeque::new(), counts: HashMap::new() }
    }

    /// `true` when the parameters make it a no-op.
    pub fn is_disabled(&self) -> bool {
        self.last_n == 0 || (self.repeat == 1.0 && self.frequency == 0.0 && self.presence == 0.0)
    }

    /// How many times `token` occurs in the current window.
    pub fn count(&self, token: u32) -> u32 {
        self.counts.get(&token).copied().unwrap_or(0)
    }

    fn penalise(&self, logit: f32, count: u32) -> f32 {
        let l = if logit <= 0.0 { logit * self.repeat } else { logit / self.repeat };
        l - count as f32 * self.frequency - self.presence
    }
}

impl Sampler for Penalties {
    fn name(&self) -> &'static str {
        "penalties"
    }

    fn accept(&mut self, token: u32) {
        if self.last_n == 0 {
            return;
        }
        *self.counts.entry(token).or_insert(0) += 1;
        if self.last_n < 0 {
            return;
        }
        if self.history.len() >= self.last_n as usize {
            if let Some(old) = self.history.pop_front() {
                if let Some(n) = self.counts.get_mut(&old) {
                    *n -= 1;
                    if *n == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
        self.history.push_back(token);
    }

    fn apply(&mut self, c: &mut Candidates) {
        if self.is_disabled() || self.counts.is_empty() || c.is_empty() {
            return;
        }
        // Fast path: a fresh candidate list has id == index (ids are unique, so
        // finding each counted id at its own index locates it).
        let direct = self.counts.keys().all(|&id| c.data.get(id as usize).is_some_and(|t| t.id == id));
        if direct {
            for (&id, &n) in &self.counts {
                if let Some(t) = c.data.get_mut(id as usize) {
                    t.logit = self.penalise(t.logit, n);
                }
            }
        } else {
            for i in 0..c.data.len() {
                if let Some(&n) = self.counts.get(&c.data[i].id) {
                    c.data[i].logit = self.penalise(c.data[i].logit, n);
                }
            }
        }
        c.sorted = false;
        c.selected = None;
    }

    fn reset(&mut self) {
        self.history.clear();
        self.counts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &mut Penalties, logits: &[f32]) -> Vec<f32> {
        let mut c = Candidates::from_logits(logits);
        p.apply(&mut c);
        let mut out = vec![0.0; logits.len()];
        for t in &c.data {
            out[t.id as usize] = t.logit;
        }
        out
    }

    #[test]
    fn repetition_divides_positive_multiplies_negative() {
        let mut p = Penalties::new(64, 2.0, 0.0, 0.0);
        p.accept(0);
        p.accept(1);
        p.accept(1);
        let out = run(&mut p, &[4.0, -3.0, 5.0, -1.0]);
        assert_eq!(out, vec![2.0, -6.0, 5.0, -1.0]);
    }

    #[test]
    fn frequency_and_presence_subtract_by_count() {
        let mut p = Penalties::new(64, 1.0, 0.5, 0.25);
        for t in [2, 2, 2, 0] {
            p.accept(t);
        }
        let out = run(&mut p, &[1.0, 1.0, 1.0]);
        assert_eq!(out, vec![1.0 - 0.5 - 0.25, 1.0, 1.0 - 1.5 - 0.25]);
    }

    #[test]
    fn window_forgets_old_tokens() {
        let mut p = Penalties::new(2, 1.0, 1.0, 0.0);
        for t in [0, 1, 1] {
            p.accept(t);
        }
        assert_eq!(p.count(0), 0);
        assert_eq!(p.count(1), 2);
        assert_eq!(run(&mut p, &[0.0, 0.0]), vec![0.0, -2.0]);
        p.reset();
        assert_eq!(run(&mut p, &[0.0, 0.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn unbounded_and_disabled_windows() {
        let mut p = Penalties::new(-1, 1.0, 1.0, 0.0);
        for _ in 0..1000 {
            p.accept(3);
        }
        assert_eq!(p.count(3), 1000);
        let mut off = Penalties::new(0, 2.0, 1.0, 1.0);
        off.accept(0);
        assert_eq!(run(&mut off, &[1.0]), vec![1.0]);
    }

    #[test]
    fn works_on_reordered_and_truncated_candidates() {
        let mut p = Penalties::new(8, 1.0, 1.0, 0.0);
        p.accept(7);
        p.accept(1);
        let mut c = Candidates::from_logits(&[0.0, 5.0, 1.0, 2.0, 3.0, 4.0, 6.0, 9.0]);
        c.keep_top(3); // ids 7, 6, 1
        p.apply(&mut c);
        let got: Vec<(u32, f32)> = c.data.iter().map(|t| (t.id, t.logit)).collect();
        assert_eq!(got, vec![(7, 8.0), (6, 6.0), (1, 4.0)]);
        assert!(!c.sorted);
    }
}

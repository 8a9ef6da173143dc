//! Comparing next-token distributions: KL divergence and top-1 agreement
//! against a reference, and the perplexity of a reference continuation.

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0
}

/// Mean over rows of KL(reference ‖ other), and the share of rows whose
/// most likely token is the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Comparison {
    pub kl: f64,
    pub top1: f64,
}

/// Compare two stacks of logits rows (`n_vocab` each).
pub fn compare(reference: &[f32], other: &[f32], n_vocab: usize) -> Comparison {
    let rows = reference.len().min(other.len()) / n_vocab.max(1);
    if rows == 0 {
        return Comparison::default();
    }
    let (mut kl, mut same) = (0.0, 0usize);
    for r in 0..rows {
        let (a, b) = (&reference[r * n_vocab..(r + 1) * n_vocab], &other[r * n_vocab..(r + 1) * n_vocab]);
        let (la, lb) = (log_softmax(a), log_softmax(b));
        kl += la.iter().zip(&lb).map(|(&p, &q)| p.exp() * (p - q)).sum::<f64>().max(0.0);
        same += usize::from(argmax(a) == argmax(b));
    }
    Comparison { kl: kl / rows as f64, top1: same as f64 / rows as f64 }
}

/// Perplexity of the last `n` of `tokens` given the rest, from the logits
/// of every token of `tokens` (row `i` predicts token `i + 1`).
pub fn continuation_perplexity(logits: &[f32], tokens: &[u32], n: usize, n_vocab: usize) -> f64 {
    let rows = logits.len() / n_vocab.max(1);
    let n = n.min(tokens.len().saturating_sub(1)).min(rows.saturating_sub(1));
    if n == 0 {
        return f64::NAN;
    }
    let nll: f64 = (tokens.len() - n..tokens.len())
        .map(|i| -log_softmax(&logits[(i - 1) * n_vocab..i * n_vocab])[tokens[i] as usize])
        .sum();
    (nll / n as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_rows_have_zero_kl_and_full_agreement() {
        let a = [1.0, 2.0, 3.0, 0.5, 0.0, -1.0];
        let c = compare(&a, &a, 3);
        assert!(c.kl.abs() < 1e-12 && c.top1 == 1.0, "{c:?}");
    }

    #[test]
    fn kl_matches_a_hand_computation() {
        // p = softmax([0, ln 3]) = (1/4, 3/4), q = (1/2, 1/2).
        let c = compare(&[0.0, 3f32.ln()], &[0.0, 0.0], 2);
        let want = 0.25 * (0.5f64).ln() + 0.75 * (1.5f64).ln();
        assert!((c.kl - want).abs() < 1e-6, "{} vs {want}", c.kl);
        let c = compare(&[0.0, 1.0, 5.0, 0.0], &[1.0, 0.0, 5.0, 0.0], 2);
        assert_eq!(c.top1, 0.5);
    }

    #[test]
    fn perplexity_of_a_certain_continuation_is_one() {
        // Three tokens; rows 0 and 1 put all weight on tokens 1 and 0.
        let logits = [-100.0, 100.0, 100.0, -100.0, 0.0, 0.0];
        let p = continuation_perplexity(&logits, &[0, 1, 0], 2, 2);
        assert!((p - 1.0).abs() < 1e-9, "{p}");
        let p = continuation_perplexity(&[0.0, 0.0, 0.0, 0.0], &[0, 1], 1, 2);
        assert!((p - 2.0).abs() < 1e-9, "uniform over two: {p}");
    }
}

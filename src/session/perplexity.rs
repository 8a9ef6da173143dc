//! Perplexity over a token stream, as llama.cpp's perplexity tool computes
//! it: chunks of `n_ctx` tokens, the first replaced by BOS when the model
//! adds one, each chunk evaluated from an empty cache, and the negative log
//! likelihood scored over the second half of every chunk.
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct PerplexityReport {
    /// Running perplexity after each chunk (llama.cpp's `[1]x,[2]y,...`).
    pub running: Vec<f64>,
    pub ppl: f64,
    /// The uncertainty llama.cpp prints after `+/-`.
    pub err: f64,
    pub tokens_scored: usize,
}

/// Score `tokens` in chunks of `n_ctx`; `eval` evaluates one chunk from an
/// empty cache and returns the logits of every position (n_ctx rows of n_vocab).
pub fn perplexity(
    tokens: &[u32],
    n_ctx: usize,
    n_vocab: usize,
    bos: Option<u32>,
    eval: &mut dyn FnMut(&[u32]) -> Result<Vec<f32>>,
    on_chunk: &mut dyn FnMut(usize, usize, f64),
) -> Result<PerplexityReport> {
    if n_ctx < 4 {
        return Err(Error::InvalidArgument(format!("-c {n_ctx}: perplexity needs a context of at least 4")));
    }
    let n_chunks = tokens.len() / n_ctx;
    if n_chunks == 0 {
        return Err(Error::InvalidArgument(format!(
            "the text has {} tokens; perplexity needs at least {} (2 x -c would be better)",
            tokens.len(),
            n_ctx
        )));
    }
    let first = n_ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunks);
    for c in 0..n_chunks {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        let logits = eval(&chunk)?;
        if logits.len() != n_ctx * n_vocab {
            return Err(Error::Internal(format!("expected {} logits, got {}", n_ctx * n_vocab, logits.len())));
        }
        for i in first..n_ctx - 1 {
            let target = tokens[c * n_ctx + i + 1] as usize;
            let lp = log_softmax_at(&logits[i * n_vocab..(i + 1) * n_vocab], target);
            nll -= lp;
            nll2 += lp * lp;
            count += 1;
        }
        let ppl = (nll / count as f64).exp();
        running.push(ppl);
        on_chunk(c + 1, n_chunks, ppl);
    }
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = nll2 / count as f64 - mean * mean;
    let err = if var > 0.0 && count > 1 { (var / (count - 1) as f64).sqrt() * ppl } else { 0.0 };
    Ok(PerplexityReport { running, ppl, err, tokens_scored: count })
}

/// log p(target) under softmax(logits), accumulated in f64.
fn log_softmax_at(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits[target] as f64 - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_give_vocab_size() {
        let toks: Vec<u32> = (0..32).map(|i| i % 5).collect();
        let r = perplexity(&toks, 8, 5, None, &mut |c| Ok(vec![0.0; c.len() * 5]), &mut |_, _, _| {}).unwrap();
        assert!((r.ppl - 5.0).abs() < 1e-9, "uniform over 5 tokens has perplexity 5, got {}", r.ppl);
        assert_eq!(r.running.len(), 4);
        assert_eq!(r.tokens_scored, 4 * 3);
    }

    #[test]
    fn too_short_text_is_an_error() {
        let e = perplexity(&[1, 2, 3], 8, 5, None, &mut |_| unreachable!(), &mut |_, _, _| {});
        assert!(e.unwrap_err().to_string().contains("needs at least 8"));
    }
}

//! Speed measurements in the manner of llama-bench: prompt processing
//! (`ppN`: N random tokens in one batch from an empty cache) and text
//! generation (`tgN`: N single-token steps), for our engine and for
//! llama.cpp through the oracle, so both run in the same process.
use crate::error::{Error, Result};
use crate::ggml::oracle::OracleContext;
use crate::session::Session;
use std::time::Instant;

/// One test: prompt processing or generation of `n` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchTest {
    Prompt(usize),
    Gen(usize),
}

impl BenchTest {
    pub fn name(&self) -> String {
        match self {
            BenchTest::Prompt(n) => format!("pp{n}"),
            BenchTest::Gen(n) => format!("tg{n}"),
        }
    }

    pub fn n_tokens(&self) -> usize {
        match self {
            BenchTest::Prompt(n) | BenchTest::Gen(n) => *n,
        }
    }
}

/// Deterministic pseudo-random token ids below `n_vocab` (xorshift).
pub fn bench_tokens(n: usize, n_vocab: usize, seed: u64) -> Vec<u32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n_vocab as u64) as u32
        })
        .collect()
}

/// Tokens per second of one run of `test` on our engine.
pub fn run_ours(s: &mut Session, test: BenchTest, n_vocab: usize) -> Result<f64> {
    s.clear();
    let toks = bench_tokens(test.n_tokens(), n_vocab, 42);
    let t0 = Instant::now();
    match test {
        BenchTest::Prompt(_) => {
            s.eval(&toks, false)?;
        }
        BenchTest::Gen(_) => {
            for &t in &toks {
                s.eval(&[t], false)?;
            }
        }
    }
    let tps = test.n_tokens() as f64 / t0.elapsed().as_secs_f64();
    // Our workers must not poll while llama.cpp runs next (and vice versa).
    s.pause_threads();
    Ok(tps)
}

/// Tokens per second of one run of `test` on llama.cpp.
pub fn run_llama(c: &mut OracleContext<'_>, test: BenchTest, n_vocab: usize) -> Result<f64> {
    c.clear();
    let toks: Vec<i32> = bench_tokens(test.n_tokens(), n_vocab, 42).iter().map(|&t| t as i32).collect();
    let t0 = Instant::now();
    match test {
        BenchTest::Prompt(n) => {
            let pos: Vec<i32> = (0..n as i32).collect();
            c.decode(&toks, &pos, false).map_err(Error::Context)?;
        }
        BenchTest::Gen(_) => {
            for (i, &t) in toks.iter().enumerate() {
                c.decode(&[t], &[i as i32], false).map_err(Error::Context)?;
            }
        }
    }
    c.synchronize();
    let tps = test.n_tokens() as f64 / t0.elapsed().as_secs_f64();
    c.pause_threads();
    Ok(tps)
}

/// Mean and sample standard deviation.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

//! Speed measurements in the manner of llama-bench: prompt processing
//! (`ppN`: N random tokens in one batch from an empty cache) and text
//! generation (`tgN`: N single-token steps), for our engine and for
//! llama.cpp through the oracle, so both run in the same process.
use crate::error::{Error, Result};
use crate::ggml::oracle::OracleContext;
use crate::kv::KvSnapshot;
use crate::session::Session;
use std::time::Instant;

/// What a test times: prompt processing or generation of `n` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchKind {
    Prompt(usize),
    Gen(usize),
}

/// One test: its kind, after `depth` tokens already in the cache
/// (llama-bench's `-d`; the depth's prefill is not timed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchTest {
    pub kind: BenchKind,
    pub depth: usize,
}

impl BenchTest {
    pub fn name(&self) -> String {
        let t = match self.kind {
            BenchKind::Prompt(n) => format!("pp{n}"),
            BenchKind::Gen(n) => format!("tg{n}"),
        };
        if self.depth > 0 {
            format!("{t} @ d{}", self.depth)
        } else {
            t
        }
    }

    /// Tokens timed.
    pub fn n_tokens(&self) -> usize {
        match self.kind {
            BenchKind::Prompt(n) | BenchKind::Gen(n) => n,
        }
    }

    /// Cells the test needs.
    pub fn n_ctx(&self) -> usize {
        self.depth + self.n_tokens()
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

/// The cache as it stands after a depth's prefill, kept so that later runs
/// at the same depth restore it instead of prefilling again (llama-bench
/// does the same; the prefill is not timed either way).
#[derive(Default)]
pub struct DepthCache(Option<(usize, KvSnapshot)>);

/// Tokens per second of one run of `test` on our engine.
pub fn run_ours(s: &mut Session, test: BenchTest, n_vocab: usize, depth: &mut DepthCache) -> Result<f64> {
    s.clear();
    if test.depth > 0 {
        match &depth.0 {
            Some((d, snap)) if *d == test.depth => s.restore(snap)?,
            _ => {
                s.eval(&bench_tokens(test.depth, n_vocab, 7), false)?;
                depth.0 = Some((test.depth, s.snapshot()?));
            }
        }
    }
    let toks = bench_tokens(test.n_tokens(), n_vocab, 42);
    let t0 = Instant::now();
    match test.kind {
        BenchKind::Prompt(_) => {
            s.eval(&toks, false)?;
        }
        BenchKind::Gen(_) => {
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
    let d = test.depth as i32;
    if d > 0 {
        let deep: Vec<i32> = bench_tokens(test.depth, n_vocab, 7).iter().map(|&t| t as i32).collect();
        c.decode(&deep, &(0..d).collect::<Vec<_>>(), false).map_err(Error::Oracle)?;
        c.synchronize();
    }
    let toks: Vec<i32> = bench_tokens(test.n_tokens(), n_vocab, 42).iter().map(|&t| t as i32).collect();
    let t0 = Instant::now();
    match test.kind {
        BenchKind::Prompt(n) => {
            let pos: Vec<i32> = (d..d + n as i32).collect();
            c.decode(&toks, &pos, false).map_err(Error::Oracle)?;
        }
        BenchKind::Gen(_) => {
            for (i, &t) in toks.iter().enumerate() {
                c.decode(&[t], &[d + i as i32], false).map_err(Error::Oracle)?;
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

/// Seconds to clear the live bits of `k` of `n` full cells (the `keep`
/// removal: metadata only, no graph), median of 5 runs.
pub fn removal_latency(n: usize, k: usize) -> f64 {
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let mut c = crate::kv::Cells::new(n, 1);
            for i in 0..n {
                c.fill(i, 0, i as crate::kv::Pos, 0);
            }
            let p0 = ((n - k) / 2) as crate::kv::Pos;
            let t0 = Instant::now();
            let removed = c.remove_pos_range(0, p0, p0 + k as crate::kv::Pos).len();
            let dt = t0.elapsed().as_secs_f64();
            assert_eq!(removed, k);
            dt
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[2]
}

/// Decode speed after forgetting most of a full cache.
#[derive(Clone, Debug)]
pub struct DefragBench {
    pub n_ctx: usize,
    pub removed: usize,
    pub live: usize,
    /// tokens/s decoding after the removal, holes left in place.
    pub tg_holes: f64,
    /// tokens/s after packing the live cells.
    pub tg_defrag: f64,
    /// tokens/s of a fresh context holding the same number of live cells.
    pub tg_fresh: f64,
    /// llama.cpp after the same `llama_memory_seq_rm`, when run.
    pub tg_llama: Option<f64>,
    pub defrag_ms: f64,
    pub cells_moved: usize,
}

fn tg_ours(s: &mut Session, n_gen: usize, n_vocab: usize) -> Result<f64> {
    let toks = bench_tokens(n_gen, n_vocab, 7);
    let t0 = Instant::now();
    for &t in &toks {
        s.eval(&[t], false)?;
    }
    let tps = n_gen as f64 / t0.elapsed().as_secs_f64();
    s.pause_threads();
    Ok(tps)
}

/// Fill `n_ctx` cells, remove the middle `frac` of them, then measure
/// `n_gen`-token decoding with holes, after a defrag, in a fresh context with
/// the same live cells, and (optionally) in llama.cpp after the same seq_rm.
pub fn defrag_bench(
    make: &mut dyn FnMut() -> Result<Session>,
    llama: Option<&mut OracleContext<'_>>,
    n_ctx: usize,
    frac: f64,
    n_gen: usize,
    n_vocab: usize,
) -> Result<DefragBench> {
    let fill = bench_tokens(n_ctx - n_gen, n_vocab, 11);
    let removed = (n_ctx as f64 * frac) as usize;
    let p0 = ((n_ctx - n_gen - removed) / 2) as i32;
    let p1 = p0 + removed as i32;
    let live = n_ctx - n_gen - removed;

    let mut s = make()?;
    s.eval(&fill, false)?;
    s.remove_range(p0, p1, crate::session::Gap::Keep)?;
    let next = s.next_pos();
    let tg_holes = tg_ours(&mut s, n_gen, n_vocab)?;
    s.remove_range(next, next + n_gen as i32, crate::session::Gap::Keep)?;
    let t0 = Instant::now();
    let cells_moved = s.defrag()?;
    let defrag_ms = t0.elapsed().as_secs_f64() * 1e3;
    let tg_defrag = tg_ours(&mut s, n_gen, n_vocab)?;
    drop(s);

    let mut f = make()?;
    f.eval(&fill[..live], false)?;
    let tg_fresh = tg_ours(&mut f, n_gen, n_vocab)?;
    drop(f);

    let tg_llama = match llama {
        Some(c) => {
            c.clear();
            let toks: Vec<i32> = fill.iter().map(|&t| t as i32).collect();
            let pos: Vec<i32> = (0..toks.len() as i32).collect();
            c.decode(&toks, &pos, false).map_err(Error::Oracle)?;
            c.seq_rm(p0, p1);
            let gen: Vec<i32> = bench_tokens(n_gen, n_vocab, 7).iter().map(|&t| t as i32).collect();
            let t0 = Instant::now();
            for (i, &t) in gen.iter().enumerate() {
                c.decode(&[t], &[toks.len() as i32 + i as i32], false).map_err(Error::Oracle)?;
            }
            c.synchronize();
            let tps = n_gen as f64 / t0.elapsed().as_secs_f64();
            c.pause_threads();
            Some(tps)
        }
        None => None,
    };
    Ok(DefragBench { n_ctx, removed, live, tg_holes, tg_defrag, tg_fresh, tg_llama, defrag_ms, cells_moved })
}
pub mod replay;

//! `decache bench`: a llama-bench-style table (pp/tg in tokens per second),
//! optionally with llama.cpp's figures from the same process and run, the
//! runs interleaved so that machine noise hits both alike.
use super::args::{FlashAttn, ModelArgs};
use super::load::load_model;
use clap::{Args, ValueEnum};
use decache::bench::{mean_std, run_llama, run_ours, BenchKind, BenchTest, DepthCache};
use decache::ggml::oracle::{OracleContext, OracleModel, OracleParams};
use decache::session::{default_threads, Session, SessionConfig};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Md,
    Json,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt lengths to test (pp), comma-separated; 0 to skip.
    #[arg(short = 'p', long = "n-prompt", value_delimiter = ',', default_value = "512")]
    pub n_prompt: Vec<usize>,
    /// Generation lengths to test (tg), comma-separated; 0 to skip.
    #[arg(short = 'n', long = "n-gen", value_delimiter = ',', default_value = "128")]
    pub n_gen: Vec<usize>,
    /// Threads.
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Run each test after this many tokens already in the cache (llama-bench's -d; comma-separated).
    #[arg(short = 'd', long = "n-depth", value_delimiter = ',', default_value = "0")]
    pub depth: Vec<usize>,
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    pub batch_size: usize,
    #[arg(long = "ubatch-size", default_value_t = 512)]
    pub ubatch_size: usize,
    /// Flash attention for both engines: on (1), off (0) or auto (also -fa).
    #[arg(long = "flash-attn", value_enum, default_value_t = FlashAttn::Auto)]
    pub flash_attn: FlashAttn,
    /// Give sliding-window layers (Gemma 3) the full cache in both engines
    /// (llama.cpp's --swa-full); by default each engine sizes their cache to the window.
    #[arg(long = "swa-full")]
    pub swa_full: bool,
    /// Skip the warm-up run of each test (llama-bench's --no-warmup).
    #[arg(long = "no-warmup")]
    pub no_warmup: bool,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub repetitions: usize,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "md")]
    pub output: Output,
    /// Also run llama.cpp (same ggml build, same file) and print the ratio.
    #[arg(long = "llama")]
    pub llama: bool,
    /// After the table, time each graph op of one run of every test (to stderr).
    #[arg(long = "profile")]
    pub profile: bool,
    /// Decaching scenarios instead: removal latency, and decode speed after
    /// forgetting 75% of a full cache (holes, defrag, fresh; llama.cpp with --llama).
    #[arg(long = "decache")]
    pub decache: bool,
    /// Cache size for --decache.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: usize,
    /// Replay an agent-like conversation whose client prunes its history,
    /// through the subconscious cache, prefix-only caching and (with --llama)
    /// llama.cpp's server behaviour: tokens prefilled and time to first token.
    #[arg(long = "replay")]
    pub replay: bool,
    /// Turns of the replayed conversation.
    #[arg(long = "turns", default_value_t = 24)]
    pub turns: usize,
    /// The replayed client keeps file reads of this many recent turns.
    #[arg(long = "window", default_value_t = 10)]
    pub window: usize,
    /// The replayed client replaces the file reads it prunes by a
    /// placeholder line instead of deleting them (replaced spans).
    #[arg(long = "placeholders")]
    pub placeholders: bool,
    /// Chunks must be longer than this (llama.cpp's --cache-reuse gets it + 1).
    #[arg(long = "subconscious-min", default_value_t = 8)]
    pub subconscious_min: usize,
    /// With --replay: write each turn's prompt, rendered by the model's chat
    /// template, to FILE (a JSON array of strings) instead of replaying, so
    /// that real servers can be sent the same requests.
    #[arg(long = "write-prompts", value_name = "FILE", requires = "replay")]
    pub write_prompts: Option<std::path::PathBuf>,
}

struct Row {
    engine: &'static str,
    test: String,
    samples: Vec<f64>,
}

pub fn run(a: &BenchArgs) -> Result<(), decache::Error> {
    if a.repetitions == 0 {
        return Err(decache::Error::InvalidArgument("-r 0: at least one repetition is needed".into()));
    }
    let threads = a.threads.unwrap_or_else(default_threads);
    let (model, _) = load_model(&a.model)?;
    if a.decache {
        return run_decache(a, &model, threads);
    }
    if a.replay {
        return super::bench_replay::run(a, &model, threads);
    }
    let n_vocab = model.hparams.n_vocab as usize;
    let kinds: Vec<BenchKind> = a
        .n_prompt
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| BenchKind::Prompt(n))
        .chain(a.n_gen.iter().filter(|&&n| n > 0).map(|&n| BenchKind::Gen(n)))
        .collect();
    let tests: Vec<BenchTest> =
        a.depth.iter().flat_map(|&depth| kinds.iter().map(move |&kind| BenchTest { kind, depth })).collect();
    let n_ctx = tests.iter().map(|t| t.n_ctx()).max().unwrap_or(1).next_multiple_of(256);
    let cfg = SessionConfig {
        n_ctx,
        n_batch: a.batch_size,
        n_ubatch: a.ubatch_size,
        n_threads: threads,
        flash_attn: a.flash_attn.enabled(),
        swa_full: a.swa_full,
        ..SessionConfig::default()
    };
    let mut session = Session::new(model.clone(), cfg)?;
    let oracle = if a.llama { Some(load_oracle(a, &model)?) } else { None };
    let mut octx = oracle.as_ref().map(|m| oracle_context(m, a, n_ctx, threads)).transpose()?;

    let mut rows = Vec::new();
    let mut depth = DepthCache::default();
    for &test in &tests {
        // Warm-up run of each engine, then interleaved repetitions.
        if !a.no_warmup {
            run_ours(&mut session, test, n_vocab, &mut depth)?;
            if let Some(c) = octx.as_mut() {
                run_llama(c, test, n_vocab)?;
            }
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..a.repetitions {
            ours.push(run_ours(&mut session, test, n_vocab, &mut depth)?);
            if let Some(c) = octx.as_mut() {
                theirs.push(run_llama(c, test, n_vocab)?);
            }
        }
        rows.push(Row { engine: "decache", test: test.name(), samples: ours });
        if octx.is_some() {
            rows.push(Row { engine: "llama.cpp", test: test.name(), samples: theirs });
        }
    }

    if a.profile {
        for &test in &tests {
            session.start_profile();
            run_ours(&mut session, test, n_vocab, &mut depth)?;
            print_profile(&test.name(), &session.stop_profile());
        }
    }

    let i = &model.info;
    let model_name = format!("{} {}", model.hparams.arch, i.file_type.as_deref().unwrap_or("?"));
    let size = format!("{:.2} MiB", i.file_size as f64 / (1 << 20) as f64);
    let params = format!("{:.2} M", i.n_params as f64 / 1e6);
    let backend = session.backend_name();
    match a.output {
        Output::Md => {
            let fa = u8::from(a.flash_attn.enabled());
            outln!("| model | size | params | backend | threads | fa | test | t/s |");
            outln!("| ----- | ---: | -----: | ------- | ------: | -: | ---- | --: |");
            for r in &rows {
                let (m, s) = mean_std(&r.samples);
                let be = if r.engine == "decache" { backend.clone() } else { format!("{backend} (llama.cpp)") };
                outln!("| {model_name} | {size} | {params} | {be} | {threads} | {fa} | {} | {m:.2} ± {s:.2} |", r.test);
            }
            if octx.is_some() {
                outln!();
                outln!("| test | decache / llama.cpp |");
                outln!("| ---- | ------------------: |");
                for pair in rows.chunks(2) {
                    let (o, _) = mean_std(&pair[0].samples);
                    let (l, _) = mean_std(&pair[1].samples);
                    outln!("| {} | {:.3} |", pair[0].test, o / l);
                }
            }
        }
        Output::Json => {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    let (m, s) = mean_std(&r.samples);
                    serde_json::json!({
                        "engine": r.engine, "model": model_name, "model_size": i.file_size, "model_n_params": i.n_params,
                        "backend": backend, "n_threads": threads, "n_batch": a.batch_size, "n_ubatch": a.ubatch_size, "flash_attn": a.flash_attn.enabled(),
                        "test": r.test, "avg_ts": m, "stddev_ts": s, "samples_ts": r.samples,
                    })
                })
                .collect();
            outln!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
        }
    }
    Ok(())
}

/// Per-op totals of one profiled run (ops over 1% of the time).
fn print_profile(test: &str, nodes: &[decache::ggml::NodeTime]) {
    let mut by_op: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
    for n in nodes {
        let key = if n.op == "MUL_MAT" { format!("MUL_MAT {}", n.detail) } else { n.op.clone() };
        let e = by_op.entry(key).or_default();
        e.0 += 1;
        e.1 += n.us;
    }
    let total: f64 = nodes.iter().map(|n| n.us).sum();
    eprintln!("profile {test}: {:.1} ms over {} nodes (nodes run one at a time)", total / 1e3, nodes.len());
    let mut rows: Vec<_> = by_op.into_iter().filter(|(_, (_, us))| *us > total / 100.0).collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    for (op, (n, us)) in rows {
        eprintln!("  {op:<48} x{n:<4} {:9.2} ms {:5.1}%", us / 1e3, 100.0 * us / total);
    }
}

/// `decache bench --decache`: what forgetting costs and what it buys.
fn run_decache(
    a: &BenchArgs,
    model: &std::sync::Arc<decache::model::Model>,
    threads: usize,
) -> Result<(), decache::Error> {
    use decache::bench::{defrag_bench, removal_latency};
    outln!("| cells | removed | removal (keep) |");
    outln!("| ----: | ------: | -------------: |");
    for n in [4096usize, 32768] {
        for pct in [1usize, 10, 90] {
            let k = n * pct / 100;
            outln!("| {n} | {k} ({pct}%) | {:.1} µs |", removal_latency(n, k) * 1e6);
        }
    }
    let n_ctx = a.ctx_size;
    let n_gen = a.n_gen.first().copied().filter(|&n| n > 0).unwrap_or(64).min(n_ctx / 8);
    let cfg = SessionConfig {
        n_ctx,
        n_batch: a.batch_size,
        n_ubatch: a.ubatch_size,
        n_threads: threads,
        flash_attn: a.flash_attn.enabled(),
        swa_full: a.swa_full,
        ..SessionConfig::default()
    };
    let oracle = if a.llama { Some(load_oracle(a, model)?) } else { None };
    let mut octx = oracle.as_ref().map(|m| oracle_context(m, a, n_ctx, threads)).transpose()?;
    let n_vocab = model.hparams.n_vocab as usize;
    let r = defrag_bench(&mut || Session::new(model.clone(), cfg.clone()), octx.as_mut(), n_ctx, 0.75, n_gen, n_vocab)?;
    outln!();
    outln!(
        "forget {} of {} cells ({} live), then generate {n_gen} tokens; defrag moved {} cells in {:.1} ms",
        r.removed,
        r.n_ctx,
        r.live,
        r.cells_moved,
        r.defrag_ms
    );
    outln!("| engine, state | tg t/s | vs. fresh |");
    outln!("| ------------- | -----: | --------: |");
    let row = |name: &str, v: f64| outln!("| {name} | {v:.2} | {:.3} |", v / r.tg_fresh);
    row("decache, fresh context with the same live cells", r.tg_fresh);
    row("decache, after removal (holes)", r.tg_holes);
    row("decache, after removal + defrag", r.tg_defrag);
    if let Some(l) = r.tg_llama {
        row("llama.cpp, after llama_memory_seq_rm", l);
        outln!();
        outln!("decache after defrag / llama.cpp after seq_rm: {:.3}", r.tg_defrag / l);
    }
    Ok(())
}

/// llama.cpp with the same context, batch and thread settings as ours.
/// llama.cpp on the same file, weight layouts and devices (`--rpc`, GPUs,
/// `-ngl`) as ours.
pub(super) fn load_oracle(a: &BenchArgs, model: &decache::model::Model) -> Result<OracleModel, decache::Error> {
    let o = &model.offload;
    OracleModel::load_on(&model.info.path, a.model.load_options().extra_buffers, &o.devices, o.n_offloaded() as i32)
        .map_err(decache::Error::Oracle)
}

fn oracle_context<'m>(
    m: &'m OracleModel,
    a: &BenchArgs,
    n_ctx: usize,
    threads: usize,
) -> Result<OracleContext<'m>, decache::Error> {
    let p = OracleParams {
        n_ctx: n_ctx as u32,
        n_batch: a.batch_size as u32,
        n_ubatch: a.ubatch_size as u32,
        n_threads: threads as i32,
        flash_attn: a.flash_attn.enabled(),
        swa_full: a.swa_full,
        ..OracleParams::default()
    };
    OracleContext::new(m, &p).map_err(decache::Error::Oracle)
}

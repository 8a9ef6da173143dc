//! Endurance: a scripted agent-like chat of 100k+ tokens through a small
//! cache (default 4096 cells) on SmolLM2. Every turn brings a question with
//! a `<system-reminder>` inside, a file read (sometimes of a file read
//! before), a passing test log, now and then a hook's output and a long
//! pasted log, and a short reply. The conversation forgets in place; this
//! reports tokens seen, tokens forgotten by reason, time spent forgetting,
//! the slowest turn (a stall would show there) and, measured after every
//! decache round, what prefilling the kept text again would have cost.
//! Every `--window` tokens it prints the window's throughput (tokens per
//! second of wall time and per CPU second of the process, the latter being
//! what other tenants of the machine disturb least) and the process's
//! resident and peak memory: on an endless session both must stay flat.
//!
//!     make endurance        (or: cargo run --release --example endurance -- --help)
use decache::context::policy::DecachePolicy;
use decache::context::segments::SegmentKind;
use decache::model::{LoadOptions, Model};
use decache::sampling::SamplingParams;
use decache::session::conversation::Conversation;
use decache::session::{GenerateOptions, Session, SessionConfig};
use decache::tokenizer::ChatTemplate;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A scripted agent-like chat through a small cache, with measured re-prefill cost.
#[derive(clap::Parser)]
struct Args {
    /// Model (default: SmolLM2-135M-Instruct in the cache).
    #[arg(short = 'm', long = "model", default_value_os_t = decache::pull::default_model_path())]
    model: std::path::PathBuf,
    /// Cells of the cache.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    n_ctx: usize,
    /// Stop after this many tokens seen.
    #[arg(long = "tokens", default_value_t = 100_000)]
    tokens: usize,
    #[arg(short = 't', long = "threads", default_value_t = decache::session::default_threads())]
    threads: usize,
    /// Tokens per reply at most.
    #[arg(short = 'n', long = "reply", default_value_t = 16)]
    reply: usize,
    /// Measure the re-prefill cost after every K-th decache round (0: never).
    #[arg(long = "measure-every", default_value_t = 1)]
    measure_every: u64,
    /// Report throughput and memory every this many tokens seen.
    #[arg(long = "window", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    window: u64,
    /// Start the windows when the cache first fills (the first decache
    /// round) and count `--tokens` from there: before it the cache is still
    /// growing, so each token attends to fewer cells and the first window
    /// would be faster than any later one for that reason alone.
    #[arg(long = "warm-up")]
    warm_up: bool,
    /// Also write the figures as JSON here.
    #[arg(long = "json")]
    json: Option<std::path::PathBuf>,
}

const FILES: [&str; 6] =
    ["src/parser.rs", "src/lexer.rs", "src/eval.rs", "src/main.rs", "tests/parse.rs", "Cargo.toml"];

fn file_text(rng: &mut impl Rng, path: &str, version: u32) -> String {
    let n = rng.random_range(8..16);
    let mut s = format!("{path} (version {version}):\n");
    for i in 0..n {
        let f = rng.random_range(0..1000);
        s.push_str(&format!(
            "fn helper_{f}_{i}(input: &str, depth: usize) -> Result<Node, Error> {{ parse_{i}(input, depth + {f}) }}\n"
        ));
    }
    s
}

fn test_log(rng: &mut impl Rng, turn: usize) -> String {
    let n = rng.random_range(6..14);
    let mut s = format!(
        "$ cargo test\n   Compiling calc v0.{turn}.0\n    Finished test profile in {}.{}s\n",
        rng.random_range(1..9),
        rng.random_range(0..99)
    );
    for i in 0..n {
        s.push_str(&format!("test parser::tests::case_{turn}_{i} ... ok\n"));
    }
    s.push_str(&format!(
        "\ntest result: ok. {n} passed; 0 failed; 0 ignored; finished in 0.{:02}s\n",
        rng.random_range(1..99)
    ));
    s
}

fn pasted_log(rng: &mut impl Rng, turn: usize) -> (String, String) {
    let mut s = String::from("Here is the server log from last night:\n");
    let bad = rng.random_range(8..22);
    for i in 0..30 {
        if i == bad {
            s.push_str(&format!(
                "2026-11-21T03:{:02}:{:02}Z ERROR worker_{turn} request_id=9f{i} timed out after 30s in db_pool\n",
                i % 60,
                i % 60
            ));
        } else {
            s.push_str(&format!(
                "2026-11-21T03:{:02}:{:02}Z INFO  handled GET /api/items/{} in {}ms\n",
                i % 60,
                (i * 7) % 60,
                rng.random_range(1..999),
                rng.random_range(1..80)
            ));
        }
    }
    (s, format!("Why did worker_{turn} time out in db_pool?"))
}

fn main() {
    let a = <Args as clap::Parser>::parse();
    if let Err(e) = run(&a) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(a: &Args) -> Result<(), decache::Error> {
    let model = Arc::new(Model::load(&a.model, &LoadOptions::default())?);
    let cfg = SessionConfig { n_ctx: a.n_ctx, n_threads: a.threads, ..SessionConfig::default() };
    let template = ChatTemplate::new(model.tokenizer.chat_template().unwrap_or_default())?;
    let mut c = Conversation::new(Session::new(model.clone(), cfg.clone())?, template, DecachePolicy::default());
    // A second cache, only to time what re-prefilling the kept text costs.
    let mut fresh = if a.measure_every > 0 { Some(Session::new(model.clone(), cfg)?) } else { None };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let opts =
        GenerateOptions { n_predict: Some(a.reply), sampling: SamplingParams::greedy(), ..GenerateOptions::default() };

    c.push(
        "system",
        "You are a coding agent working on a small calculator crate. Read files, run the tests, and answer in one sentence.",
        SegmentKind::System,
    )?;
    let t_start = Instant::now();
    let (mut reprefill_time, mut reprefill_tokens, mut measured_rounds) = (Duration::ZERO, 0usize, 0usize);
    let (mut slowest_turn, mut slowest_at, mut turns) = (Duration::ZERO, 0, 0);
    let mut versions = [0u32; FILES.len()];
    let mut windows: Vec<Window> = Vec::new();
    let mut window_start = Mark::now(0, Duration::ZERO);
    // With --warm-up, the windows (and the count of --tokens) begin at the first decache round.
    let (mut warmed, mut counted_from) = (!a.warm_up, 0usize);
    println!(
        "{:>5} {:>8} {:>6} {:>9} {:>7} {:>10} {:>12}",
        "turn", "seen", "live", "decached", "rounds", "decache ms", "re-prefill s"
    );
    while !warmed || c.stats.tokens_seen < counted_from + a.tokens {
        turns += 1;
        let t = turns;
        let t0 = Instant::now();
        let measured_before = reprefill_time;
        let mut steps: Vec<(&str, String, SegmentKind)> = Vec::new();
        if t % 5 == 0 {
            let (log, question) = pasted_log(&mut rng, t);
            steps.push(("user", log, SegmentKind::PastedLog));
            steps.push(("user", question, SegmentKind::User));
        } else {
            let todo = format!("Todo list:\n- [x] step {}\n- [ ] step {t}\n- [ ] step {}", t - 1, t + 1);
            steps.push((
                "user",
                format!("Step {t}: fix the next parser bug.\n<system-reminder>\n{todo}\n</system-reminder>"),
                SegmentKind::User,
            ));
        }
        let f = rng.random_range(0..FILES.len());
        versions[f] += 1;
        steps.push((
            "tool",
            file_text(&mut rng, FILES[f], versions[f]),
            SegmentKind::FileRead { path: FILES[f].into() },
        ));
        steps.push(("tool", test_log(&mut rng, t), SegmentKind::CommandOutput { passed: Some(true) }));
        if t % 3 == 0 {
            steps.push((
                "tool",
                "hook pre-commit: skipped (no staged files)".into(),
                SegmentKind::HookOutput { applied: false },
            ));
        }
        for (role, text, kind) in steps {
            let rounds = c.stats.rounds;
            c.push(role, &text, kind)?;
            measure(
                &mut c,
                &mut fresh,
                rounds,
                a.measure_every as usize,
                &mut reprefill_time,
                &mut reprefill_tokens,
                &mut measured_rounds,
            )?;
        }
        let rounds = c.stats.rounds;
        c.reply(&opts, &mut |_| true)?;
        measure(
            &mut c,
            &mut fresh,
            rounds,
            a.measure_every as usize,
            &mut reprefill_time,
            &mut reprefill_tokens,
            &mut measured_rounds,
        )?;
        // The turn's own time, without the re-prefill measurements made in it.
        let took = t0.elapsed().saturating_sub(reprefill_time - measured_before);
        if took > slowest_turn {
            (slowest_turn, slowest_at) = (took, t);
        }
        if !warmed && c.stats.rounds > 0 {
            warmed = true;
            window_start = Mark::now(c.stats.tokens_seen, reprefill_time);
            counted_from = c.stats.tokens_seen;
            println!("warm-up: the cache first filled at {} tokens seen; the windows start here", c.stats.tokens_seen);
        }
        if warmed && c.stats.tokens_seen as u64 >= window_start.tokens as u64 + a.window {
            let end = Mark::now(c.stats.tokens_seen, reprefill_time);
            let w = Window::between(&window_start, &end, c.session.n_live());
            println!(
                "window {:>3}: tokens {:>7}..{:<7} {:>7.1} t/s wall {:>7.1} t/CPU-s  rss {:>6.1} MiB  peak {:>6.1} MiB  live {}",
                windows.len() + 1, w.from, w.to, w.tps_wall, w.tps_cpu, w.rss_mib, w.peak_mib, w.live
            );
            windows.push(w);
            window_start = end;
        }
        if t % 10 == 0 || std::env::var_os("ENDURANCE_EVERY_TURN").is_some() {
            let s = &c.stats;
            println!(
                "{t:>5} {:>8} {:>6} {:>9} {:>7} {:>10.1} {:>12.1}",
                s.tokens_seen,
                c.session.n_live(),
                s.tokens_decached,
                s.rounds,
                s.decache_time.as_secs_f64() * 1e3,
                reprefill_time.as_secs_f64()
            );
        }
    }
    let wall = t_start.elapsed();
    let s = &c.stats;
    println!(
        "\nendurance: {turns} turns, {} tokens seen through {} cells in {:.0} s",
        s.tokens_seen,
        a.n_ctx,
        wall.as_secs_f64()
    );
    println!("  live at the end:      {} cells", c.session.n_live());
    println!("  decached:             {} tokens in {} events over {} rounds", s.tokens_decached, s.events, s.rounds);
    for (r, n) in &s.by_reason {
        println!("    {:<32} {n}", r.name());
    }
    println!(
        "  time decaching:       {:.1} ms in all ({} defrags, {} times every gap closed)",
        s.decache_time.as_secs_f64() * 1e3,
        s.defrags,
        s.gaps_closed
    );
    println!(
        "  re-prefill instead:   {:.1} s measured over {measured_rounds} rounds ({reprefill_tokens} tokens, {:.0} t/s)",
        reprefill_time.as_secs_f64(),
        reprefill_tokens as f64 / reprefill_time.as_secs_f64().max(1e-9)
    );
    println!(
        "  slowest turn:         {:.2} s (turn {slowest_at}); mean {:.2} s (both without the re-prefill measurements)",
        slowest_turn.as_secs_f64(),
        (wall - reprefill_time).as_secs_f64() / turns as f64
    );
    if let (Some(first), Some(last)) = (windows.first(), windows.last()) {
        let peak_growth = windows.iter().skip(1).map(|w| w.peak_mib).fold(0.0f64, f64::max) - first.peak_mib;
        println!(
            "  windows:              {} of {} tokens; last/first throughput {:.3} (wall) {:.3} (CPU); peak memory {:.1} MiB after the first window, {:+.1} MiB later",
            windows.len(), a.window, last.tps_wall / first.tps_wall, last.tps_cpu / first.tps_cpu, first.peak_mib, peak_growth
        );
    }
    if let Some(p) = &a.json {
        let by_reason: serde_json::Map<String, serde_json::Value> =
            s.by_reason.iter().map(|(r, n)| (r.name().to_string(), (*n).into())).collect();
        let j = serde_json::json!({
            "turns": turns, "tokens_seen": s.tokens_seen, "windows_from": counted_from, "cells": a.n_ctx, "wall_s": wall.as_secs_f64(),
            "tokens_decached": s.tokens_decached, "events": s.events, "rounds": s.rounds, "by_reason": by_reason,
            "decache_ms": s.decache_time.as_secs_f64() * 1e3, "defrags": s.defrags, "gaps_closed": s.gaps_closed,
            "reprefill_s": reprefill_time.as_secs_f64(), "reprefill_tokens": reprefill_tokens,
            "slowest_turn_s": slowest_turn.as_secs_f64(),
            "windows": windows.iter().map(|w| serde_json::json!({
                "from": w.from, "to": w.to, "tps_wall": w.tps_wall, "tps_cpu": w.tps_cpu,
                "rss_mib": w.rss_mib, "peak_mib": w.peak_mib, "live": w.live,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(p, serde_json::to_string_pretty(&j).unwrap_or_default())
            .map_err(|source| decache::Error::Io { path: p.clone(), source })?;
    }
    Ok(())
}

/// If a decache round happened since `rounds_before` (and it is one of
/// every `every`), time prefilling the live tokens into an empty cache:
/// what dropping the cache and starting again would have cost.
fn measure(
    c: &mut Conversation,
    fresh: &mut Option<Session>,
    rounds_before: usize,
    every: usize,
    time: &mut Duration,
    tokens: &mut usize,
    measured: &mut usize,
) -> Result<(), decache::Error> {
    let Some(fresh) = fresh else { return Ok(()) };
    if c.stats.rounds == rounds_before || !c.stats.rounds.is_multiple_of(every) {
        return Ok(());
    }
    let live = c.session.live_tokens();
    c.session.pause_threads(); // one busy thread pool at a time
    fresh.clear();
    let t0 = Instant::now();
    for chunk in live.chunks(512) {
        fresh.eval(chunk, false)?;
    }
    *time += t0.elapsed();
    fresh.pause_threads();
    *tokens += live.len();
    *measured += 1;
    Ok(())
}

/// A point of the run: tokens seen, wall clock (less the re-prefill
/// measurements) and the process's CPU time.
struct Mark {
    tokens: usize,
    wall: Instant,
    measured: Duration,
    cpu: Duration,
}

impl Mark {
    fn now(tokens: usize, measured: Duration) -> Mark {
        Mark { tokens, wall: Instant::now(), measured, cpu: cpu_time() }
    }
}

/// Throughput and memory over one window of tokens.
struct Window {
    from: usize,
    to: usize,
    tps_wall: f64,
    tps_cpu: f64,
    rss_mib: f64,
    peak_mib: f64,
    live: usize,
}

impl Window {
    fn between(a: &Mark, b: &Mark, live: usize) -> Window {
        let n = (b.tokens - a.tokens) as f64;
        let wall = (b.wall - a.wall).saturating_sub(b.measured - a.measured).as_secs_f64().max(1e-9);
        let cpu = b.cpu.saturating_sub(a.cpu).as_secs_f64().max(1e-9);
        let (rss, peak) = memory_kib();
        Window {
            from: a.tokens,
            to: b.tokens,
            tps_wall: n / wall,
            tps_cpu: n / cpu,
            rss_mib: rss / 1024.0,
            peak_mib: peak / 1024.0,
            live,
        }
    }
}

/// User plus system CPU time of the whole process (all threads).
fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// Resident and peak resident memory of this process in KiB (Linux `VmRSS`, `VmHWM`).
fn memory_kib() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> f64 {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

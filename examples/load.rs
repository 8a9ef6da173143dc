//! Load: N concurrent streaming clients against a `decache serve` child for
//! a fixed time (bounded, self-stopping). Reports requests, errors, latency
//! and time-to-first-token percentiles and generated tokens per second;
//! exits non-zero on any error or if the server died.
//!
//!     make load      (or: cargo run --release --example load -- --help)
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Concurrent streaming clients against a `decache serve` child.
#[derive(clap::Parser)]
struct Args {
    /// The decache binary to serve with.
    #[arg(long = "bin", default_value = "target/release/decache")]
    bin: String,
    /// Model for the server (default: its default).
    #[arg(short = 'm', long = "model")]
    model: Option<String>,
    #[arg(long = "clients", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    clients: u64,
    #[arg(long = "seconds", default_value_t = 60)]
    seconds: u64,
    /// Server slots.
    #[arg(long = "parallel", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    slots: u64,
    /// Server threads per slot.
    #[arg(short = 't', long = "threads", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    threads: u64,
    /// Tokens per reply at most.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 48, value_parser = clap::value_parser!(u64).range(1..))]
    max_tokens: u64,
}

#[derive(Default)]
struct Tally {
    latency_ms: Vec<f64>,
    ttft_ms: Vec<f64>,
    tokens: usize,
    errors: Vec<String>,
}

const QUESTIONS: &[&str] = &[
    "What is a KV cache?",
    "Name three prime numbers.",
    "Why is the sky blue?",
    "Write a haiku about rust.",
    "What does a compiler do?",
    "Give me a tip for writing tests.",
];

/// One streamed chat completion; returns (latency, ttft, content chunks).
fn one(addr: &str, q: &str, max_tokens: usize) -> Result<(f64, f64, usize), String> {
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":"{q}"}}],"stream":true,"max_tokens":{max_tokens},"temperature":0.7}}"#
    );
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    write!(s, "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        .map_err(|e| format!("send: {e}"))?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).map_err(|e| format!("read: {e}"))?;
    if !status.contains(" 200 ") {
        let mut rest = String::new();
        let _ = r.read_to_string(&mut rest);
        return Err(format!("{} {}", status.trim(), rest.lines().last().unwrap_or("")));
    }
    let (mut ttft, mut chunks, mut done) = (None, 0, false);
    let mut line = String::new();
    while r.read_line(&mut line).map_err(|e| format!("read: {e}"))? > 0 {
        if line.starts_with("data: [DONE]") {
            done = true;
            break;
        }
        if line.starts_with("data: ") && line.contains("\"content\":\"") && !line.contains("\"content\":\"\"") {
            chunks += 1;
            ttft.get_or_insert(t0.elapsed().as_secs_f64() * 1e3);
        }
        line.clear();
    }
    if !done {
        return Err("the stream ended without [DONE]".into());
    }
    Ok((t0.elapsed().as_secs_f64() * 1e3, ttft.unwrap_or(f64::NAN), chunks))
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let a = <Args as clap::Parser>::parse();
    let mut cmd = Command::new(&a.bin);
    cmd.args(["serve", "--port", "0", "-c", "2048", "--queue", "64"]);
    cmd.args(["--parallel", &a.slots.to_string(), "-t", &a.threads.to_string()]);
    if let Some(m) = &a.model {
        cmd.args(["-m", m]);
    }
    let mut child = match cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start {}: {e}", a.bin);
            std::process::exit(1);
        }
    };
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = lines.by_ref().map_while(Result::ok).find_map(|l| {
        l.split("listening on http://").nth(1).map(|r| r.split_whitespace().next().unwrap_or("").to_string())
    });
    let Some(addr) = addr else {
        eprintln!("error: the server did not start");
        std::process::exit(1);
    };
    std::thread::spawn(move || lines.for_each(drop));
    let t0 = Instant::now();
    while one(&addr, "hi", 1).is_err() {
        if t0.elapsed() > Duration::from_secs(120) {
            eprintln!("error: the model did not load");
            let _ = child.kill();
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..a.clients as usize)
        .map(|i| {
            let (tally, stop, addr) = (tally.clone(), stop.clone(), addr.clone());
            let max_tokens = a.max_tokens as usize;
            std::thread::spawn(move || {
                let mut k = i;
                while !stop.load(Ordering::Relaxed) {
                    let res = one(&addr, QUESTIONS[k % QUESTIONS.len()], max_tokens);
                    let mut t = tally.lock().unwrap();
                    match res {
                        Ok((lat, ttft, n)) => {
                            t.latency_ms.push(lat);
                            t.ttft_ms.push(ttft);
                            t.tokens += n;
                        }
                        Err(e) => t.errors.push(e),
                    }
                    k += 1;
                }
            })
        })
        .collect();
    // The server's resident memory, sampled twenty times over the run.
    let every = Duration::from_secs_f64((a.seconds as f64 / 20.0).max(1.0));
    let mut rss: Vec<(f64, f64)> = Vec::new();
    while start.elapsed() < Duration::from_secs(a.seconds) {
        std::thread::sleep(every.min(Duration::from_secs(a.seconds).saturating_sub(start.elapsed())));
        if let Some(kib) = rss_kib(child.id()) {
            rss.push((start.elapsed().as_secs_f64(), kib as f64 / 1024.0));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let wall = start.elapsed().as_secs_f64();
    let alive = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let t = tally.lock().unwrap();
    let n = t.latency_ms.len();
    let tokens = t.tokens;
    println!(
        "load: {} streaming clients for {wall:.0} s against {} slot(s) x {} thread(s)",
        a.clients, a.slots, a.threads
    );
    println!("  requests completed: {n}; errors: {}; server alive: {alive}", t.errors.len());
    println!(
        "  latency ms: p50 {:.0}, p99 {:.0}; time to first token ms: p50 {:.0}, p99 {:.0}",
        pct(&t.latency_ms, 0.5),
        pct(&t.latency_ms, 0.99),
        pct(&t.ttft_ms, 0.5),
        pct(&t.ttft_ms, 0.99)
    );
    println!("  generated: {tokens} content chunks, {:.1} per second in all", tokens as f64 / wall);
    if let (Some(first), Some(last)) = (rss.first(), rss.last()) {
        let peak = rss.iter().map(|r| r.1).fold(0.0, f64::max);
        let line: Vec<String> = rss.iter().map(|(s, m)| format!("{s:.0}s {m:.1}")).collect();
        println!(
            "  server RSS MiB: first {:.1} at {:.0} s, last {:.1} at {:.0} s, peak {peak:.1}",
            first.1, first.0, last.1, last.0
        );
        println!("  samples: {}", line.join(", "));
    }
    for e in t.errors.iter().take(5) {
        println!("  error: {e}");
    }
    if !t.errors.is_empty() || !alive || n == 0 {
        std::process::exit(1);
    }
}

/// Resident memory of process `pid` in KiB (Linux `VmRSS`).
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

//! `decache chat`: an interactive chat that forgets stale context in place
//! when the cache nears its limit, with a map of the context (`/context`),
//! manual forgetting (`/forget`, `/pin`) and statistics (`/stats`).
use super::args::{read_prompt_file, ContextArgs, ModelArgs, SamplingArgs};
use super::load::load_model;
use super::run::{chat_template, install_ctrl_c};
use clap::Args;
use crossterm::style::Stylize;
use decache::session::conversation::{Conversation, DecacheEvent};
use decache::session::policy::{DecachePolicy, Reason};
use decache::session::segments::SegmentKind;
use decache::session::{GenerateEvent, GenerateOptions, PositionPolicy, Session};
use rustyline::error::ReadlineError;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// System prompt.
    #[arg(long = "system-prompt")]
    pub system: Option<String>,
    /// Tokens per reply at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    pub n_predict: usize,
    /// Use this Jinja chat template instead of the model's.
    #[arg(long = "chat-template-file")]
    pub chat_template_file: Option<PathBuf>,
    /// Start forgetting when live cells reach this percentage of the cache.
    #[arg(long = "decache-at", default_value_t = 90.0)]
    pub decache_at: f32,
    /// Forget down to this percentage.
    #[arg(long = "decache-to", default_value_t = 70.0)]
    pub decache_to: f32,
    /// Position policy after forgetting: keep, shift or auto.
    #[arg(long = "positions", default_value = "auto")]
    pub positions: String,
    #[command(flatten)]
    pub ctx: ContextArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

const HELP: &str = "commands: /help  /context  /forget N  /pin N  /unpin N  /stats  /read FILE  /clear  /exit (or /bye, Ctrl-D); \
\"\"\" starts and ends a multi-line message; Ctrl-C stops a reply";

pub fn run(a: &ChatArgs) -> Result<(), decache::Error> {
    let positions: PositionPolicy = a.positions.parse().map_err(decache::Error::InvalidArgument)?;
    if !(0.0 < a.decache_to && a.decache_to < a.decache_at && a.decache_at <= 100.0) {
        return Err(decache::Error::InvalidArgument(format!(
            "--decache-to {} and --decache-at {}: need 0 < to < at <= 100",
            a.decache_to, a.decache_at
        )));
    }
    let cfg = a.ctx.session_config()?;
    let params = a.sampling.params();
    params.validate()?;
    let (model, _) = load_model(&a.model)?;
    let template = chat_template(model.tokenizer.chat_template(), a.chat_template_file.as_ref())?;
    let policy = DecachePolicy { at: a.decache_at / 100.0, to: a.decache_to / 100.0, ..DecachePolicy::default() };
    let new_conversation = || -> Result<Conversation, decache::Error> {
        let mut c = Conversation::new(Session::new(model.clone(), cfg.clone())?, template.clone(), policy.clone());
        c.positions = positions;
        if let Some(sys) = &a.system {
            c.push("system", sys, SegmentKind::System)?;
        }
        Ok(c)
    };
    let mut conv = new_conversation()?;
    let opts = GenerateOptions { n_predict: Some(a.n_predict), sampling: params, ..GenerateOptions::default() };
    let mut by_reason: BTreeMap<Reason, usize> = BTreeMap::new();
    // The line editor installs a SIGINT handler of its own for its lifetime;
    // ours goes in after it, so that Ctrl-C during a reply (the terminal is
    // in cooked mode then) stops the reply. At the prompt the terminal is raw
    // and the editor sees Ctrl-C as a key.
    let mut rl = rustyline::DefaultEditor::new().map_err(|e| decache::Error::Context(format!("terminal: {e}")))?;
    let stop = install_ctrl_c(false);
    eprintln!("{}", format!("decache chat: {} cells; {HELP}", conv.session.n_ctx()).dim());

    loop {
        let line = match read_message(&mut rl) {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => return Err(decache::Error::Context(format!("terminal: {e}"))),
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if let Some(cmd) = text.strip_prefix('/') {
            match command(cmd, &mut conv, &by_reason) {
                Ok(Cmd::Exit) => break,
                Ok(Cmd::Clear) => {
                    conv = new_conversation()?;
                    by_reason.clear();
                    eprintln!("{}", "(context cleared)".dim());
                }
                Ok(Cmd::Events(ev)) => notice(&ev, &mut by_reason),
                Ok(Cmd::Done) => {}
                Err(e) => eprintln!("{}", format!("error: {e}").red()),
            }
            continue;
        }
        let _ = rl.add_history_entry(text);
        match conv.push("user", text, SegmentKind::User) {
            Ok(ev) => notice(&ev, &mut by_reason),
            Err(e) => {
                eprintln!("{}", format!("error: {e}").red());
                continue;
            }
        }
        stop.store(false, Ordering::SeqCst);
        let mut out = std::io::stdout().lock();
        let res = conv.reply(&opts, &mut |ev| {
            if let GenerateEvent::Token { text, .. } = ev {
                if out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_err() {
                    return false;
                }
            }
            !stop.load(Ordering::SeqCst)
        });
        let _ = writeln!(out);
        drop(out);
        match res {
            Ok((gen, ev)) => {
                notice(&ev, &mut by_reason);
                let tps = if gen.gen_ms > 0.0 { gen.tokens.len() as f64 * 1e3 / gen.gen_ms } else { 0.0 };
                let cut = if stop.load(Ordering::SeqCst) { " (interrupted)" } else { "" };
                eprintln!(
                    "{}",
                    format!(
                        "[{} tokens, {tps:.1} t/s{cut}; {}/{} cells live]",
                        gen.tokens.len(),
                        conv.session.n_live(),
                        conv.session.n_ctx()
                    )
                    .dim()
                );
            }
            Err(e) => eprintln!("{}", format!("error: {e}").red()),
        }
    }
    Ok(())
}

/// One message: a line, or the lines between two `"""` lines. `None` on Ctrl-D.
fn read_message(rl: &mut rustyline::DefaultEditor) -> Result<Option<String>, ReadlineError> {
    let first = loop {
        match rl.readline("> ") {
            Ok(l) => break l,
            Err(ReadlineError::Interrupted) => {
                eprintln!("{}", "(Ctrl-D or /exit quits)".dim());
            }
            Err(ReadlineError::Eof) => return Ok(None),
            Err(e) => return Err(e),
        }
    };
    if first.trim() != "\"\"\"" {
        return Ok(Some(first));
    }
    let mut lines = Vec::new();
    loop {
        match rl.readline(". ") {
            Ok(l) if l.trim() == "\"\"\"" => return Ok(Some(lines.join("\n"))),
            Ok(l) => lines.push(l),
            Err(ReadlineError::Interrupted) => return Ok(Some(String::new())),
            Err(ReadlineError::Eof) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

enum Cmd {
    Exit,
    Clear,
    Events(Vec<DecacheEvent>),
    Done,
}

fn command(cmd: &str, conv: &mut Conversation, by_reason: &BTreeMap<Reason, usize>) -> Result<Cmd, decache::Error> {
    let mut words = cmd.split_whitespace();
    let name = words.next().unwrap_or("");
    let arg = words.next();
    let id = || -> Result<u64, decache::Error> {
        arg.and_then(|a| a.parse().ok()).ok_or_else(|| decache::Error::InvalidArgument(format!("/{name} needs a segment number (see /context)")))
    };
    match name {
        "exit" | "bye" | "quit" => Ok(Cmd::Exit),
        "clear" => Ok(Cmd::Clear),
        "help" => {
            eprintln!("{HELP}");
            Ok(Cmd::Done)
        }
        "context" => {
            print_context(conv);
            Ok(Cmd::Done)
        }
        "forget" => Ok(Cmd::Events(conv.forget_segment(id()?, Reason::Manual)?)),
        "pin" | "unpin" => {
            let n = id()?;
            if !conv.segments.set_pinned(n, name == "pin") {
                return Err(decache::Error::InvalidArgument(format!("no segment {n}")));
            }
            eprintln!("segment {n} {}", if name == "pin" { "pinned" } else { "unpinned" });
            Ok(Cmd::Done)
        }
        "stats" => {
            let s = &conv.stats;
            outln!("tokens seen:      {}", s.tokens_seen);
            outln!("live cells:       {} of {}", conv.session.n_live(), conv.session.n_ctx());
            outln!("decached:         {} tokens in {} events ({:.2} ms)", s.tokens_decached, s.events, s.decache_time.as_secs_f64() * 1e3);
            for (r, n) in by_reason {
                outln!("  {:<28} {n}", r.name());
            }
            outln!("defrags:          {}; position compactions: {}", s.defrags, s.compactions);
            Ok(Cmd::Done)
        }
        "read" => {
            let path = PathBuf::from(arg.ok_or_else(|| decache::Error::InvalidArgument("/read needs a file".into()))?);
            let text = read_prompt_file(&path)?;
            let ev = conv.push("tool", &format!("{}:\n{text}", path.display()), SegmentKind::FileRead { path: path.display().to_string() })?;
            eprintln!("(read {} into the context)", path.display());
            Ok(Cmd::Events(ev))
        }
        _ => Err(decache::Error::InvalidArgument(format!("unknown command /{name}; /help lists them"))),
    }
}

/// A one-line notice per deletion.
fn notice(events: &[DecacheEvent], by_reason: &mut BTreeMap<Reason, usize>) {
    for e in events {
        *by_reason.entry(e.reason).or_default() += e.cells;
        eprintln!("{}", format!("[forgot {} tokens of segment {} ({}): {}]", e.cells, e.segment, e.kind, e.reason.name()).dim());
    }
}

/// The context map: one row per segment, live vs forgotten, and a usage bar.
fn print_context(conv: &Conversation) {
    let (live, n) = (conv.session.n_live(), conv.session.n_ctx());
    let width = 50;
    let filled = (live * width).div_ceil(n.max(1)).min(width);
    outln!("[{}{}] {live}/{n} cells live", "#".repeat(filled).green(), ".".repeat(width - filled));
    for s in conv.segments.iter() {
        let state = if s.fully_removed() {
            "forgotten".to_string().dark_grey()
        } else if s.live() < s.len() {
            format!("{}/{} live", s.live(), s.len()).yellow()
        } else {
            format!("{} live", s.len()).green()
        };
        let pin = if s.pinned { " pinned" } else { "" };
        outln!("{:>4}  turn {:<3} {:<16} pos {:>6}..{:<6} {state}{pin}", s.id, s.turn, s.kind.name(), s.p0, s.p1);
    }
}

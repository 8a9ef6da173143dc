//! The slash commands of `decache chat`, in both familiar dialects
//! (llama.cpp's and Ollama's `/exit` `/bye` `/clear` `/regen` `/save`
//! `/load` `/set` `/show`) and ours (`/context` `/forget` `/pin` `/stats`
//! `/read`). The conversation does the work; these parse and render.
use super::args::read_prompt_file;
use crossterm::style::Stylize;
use decache::context::policy::Reason;
use decache::context::segments::{Segment, SegmentKind};
use decache::session::conversation::{Conversation, DecacheEvent};
use decache::session::{GenerateOptions, PositionPolicy};
use decache::Error;
use std::path::PathBuf;

pub const HELP: &str = "commands: /help  /context  /forget N|KIND|turns A-B  /pin N  /unpin N  /stats  /read FILE  \
/regen  /save FILE  /load FILE  /set NAME VALUE  /show [info|parameters|template|system]  /clear  /exit (or /bye, Ctrl-D); \
\"\"\" starts and ends a multi-line message; Ctrl-C stops a reply";

/// The chat's state: the conversation and the reply options `/set` changes.
pub struct Chat {
    pub conv: Conversation,
    pub opts: GenerateOptions,
}

impl Chat {
    pub fn new(conv: Conversation, opts: GenerateOptions) -> Chat {
        Chat { conv, opts }
    }

    /// A fresh conversation, keeping the settings (`/clear`).
    pub fn reset(&mut self, mut conv: Conversation) {
        conv.policy = self.conv.policy.clone();
        conv.positions = self.conv.positions;
        conv.refresh = self.conv.refresh;
        self.conv = conv;
    }
}

pub enum Cmd {
    Exit,
    Clear,
    /// The last reply was taken back: reply again.
    Regen,
    Events(Vec<DecacheEvent>),
    Done,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

pub fn command(cmd: &str, chat: &mut Chat) -> Result<Cmd, Error> {
    let cmd = cmd.trim();
    let (name, rest) = cmd.split_once(char::is_whitespace).map_or((cmd, ""), |(n, r)| (n, r.trim()));
    let conv = &mut chat.conv;
    let segment_no =
        || rest.parse::<u64>().map_err(|_| invalid(format!("/{name} needs a segment number (see /context)")));
    let file =
        || (!rest.is_empty()).then(|| PathBuf::from(rest)).ok_or_else(|| invalid(format!("/{name} needs a file")));
    match name {
        "exit" | "bye" | "quit" => Ok(Cmd::Exit),
        "clear" => Ok(Cmd::Clear),
        "help" | "?" => {
            eprintln!("{HELP}");
            Ok(Cmd::Done)
        }
        "context" => {
            print_context(conv);
            Ok(Cmd::Done)
        }
        "forget" => Ok(Cmd::Events(forget(conv, rest)?)),
        "pin" | "unpin" => {
            let n = segment_no()?;
            if !conv.segments.set_pinned(n, name == "pin") {
                return Err(invalid(format!("no segment {n}")));
            }
            eprintln!("segment {n} {}", if name == "pin" { "pinned" } else { "unpinned" });
            Ok(Cmd::Done)
        }
        "stats" => {
            print_stats(conv);
            Ok(Cmd::Done)
        }
        "read" => {
            let path = file()?;
            let text = read_prompt_file(&path)?;
            let shown = path.display().to_string();
            let ev = conv.push("tool", &format!("{shown}:\n{text}"), SegmentKind::FileRead { path: shown.clone() })?;
            eprintln!("(read {shown} into the context)");
            Ok(Cmd::Events(ev))
        }
        "regen" => {
            conv.undo_reply()?;
            Ok(Cmd::Regen)
        }
        "save" => {
            let path = file()?;
            let info = conv.save(&path)?;
            eprintln!(
                "(saved {} cells, {} live, {:.1} MiB to {})",
                info.cells,
                info.live,
                info.bytes as f64 / 1048576.0,
                path.display()
            );
            Ok(Cmd::Done)
        }
        "load" => {
            let path = file()?;
            let info = conv.load(&path)?;
            eprintln!(
                "(loaded {} cells, {} live, turn {}, {} messages from {})",
                info.cells,
                info.live,
                conv.turn(),
                conv.messages().len(),
                path.display()
            );
            Ok(Cmd::Done)
        }
        "set" => {
            set(chat, rest)?;
            Ok(Cmd::Done)
        }
        "show" => {
            show(chat, rest)?;
            Ok(Cmd::Done)
        }
        _ => Err(invalid(format!("unknown command /{name}; /help lists them"))),
    }
}

/// `/forget N`, `/forget KIND` (a kind's name or one of its words: `reminder`,
/// `read`, `thinking`, `log`, ...), `/forget turn N` or `/forget turns A-B`.
fn forget(conv: &mut Conversation, arg: &str) -> Result<Vec<DecacheEvent>, Error> {
    if arg.is_empty() {
        return Err(invalid("/forget needs a segment number, a kind or a turn range (see /context)"));
    }
    if let Ok(n) = arg.parse::<u64>() {
        return conv.forget_segment(n, Reason::Manual);
    }
    let ev = if let Some(range) = arg.strip_prefix("turns ").or_else(|| arg.strip_prefix("turn ")) {
        let (a, b) = range.trim().split_once('-').unwrap_or((range.trim(), range.trim()));
        let turn = |t: &str| t.trim().parse::<u32>().map_err(|_| invalid(format!("'{t}' is not a turn number")));
        let (a, b) = (turn(a)?, turn(b)?);
        if a > b {
            return Err(invalid(format!("empty turn range {a}-{b}")));
        }
        conv.forget_where(|s| (a..=b).contains(&s.turn), Reason::Manual)?
    } else {
        let want = arg.to_lowercase();
        let known = |s: &Segment| {
            let name = s.kind.name();
            name == want
                || name.replace(' ', "-") == want
                || name.split(' ').any(|w| w == want || format!("{w}s") == want)
        };
        if !conv.segments.iter().any(known) {
            return Err(invalid(format!(
                "'{arg}' is neither a segment number, a kind in this context, nor `turns A-B` (see /context)"
            )));
        }
        conv.forget_where(known, Reason::Manual)?
    };
    if ev.is_empty() {
        eprintln!("{}", "(nothing left to forget there: it is gone, pinned or the system prompt)".dim());
    }
    Ok(ev)
}

/// `/set NAME VALUE` (llama.cpp's flag names or Ollama's parameter names;
/// `/set parameter NAME VALUE` works too).
fn set(chat: &mut Chat, arg: &str) -> Result<(), Error> {
    let arg = arg.strip_prefix("parameter ").unwrap_or(arg).trim();
    let Some((name, value)) = arg.split_once(char::is_whitespace) else {
        return Err(invalid("/set needs a name and a value, e.g. /set temp 0.7 (see /show parameters)"));
    };
    let value = value.trim();
    let num = |v: &str| {
        v.trim_end_matches('%').parse::<f64>().map_err(|_| invalid(format!("/set {name}: '{v}' is not a number")))
    };
    let mut sampling = chat.opts.sampling.clone();
    let mut policy = chat.conv.policy.clone();
    match name.trim_start_matches('-').replace('_', "-").as_str() {
        "temp" | "temperature" => sampling.temperature = num(value)? as f32,
        "top-k" => sampling.top_k = num(value)? as i32,
        "top-p" => sampling.top_p = num(value)? as f32,
        "min-p" => sampling.min_p = num(value)? as f32,
        "repeat-penalty" => sampling.repeat_penalty = num(value)? as f32,
        "repeat-last-n" => sampling.repeat_last_n = num(value)? as i32,
        "presence-penalty" => sampling.presence_penalty = num(value)? as f32,
        "frequency-penalty" => sampling.frequency_penalty = num(value)? as f32,
        "seed" => {
            let s = num(value)?;
            sampling.seed = if s < 0.0 { decache::sampling::RANDOM_SEED } else { s as u64 };
        }
        "n-predict" | "num-predict" | "n" => {
            let n = num(value)?;
            if n < 1.0 {
                return Err(invalid(format!("/set {name}: a reply needs at least one token, not {value}")));
            }
            chat.opts.n_predict = Some(n as usize);
        }
        "decache-at" => policy.at = num(value)? as f32 / 100.0,
        "decache-to" => policy.to = num(value)? as f32 / 100.0,
        "keep-turns" => policy.keep_last_turns = num(value)? as u32,
        "positions" => {
            chat.conv.positions = value.parse::<PositionPolicy>().map_err(invalid)?;
        }
        _ => return Err(invalid(format!("/set: unknown setting '{name}' (see /show parameters)"))),
    }
    sampling.validate()?;
    if !(0.0 < policy.to && policy.to < policy.at && policy.at <= 1.0) {
        return Err(invalid(format!(
            "/set {name}: decache-to {:.0}% must be below decache-at {:.0}%, both in (0, 100]",
            policy.to * 100.0,
            policy.at * 100.0
        )));
    }
    chat.opts.sampling = sampling;
    chat.conv.policy = policy;
    eprintln!("(set {name} = {value})");
    Ok(())
}

/// `/show` (everything short), `/show info`, `/show parameters`, `/show template`, `/show system`.
fn show(chat: &Chat, what: &str) -> Result<(), Error> {
    let conv = &chat.conv;
    let m = conv.session.model();
    let info = || {
        outln!("model:        {} ({})", m.info.name.as_deref().unwrap_or("unnamed"), m.info.path.display());
        outln!(
            "architecture: {}, {:.1}M parameters, {}",
            m.arch.name(),
            m.info.n_params as f64 / 1e6,
            m.info.file_type.as_deref().unwrap_or("?")
        );
        let cfg = conv.session.config();
        outln!(
            "context:      {} cells ({} trained), cache {}/{}, {} threads, {}",
            conv.session.n_ctx(),
            m.hparams.n_ctx_train,
            cfg.type_k.name(),
            cfg.type_v.name(),
            cfg.n_threads,
            conv.session.backend_name()
        );
    };
    let params = || {
        let s = &chat.opts.sampling;
        let seed = if s.seed == decache::sampling::RANDOM_SEED { "random".to_string() } else { s.seed.to_string() };
        outln!(
            "temp {}  top-k {}  top-p {}  min-p {}  repeat-penalty {}  repeat-last-n {}",
            s.temperature,
            s.top_k,
            s.top_p,
            s.min_p,
            s.repeat_penalty,
            s.repeat_last_n
        );
        outln!(
            "presence-penalty {}  frequency-penalty {}  seed {seed}  n-predict {}",
            s.presence_penalty,
            s.frequency_penalty,
            chat.opts.n_predict.unwrap_or(0)
        );
        let p = &conv.policy;
        outln!(
            "decache-at {:.0}%  decache-to {:.0}%  keep-turns {}  positions {:?}",
            p.at * 100.0,
            p.to * 100.0,
            p.keep_last_turns,
            conv.positions
        );
    };
    match what {
        "" => {
            info();
            params();
        }
        "info" => info(),
        "parameters" | "params" => params(),
        "template" => outln!("{}", conv.template().source()),
        "system" => {
            let sys = conv.messages().iter().find(|m| m.role == "system").map(|m| m.content.as_str());
            outln!("{}", sys.unwrap_or("(no system prompt)"));
        }
        _ => return Err(invalid(format!("/show {what}: one of info, parameters, template, system"))),
    }
    Ok(())
}

/// A one-line notice per deletion.
pub fn notice(events: &[DecacheEvent]) {
    for e in events {
        eprintln!(
            "{}",
            format!("[forgot {} tokens of segment {} ({}): {}]", e.cells, e.segment, e.kind, e.reason.name()).dim()
        );
    }
}

pub fn print_stats(conv: &Conversation) {
    let s = &conv.stats;
    outln!("tokens seen:      {}", s.tokens_seen);
    outln!("live cells:       {} of {}", conv.session.n_live(), conv.session.n_ctx());
    if let Some((layers, cells)) = conv.session.swa_pool() {
        outln!(
            "sliding window:   {layers} layers keep {cells} cells of their own (KV cache {:.1} MiB in all)",
            conv.session.kv_bytes() as f64 / 1048576.0
        );
    }
    outln!(
        "decached:         {} tokens in {} events ({:.2} ms)",
        s.tokens_decached,
        s.events,
        s.decache_time.as_secs_f64() * 1e3
    );
    for (r, n) in &s.by_reason {
        outln!("  {:<32} {n}", r.name());
    }
    outln!("defrags:          {}; gaps closed: {}", s.defrags, s.gaps_closed);
    outln!(
        "time saved:       ~{:.1} s (re-prefilling the {} tokens kept over {} rounds, at this session's prefill speed)",
        s.estimated_time_saved().as_secs_f64(),
        s.kept_tokens,
        s.rounds
    );
}

/// The context map: one row per segment, live vs forgotten, and a usage bar.
pub fn print_context(conv: &Conversation) {
    let (live, n) = (conv.session.n_live(), conv.session.n_ctx());
    let width = 50;
    let filled = (live * width).div_ceil(n.max(1)).min(width);
    outln!(
        "[{}{}] {live}/{n} cells live, next position {}",
        "#".repeat(filled).green(),
        ".".repeat(width - filled),
        conv.session.next_pos()
    );
    for s in conv.segments.iter() {
        let state = if s.fully_removed() {
            "forgotten".to_string().dark_grey()
        } else if s.live() < s.len() {
            format!("{}/{} live", s.live(), s.len()).yellow()
        } else {
            format!("{} live", s.len()).green()
        };
        let pin = if s.pinned { " pinned" } else { "" };
        let kind = format!("{:<16}", s.kind.name());
        let kind = match s.kind {
            SegmentKind::System => kind.magenta(),
            SegmentKind::User | SegmentKind::PastedLog => kind.cyan(),
            SegmentKind::Assistant | SegmentKind::Thinking => kind.blue(),
            _ => kind.yellow(),
        };
        outln!("{:>4}  turn {:<3} {kind} pos {:>6}..{:<6} {state}{pin}", s.id, s.turn, s.p0, s.p1);
    }
}

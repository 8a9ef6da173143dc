//! `decache agent [DIR]`: the coding agent in a terminal. Model text
//! streams (tool-call blocks are shown as compact call lines instead),
//! writes and commands ask first, a status line after each step shows the
//! live cells and the last decache event, Ctrl-C interrupts the model or a
//! running command and returns to the prompt. `-p`/`-f` run one request
//! non-interactively.
use super::args::{ContextArgs, DecacheArgs, ModelArgs, SamplingArgs};
use super::chat_cmd::{print_context, print_stats};
use super::load::load_model;
use super::reply_view::ReplyView;
use super::run::{chat_template, install_ctrl_c};
use clap::Args;
use crossterm::style::Stylize;
use decache::agent::hooks::AgentFile;
use decache::agent::log::{self as session_log, SessionLog};
use decache::agent::script::Scripted;
use decache::agent::tools::{Limits, Toolbox};
use decache::agent::workspace::Workspace;
use decache::agent::{Agent, AgentConfig, AgentEvent, AgentUi, ModelResponder, Permit, Responder, TurnEnd};
use decache::sampling::SamplingParams;
use decache::session::conversation::Conversation;
use decache::session::{GenerateOptions, Session};
use decache::Error;
use rustyline::error::ReadlineError;
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The project folder to work in (default: the current one).
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Run this request to completion and exit (no prompt).
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Run the request in this file to completion and exit.
    #[arg(short = 'f', long = "file", conflicts_with = "prompt")]
    pub file: Option<PathBuf>,
    /// Run writes and commands without asking.
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Refuse writes and commands.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Model replies per request at most.
    #[arg(long = "max-steps", default_value_t = 24)]
    pub max_steps: usize,
    /// Tokens per reply at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    pub n_predict: usize,
    /// Seconds a command may run unless the model asks for another limit (at most 600).
    #[arg(long = "command-timeout", default_value_t = 60)]
    pub command_timeout: u64,
    /// Continue a logged session: the newest in DIR/.decache/sessions, or this log file.
    #[arg(long = "resume", num_args = 0..=1, default_missing_value = "last")]
    pub resume: Option<String>,
    /// Do not write a session log.
    #[arg(long = "no-log")]
    pub no_log: bool,
    /// Record the session's every step into this transcript (JSONL; see `decache replay`).
    #[arg(long = "transcript")]
    pub transcript: Option<PathBuf>,
    /// Take the replies from this file (separated by `---` lines) instead of
    /// sampling them: a scripted model for tests and demos.
    #[arg(long = "script")]
    pub script: Option<PathBuf>,
    /// Use this Jinja chat template instead of the model's.
    #[arg(long = "chat-template-file")]
    pub chat_template_file: Option<PathBuf>,
    #[command(flatten)]
    pub decache: DecacheArgs,
    #[command(flatten)]
    pub ctx: ContextArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// The terminal side of the agent.
struct TermUi<'a> {
    /// The line editor (interactive), or none: questions read stdin lines.
    editor: Option<&'a mut rustyline::DefaultEditor>,
    /// The reply as it streams (calls held back, a harmony model's analysis dimmed).
    view: ReplyView,
    harmony: bool,
    /// The newest decache event, for the status line.
    last_decache: Option<String>,
    /// Tokens forgotten since the last status line.
    forgotten: usize,
}

impl<'a> TermUi<'a> {
    fn new(editor: Option<&'a mut rustyline::DefaultEditor>, harmony: bool) -> TermUi<'a> {
        TermUi { editor, view: ReplyView::new(harmony, true), harmony, last_decache: None, forgotten: 0 }
    }

    fn ask(&mut self, prompt: &str) -> Option<String> {
        match &mut self.editor {
            Some(rl) => match rl.readline(prompt) {
                Ok(l) => Some(l),
                Err(ReadlineError::Interrupted | ReadlineError::Eof) => None,
                Err(_) => None,
            },
            None => {
                eprint!("{prompt}");
                let mut l = String::new();
                match std::io::stdin().read_line(&mut l) {
                    Ok(0) | Err(_) => None,
                    Ok(_) => Some(l),
                }
            }
        }
    }
}

/// `name(key=value, ...)` with long values cut.
fn show_call(name: &str, args: &Value) -> String {
    let parts: Vec<String> = match args.as_object() {
        Some(o) => o
            .iter()
            .map(|(k, v)| {
                let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                let v = v.replace('\n', "⏎");
                let cut: String = v.chars().take(60).collect();
                format!("{k}={cut}{}", if v.chars().count() > 60 { "…" } else { "" })
            })
            .collect(),
        None => vec![args.to_string()],
    };
    format!("{name}({})", parts.join(", "))
}

impl AgentUi for TermUi<'_> {
    fn event(&mut self, ev: AgentEvent<'_>) {
        match ev {
            AgentEvent::Text(t) => {
                let _ = self.view.push(t);
            }
            AgentEvent::ReplyDone => {
                let rest = self.view.finish().unwrap_or_default();
                if self.view.shown || !rest.trim().is_empty() {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{}", rest.trim_end());
                }
                self.view = ReplyView::new(self.harmony, true);
            }
            AgentEvent::Call { name, arguments } => eprintln!("{} {}", "●".yellow(), show_call(name, arguments).bold()),
            AgentEvent::Result { ok, summary, text, .. } => {
                let head = if ok { format!("  ⎿ {summary}").dim() } else { format!("  ⎿ {summary}").red() };
                eprintln!("{head}");
                if ok {
                    for l in text.lines().skip(1).take(3) {
                        let l: String = l.chars().take(120).collect();
                        eprintln!("{}", format!("    {l}").dim());
                    }
                }
            }
            AgentEvent::Hook { applied, summary } => {
                eprintln!("{}", format!("  ↳ hook {summary}{}", if applied { "" } else { " (did not apply)" }).dim())
            }
            AgentEvent::Decache(e) => {
                self.forgotten += e.cells;
                self.last_decache = Some(format!("{} tokens of {} ({})", e.cells, e.kind, e.reason.name()));
            }
            AgentEvent::Status { live, cells, turn } => {
                let last = self.last_decache.as_deref().unwrap_or("none yet");
                let new = if self.forgotten > 0 { format!(" · forgot {} now", self.forgotten) } else { String::new() };
                self.forgotten = 0;
                eprintln!(
                    "{}",
                    format!("── live {live}/{cells} tokens · step {turn} · last decache: {last}{new} ──").dark_grey()
                );
            }
            AgentEvent::Warning(w) => eprintln!("{}", format!("warning: {w}").yellow()),
        }
    }

    fn permit(&mut self, tool: &str, arguments: &Value) -> Permit {
        let q = format!("Allow {}? [y]es / [n]o / [a]lways for {tool}: ", show_call(tool, arguments));
        loop {
            match self.ask(&q).map(|a| a.trim().to_lowercase()) {
                Some(a) if a == "y" || a == "yes" => return Permit::Yes,
                Some(a) if a == "a" || a == "always" => return Permit::Always,
                Some(a) if a == "n" || a == "no" => return Permit::No,
                None => return Permit::No,
                Some(_) => eprintln!("{}", "(y, n or a)".dim()),
            }
        }
    }
}

const HELP: &str = "commands: /context  /stats  /todo  /help  /exit (Ctrl-C stops the model or a command)";

pub fn run(a: &AgentArgs) -> Result<(), Error> {
    let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let ws = Workspace::new(&dir).map_err(|e| Error::InvalidArgument(format!("project folder {e}")))?;
    let hooks = AgentFile::load(ws.root()).map_err(Error::InvalidArgument)?;
    let request = match (&a.prompt, &a.file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => Some(super::args::read_prompt_arg(f)?),
        (None, None) => None,
    };
    let resumed = match a.resume.as_deref() {
        None => None,
        Some("last") => {
            let p = session_log::latest(ws.root()).ok_or_else(|| {
                Error::InvalidArgument(format!("--resume: no session log in {}/.decache/sessions", ws.root().display()))
            })?;
            Some((session_log::read(&p).map_err(Error::InvalidArgument)?, p))
        }
        Some(f) => {
            let p = PathBuf::from(f);
            Some((session_log::read(&p).map_err(Error::InvalidArgument)?, p))
        }
    };
    let mut responder: Box<dyn Responder> = match &a.script {
        Some(f) => Box::new(Scripted::from_file(f)?),
        None => {
            let sampling = SamplingParams { tool_names: decache::agent::tools::names(), ..a.sampling.params() };
            sampling.validate()?;
            Box::new(ModelResponder {
                opts: GenerateOptions {
                    n_predict: Some(a.n_predict),
                    sampling,
                    spec: a.sampling.spec()?,
                    ..GenerateOptions::default()
                },
            })
        }
    };
    let policy = a.decache.policy()?;
    a.decache.positions()?; // checked before the model loads
    let cfg = a.ctx.session_config()?;
    let (model, _) = load_model(&a.model)?;
    let resolved = a.decache.resolve(&model)?;
    let (positions, refresh) = (resolved.positions, resolved.refresh);
    let template = chat_template(&model, a.chat_template_file.as_ref())?;
    let harmony = decache::harmony::is_harmony(template.source());
    super::load::warn_ctx(&model, cfg.n_ctx);
    let mut session = Session::new(model, cfg)?;
    let transcript = a
        .transcript
        .as_ref()
        .map(|p| super::transcript::attach(&mut session, p, "agent", &a.model, Some(&a.decache)))
        .transpose()?;
    let mut conv = Conversation::new(session, template, policy);
    conv.positions = positions;
    conv.refresh = refresh;
    let limits = Limits { command_timeout: Duration::from_secs(a.command_timeout.clamp(1, 600)), ..Limits::default() };
    let log = match (&resumed, a.no_log) {
        (_, true) => None,
        (Some((_, p)), false) => Some(SessionLog::append_to(p).map_err(Error::InvalidArgument)?),
        (None, false) => Some(SessionLog::create(ws.root()).map_err(Error::InvalidArgument)?),
    };
    let root = ws.root().to_path_buf();
    let tools = Toolbox::new(ws, limits, a.read_only);
    let agent_cfg = AgentConfig { max_steps: a.max_steps.max(1), yes: a.yes, harmony };
    let mut agent = Agent::new(conv, tools, hooks, agent_cfg, log)?;

    let mut rl = if request.is_none() {
        Some(
            rustyline::DefaultEditor::new()
                .map_err(|e| Error::System { what: "terminal".into(), source: std::io::Error::other(e) })?,
        )
    } else {
        None
    };
    // The editor's own SIGINT handling lives while it exists; ours goes in
    // after it (see `decache chat`).
    agent.cancel = install_ctrl_c(false);
    // Every child process of this program is a command: orphans a command
    // leaves behind (double forks) are reparented here and killed after it.
    decache::agent::sweep::adopt_orphans();
    let log_note = agent.log.as_ref().map(|l| format!("; log {}", l.path().display())).unwrap_or_default();
    let mode = if a.read_only {
        " read-only;"
    } else if a.yes {
        " writes and commands allowed;"
    } else {
        ""
    };
    eprintln!(
        "{}",
        format!(
            "decache agent: {} ({} cells;{mode} {} hooks{log_note})",
            root.display(),
            agent.conv.session.n_ctx(),
            agent.hooks.hooks.len()
        )
        .dim()
    );
    if let Some((r, p)) = &resumed {
        let mut ui = TermUi::new(None, harmony);
        agent.resume(r, &mut ui)?;
        let torn = if r.torn { " (its last line was cut short and skipped)" } else { "" };
        let n = r.messages.iter().filter(|m| m.kind != decache::context::segments::SegmentKind::System).count();
        eprintln!("{}", format!("resumed {n} messages from {}{torn}", p.display()).dim());
    }

    if let Some(req) = request {
        let mut ui = TermUi::new(None, harmony);
        let end = agent.turn(&req, responder.as_mut(), &mut ui)?;
        report_end(&end);
        if let Some(w) = &transcript {
            super::transcript::check(w);
        }
        return Ok(());
    }
    let Some(rl) = rl.as_mut() else { return Ok(()) };
    eprintln!("{}", HELP.dim());
    loop {
        let line = match rl.readline("> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                eprintln!("{}", "(Ctrl-D or /exit quits)".dim());
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Error::System { what: "terminal".into(), source: std::io::Error::other(e) }),
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let _ = rl.add_history_entry(text);
        match text {
            "/exit" | "/quit" => break,
            "/help" => eprintln!("{}", HELP.dim()),
            "/context" => print_context(&agent.conv),
            "/stats" => {
                print_stats(&agent.conv);
                let s = &agent.stats;
                outln!(
                    "agent:            {} steps, {} tool calls ({} errors), {} hooks",
                    s.steps,
                    s.tool_calls,
                    s.tool_errors,
                    s.hooks
                );
            }
            "/todo" => outln!("{}", agent.tools.todo_text().unwrap_or_else(|| "(the task list is empty)".into())),
            t if t.starts_with('/') => eprintln!("{}", format!("unknown command {t}; {HELP}").red()),
            _ => {
                let mut ui = TermUi::new(Some(&mut *rl), harmony);
                match agent.turn(text, responder.as_mut(), &mut ui) {
                    Ok(end) => report_end(&end),
                    Err(e) => eprintln!("{}", format!("error: {e}").red()),
                }
            }
        }
    }
    Ok(())
}

fn report_end(end: &TurnEnd) {
    match end {
        TurnEnd::Answered(_) => {}
        TurnEnd::Interrupted => eprintln!("{}", "(interrupted)".yellow()),
        TurnEnd::StepLimit => eprintln!("{}", "(stopped: the step limit was reached; say how to go on)".yellow()),
    }
}

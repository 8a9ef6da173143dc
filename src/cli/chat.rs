//! `decache chat`: an interactive chat that forgets stale context in place
//! when the cache nears its limit, with a map of the context (`/context`),
//! manual forgetting (`/forget`, `/pin`) and statistics (`/stats`).
use super::args::{ContextArgs, DecacheArgs, ModelArgs, SamplingArgs};
use super::chat_cmd::{command, notice, Chat, Cmd, HELP};
use super::load::load_model;
use super::reply_view::ReplyView;
use super::run::{chat_template, install_ctrl_c};
use clap::Args;
use crossterm::style::Stylize;
use decache::context::segments::SegmentKind;
use decache::session::conversation::Conversation;
use decache::session::{GenerateEvent, GenerateOptions, Session};
use rustyline::error::ReadlineError;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// Record the session's every step into this transcript (JSONL; see `decache replay`).
    #[arg(long = "transcript")]
    pub transcript: Option<PathBuf>,
    #[command(flatten)]
    pub decache: DecacheArgs,
    #[command(flatten)]
    pub ctx: ContextArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(a: &ChatArgs) -> Result<(), decache::Error> {
    a.decache.positions()?; // checked before the model loads
    let policy = a.decache.policy()?;
    let cfg = a.ctx.session_config()?;
    let params = a.sampling.params();
    params.validate()?;
    let (model, _) = load_model(&a.model)?;
    let resolved = a.decache.resolve(&model)?;
    let (positions, refresh) = (resolved.positions, resolved.refresh);
    let template = chat_template(&model, a.chat_template_file.as_ref())?;
    super::load::warn_ctx(&model, cfg.n_ctx);
    // One transcript across `/clear`: a new conversation's session records
    // into the same writer, starting with a `clear`.
    let writer: std::cell::RefCell<Option<std::sync::Arc<std::sync::Mutex<decache::transcript::TranscriptWriter>>>> =
        Default::default();
    let new_conversation = || -> Result<Conversation, decache::Error> {
        let mut session = Session::new(model.clone(), cfg.clone())?;
        if let Some(path) = &a.transcript {
            let mut w = writer.borrow_mut();
            match &*w {
                None => *w = Some(super::transcript::attach(&mut session, path, "chat", &a.model, Some(&a.decache))?),
                Some(w) => {
                    session.set_recorder(decache::transcript::TranscriptWriter::recorder(w.clone()));
                    session.clear();
                }
            }
        }
        let mut c = Conversation::new(session, template.clone(), policy.clone());
        c.positions = positions;
        c.refresh = refresh;
        if let Some(sys) = &a.system {
            c.push("system", sys, SegmentKind::System)?;
        }
        Ok(c)
    };
    let opts = GenerateOptions {
        n_predict: Some(a.n_predict),
        sampling: params,
        spec: a.sampling.spec()?,
        ..GenerateOptions::default()
    };
    let harmony = decache::harmony::is_harmony(template.source());
    let mut chat = Chat::new(new_conversation()?, opts);
    // The line editor installs a SIGINT handler of its own for its lifetime;
    // ours goes in after it, so that Ctrl-C during a reply (the terminal is
    // in cooked mode then) stops the reply. At the prompt the terminal is raw
    // and the editor sees Ctrl-C as a key.
    let mut rl = rustyline::DefaultEditor::new()
        .map_err(|e| decache::Error::System { what: "terminal".into(), source: std::io::Error::other(e) })?;
    let stop = install_ctrl_c(false);
    eprintln!("{}", format!("decache chat: {} cells; {HELP}", chat.conv.session.n_ctx()).dim());

    loop {
        let line = match read_message(&mut rl) {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => return Err(decache::Error::System { what: "terminal".into(), source: std::io::Error::other(e) }),
        };
        if let Some(w) = &*writer.borrow() {
            super::transcript::check(w);
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if let Some(cmd) = text.strip_prefix('/') {
            let _ = rl.add_history_entry(text);
            match command(cmd, &mut chat) {
                Ok(Cmd::Exit) => break,
                Ok(Cmd::Clear) => {
                    chat.reset(new_conversation()?);
                    eprintln!("{}", "(context cleared)".dim());
                }
                Ok(Cmd::Regen) => reply(&mut chat, &stop, harmony),
                Ok(Cmd::Events(ev)) => notice(&ev),
                Ok(Cmd::Done) => {}
                Err(e) => eprintln!("{}", format!("error: {e}").red()),
            }
            continue;
        }
        let _ = rl.add_history_entry(text);
        match chat.conv.push("user", text, SegmentKind::User) {
            Ok(ev) => notice(&ev),
            Err(e) => {
                eprintln!("{}", format!("error: {e}").red());
                continue;
            }
        }
        reply(&mut chat, &stop, harmony);
    }
    Ok(())
}

/// Stream the assistant's reply (a harmony model's analysis dimmed on
/// stderr); Ctrl-C (`stop`) cuts it short. Ends with a timings line.
fn reply(chat: &mut Chat, stop: &AtomicBool, harmony: bool) {
    stop.store(false, Ordering::SeqCst);
    let mut view = ReplyView::new(harmony, false);
    let res = chat.conv.reply(&chat.opts, &mut |ev| {
        if let GenerateEvent::Token { text, .. } = ev {
            if view.push(text).is_err() {
                return false;
            }
        }
        !stop.load(Ordering::SeqCst)
    });
    let _ = view.finish();
    let _ = writeln!(std::io::stdout());
    match res {
        Ok((gen, ev)) => {
            notice(&ev);
            let tps = if gen.gen_ms > 0.0 { gen.tokens.len() as f64 * 1e3 / gen.gen_ms } else { 0.0 };
            let pps = if gen.prompt_ms > 0.0 { gen.prompt_tokens as f64 * 1e3 / gen.prompt_ms } else { 0.0 };
            let cut = if stop.load(Ordering::SeqCst) { " (interrupted)" } else { "" };
            let c = &chat.conv.session;
            eprintln!(
                "{}",
                format!(
                    "[{} tokens, {tps:.1} t/s, prompt {pps:.0} t/s{cut}; {}/{} cells live]",
                    gen.tokens.len(),
                    c.n_live(),
                    c.n_ctx()
                )
                .dim()
            );
        }
        Err(e) => eprintln!("{}", format!("error: {e}").red()),
    }
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

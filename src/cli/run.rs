//! `decache run`: one-shot generation with llama.cpp's flags; text streams
//! to stdout, load time and speeds go to stderr. Ctrl-C stops generation
//! (the timings are still printed); a second Ctrl-C exits at once.
use super::args::{read_prompt_file, ContextArgs, ModelArgs, SamplingArgs, TextArgs};
use super::load::load_model;
use super::reply_view::ReplyView;
use clap::Args;
use decache::session::{GenerateEvent, GenerateOptions, Session, StopReason};
use decache::tokenizer::{ChatMessage, ChatTemplate};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub text: TextArgs,
    /// System prompt (chat mode; also -sys).
    #[arg(long = "system-prompt")]
    pub system: Option<String>,
    /// Tokens to generate (-1 = until end of generation or a full context).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Wrap the prompt in the model's chat template (default with -p when the model has one).
    #[arg(long = "chat", conflicts_with = "raw")]
    pub chat: bool,
    /// Use the prompt as is, without a chat template.
    #[arg(long = "raw")]
    pub raw: bool,
    /// Use this Jinja chat template instead of the model's.
    #[arg(long = "chat-template-file")]
    pub chat_template_file: Option<PathBuf>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
    /// Print special tokens as text.
    #[arg(long = "special")]
    pub special: bool,
    /// Print the prompt's tokens to stderr before generating.
    #[arg(long = "verbose-prompt")]
    pub verbose_prompt: bool,
    /// Record the session's every step into this transcript (JSONL; see `decache replay`).
    #[arg(long = "transcript")]
    pub transcript: Option<PathBuf>,
    #[command(flatten)]
    pub ctx: ContextArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// The chat template to use: the override file, the model's, or the
/// family's own format (ChatML unless the architecture has another), with
/// the model's BOS and EOS pieces.
pub fn chat_template(model: &decache::model::Model, file: Option<&PathBuf>) -> Result<ChatTemplate, decache::Error> {
    if let Some(f) = file {
        let src = read_prompt_file(f)?;
        return Ok(ChatTemplate::new(&src)?.with_vocab(&model.tokenizer));
    }
    let t = match model.tokenizer.chat_template() {
        Some(src) => ChatTemplate::new(src)?,
        None => ChatTemplate::default_for(model.arch.name()),
    };
    Ok(t.with_vocab(&model.tokenizer))
}

pub fn run(a: &RunArgs) -> Result<(), decache::Error> {
    let text = a.text.text()?;
    let cfg = a.ctx.session_config()?;
    let params = a.sampling.params();
    params.validate()?;
    let (model, load_ms) = load_model(&a.model)?;
    let tok = &model.tokenizer;
    let use_chat = !a.raw
        && (a.chat || a.chat_template_file.is_some() || (a.text.prompt.is_some() && tok.chat_template().is_some()));
    // A harmony model's (gpt-oss) reply is split into its channels unless
    // `--special` asks for the raw text.
    let (prompt_text, harmony) = if use_chat {
        let tmpl = chat_template(&model, a.chat_template_file.as_ref())?;
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(ChatMessage::new("system", s.clone()));
        }
        msgs.push(ChatMessage::new("user", text));
        (tmpl.render(&msgs, true)?, !a.special && decache::harmony::is_harmony(tmpl.source()))
    } else {
        (text, false)
    };
    let ids = tok.encode(&prompt_text, true, use_chat)?;
    if a.verbose_prompt {
        eprintln!("prompt: {} tokens", ids.len());
        for &id in &ids {
            eprintln!("{id:>8} -> {:?}", String::from_utf8_lossy(&tok.token_to_piece(id, true)));
        }
    }
    super::load::warn_ctx(&model, cfg.n_ctx);
    let mut session = Session::new(model.clone(), cfg)?;
    if ids.len() >= session.n_ctx() {
        return Err(decache::Error::PromptTooLong { tokens: ids.len(), n_ctx: session.n_ctx() });
    }

    let transcript =
        a.transcript.as_ref().map(|p| super::transcript::attach(&mut session, p, "run", &a.model, None)).transpose()?;
    let stop = install_ctrl_c(true);
    let opts = GenerateOptions {
        n_predict: (a.n_predict >= 0).then_some(a.n_predict as usize),
        sampling: params,
        ignore_eos: a.ignore_eos,
        special: a.special,
        forced: None,
        spec: a.sampling.spec()?,
    };
    let mut view = ReplyView::new(harmony, false);
    let gen = session.generate(&ids, &opts, &mut |ev| {
        if let GenerateEvent::Token { text, .. } = ev {
            // A closed stdout (e.g. `| head`) ends the generation.
            if view.push(text).is_err() {
                return false;
            }
        }
        !stop.load(Ordering::SeqCst)
    })?;
    let _ = view.finish();
    let _ = writeln!(std::io::stdout());

    let why = match gen.stop {
        StopReason::EndOfGeneration => "end of generation",
        StopReason::Length => "token limit (-n)",
        StopReason::ContextFull => "context full",
        StopReason::Cancelled => "interrupted",
    };
    let rate = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
    eprintln!();
    eprintln!("decache: model       = {} ({})", model.info.path.display(), session.backend_name());
    eprintln!("decache: load time   = {load_ms:10.2} ms");
    eprintln!(
        "decache: prompt eval = {:10.2} ms / {:5} tokens ({:8.2} tokens per second)",
        gen.prompt_ms,
        gen.prompt_tokens,
        rate(gen.prompt_tokens, gen.prompt_ms)
    );
    eprintln!(
        "decache: generation  = {:10.2} ms / {:5} tokens ({:8.2} tokens per second)",
        gen.gen_ms,
        gen.tokens.len(),
        rate(gen.tokens.len(), gen.gen_ms)
    );
    let sp = gen.spec;
    if sp.drafts > 0 {
        eprintln!(
            "decache: speculation = {:5} drafts, {:5} of {:5} drafted tokens accepted ({:.1}%)",
            sp.drafts,
            sp.accepted,
            sp.drafted,
            100.0 * sp.accepted as f64 / sp.drafted as f64
        );
    }
    eprintln!("decache: stopped by {why}; {} of {} cells used", session.n_live(), session.n_ctx());
    if let Some(w) = &transcript {
        super::transcript::check(w);
    }
    Ok(())
}

/// Ctrl-C sets the returned flag (the generation stops). With
/// `second_exits`, a second Ctrl-C ends the program (one-shot `run`); the
/// chat clears the flag itself before each reply.
pub fn install_ctrl_c(second_exits: bool) -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let (f, h) = (flag.clone(), hits.clone());
    let installed = ctrlc::set_handler(move || {
        if second_exits && h.fetch_add(1, Ordering::SeqCst) >= 1 {
            std::process::exit(130);
        }
        f.store(true, Ordering::SeqCst);
    });
    if let Err(e) = installed {
        eprintln!("warning: Ctrl-C will not stop generation: {e}");
    }
    flag
}

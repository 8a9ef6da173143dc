//! `--transcript FILE` (on `run`, `chat` and `agent`) and `decache replay`.
use super::args::{DecacheArgs, ModelArgs};
use clap::Args;
use decache::model::{LoadOptions, Model};
use decache::session::{Session, SessionConfig};
use decache::transcript::replay::{agreement, replay};
use decache::transcript::TranscriptWriter;
use decache::Error;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Record everything `session` does from now on into a new transcript at
/// `path`, starting with the decache settings of a conversation (a note:
/// a replay does not need them, a reader does).
pub fn attach(
    session: &mut Session,
    path: &Path,
    command: &str,
    model: &ModelArgs,
    decache: Option<&DecacheArgs>,
) -> Result<Arc<Mutex<TranscriptWriter>>, Error> {
    let w = TranscriptWriter::attach(session, path, command, model.load_options().extra_buffers)
        .map_err(Error::InvalidArgument)?;
    if let Some(d) = decache {
        session.note(&serde_json::json!({"note": "settings", "decache_at": d.decache_at, "decache_to": d.decache_to, "positions": d.positions}));
    }
    Ok(w)
}

/// Warn once if writing the transcript failed (the session went on).
pub fn check(w: &Arc<Mutex<TranscriptWriter>>) {
    if let Some(e) = w.lock().unwrap_or_else(|e| e.into_inner()).error() {
        eprintln!("warning: the transcript could not be written completely: {e}");
    }
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The transcript (JSONL) to replay.
    pub transcript: PathBuf,
    /// Replay on this model instead of the transcript's (then tokens may differ).
    #[arg(short = 'm', long = "model")]
    pub model: Option<String>,
    /// Threads (default: the transcript's; another count may change the numbers).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Feed the recorded tokens back and report how often the model picks
    /// them, instead of stopping at the first difference (the default on
    /// another model).
    #[arg(long)]
    pub agreement: bool,
}

pub fn run(a: &ReplayArgs) -> Result<(), Error> {
    let t = decache::transcript::read(&a.transcript).map_err(Error::InvalidArgument)?;
    if t.torn {
        eprintln!("note: the transcript's last line was cut short (the writer stopped mid-line); it is left out");
    }
    let h = &t.header;
    let path = match &a.model {
        Some(m) => decache::pull::resolve_model(Some(m), &mut |_| {})?,
        None => recorded_model(&h.model)?,
    };
    let model = Arc::new(Model::load(&path, &LoadOptions { extra_buffers: h.repack, ..LoadOptions::default() })?);
    let exact = model.info.fingerprint == h.fingerprint && a.threads.is_none_or(|n| n == h.n_threads);
    if model.info.fingerprint != h.fingerprint {
        eprintln!("note: {} is not the transcript's model ({}); reporting agreement", path.display(), h.model);
    }
    let ty = |s: &str| {
        decache::ggml::GgmlType::from_name(s)
            .ok_or_else(|| Error::InvalidArgument(format!("transcript header: unknown cache type {s}")))
    };
    let cfg = SessionConfig {
        n_ctx: h.n_ctx,
        n_batch: h.n_batch,
        n_ubatch: h.n_ubatch,
        n_threads: a.threads.unwrap_or(h.n_threads).max(1),
        type_k: ty(&h.type_k)?,
        type_v: ty(&h.type_v)?,
        flash_attn: h.flash_attn,
        ggml_attention: h.ggml_attention,
        ggml_matmul: false,
        swa_full: h.swa_full,
        n_seq: 1,
    };
    let mut session = Session::new(model.clone(), cfg)?;
    if a.agreement || model.info.fingerprint != h.fingerprint {
        let r = agreement(&t, &mut session)?;
        outln!(
            "replayed {} ops with the recorded tokens fed back: {} generations, {} tokens; agreement {:.1}% sampled ({} of {}), {:.1}% top-1",
            r.ops, r.generations, r.tokens, 100.0 * r.sampled_rate(), r.sampled_same, r.tokens, 100.0 * r.top1_rate()
        );
        return Ok(());
    }
    let r = replay(&t, &mut session)?;
    let tok = &model.tokenizer;
    let piece = |id: Option<u32>| {
        id.map_or("(none)".to_string(), |i| format!("{i} {:?}", String::from_utf8_lossy(&tok.token_to_piece(i, true))))
    };
    match &r.divergence {
        None => {
            let how = if exact { "bit-exact" } else { "identical" };
            outln!("replayed {} ops: {} generations, {} tokens, all {how}", r.ops, r.generations, r.tokens_checked);
            Ok(())
        }
        Some(d) => {
            let ctx: String = d
                .before
                .iter()
                .rev()
                .take(12)
                .rev()
                .map(|&i| String::from_utf8_lossy(&tok.token_to_piece(i, true)).into_owned())
                .collect();
            Err(Error::Diverged(format!(
                "the replay diverged at transcript line {}, token {} of that generation: expected {}, got {} (after {:?}); {} tokens matched before",
                d.line,
                d.index,
                piece(d.expected),
                piece(d.got),
                ctx,
                r.tokens_checked
            )))
        }
    }
}

/// The transcript's model: its recorded path, or a file of that name in
/// the model cache (a transcript made on another machine).
fn recorded_model(recorded: &str) -> Result<PathBuf, Error> {
    let p = PathBuf::from(recorded);
    if p.exists() {
        return Ok(p);
    }
    let cached = p.file_name().map(|n| decache::pull::cache_dir().join(n));
    match cached {
        Some(c) if c.exists() => Ok(c),
        _ => Err(Error::InvalidArgument(format!(
            "the transcript's model {recorded} is not here, nor in {}; give it with -m",
            decache::pull::cache_dir().display()
        ))),
    }
}

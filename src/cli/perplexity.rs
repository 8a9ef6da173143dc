//! `decache perplexity -f FILE -c N`, printing llama.cpp's lines.
use super::args::{read_prompt_arg, ContextArgs, ModelArgs};
use super::load::load_model;
use clap::Args;
use decache::session::{perplexity::perplexity, Session};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Score at most this many chunks (-1 = all).
    #[arg(long = "chunks", default_value_t = -1, allow_negative_numbers = true)]
    pub chunks: i64,
    #[command(flatten)]
    pub ctx: ContextArgs,
}

pub fn run(a: &PerplexityArgs) -> Result<(), decache::Error> {
    let text = read_prompt_arg(&a.file)?;
    let mut cfg = a.ctx.session_config()?;
    if cfg.n_ctx == 0 {
        cfg.n_ctx = 512;
    }
    let n_ctx = cfg.n_ctx;
    cfg.n_batch = cfg.n_batch.max(n_ctx);
    let (model, _) = load_model(&a.model)?;
    let tok = &model.tokenizer;
    let mut ids = tok.encode(&text, true, false)?;
    if a.chunks >= 0 {
        ids.truncate(a.chunks as usize * n_ctx);
    }
    let bos = if tok.add_bos() { tok.bos() } else { None };
    super::load::warn_ctx(&model, cfg.n_ctx);
    let mut session = Session::new(model.clone(), cfg)?;
    let n_vocab = model.hparams.n_vocab as usize;
    eprintln!("perplexity: tokenizing the input: {} tokens, {} chunks of {n_ctx}", ids.len(), ids.len() / n_ctx);
    let t0 = std::time::Instant::now();
    let report = perplexity(
        &ids,
        n_ctx,
        n_vocab,
        bos,
        &mut |chunk| {
            session.clear();
            session.eval(chunk, true)
        },
        &mut |i, _, ppl| {
            out!("[{i}]{ppl:.4},");
        },
    )?;
    outln!();
    outln!("Final estimate: PPL = {:.4} +/- {:.5}", report.ppl, report.err);
    eprintln!("perplexity: {} tokens scored in {:.2} s", report.tokens_scored, t0.elapsed().as_secs_f64());
    Ok(())
}

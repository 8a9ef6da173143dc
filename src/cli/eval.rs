//! `decache eval`: annotated conversations under each strategy, compared.
use super::args::ModelArgs;
use super::load::load_model;
use super::run::chat_template;
use clap::Args;
use decache::eval::report::{overall, ReportMeta};
use decache::eval::set::EvalSet;
use decache::eval::{evaluate, EvalOptions, EvalProgress, Strategy};
use decache::session::SessionConfig;
use decache::Error;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Annotated eval sets (TOML, see docs/eval.md), or request logs (a folder
    /// written by `decache serve --record-requests`); default: every set in prompts/eval/.
    pub sets: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Strategies to compare, comma-separated; a refresh strategy may name
    /// its count (`shift+refresh:64`). Default: full, recompute, keep, shift,
    /// keep+refresh, shift+refresh, compaction, window; with --calibrate:
    /// full, recompute, keep, shift and both refreshes at 16, 64 and 128.
    #[arg(long, value_delimiter = ',')]
    pub strategies: Option<Vec<Strategy>>,
    /// Choose this model's position policy and refresh from the results (the
    /// best answers relative to a recompute, refreshes costing at most 10% of
    /// its tokens) and write it where `--positions auto` finds it (by the
    /// model file's fingerprint, under ~/.cache/decache/calibration or
    /// $DECACHE_CALIBRATION_DIR).
    #[arg(long)]
    pub calibrate: bool,
    /// With --calibrate: also write the calibration to this file.
    #[arg(long = "calibration-file", value_name = "FILE", requires = "calibrate")]
    pub calibration_file: Option<PathBuf>,
    /// CPU threads.
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Attention sinks the sliding window keeps.
    #[arg(long, default_value_t = 4)]
    pub sinks: usize,
    /// Longest summary compaction writes, in tokens.
    #[arg(long = "summary-tokens", default_value_t = 128)]
    pub summary_tokens: usize,
    /// Tokens keep+refresh and shift+refresh re-evaluate after each gap
    /// (`auto`: as long as their values still change).
    #[arg(long, default_value = "16")]
    pub refresh: decache::session::Reach,
    /// Write a markdown report with SVG charts into this folder.
    #[arg(long = "report", value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Write every figure, per turn, as JSON.
    #[arg(long = "json", value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Use this chat template (a Jinja file) instead of the model's.
    #[arg(long = "chat-template-file")]
    pub chat_template_file: Option<PathBuf>,
}

const DEFAULT_STRATEGIES: &str = "full,recompute,keep,shift,keep+refresh,shift+refresh,compaction,window";
const CALIBRATE_STRATEGIES: &str =
    "full,recompute,keep,shift,keep+refresh:16,shift+refresh:16,keep+refresh:64,shift+refresh:64,keep+refresh:128,shift+refresh:128";

fn default_sets() -> Result<Vec<PathBuf>, Error> {
    let dir = PathBuf::from("prompts/eval");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e} (give the eval sets as arguments)", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    Ok(v)
}

pub fn run(a: &EvalArgs) -> Result<(), Error> {
    let paths = if a.sets.is_empty() { default_sets()? } else { a.sets.clone() };
    if paths.is_empty() {
        return Err(Error::InvalidArgument("no eval sets given and none in prompts/eval/".into()));
    }
    let default = if a.calibrate { CALIBRATE_STRATEGIES } else { DEFAULT_STRATEGIES };
    let strategies: Vec<Strategy> = match &a.strategies {
        Some(v) => v.clone(),
        None => default.split(',').map(|s| s.parse().map_err(Error::InvalidArgument)).collect::<Result<_, _>>()?,
    };
    if strategies.is_empty() {
        return Err(Error::InvalidArgument("--strategies names none".into()));
    }
    if a.calibrate && !strategies.contains(&Strategy::Recompute) {
        return Err(Error::InvalidArgument("--calibrate measures against recompute: add it to --strategies".into()));
    }
    // Every set is checked before the model loads.
    // (A folder is a request log: `decache serve --record-requests DIR`.)
    let sets = paths
        .iter()
        .map(|p| {
            if p.is_dir() { decache::eval::requests::set_from_requests(p) } else { EvalSet::load(p) }
                .map_err(Error::InvalidArgument)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (model, _) = load_model(&a.model)?;
    let template = chat_template(&model, a.chat_template_file.as_ref())?;
    let threads = a.threads.unwrap_or_else(decache::session::default_threads).max(1);
    let opts = EvalOptions {
        strategies,
        // Sliding-window layers keep every cell (llama.cpp's --swa-full): the
        // strategies that close gaps bring old positions back into the
        // window, and the eval measures quality, not memory.
        session: SessionConfig { n_threads: threads, swa_full: true, ..SessionConfig::default() },
        sinks: a.sinks,
        refresh: a.refresh,
        summary_tokens: a.summary_tokens.max(1),
    };
    let tty = std::io::stderr().is_terminal();
    let mut results = Vec::new();
    for set in &sets {
        let r = evaluate(&model, &template, set, &opts, &mut |p| match p {
            EvalProgress::Turn { strategy, turn, of, result } if tty => {
                eprint!(
                    "\r\x1b[2K{}: turn {turn}/{of} {} ({} tokens, {:.0} ms)",
                    set.name,
                    strategy.name(),
                    result.prefilled,
                    result.ms
                );
            }
            _ => {}
        })?;
        if tty {
            eprint!("\r\x1b[2K");
        }
        outln!("{} — {} turns, {} tokens, annotated budget {} cells", r.name, r.turns, r.total_tokens, r.budget);
        for (s, why) in &r.skipped {
            outln!("  {s:<16} skipped: {why}");
        }
        outln!(
            "  {:<16} {:>10} {:>8} {:>10} {:>8} {:>9} {:>8} {:>9} {:>8}",
            "strategy",
            "KL/full",
            "top1",
            "KL/recomp",
            "top1",
            "ans PPL",
            "cells",
            "evaluated",
            "seconds"
        );
        for s in &r.strategies {
            let f = s.mean_vs_full();
            let rc = s.mean_vs_recompute();
            outln!(
                "  {:<16} {:>10} {:>8} {:>10} {:>8} {:>9.2} {:>8.0} {:>9} {:>8.2}",
                s.strategy,
                f.map_or("–".into(), |c| format!("{:.4}", c.kl)),
                f.map_or("–".into(), |c| format!("{:.1}%", 100.0 * c.top1)),
                rc.map_or("–".into(), |c| format!("{:.4}", c.kl)),
                rc.map_or("–".into(), |c| format!("{:.1}%", 100.0 * c.top1)),
                s.answer_ppl,
                s.mean_live(),
                s.prefilled(),
                s.seconds()
            );
        }
        results.push(r);
    }
    if results.len() > 1 {
        outln!("all sets:");
        for o in overall(&results) {
            outln!(
                "  {:<16} KL/full {} top1/full {} answer PPL/full {} /recompute {} kept {:.1}% evaluated {} tokens in {:.1} s",
                o.strategy,
                o.kl_full.map_or("–".into(), |x| format!("{x:.4}")),
                o.top1_full.map_or("–".into(), |x| format!("{:.1}%", 100.0 * x)),
                o.ppl_ratio.map_or("–".into(), |x| format!("{x:.2}")),
                o.ppl_vs_recompute.map_or("–".into(), |x| format!("{x:.3}")),
                100.0 * o.kept,
                o.prefilled,
                o.seconds
            );
        }
    }
    if let Some(f) = &a.json {
        let s = serde_json::to_string_pretty(&results).map_err(|e| Error::Internal(e.to_string()))?;
        if let Some(dir) = f.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::InvalidArgument(format!("{}: {e}", dir.display())))?;
        }
        std::fs::write(f, s).map_err(|e| Error::InvalidArgument(format!("{}: {e}", f.display())))?;
    }
    let command =
        std::env::args().map(|a| if a.contains(' ') { format!("'{a}'") } else { a }).collect::<Vec<_>>().join(" ");
    let command = command.replacen(&std::env::args().next().unwrap_or_default(), "decache", 1);
    let model_name = model
        .info
        .path
        .file_name()
        .map_or_else(|| model.info.path.display().to_string(), |n| n.to_string_lossy().into_owned());
    if a.calibrate {
        let c = decache::eval::calibrate::calibrate(&results, &model_name, &model.info.fingerprint, &command)
            .map_err(Error::InvalidArgument)?;
        outln!("calibration (answer PPL relative to recompute's, KL to recompute, refresh tokens / recompute's):");
        for k in &c.candidates {
            outln!(
                "  {:<18} {:>6.3} {:>8.4} {:>6.1}%{}",
                k.strategy,
                k.ppl_vs_recompute,
                k.kl_recompute,
                100.0 * k.extra_share,
                if k.eligible { "" } else { "  (over the cost bound)" }
            );
        }
        let path = c.save().map_err(Error::InvalidArgument)?;
        outln!(
            "--positions auto for this model: {} with refresh {} (wrote {})",
            c.choice.positions.name(),
            c.choice.refresh,
            path.display()
        );
        if let Some(f) = &a.calibration_file {
            c.save_to(f).map_err(Error::InvalidArgument)?;
            outln!("wrote {}", f.display());
        }
    }
    if let Some(dir) = &a.report {
        let meta = ReportMeta { command: command.clone(), model: model_name.clone(), threads };
        let files = decache::eval::report::write(dir, &results, &meta).map_err(Error::InvalidArgument)?;
        for f in files {
            outln!("wrote {}", f.display());
        }
    }
    Ok(())
}

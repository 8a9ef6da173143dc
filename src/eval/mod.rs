//! `decache eval`: one annotated conversation (`set.rs`) run under several
//! strategies on the same model, turn by turn in lockstep, every turn's
//! next-token distributions compared with full context and with recompute;
//! plus what each strategy cost (tokens evaluated, time, cells kept).
pub mod calibrate;
pub mod forget;
pub mod metrics;
pub mod report;
pub mod requests;
pub mod script;
pub mod set;
pub mod strategy;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::session::{Session, SessionConfig};
use crate::tokenizer::ChatTemplate;
use metrics::{compare, continuation_perplexity, Comparison};
use script::Script;
use serde::Serialize;
use set::EvalSet;
use std::sync::Arc;
use std::time::Instant;
pub use strategy::Strategy;

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub strategies: Vec<Strategy>,
    pub session: SessionConfig,
    /// Attention sinks of the sliding window.
    pub sinks: usize,
    /// Longest summary compaction writes.
    pub summary_tokens: usize,
    /// How far the refresh strategies re-evaluate after each gap.
    pub refresh: crate::session::Reach,
}

/// One turn under one strategy.
#[derive(Clone, Debug, Serialize)]
pub struct TurnResult {
    pub turn: u32,
    /// The turn's own tokens (the same under every strategy).
    pub tokens: usize,
    /// Tokens evaluated for it, re-prefills and summaries included.
    pub prefilled: usize,
    pub removed: usize,
    /// Tokens re-evaluated after gaps (the refresh strategies; in `prefilled`).
    pub refreshed: usize,
    pub compacted: bool,
    pub ms: f64,
    /// Cells live after the turn.
    pub live: usize,
    pub vs_full: Option<Comparison>,
    pub vs_recompute: Option<Comparison>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StrategyResult {
    pub strategy: String,
    pub turns: Vec<TurnResult>,
    /// Perplexity of the reference answer to the closing question.
    pub answer_ppl: f64,
    pub summaries: Vec<String>,
}

impl StrategyResult {
    pub fn prefilled(&self) -> usize {
        self.turns.iter().map(|t| t.prefilled).sum()
    }
    pub fn seconds(&self) -> f64 {
        self.turns.iter().map(|t| t.ms).sum::<f64>() / 1e3
    }
    pub fn mean_live(&self) -> f64 {
        self.turns.iter().map(|t| t.live as f64).sum::<f64>() / self.turns.len().max(1) as f64
    }
    pub fn peak_live(&self) -> usize {
        self.turns.iter().map(|t| t.live).max().unwrap_or(0)
    }
    /// Token-weighted means over the turns that have a comparison.
    fn mean(&self, pick: impl Fn(&TurnResult) -> Option<Comparison>) -> Option<Comparison> {
        let (mut n, mut kl, mut top1) = (0.0, 0.0, 0.0);
        for t in &self.turns {
            if let Some(c) = pick(t) {
                n += t.tokens as f64;
                kl += c.kl * t.tokens as f64;
                top1 += c.top1 * t.tokens as f64;
            }
        }
        (n > 0.0).then(|| Comparison { kl: kl / n, top1: top1 / n })
    }
    pub fn mean_vs_full(&self) -> Option<Comparison> {
        self.mean(|t| t.vs_full)
    }
    pub fn mean_vs_recompute(&self) -> Option<Comparison> {
        self.mean(|t| t.vs_recompute)
    }
    /// The closing question's turn compared with full context.
    pub fn question_vs_full(&self) -> Option<Comparison> {
        self.turns.last().and_then(|t| t.vs_full)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SetResult {
    pub name: String,
    pub description: String,
    pub turns: u32,
    pub total_tokens: usize,
    /// Most cells the annotated cache holds at once (compaction's and the
    /// window's budget).
    pub budget: usize,
    /// Tokens the annotations decache by the question, by kind.
    pub decached_by_kind: Vec<(String, usize)>,
    pub strategies: Vec<StrategyResult>,
    /// Strategies left out, and why.
    pub skipped: Vec<(String, String)>,
}

/// Progress of an evaluation, for whoever shows it.
pub enum EvalProgress<'a> {
    Turn { strategy: Strategy, turn: u32, of: u32, result: &'a TurnResult },
}

/// The `forget-tool` strategy's script, when the template renders every
/// turn's own tokens as in `script` after the inserted `forget` exchanges.
fn forget_script(
    set: &EvalSet,
    script: &Script,
    tok: &crate::tokenizer::Tokenizer,
    template: &ChatTemplate,
) -> std::result::Result<Script, String> {
    let f = Script::build(&forget::forgetting(set), tok, template)?;
    for t in 1..=script.n_turns {
        let own: Vec<u32> = f
            .spans
            .iter()
            .filter(|s| s.turn == t && s.kind != forget::KIND)
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        if own != script.turn_tokens(t) {
            return Err(format!("the chat template renders turn {t} differently after the forget call"));
        }
    }
    Ok(f)
}

/// Run `set` under each of `opts.strategies`.
pub fn evaluate(
    model: &Arc<Model>,
    template: &ChatTemplate,
    set: &EvalSet,
    opts: &EvalOptions,
    on: &mut dyn FnMut(EvalProgress<'_>),
) -> Result<SetResult> {
    let tok = &model.tokenizer;
    let script = Script::build(set, tok, template)
        .map_err(|e| Error::InvalidArgument(format!("eval set '{}': {e}", set.name)))?;
    let n_vocab = model.hparams.n_vocab as usize;
    let total = script.total_tokens();
    let budget = script.budget();
    // Room for everything (full context), or for the budget; and for a
    // summary round (its request and the summary) on top of either.
    let train = model.hparams.n_ctx_train as usize;
    let fits = total <= train;
    let need = if fits { total } else { budget };
    let n_ctx = (need + opts.summary_tokens + 256).div_ceil(256) * 256;
    let mut skipped = Vec::new();
    let mut order: Vec<Strategy> = opts.strategies.clone();
    order.sort_by_key(|s| s.rank());
    order.dedup();
    if !fits && order.contains(&Strategy::Full) {
        order.retain(|&s| s != Strategy::Full);
        skipped.push(("full".to_string(), format!("{total} tokens do not fit the model's trained context of {train}")));
    }
    let forgetting = match order.contains(&Strategy::ForgetTool) {
        true => match forget_script(set, &script, tok, template) {
            Ok(f) => Some(f),
            Err(why) => {
                order.retain(|&s| s != Strategy::ForgetTool);
                skipped.push((Strategy::ForgetTool.name(), why));
                None
            }
        },
        false => None,
    };
    let mut runners = Vec::new();
    for &s in &order {
        let (script, n_ctx) = match (&forgetting, s) {
            (Some(f), Strategy::ForgetTool) => (f, n_ctx + f.total_tokens() - total),
            _ => (&script, n_ctx),
        };
        let cfg = SessionConfig { n_ctx, ..opts.session.clone() };
        runners.push(strategy::Runner::new(
            s,
            Session::new(model.clone(), cfg)?,
            script,
            budget,
            opts.sinks,
            opts.summary_tokens,
            s.refresh().unwrap_or(opts.refresh),
        ));
    }
    let mut results: Vec<StrategyResult> = order
        .iter()
        .map(|s| StrategyResult { strategy: s.name(), turns: Vec::new(), answer_ppl: f64::NAN, summaries: Vec::new() })
        .collect();
    for t in 1..=script.n_turns {
        let tokens = script.turn_tokens(t);
        let (mut full, mut recompute): (Option<Vec<f32>>, Option<Vec<f32>>) = (None, None);
        for (r, res) in runners.iter_mut().zip(results.iter_mut()) {
            let t0 = Instant::now();
            let (logits, cost) = r.turn(t)?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            r.pause();
            let vs = |reference: &Option<Vec<f32>>| reference.as_ref().map(|l| compare(l, &logits, n_vocab));
            let mut tr = TurnResult {
                turn: t,
                tokens: tokens.len(),
                prefilled: cost.prefilled,
                removed: cost.removed,
                refreshed: cost.refreshed,
                compacted: cost.compacted,
                ms,
                live: r.n_live(),
                vs_full: vs(&full),
                vs_recompute: vs(&recompute),
            };
            if t == script.n_turns {
                res.answer_ppl = continuation_perplexity(&logits, &tokens, script.n_answer, n_vocab);
            }
            match r.strategy {
                Strategy::Full => {
                    tr.vs_full = Some(compare(&logits, &logits, n_vocab));
                    full = Some(logits);
                }
                Strategy::Recompute => {
                    tr.vs_recompute = Some(compare(&logits, &logits, n_vocab));
                    recompute = Some(logits);
                }
                _ => {}
            }
            on(EvalProgress::Turn { strategy: r.strategy, turn: t, of: script.n_turns, result: &tr });
            res.turns.push(tr);
        }
    }
    for (r, res) in runners.iter_mut().zip(results.iter_mut()) {
        res.summaries = std::mem::take(&mut r.summaries);
    }
    let mut by_kind: Vec<(String, usize)> = Vec::new();
    for s in script.spans.iter().filter(|s| s.decached_from.is_some()) {
        match by_kind.iter_mut().find(|(k, _)| *k == s.kind) {
            Some((_, n)) => *n += s.tokens.len(),
            None => by_kind.push((s.kind.clone(), s.tokens.len())),
        }
    }
    Ok(SetResult {
        name: set.name.clone(),
        description: set.description.clone(),
        turns: script.n_turns,
        total_tokens: total,
        budget,
        decached_by_kind: by_kind,
        strategies: results,
        skipped,
    })
}

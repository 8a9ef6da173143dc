//! The generation loop: evaluate the prompt, then sample and evaluate one
//! token at a time, streaming text through events until a stop condition.
use super::speculate::{Drafter, SpecMode, SpecParams, SpecStats};
use super::Gap;
use super::Session;
use crate::error::{Error, Result};
use crate::kv::Pos;
use crate::sampling::{SamplerChain, SamplingParams, ToolNames};
use crate::tokenizer::StreamDecoder;
use std::time::Instant;

#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    /// Tokens to generate at most; `None` = until end of generation or a full context.
    pub n_predict: Option<usize>,
    pub sampling: SamplingParams,
    /// Keep going past end-of-generation tokens (`--ignore-eos`).
    pub ignore_eos: bool,
    /// Render control tokens as text (`--special`).
    pub special: bool,
    /// A scripted reply: these tokens are taken instead of sampled (each
    /// still evaluated into the cache), then generation ends as if the
    /// model had sampled its end-of-generation token.
    pub forced: Option<Vec<u32>>,
    /// Draft-free speculative decoding (`--spec`): never changes what is
    /// generated, only how many tokens one evaluation carries.
    pub spec: SpecParams,
}

/// What the loop reports while it runs.
#[derive(Debug)]
pub enum GenerateEvent<'a> {
    /// The prompt has been evaluated.
    PromptDone { tokens: usize, ms: f64 },
    /// One token was generated; `text` is its complete UTF-8 (possibly empty
    /// while a multi-byte character is split across tokens).
    Token { id: u32, text: &'a str },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-generation token was sampled.
    EndOfGeneration,
    /// `n_predict` tokens were generated.
    Length,
    /// The context is full.
    ContextFull,
    /// The caller asked to stop.
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
    pub prompt_tokens: usize,
    pub prompt_ms: f64,
    pub gen_ms: f64,
    /// What speculation did.
    pub spec: SpecStats,
}

impl Session {
    /// The sampler chain for `p` on this model: llama.cpp's chain, behind
    /// the tool-name constraint when `p` names tools.
    pub fn sampler(&self, p: &SamplingParams) -> SamplerChain {
        let mut chain = SamplerChain::from_params(p);
        if !p.tool_names.is_empty() {
            chain.push_front(Box::new(ToolNames::new(&p.tool_names, self.model.tokenizer.pieces())));
        }
        chain
    }

    /// Generate a continuation of the cached context plus `prompt`.
    /// `on_event` returns `false` to stop (Ctrl-C).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_event: &mut dyn FnMut(GenerateEvent<'_>) -> bool,
    ) -> Result<Generation> {
        self.generating = true;
        self.shared.set_generating(self.seq, true);
        let res = self.generate_inner(prompt, opts, on_event);
        self.shared.set_generating(self.seq, false);
        self.generating = false;
        res
    }

    fn generate_inner(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_event: &mut dyn FnMut(GenerateEvent<'_>) -> bool,
    ) -> Result<Generation> {
        opts.sampling.validate()?;
        let mut sampler = self.sampler(&opts.sampling);
        for &t in prompt {
            sampler.accept(t);
        }
        if prompt.is_empty() && self.n_live() == 0 {
            return Err(Error::InvalidArgument("empty prompt: nothing to continue from".into()));
        }
        if self.recorder.is_some() {
            let mut sampling = opts.sampling.clone();
            if let Some(seed) = sampler.seed() {
                sampling.seed = seed;
            }
            let (n_predict, ignore_eos, forced) = (opts.n_predict, opts.ignore_eos, opts.forced.is_some());
            if let Some(r) = &mut self.recorder {
                r(super::record::SessionOp::GenerateStart {
                    prompt,
                    sampling: &sampling,
                    n_predict,
                    ignore_eos,
                    forced,
                });
            }
        }
        let t0 = Instant::now();
        let mut logits = self.eval(prompt, false)?;
        let prompt_ms = t0.elapsed().as_secs_f64() * 1e3;
        on_event(GenerateEvent::PromptDone { tokens: prompt.len(), ms: prompt_ms });

        let model = self.model.clone();
        let tok = &model.tokenizer;
        let mut dec = tok.stream_decoder(opts.special);
        let mut out = Generation {
            tokens: Vec::new(),
            text: String::new(),
            stop: StopReason::Length,
            prompt_tokens: prompt.len(),
            prompt_ms,
            gen_ms: 0.0,
            spec: SpecStats::default(),
        };
        let t1 = Instant::now();
        // A hybrid model's recurrent state cannot drop a rejected draft: each
        // rejection would rewind to the last checkpoint. Speculation is off there.
        if opts.spec.mode != SpecMode::Off && self.is_hybrid() {
            tracing::warn!("speculative decoding is off for hybrid models (their recurrent state cannot drop a draft)");
        }
        let mut drafter = (opts.spec.mode != SpecMode::Off && opts.forced.is_none() && !self.is_hybrid())
            .then(|| Drafter::new(opts.spec, self.live_chain().into_iter().map(|(_, t)| t).collect()));
        // A token sampled from a draft's row that the draft did not foresee:
        // the next token, already sampled.
        let mut pending: Option<u32> = None;
        loop {
            if opts.n_predict.is_some_and(|n| out.tokens.len() >= n) {
                out.stop = StopReason::Length;
                break;
            }
            let id = match (pending.take(), &opts.forced) {
                (Some(id), _) => id,
                (None, None) => sampler.sample(&logits),
                (None, Some(f)) => match f.get(out.tokens.len()) {
                    Some(&id) => id,
                    None => {
                        out.stop = StopReason::EndOfGeneration;
                        break;
                    }
                },
            };
            if let Some(stop) = self.take(id, self.room(2), opts, &mut sampler, &mut dec, &mut out, on_event) {
                out.stop = stop;
                break;
            }
            let draft = match drafter.as_mut() {
                Some(d) => {
                    d.push(id);
                    d.propose(self.draft_room(opts, &out))
                }
                None => Vec::new(),
            };
            if draft.is_empty() {
                let t = Instant::now();
                let read = std::mem::replace(&mut logits, self.eval(&[id], false)?);
                self.recycle(read);
                if let Some(d) = drafter.as_mut() {
                    d.plain_step(t.elapsed().as_secs_f64());
                }
                continue;
            }
            // The token and the draft in one batch. Row i holds the logits
            // after the batch's first i + 1 tokens: the token sampled from it
            // is generated as usual, and where it is the draft's next token,
            // that token's row is already computed.
            let p0 = self.next_pos;
            let free = self.n_free();
            let batch: Vec<u32> = std::iter::once(id).chain(draft.iter().copied()).collect();
            let t_batch = Instant::now();
            let rows = self.eval(&batch, true)?;
            let n_vocab = self.model.hparams.n_vocab as usize;
            let mut kept = 0;
            let mut stop = None;
            for (i, row) in rows.chunks_exact(n_vocab).enumerate() {
                if opts.n_predict.is_some_and(|n| out.tokens.len() >= n) {
                    stop = Some(StopReason::Length);
                    break;
                }
                let x = sampler.sample(row);
                if draft.get(i) != Some(&x) {
                    pending = Some(x);
                    break;
                }
                // As many cells free as plain decoding would have now.
                if let Some(s) = self.take(x, free - i - 1, opts, &mut sampler, &mut dec, &mut out, on_event) {
                    stop = Some(s);
                    break;
                }
                if let Some(d) = drafter.as_mut() {
                    d.push(x);
                }
                kept += 1;
            }
            if let Some(d) = drafter.as_mut() {
                d.record(draft.len(), kept, t_batch.elapsed().as_secs_f64());
            }
            // Where plain decoding would stop with its last token evaluated
            // (n_predict reached), it is; every cell past it goes.
            let kept_to = p0 + 1 + kept as Pos;
            if kept < draft.len() {
                self.remove_range(kept_to, p0 + batch.len() as Pos, Gap::Keep)?;
                self.rewind(kept_to)?;
            }
            if let Some(s) = stop {
                out.stop = s;
                break;
            }
            if pending.is_none() {
                logits = rows[draft.len() * n_vocab..].to_vec();
            }
            self.recycle(rows);
        }
        out.spec = drafter.map(|d| d.stats).unwrap_or_default();
        // The recycled logits memory serves this generation's steps only: a
        // session kept between requests does not hold on to a draft's rows.
        self.spare = Vec::new();
        // The last token is evaluated unless the loop stopped right after sampling it.
        let evaluated_last = !matches!(out.stop, StopReason::Cancelled | StopReason::ContextFull);
        self.record(super::record::SessionOp::GenerateEnd { stop: out.stop, evaluated_last });
        let rest = dec.flush();
        if !rest.is_empty() {
            out.text.push_str(&rest);
            on_event(GenerateEvent::Token { id: u32::MAX, text: &rest });
        }
        out.gen_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(out)
    }

    /// Take a sampled token: the sampler sees it; unless it ends the
    /// generation it is generated (recorded, decoded, reported). `free`:
    /// cells free for it. Returns why the generation stops here, if it does.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        id: u32,
        free: usize,
        opts: &GenerateOptions,
        sampler: &mut SamplerChain,
        dec: &mut StreamDecoder<'_>,
        out: &mut Generation,
        on_event: &mut dyn FnMut(GenerateEvent<'_>) -> bool,
    ) -> Option<StopReason> {
        sampler.accept(id);
        if !opts.ignore_eos && self.model.tokenizer.is_eog(id) {
            return Some(StopReason::EndOfGeneration);
        }
        out.tokens.push(id);
        self.record(super::record::SessionOp::Token { id });
        let text = dec.push(id);
        out.text.push_str(&text);
        if !on_event(GenerateEvent::Token { id, text: &text }) {
            return Some(StopReason::Cancelled);
        }
        (free == 0).then_some(StopReason::ContextFull)
    }

    /// Draft tokens that may follow the token about to be evaluated: no
    /// more than the cache, one graph and the generation's length allow.
    fn draft_room(&self, opts: &GenerateOptions, out: &Generation) -> usize {
        let cells = self.n_free().saturating_sub(1);
        let graph = self.cfg.n_ubatch.saturating_sub(1);
        let length = opts.n_predict.map_or(usize::MAX, |n| n.saturating_sub(out.tokens.len()));
        cells.min(graph).min(length)
    }
}

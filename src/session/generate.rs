//! The generation loop: evaluate the prompt, then sample and evaluate one
//! token at a time, streaming text through events until a stop condition.
use super::Session;
use crate::error::{Error, Result};
use crate::sampling::{SamplerChain, SamplingParams, ToolNames};
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
        let res = self.generate_inner(prompt, opts, on_event);
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
        };
        let t1 = Instant::now();
        loop {
            if opts.n_predict.is_some_and(|n| out.tokens.len() >= n) {
                out.stop = StopReason::Length;
                break;
            }
            let id = match &opts.forced {
                None => sampler.sample(&logits),
                Some(f) => match f.get(out.tokens.len()) {
                    Some(&id) => id,
                    None => {
                        out.stop = StopReason::EndOfGeneration;
                        break;
                    }
                },
            };
            sampler.accept(id);
            if !opts.ignore_eos && tok.is_eog(id) {
                out.stop = StopReason::EndOfGeneration;
                break;
            }
            out.tokens.push(id);
            self.record(super::record::SessionOp::Token { id });
            let text = dec.push(id);
            out.text.push_str(&text);
            if !on_event(GenerateEvent::Token { id, text: &text }) {
                out.stop = StopReason::Cancelled;
                break;
            }
            if self.kv.n_free() == 0 {
                out.stop = StopReason::ContextFull;
                break;
            }
            logits = self.eval(&[id], false)?;
        }
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
}

//! Replaying an agent-like conversation whose client prunes its own history
//! (stale reminders, old file reads), turn by turn, through three servers:
//! ours with the subconscious cache, ours with prefix caching only, and
//! llama.cpp's server behaviour through the oracle (its common-prefix reuse
//! plus its `--cache-reuse` chunk reuse by KV shifting). Per turn: tokens
//! prefilled and time to first token.
use crate::error::{Error, Result};
use crate::ggml::oracle::{OracleContext, OracleModel, OracleParams};
use crate::model::Model;
use crate::session::{PositionPolicy, Session, SessionConfig};
use crate::tokenizer::{ChatMessage, ChatTemplate};
use std::sync::Arc;
use std::time::Instant;

/// Placeholder text a client leaves where it cleared an old tool result.
pub const CLEARED: &str = "[Old tool result content cleared]";

/// The message list an agent client sends at each turn. Every turn adds a
/// question with the current todo reminder, a file read and (from the
/// second turn) the previous answer; the client keeps only the newest
/// reminder and the file reads of the last `window` turns. With
/// `placeholders` an older read stays as a tool message whose content is
/// [`CLEARED`] (a replaced span) instead of being deleted.
pub fn agent_requests(turns: usize, window: usize, placeholders: bool) -> Vec<Vec<ChatMessage>> {
    let system = ChatMessage::new(
        "system",
        "You are a coding agent for the `calc` crate. Read files before editing them, run the tests after every change, \
         keep the todo list current, and answer in one or two sentences.",
    );
    let file = |t: usize| {
        let body: String = (0..9)
            .map(|i| {
                format!(
                    "pub fn op_{t}_{i}(a: i64, b: i64) -> Result<i64, CalcError> {{ checked(a, b, {}) }}\n",
                    (t * 7 + i) % 13
                )
            })
            .collect();
        format!("src/ops_{t}.rs:\n{body}")
    };
    let mut history: Vec<(usize, &'static str, ChatMessage)> = Vec::new(); // (turn, kind, message)
    let mut out = Vec::new();
    for t in 1..=turns {
        if t > 1 {
            history.push((
                t - 1,
                "answer",
                ChatMessage::new("assistant", format!("I fixed op_{}_3 and the tests pass now.", t - 1)),
            ));
        }
        history.push((
            t,
            "ask",
            ChatMessage::new("user", format!("Step {t}: fix the overflow in ops_{t}.rs and run the tests.")),
        ));
        history.push((
            t,
            "reminder",
            ChatMessage::new(
                "user",
                format!("<system-reminder>Todo: [x] steps 1-{} [ ] step {t} [ ] step {}. Keep it current.</system-reminder>", t - 1, t + 1),
            ),
        ));
        history.push((t, "read", ChatMessage::new("tool", file(t))));
        // The client prunes: older reminders, and reads older than the window.
        if placeholders {
            for (turn, kind, m) in history.iter_mut() {
                if *kind == "read" && *turn + window <= t {
                    *m = ChatMessage::new("tool", CLEARED);
                }
            }
        }
        history.retain(|(turn, kind, _)| match *kind {
            "reminder" => *turn == t,
            "read" => placeholders || *turn + window > t,
            _ => true,
        });
        let mut msgs = vec![system.clone()];
        msgs.extend(history.iter().map(|(_, _, m)| m.clone()));
        out.push(msgs);
    }
    out
}

/// How one server handled one request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Served {
    /// Tokens evaluated: replaced spans in place, then the tail.
    pub prefilled: usize,
    pub ttft_ms: f64,
    /// Spans of new tokens evaluated in place between reused chunks.
    pub spans_replaced: usize,
}

#[derive(Clone, Debug)]
pub struct ReplayTurn {
    pub turn: usize,
    pub prompt: usize,
    pub subconscious: Served,
    pub prefix_only: Served,
    pub llama: Option<Served>,
}

/// Our server's path for one request: reuse, prefill the rest, logits of the last token.
fn serve_ours(s: &mut Session, tokens: &[u32], min_chunk: Option<usize>) -> Result<Served> {
    let t0 = Instant::now();
    let r = s.reuse(tokens, min_chunk, PositionPolicy::Keep)?;
    s.eval(&tokens[r.plan.reused..], false)?;
    Ok(Served {
        prefilled: r.plan.prefilled(tokens.len()),
        ttft_ms: t0.elapsed().as_secs_f64() * 1e3,
        spans_replaced: r.spans_replaced(),
    })
}

/// llama.cpp's server path (tools/server: common prefix, then with
/// `n_cache_reuse > 0` chunks of at least that many tokens moved into place
/// by `seq_rm` + `seq_add`), over the oracle's context.
struct LlamaSlot<'m> {
    ctx: OracleContext<'m>,
    cache: Vec<u32>,
}

impl LlamaSlot<'_> {
    fn serve(&mut self, new: &[u32], n_cache_reuse: usize) -> Result<Served> {
        let t0 = Instant::now();
        let mut n_past = self.cache.iter().zip(new).take_while(|(a, b)| a == b).count();
        if n_cache_reuse > 0 {
            let (mut hc, mut hp) = (n_past, n_past);
            while hc < self.cache.len() && hp < new.len() {
                let n = self.cache[hc..].iter().zip(&new[hp..]).take_while(|(a, b)| a == b).count();
                if n >= n_cache_reuse {
                    let shift = hp as i32 - hc as i32;
                    self.ctx.seq_rm(hp as i32, hc as i32);
                    self.ctx.seq_add(hc as i32, (hc + n) as i32, shift);
                    for i in 0..n {
                        self.cache[hp + i] = self.cache[hc + i];
                    }
                    n_past += n;
                    hc += n;
                    hp += n;
                } else {
                    hc += 1;
                }
            }
        }
        let n_past = n_past.min(new.len() - 1);
        self.ctx.seq_rm(n_past as i32, -1);
        self.cache.truncate(n_past);
        let rest: Vec<i32> = new[n_past..].iter().map(|&t| t as i32).collect();
        let pos: Vec<i32> = (n_past as i32..new.len() as i32).collect();
        self.ctx.decode(&rest, &pos, false).map_err(Error::Oracle)?;
        self.cache.extend_from_slice(&new[n_past..]);
        Ok(Served { prefilled: rest.len(), ttft_ms: t0.elapsed().as_secs_f64() * 1e3, spans_replaced: 0 })
    }
}

/// Replay `requests` (message lists) through the three servers, each with a
/// cache of `cfg.n_ctx` cells; chunks must be longer than `min_chunk`
/// tokens (llama.cpp's `--cache-reuse` gets the same threshold).
pub fn replay(
    model: &Arc<Model>,
    template: &ChatTemplate,
    requests: &[Vec<ChatMessage>],
    cfg: &SessionConfig,
    oracle: Option<&OracleModel>,
    min_chunk: usize,
) -> Result<Vec<ReplayTurn>> {
    let tok = &model.tokenizer;
    let template = template.clone().with_vocab(tok);
    let mut sub = Session::new(model.clone(), cfg.clone())?;
    let mut pre = Session::new(model.clone(), cfg.clone())?;
    let mut llama = match oracle {
        Some(o) => {
            let p = OracleParams {
                n_ctx: cfg.n_ctx as u32,
                n_threads: cfg.n_threads as i32,
                swa_full: cfg.swa_full,
                ..OracleParams::default()
            };
            Some(LlamaSlot { ctx: OracleContext::new(o, &p).map_err(Error::Oracle)?, cache: Vec::new() })
        }
        None => None,
    };
    let mut out = Vec::new();
    for (i, msgs) in requests.iter().enumerate() {
        let text = template.render(msgs, true)?;
        let tokens = tok.encode(&text, false, true)?;
        if tokens.len() >= cfg.n_ctx {
            return Err(Error::InvalidArgument(format!(
                "turn {}: {} tokens do not fit {} cells",
                i + 1,
                tokens.len(),
                cfg.n_ctx
            )));
        }
        // One engine's thread pool busy at a time.
        let subconscious = serve_ours(&mut sub, &tokens, Some(min_chunk))?;
        sub.pause_threads();
        let prefix_only = serve_ours(&mut pre, &tokens, None)?;
        pre.pause_threads();
        let llama = match &mut llama {
            Some(l) => {
                let r = l.serve(&tokens, min_chunk + 1)?;
                l.ctx.pause_threads();
                Some(r)
            }
            None => None,
        };
        out.push(ReplayTurn { turn: i + 1, prompt: tokens.len(), subconscious, prefix_only, llama });
    }
    Ok(out)
}

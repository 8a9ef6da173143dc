//! Replaying a transcript: the same ops on a fresh session with the same
//! settings, every generation sampled again with its recorded settings and
//! seed and compared token by token. Same model, threads and batch sizes
//! give the same numbers, so any difference is a divergence to report.
use super::{Entry, Transcript};
use crate::error::{Error, Result};
use crate::kv::KvSnapshot;
use crate::sampling::Candidates;
use crate::session::{GenerateEvent, GenerateOptions, Session};
use std::collections::HashMap;

/// Where a replay first produced another token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The transcript line the generation starts on.
    pub line: usize,
    /// Which token of the generation.
    pub index: usize,
    pub expected: Option<u32>,
    pub got: Option<u32>,
    /// The tokens generated before it (the context of the divergence).
    pub before: Vec<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub ops: usize,
    pub generations: usize,
    pub tokens_checked: usize,
    pub divergence: Option<Divergence>,
}

/// How often another model (or the same one with other settings) picks the
/// recorded tokens when fed the recorded history (teacher forcing).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Agreement {
    pub ops: usize,
    pub generations: usize,
    /// Recorded tokens compared.
    pub tokens: usize,
    /// Of those, how many the sampler (recorded settings and seed) picked.
    pub sampled_same: usize,
    /// Of those, how many were the replaying model's most likely token.
    pub top1_same: usize,
}

impl Agreement {
    pub fn sampled_rate(&self) -> f64 {
        self.sampled_same as f64 / self.tokens.max(1) as f64
    }
    pub fn top1_rate(&self) -> f64 {
        self.top1_same as f64 / self.tokens.max(1) as f64
    }
}

/// States a replay saved where the transcript says the session saved one.
type Saved = HashMap<u64, KvSnapshot>;

/// Apply an op that rebuilds the cache; `false` for a generation (the
/// caller's business) and for notes.
fn rebuild(line: usize, e: &Entry, session: &mut Session, saved: &mut Saved) -> Result<bool> {
    let at = |e: Error| Error::InvalidArgument(format!("transcript line {line}: {e}"));
    match e {
        Entry::Eval { tokens, positions } => {
            session.eval_at(tokens, positions, false).map_err(at)?;
        }
        Entry::Remove { p0, p1, gap } => {
            session.remove_range(*p0, *p1, *gap).map_err(at)?;
        }
        Entry::OpenGap { p0, n } => {
            session.open_gap(*p0, *n).map_err(at)?;
        }
        Entry::Defrag => {
            session.defrag().map_err(at)?;
        }
        Entry::CloseGaps => {
            session.close_gaps().map_err(at)?;
        }
        Entry::Clear => session.clear(),
        Entry::Rewind(p) => session.rewind(*p).map_err(at)?,
        Entry::Saved(tag) => {
            saved.insert(*tag, session.snapshot().map_err(at)?);
        }
        Entry::Restore(Some(tag)) => {
            let snap = saved.get(tag).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "transcript line {line}: the session restored state {tag}, which this transcript never saved \
                     (another slot saved it: the server's prompt cache is shared by its slots)"
                ))
            })?;
            session.restore(snap).map_err(at)?;
        }
        Entry::Restore(None) => {
            return Err(Error::InvalidArgument(format!(
                "transcript line {line}: the session loaded a saved state here, which a replay cannot rebuild"
            )))
        }
        Entry::Note(_) | Entry::Generate { .. } => return Ok(false),
    }
    Ok(true)
}

/// Replay `t` on `session` with teacher forcing: each generation's recorded
/// tokens are fed back whatever the model would have picked, so the cache
/// follows the transcript to the end and every token is compared.
pub fn agreement(t: &Transcript, session: &mut Session) -> Result<Agreement> {
    let mut r = Agreement::default();
    let n_vocab = session.model().hparams.n_vocab as usize;
    let mut saved = Saved::new();
    for (line, e) in &t.entries {
        let line = *line;
        if rebuild(line, e, session, &mut saved)? {
            r.ops += 1;
            continue;
        }
        let Entry::Generate { prompt, sampling, tokens, end, .. } = e else { continue };
        r.generations += 1;
        r.ops += 1;
        let at = |e: Error| Error::InvalidArgument(format!("transcript line {line}: {e}"));
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(at(Error::InvalidArgument(format!(
                "token {bad} is outside this model's vocabulary (0..{n_vocab})"
            ))));
        }
        let mut sampler = session.sampler(sampling);
        for &t in prompt {
            sampler.accept(t);
        }
        let evaluated_last = end.is_some_and(|e| e.1);
        let mut logits = session.eval(prompt, false).map_err(at)?;
        for (i, &want) in tokens.iter().enumerate() {
            if logits.len() < n_vocab {
                break;
            }
            let got = sampler.sample(&logits);
            let top = Candidates::from_logits(&logits).argmax();
            r.tokens += 1;
            r.sampled_same += usize::from(got == want);
            r.top1_same += usize::from(top == Some(want as usize));
            sampler.accept(want);
            if i + 1 < tokens.len() || evaluated_last {
                logits = session.eval(&[want], false).map_err(at)?;
            }
        }
    }
    Ok(r)
}

/// Replay `t` on `session` (fresh, built with the transcript's settings),
/// stopping at the first divergence.
pub fn replay(t: &Transcript, session: &mut Session) -> Result<ReplayReport> {
    let mut r = ReplayReport::default();
    let at = |line: usize, e: Error| Error::InvalidArgument(format!("transcript line {line}: {e}"));
    let mut saved = Saved::new();
    for (line, e) in &t.entries {
        let line = *line;
        if rebuild(line, e, session, &mut saved)? {
            r.ops += 1;
            continue;
        }
        match e {
            Entry::Generate { prompt, sampling, ignore_eos, forced, tokens, end, .. } => {
                r.generations += 1;
                // Stop where the recorded one stopped: after its count of
                // tokens, evaluating the last one only if it had been.
                let evaluated_last = end.is_some_and(|e| e.1);
                let opts = GenerateOptions {
                    n_predict: if evaluated_last { Some(tokens.len()) } else { None },
                    sampling: sampling.clone(),
                    ignore_eos: *ignore_eos,
                    special: false,
                    // Scripted replies are fed back as they were.
                    forced: forced.then(|| tokens.clone()),
                    spec: Default::default(),
                };
                let want = tokens.len();
                let mut n = 0;
                let gen = session
                    .generate(prompt, &opts, &mut |ev| {
                        if let GenerateEvent::Token { id, .. } = ev {
                            if id != u32::MAX {
                                n += 1;
                            }
                        }
                        evaluated_last || n < want
                    })
                    .map_err(|e| at(line, e))?;
                let same = gen.tokens.iter().zip(tokens).take_while(|(a, b)| a == b).count();
                r.tokens_checked += same;
                // A generation the writer was killed in holds only the
                // tokens written before; the replay may sample one more.
                let compared = if end.is_some() { tokens.len().max(gen.tokens.len()) } else { tokens.len() };
                if same < compared {
                    r.divergence = Some(Divergence {
                        line,
                        index: same,
                        expected: tokens.get(same).copied(),
                        got: gen.tokens.get(same).copied(),
                        before: tokens[..same].to_vec(),
                    });
                    r.ops += 1;
                    return Ok(r);
                }
            }
            _ => continue,
        }
        r.ops += 1;
    }
    Ok(r)
}

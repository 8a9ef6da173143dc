//! Replaying a transcript: the same ops on a fresh session with the same
//! settings, every generation sampled again with its recorded settings and
//! seed and compared token by token. Same model, threads and batch sizes
//! give the same numbers, so any difference is a divergence to report.
use super::{Entry, Transcript};
use crate::error::{Error, Result};
use crate::session::{GenerateEvent, GenerateOptions, Session};

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

/// Replay `t` on `session` (fresh, built with the transcript's settings),
/// stopping at the first divergence.
pub fn replay(t: &Transcript, session: &mut Session) -> Result<ReplayReport> {
    let mut r = ReplayReport::default();
    let at = |line: usize, e: Error| Error::InvalidArgument(format!("transcript line {line}: {e}"));
    for (line, e) in &t.entries {
        let line = *line;
        match e {
            Entry::Eval { tokens, positions } => {
                session.eval_at(tokens, positions, false).map_err(|e| at(line, e))?;
            }
            Entry::Remove { p0, p1, policy } => {
                session.remove_range(*p0, *p1, *policy).map_err(|e| at(line, e))?;
            }
            Entry::Defrag => {
                session.defrag().map_err(|e| at(line, e))?;
            }
            Entry::CompactPositions => {
                session.compact_positions().map_err(|e| at(line, e))?;
            }
            Entry::Clear => session.clear(),
            Entry::Restore => {
                return Err(Error::InvalidArgument(format!(
                    "transcript line {line}: the session loaded a saved state here, which a replay cannot rebuild"
                )))
            }
            Entry::Note(_) => continue,
            Entry::Generate { prompt, sampling, ignore_eos, tokens, end, .. } => {
                r.generations += 1;
                // Stop where the recorded one stopped: after its count of
                // tokens, evaluating the last one only if it had been.
                let evaluated_last = end.is_some_and(|e| e.1);
                let opts = GenerateOptions {
                    n_predict: if evaluated_last { Some(tokens.len()) } else { None },
                    sampling: sampling.clone(),
                    ignore_eos: *ignore_eos,
                    special: false,
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
                if same < tokens.len().max(gen.tokens.len()) {
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
        }
        r.ops += 1;
    }
    Ok(r)
}

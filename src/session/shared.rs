//! The cache and graph runner that one or several sessions share: each
//! session is one sequence of the cache. A session's micro-batch is queued,
//! and whoever takes the runner first computes everything queued by then in
//! one graph (continuous batching: sequences join and leave between steps,
//! and a prefill chunk rides along with other sequences' decode tokens).
//! While some sequences are generating, the one computing waits a moment
//! for each of them to queue its next token, so their steps merge.
use crate::error::{Error, Result};
use crate::kv::{KvCache, Pos, SeqId, MAX_SEQ};
use crate::model::runner::Runner;
use crate::model::Model;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest the computing session waits for generating sequences to
/// queue their next tokens (sampling and streaming take well under this).
const GATHER_WAIT: Duration = Duration::from_millis(15);
/// A sequence counts as busy for the others' chunk sizes this long after
/// its last step.
const BUSY_FOR: Duration = Duration::from_millis(1000);

/// The cache and the runner of its graphs.
pub(crate) struct Pool {
    pub kv: KvCache,
    pub runner: Runner,
}

/// One session's queued micro-batch.
struct Submission {
    ticket: u64,
    seq: SeqId,
    tokens: Vec<u32>,
    positions: Vec<Pos>,
    /// Rows (within this submission) whose logits are wanted.
    outputs: Vec<usize>,
    /// Memory for the logits (see `Session::recycle`).
    buffer: Vec<f32>,
}

#[derive(Default)]
struct Queue {
    next_ticket: u64,
    pending: Vec<Submission>,
    results: HashMap<u64, Result<Vec<f32>>>,
    /// Sequences inside `generate` (the computing session waits for them).
    generating: u64,
    /// When each sequence last queued a micro-batch.
    last_step: HashMap<SeqId, Instant>,
    /// Sequences handed out to sessions.
    taken: u64,
    /// A session is computing a step (the turn is taken).
    computing: bool,
    /// Micro-batches computed, and the sequences they held in all (for
    /// the mean batch width in tests and benchmarks).
    batches: u64,
    batched_subs: u64,
}

pub(crate) struct SharedCache {
    pool: Mutex<Pool>,
    queue: Mutex<Queue>,
    /// Signalled when results are posted or a micro-batch is queued.
    ready: Condvar,
    n_ubatch: usize,
    /// The model has recurrent layers (steps join sequences of equal lengths).
    hybrid: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SharedCache {
    pub fn new(kv: KvCache, runner: Runner, n_ubatch: usize) -> SharedCache {
        let queue = Queue { taken: 1, ..Queue::default() };
        let hybrid = kv.recurrent().is_some();
        SharedCache {
            pool: Mutex::new(Pool { kv, runner }),
            queue: Mutex::new(queue),
            ready: Condvar::new(),
            n_ubatch,
            hybrid,
        }
    }

    /// The pool, for operations outside evaluation (removal, snapshots).
    pub fn pool(&self) -> MutexGuard<'_, Pool> {
        lock(&self.pool)
    }

    /// A sequence no session holds, taken; `None` when all are.
    pub fn take_seq(&self, n_seq: usize) -> Option<SeqId> {
        let mut q = lock(&self.queue);
        let s = (0..n_seq).find(|&s| q.taken & (1 << s) == 0)?;
        q.taken |= 1 << s;
        Some(s)
    }

    /// Give a sequence back (its cells are freed unless shared).
    pub fn release_seq(&self, seq: SeqId) {
        self.pool().kv.clear_seq(seq);
        let mut q = lock(&self.queue);
        q.taken &= !(1 << seq);
        q.generating &= !(1 << seq);
        q.last_step.remove(&seq);
    }

    /// Mark `seq` as generating (or not): while it is, the computing
    /// session waits briefly for its next token before a step.
    pub fn set_generating(&self, seq: SeqId, on: bool) {
        let mut q = lock(&self.queue);
        match on {
            true => q.generating |= 1 << seq,
            false => q.generating &= !(1 << seq),
        }
        self.ready.notify_all();
    }

    /// Whether a sequence other than `seq` has stepped lately.
    pub fn others_busy(&self, seq: SeqId) -> bool {
        let q = lock(&self.queue);
        q.generating & !(1 << seq) != 0 || q.last_step.iter().any(|(&s, t)| s != seq && t.elapsed() < BUSY_FOR)
    }

    /// Make room for `n` new cells of `seq`: while fewer are free, the
    /// least recently used idle sequence (not generating, no step for a
    /// while) lets go of its cells (those others hold stay). Returns the
    /// sequences evicted.
    pub fn make_room(&self, seq: SeqId, n: usize) -> Vec<SeqId> {
        let mut evicted = Vec::new();
        loop {
            if self.pool().kv.n_free() >= n {
                return evicted;
            }
            // The idle sequences, least recently used first (read under the
            // queue's lock, which is not held while the pool is taken).
            let idle: Vec<SeqId> = {
                let q = lock(&self.queue);
                let mut idle: Vec<(Option<Instant>, SeqId)> = (0..MAX_SEQ)
                    .filter(|&s| {
                        s != seq
                            && q.taken & (1 << s) != 0
                            && q.generating & (1 << s) == 0
                            && q.last_step.get(&s).is_none_or(|t| t.elapsed() >= BUSY_FOR)
                            && !evicted.contains(&s)
                    })
                    .map(|s| (q.last_step.get(&s).copied(), s))
                    .collect();
                idle.sort_unstable();
                idle.into_iter().map(|(_, s)| s).collect()
            };
            let victim = {
                let mut pool = self.pool();
                let v = idle.into_iter().find(|&s| pool.kv.n_held(s) > 0);
                if let Some(v) = v {
                    pool.kv.clear_seq(v);
                }
                v
            };
            match victim {
                Some(v) => {
                    tracing::debug!(seq = v, for_seq = seq, "an idle sequence gave its cells back");
                    evicted.push(v);
                }
                None => return evicted,
            }
        }
    }

    /// Micro-batches computed so far, and the sequences they held in all.
    pub fn batch_stats(&self) -> (u64, u64) {
        let q = lock(&self.queue);
        (q.batches, q.batched_subs)
    }

    /// Evaluate one micro-batch of `seq` (its positions checked by the
    /// caller) together with whatever other sequences have queued: returns
    /// the logits of `outputs` (rows of n_vocab).
    pub fn step(
        &self,
        model: &Model,
        seq: SeqId,
        tokens: &[u32],
        positions: &[Pos],
        outputs: &[usize],
        buffer: Vec<f32>,
    ) -> Result<Vec<f32>> {
        let ticket = {
            let mut q = lock(&self.queue);
            let ticket = q.next_ticket;
            q.next_ticket += 1;
            q.last_step.insert(seq, Instant::now());
            let sub = Submission {
                ticket,
                seq,
                tokens: tokens.to_vec(),
                positions: positions.to_vec(),
                outputs: outputs.to_vec(),
                buffer,
            };
            q.pending.push(sub);
            self.ready.notify_all();
            ticket
        };
        let mut q = lock(&self.queue);
        loop {
            if let Some(r) = q.results.remove(&ticket) {
                return r;
            }
            if !q.computing {
                // Nobody computes: take the turn, gather, compute.
                q.computing = true;
                let subs = self.gather(q);
                let turn = Turn(self);
                let results = run_batch(&mut self.pool(), model, subs);
                q = lock(&self.queue);
                q.results.extend(results);
                // The turn ends with the results posted (the guard only
                // matters if the step panicked).
                q.computing = false;
                std::mem::forget(turn);
                self.ready.notify_all();
                continue;
            }
            // Ours is queued or computing: wait for the results, or for the turn.
            q = self.ready.wait_timeout(q, Duration::from_millis(50)).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Take the queued micro-batches for one step (the turn is ours): wait
    /// up to `GATHER_WAIT` for every generating sequence to queue, then take
    /// them in order while they fit in a micro-batch (the first always).
    /// The pool stays free meanwhile (sequences read it between steps).
    fn gather(&self, mut q: MutexGuard<'_, Queue>) -> Vec<Submission> {
        let deadline = Instant::now() + GATHER_WAIT;
        loop {
            let queued = q.pending.iter().fold(0u64, |b, s| b | 1 << s.seq);
            let missing = q.generating & !queued;
            let now = Instant::now();
            if missing == 0 || now >= deadline || q.pending.is_empty() {
                break;
            }
            q = self.ready.wait_timeout(q, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        let mut taken = Vec::new();
        let mut n = 0;
        let mut rest = Vec::new();
        // A model with recurrent layers steps several sequences together
        // only with as many tokens each.
        let same_len = self.hybrid;
        for sub in q.pending.drain(..) {
            let fits = !same_len || taken.first().is_none_or(|f: &Submission| f.tokens.len() == sub.tokens.len());
            let dup = taken.iter().any(|t: &Submission| t.seq == sub.seq);
            if taken.is_empty() || (fits && !dup && n + sub.tokens.len() <= self.n_ubatch) {
                n += sub.tokens.len();
                taken.push(sub);
            } else {
                rest.push(sub);
            }
        }
        q.pending = rest;
        if !taken.is_empty() {
            q.batches += 1;
            q.batched_subs += taken.len() as u64;
        }
        taken
    }
}

/// The computing turn: given back when the step ends, even by a panic.
struct Turn<'a>(&'a SharedCache);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        lock(&self.0.queue).computing = false;
        self.0.ready.notify_all();
    }
}

/// Place and compute the submissions in one graph; each gets its logits,
/// or the error that kept it out (a full cache fails only its own).
fn run_batch(pool: &mut Pool, model: &Model, subs: Vec<Submission>) -> Vec<(u64, Result<Vec<f32>>)> {
    let mut results = Vec::with_capacity(subs.len());
    if subs.is_empty() {
        return results;
    }
    let Pool { kv, runner } = pool;
    if let Err(e) = kv.apply_pending_shift(runner.sched(), model) {
        // The first gets the error itself; the others, what it said.
        let msg = format!("the step could not run: {e}");
        let mut first = Some(Error::from(e));
        return subs
            .into_iter()
            .map(|s| (s.ticket, Err(first.take().unwrap_or_else(|| Error::Internal(msg.clone())))))
            .collect();
    }
    let (mut tokens, mut positions, mut seqs, mut outputs, mut placed) = (vec![], vec![], vec![], vec![], vec![]);
    let mut members = Vec::new();
    let mut buffer = None;
    for sub in subs {
        let seq_ids = vec![sub.seq; sub.tokens.len()];
        // `Session::eval_at` checked the positions; only the free cells may
        // have gone to other sequences since.
        match kv.place(&sub.tokens, &sub.positions, &seq_ids) {
            Ok(p) => {
                let base = tokens.len();
                outputs.extend(sub.outputs.iter().map(|r| base + r));
                tokens.extend_from_slice(&sub.tokens);
                positions.extend_from_slice(&sub.positions);
                seqs.extend(seq_ids);
                placed.push(p);
                members.push((sub.ticket, sub.outputs.len()));
                buffer.get_or_insert(sub.buffer);
            }
            Err(e) => results.push((sub.ticket, Err(e.into()))),
        }
    }
    if members.is_empty() {
        return results;
    }
    let placement = crate::kv::Placement::concat(&placed);
    match runner.step(model, kv, &tokens, &positions, &seqs, &placement, &outputs, buffer.unwrap_or_default()) {
        Ok(logits) if members.len() == 1 => results.push((members[0].0, Ok(logits))),
        Ok(logits) => {
            let n_vocab = model.hparams.n_vocab as usize;
            let mut at = 0;
            for (ticket, n_out) in members {
                results.push((ticket, Ok(logits[at * n_vocab..(at + n_out) * n_vocab].to_vec())));
                at += n_out;
            }
        }
        Err(e) => {
            kv.unplace(&placement);
            let msg = format!("the step could not run: {e}");
            let mut first = Some(e);
            for (ticket, _) in members {
                let err = first.take().unwrap_or_else(|| Error::Internal(msg.clone()));
                results.push((ticket, Err(err)));
            }
        }
    }
    results
}

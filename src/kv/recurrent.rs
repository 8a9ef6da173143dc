//! The recurrent layers' state, per sequence, beside the attention cells
//! (hybrid models: Qwen3.5's gated-delta-net layers). Each recurrent layer
//! keeps, for each sequence, a convolution state (its last `d_conv - 1`
//! inputs) and a delta-rule state (one matrix per value head). Both are
//! fixed-size: a token, once evaluated, is absorbed into them and cannot be
//! taken out.
//!
//! What forgetting means here (see docs/DESIGN-hybrid.md):
//! - Removing a span that later live tokens follow deletes the attention
//!   layers' cells in place; the recurrent state keeps what it absorbed
//!   (the span survives in it only as a trace, as it does in the kept keys
//!   and values computed while it was visible). llama.cpp's hybrid memory
//!   does the same for such a removal.
//! - Removing the sequence's tail (the last token the state absorbed) is a
//!   rewind: the state must be as it was before. The sequence is marked,
//!   and before its next evaluation the newest checkpoint at or before its
//!   last live token is restored and the live tokens after that
//!   checkpoint are evaluated again (`Session::sync_recurrent`). The empty
//!   state is the checkpoint of last resort: a rewind never computes
//!   silently wrong, at worst it costs a re-evaluation of the live tokens.
//! - Checkpoints are host copies of one sequence's state, taken after each
//!   evaluation of several tokens (a prompt, a turn), at most
//!   `MAX_CHECKPOINTS` per sequence, the oldest dropped first.
use super::cells::{Pos, SeqId};
use super::error::KvError;
use crate::ggml::{BufferType, GgmlType, TensorId, TensorStore};

/// Checkpoints kept per sequence (llama.cpp's server keeps 8 by default).
pub const MAX_CHECKPOINTS: usize = 8;

/// Which layers are recurrent and the floats of their states.
#[derive(Clone, Debug)]
pub struct RecurrentLayout {
    pub layers: Vec<bool>,
    /// Floats of one sequence's convolution state, per layer.
    pub n_embd_r: usize,
    /// Floats of one sequence's delta-rule state, per layer.
    pub n_embd_s: usize,
}

/// One sequence's state at a point of its history.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Position of the last token it absorbed (-1: none).
    pub last: Pos,
    /// Every recurrent layer's convolution then delta-rule state, f32 bytes.
    pub data: Vec<u8>,
}

pub struct RecurrentStates {
    store: TensorStore,
    /// Per layer: the index of its (conv, delta) pair in the store.
    slot: Vec<Option<usize>>,
    n_embd_r: usize,
    n_embd_s: usize,
    /// Per sequence: the position of the last token the state absorbed (-1: none).
    last: Vec<Pos>,
    /// Per sequence: its tail was removed; the state must be rewound before
    /// the next evaluation.
    rewind: Vec<bool>,
    checkpoints: Vec<Vec<Checkpoint>>,
}

impl RecurrentStates {
    pub fn new(l: &RecurrentLayout, n_seq: usize, bufts: &[BufferType]) -> Result<RecurrentStates, KvError> {
        let mut specs = Vec::new();
        let mut slot = Vec::with_capacity(l.layers.len());
        for (il, &r) in l.layers.iter().enumerate() {
            if !r {
                slot.push(None);
                continue;
            }
            slot.push(Some(specs.len() / 2));
            let buft = *bufts.get(il).ok_or(KvError::Alloc { cells: n_seq })?;
            specs.push((format!("cache_r_l{il}"), GgmlType::F32, vec![l.n_embd_r as i64, n_seq as i64], buft));
            specs.push((format!("cache_s_l{il}"), GgmlType::F32, vec![l.n_embd_s as i64, n_seq as i64], buft));
        }
        let store = TensorStore::allocate(&specs).ok_or(KvError::Alloc { cells: n_seq })?;
        let s = RecurrentStates {
            store,
            slot,
            n_embd_r: l.n_embd_r,
            n_embd_s: l.n_embd_s,
            last: vec![-1; n_seq],
            rewind: vec![false; n_seq],
            checkpoints: vec![Vec::new(); n_seq],
        };
        (0..n_seq).for_each(|seq| s.zero(seq));
        Ok(s)
    }

    pub fn store(&self) -> &TensorStore {
        &self.store
    }

    pub fn is_recurrent(&self, il: usize) -> bool {
        self.slot.get(il).is_some_and(Option::is_some)
    }

    /// The convolution states of layer `il`: [n_embd_r, n_seq].
    pub fn conv(&self, il: usize) -> TensorId {
        self.store.nth(2 * self.slot[il].expect("a recurrent layer"))
    }

    /// The delta-rule states of layer `il`: [n_embd_s, n_seq].
    pub fn delta(&self, il: usize) -> TensorId {
        self.store.nth(2 * self.slot[il].expect("a recurrent layer") + 1)
    }

    pub fn bytes(&self) -> usize {
        self.store.total_bytes()
    }

    /// Bytes of one sequence's state, all layers.
    pub fn seq_bytes(&self) -> usize {
        self.slot.iter().flatten().count() * (self.n_embd_r + self.n_embd_s) * 4
    }

    fn pairs(&self) -> impl Iterator<Item = (TensorId, usize)> + '_ {
        self.slot.iter().flatten().flat_map(move |&k| {
            [(self.store.nth(2 * k), self.n_embd_r * 4), (self.store.nth(2 * k + 1), self.n_embd_s * 4)]
        })
    }

    /// `seq`'s state, every layer, as bytes.
    pub fn read(&self, seq: SeqId) -> Vec<u8> {
        let mut out = vec![0u8; self.seq_bytes()];
        let mut at = 0;
        for (id, row) in self.pairs() {
            self.store.get(id).read_bytes(&mut out[at..at + row], seq * row);
            at += row;
        }
        out
    }

    /// Set `seq`'s state from bytes `read` gave.
    pub fn write(&self, seq: SeqId, data: &[u8]) -> Result<(), KvError> {
        if data.len() != self.seq_bytes() {
            return Err(KvError::Snapshot(format!(
                "recurrent state of {} bytes; this model's is {}",
                data.len(),
                self.seq_bytes()
            )));
        }
        let mut at = 0;
        for (id, row) in self.pairs() {
            self.store.get(id).write_bytes(&data[at..at + row], seq * row);
            at += row;
        }
        Ok(())
    }

    fn zero(&self, seq: SeqId) {
        let zeros = vec![0u8; self.seq_bytes()];
        self.write(seq, &zeros).expect("sizes match");
    }

    /// The position of the last token `seq`'s state absorbed (-1: none).
    pub fn last(&self, seq: SeqId) -> Pos {
        self.last[seq]
    }

    /// After a step: `seq`'s state absorbed tokens up to `pos`.
    pub fn absorbed(&mut self, seq: SeqId, pos: Pos) {
        self.last[seq] = self.last[seq].max(pos);
    }

    /// Whether `seq`'s tail was removed and its state waits for a rewind.
    pub fn needs_rewind(&self, seq: SeqId) -> bool {
        self.rewind[seq]
    }

    /// Keep a copy of `seq`'s state as it is now.
    pub fn checkpoint(&mut self, seq: SeqId) {
        let last = self.last[seq];
        let list = &mut self.checkpoints[seq];
        list.retain(|c| c.last != last);
        if list.len() >= MAX_CHECKPOINTS {
            list.remove(0);
        }
        let data = self.read(seq);
        self.checkpoints[seq].push(Checkpoint { last, data });
    }

    pub fn checkpoints(&self, seq: SeqId) -> &[Checkpoint] {
        &self.checkpoints[seq]
    }

    /// Rewind `seq` to the newest checkpoint that absorbed nothing after
    /// position `to` (or to the empty state): returns that checkpoint's last
    /// position. The caller evaluates the live tokens after it again.
    pub fn rewind_to(&mut self, seq: SeqId, to: Pos) -> Pos {
        self.checkpoints[seq].retain(|c| c.last <= to);
        // The newest by position (a checkpoint inside a forgotten span stands
        // just before it, and may sit behind later ones in the list).
        self.checkpoints[seq].sort_by_key(|c| c.last);
        match self.checkpoints[seq].last() {
            Some(c) => {
                let (last, data) = (c.last, c.data.clone());
                self.write(seq, &data).expect("a checkpoint of this model");
                self.last[seq] = last;
            }
            None => {
                self.zero(seq);
                self.last[seq] = -1;
            }
        }
        self.rewind[seq] = false;
        self.last[seq]
    }

    /// `seq` let go of its tokens at `[p0, p1)`: a removal of the last
    /// absorbed token marks a rewind (and drops the checkpoints from `p0`
    /// on); a removal that later tokens follow keeps the state, and the
    /// checkpoints inside the span now stand just before it.
    pub fn removed(&mut self, seq: SeqId, p0: Pos, p1: Pos) {
        if p0 <= 0 && p1 == Pos::MAX {
            self.clear_seq(seq);
            return;
        }
        let list = &mut self.checkpoints[seq];
        if (p0..p1).contains(&self.last[seq]) {
            self.rewind[seq] = true;
            list.retain(|c| c.last < p0);
        } else {
            list.iter_mut().filter(|c| (p0..p1).contains(&c.last)).for_each(|c| c.last = p0 - 1);
        }
    }

    /// Positions of `seq` from `p0` on moved by `delta` (a gap closed or opened).
    pub fn shifted(&mut self, seq: SeqId, p0: Pos, delta: Pos) {
        let mv = |p: &mut Pos| {
            if *p >= p0 {
                *p += delta
            }
        };
        mv(&mut self.last[seq]);
        self.checkpoints[seq].iter_mut().for_each(|c| mv(&mut c.last));
    }

    /// `seq` starts afresh: empty state, no checkpoints.
    pub fn clear_seq(&mut self, seq: SeqId) {
        self.zero(seq);
        self.last[seq] = -1;
        self.rewind[seq] = false;
        self.checkpoints[seq].clear();
    }

    /// `dst` goes on from `src`'s first tokens, up to position `end`
    /// (exclusive): it takes `src`'s state and checkpoints; if `src` went
    /// on past `end`, `dst` is marked for a rewind to `end`.
    pub fn share(&mut self, src: SeqId, dst: SeqId, end: Pos) {
        let data = self.read(src);
        self.write(dst, &data).expect("same model");
        self.last[dst] = self.last[src];
        self.checkpoints[dst] = self.checkpoints[src].clone();
        self.rewind[dst] = self.rewind[src];
        if self.last[dst] >= end {
            self.rewind[dst] = true;
            self.checkpoints[dst].retain(|c| c.last < end);
        }
    }

    /// Restore a saved state (a session file): `last` is its last position.
    pub fn restore(&mut self, seq: SeqId, last: Pos, data: &[u8]) -> Result<(), KvError> {
        self.write(seq, data)?;
        self.last[seq] = last;
        self.rewind[seq] = false;
        self.checkpoints[seq].clear();
        Ok(())
    }
}

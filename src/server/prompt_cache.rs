//! Chains pushed out of a slot, kept in memory (`--cache-ram MiB`): when a
//! request that does not continue a slot's cache is about to overwrite it
//! (a harness's title or sub-agent request between two turns of the main
//! conversation), the slot saves its cells here first; a later request
//! that continues a saved chain better than any slot does gets it restored
//! into its slot, so the main conversation's next turn still reuses its
//! tokens. Least recently used chains go first when the budget is spent.
use crate::kv::KvSnapshot;
use crate::session::reuse::plan;

/// A saved chain: the tokens in its cache (position order) and the cells.
pub struct CachedChain {
    /// Told to the transcript when saved and restored (replay keeps its own copy).
    pub id: u64,
    pub chain: Vec<u32>,
    pub snap: KvSnapshot,
    last_used: u64,
}

impl CachedChain {
    fn bytes(&self) -> usize {
        self.snap.data_bytes() + self.chain.len() * 16
    }
}

/// Chains shorter than this are not worth saving.
pub const MIN_SAVED_TOKENS: usize = 64;

#[derive(Default)]
pub struct PromptCache {
    entries: Vec<CachedChain>,
    limit: usize,
    clock: u64,
    next_id: u64,
}

impl PromptCache {
    /// A cache holding at most `limit` bytes (0: off).
    pub fn new(limit: usize) -> PromptCache {
        PromptCache { limit, ..PromptCache::default() }
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Saved chains and their bytes.
    pub fn usage(&self) -> (usize, usize) {
        (self.entries.len(), self.entries.iter().map(CachedChain::bytes).sum())
    }

    /// The saved chain that `tokens` would reuse most of, with that count.
    pub fn best(&self, tokens: &[u32], min_chunk: Option<usize>) -> Option<(usize, usize)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, plan(&e.chain, tokens, min_chunk).cached()))
            .filter(|&(_, r)| r > 0)
            .max_by_key(|&(i, r)| (r, self.entries[i].last_used))
    }

    /// Take entry `i` out (its slot will hold it; it is saved again when pushed out).
    pub fn take(&mut self, i: usize) -> CachedChain {
        self.entries.swap_remove(i)
    }

    /// The id the next saved chain gets (recorded before the snapshot is taken).
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Keep a chain, dropping the chains it continues (they would reuse no
    /// more than it does) and then the least recently used ones until it
    /// fits. Returns whether it was kept (a chain over the whole budget is not).
    pub fn put(&mut self, id: u64, chain: Vec<u32>, snap: KvSnapshot) -> bool {
        self.clock += 1;
        let e = CachedChain { id, chain, snap, last_used: self.clock };
        if e.bytes() > self.limit {
            return false;
        }
        self.entries.retain(|o| !e.chain.starts_with(&o.chain));
        let mut used: usize = self.entries.iter().map(CachedChain::bytes).sum();
        while used + e.bytes() > self.limit {
            let Some(i) = self.entries.iter().enumerate().min_by_key(|(_, o)| o.last_used).map(|(i, _)| i) else {
                break;
            };
            used -= self.entries.swap_remove(i).bytes();
        }
        self.entries.push(e);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvLayout;

    fn snap(n: usize, bytes: usize) -> KvSnapshot {
        KvSnapshot {
            layout: KvLayout {
                n_layer: 1,
                n_embd_k: 1,
                n_embd_v: 1,
                type_k: "f16".into(),
                type_v: "f16".into(),
                swa_layers: Vec::new(),
                recurrent_layers: Vec::new(),
                widths: Vec::new(),
            },
            next_pos: n as i32,
            tokens: vec![0; n],
            pos: (0..n as i32).collect(),
            live: vec![true; n],
            swa: None,
            k: vec![vec![0; bytes]],
            v: Vec::new(),
            recurrent: None,
        }
    }

    #[test]
    fn the_best_chain_is_found_and_the_oldest_goes_first() {
        let mut c = PromptCache::new(6000);
        let a: Vec<u32> = (0..100).collect();
        let b: Vec<u32> = (1000..1100).collect();
        assert!(c.put(1, a.clone(), snap(100, 1000)));
        assert!(c.put(2, b.clone(), snap(100, 1000)));
        let mut ask = a.clone();
        ask.extend([7, 8, 9]);
        let (i, reused) = c.best(&ask, None).unwrap();
        assert_eq!((c.entries[i].id, reused), (1, 100));
        assert!(c.best(&[5000, 5001], None).is_none());
        // A third chain does not fit beside both: the oldest (a) goes.
        assert!(c.put(3, (2000..2100).collect(), snap(100, 1000)));
        assert_eq!(c.usage().0, 2);
        assert!(c.best(&ask, None).is_none());
        // A chain that continues a saved one replaces it.
        let mut b2 = b.clone();
        b2.extend([1, 2]);
        assert!(c.put(4, b2, snap(102, 10)));
        assert_eq!(c.entries.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 4]);
        // Too big for the whole budget: not kept.
        assert!(!c.put(5, vec![1], snap(1, 7000)));
        let e = c.take(0);
        assert_eq!(e.id, 3);
        assert_eq!(c.usage().0, 1);
    }
}

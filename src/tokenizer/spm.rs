//! SentencePiece (`tokenizer.ggml.model = "llama"`) tokenization as llama.cpp
//! does it: start from single characters, repeatedly join the adjacent pair
//! whose concatenation is the token with the highest score (leftmost on
//! ties), and spell any character that is not a token with byte tokens
//! `<0xXX>`.
//!
//! This is not done with a `tokenizers` model: BPE ranks would have to be
//! derived from scores, and distinct tokens of equal score would then be
//! ordered by rank instead of by position as llama.cpp orders them.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

/// A symbol: a byte range of the text, linked to its neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate join of two adjacent symbols.
#[derive(Debug, Clone, Copy)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    /// Byte length of the joined text, to detect stale candidates.
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Higher score first; on equal scores the leftmost first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

/// Tokenizes `text` (spaces already escaped as `▁`) and appends the ids to `out`.
pub(crate) fn tokenize_into(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (i, (start, c)) in text.char_indices().enumerate() {
        symbols.push(Symbol { start, len: c.len_utf8(), prev: i.checked_sub(1), next: None });
        if i > 0 {
            symbols[i - 1].next = Some(i);
        }
    }
    if symbols.is_empty() {
        return;
    }

    let mut queue = BinaryHeap::new();
    let try_add = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
        let (Some(l), Some(r)) = (left, right) else {
            return;
        };
        let (ls, rs) = (symbols[l], symbols[r]);
        let joined = &text[ls.start..ls.start + ls.len + rs.len];
        if let Some(id) = vocab.id(joined) {
            queue.push(Bigram { left: l, right: r, score: vocab.scores[id as usize], size: joined.len() });
        }
    };
    for i in 1..symbols.len() {
        try_add(&mut queue, &symbols, Some(i - 1), Some(i));
    }

    while let Some(b) = queue.pop() {
        let (l, r) = (symbols[b.left], symbols[b.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue;
        }
        symbols[b.left].len += r.len;
        symbols[b.right].len = 0;
        symbols[b.left].next = r.next;
        if let Some(n) = r.next {
            symbols[n].prev = Some(b.left);
        }
        try_add(&mut queue, &symbols, symbols[b.left].prev, Some(b.left));
        try_add(&mut queue, &symbols, Some(b.left), symbols[b.left].next);
    }

    let mut i = Some(0);
    while let Some(k) = i {
        let s = symbols[k];
        let piece = &text[s.start..s.start + s.len];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => {
                for byte in piece.bytes() {
                    if let Some(id) = byte_token(vocab, byte) {
                        out.push(id);
                    }
                }
            }
        }
        i = s.next;
    }
}

/// The token of a raw byte: `<0xXX>`, else the one-byte text, else the
/// unknown token.
fn byte_token(vocab: &Vocab, byte: u8) -> Option<u32> {
    vocab
        .id(&format!("<0x{byte:02X}>"))
        .or_else(|| std::str::from_utf8(&[byte]).ok().and_then(|s| vocab.id(s)))
        .or(vocab.unk)
}

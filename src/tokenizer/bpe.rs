//! Byte-level BPE: a `tokenizers` pipeline made of llama.cpp's
//! pre-tokenizer ([`LlamaPreTokenizer`]) and a `tokenizers` BPE model built
//! from the GGUF tokens and merges.
//!
//! The `tokenizers` BPE applies merges by rank, leftmost first among equal
//! ranks, like llama.cpp. It needs every merge to join two tokens into a
//! token; a GGUF merge that does not (rare, malformed vocabularies) is left
//! out, and a repeated merge keeps its first (best) rank, as llama.cpp does.
//!
//! A character that is not a token (a byte missing from the byte alphabet
//! of a vocabulary) stays a symbol in llama.cpp: it keeps its neighbours from
//! merging, and is dropped at the end. The `tokenizers` BPE would drop it at
//! once and merge across it, so such characters become a sentinel "unknown"
//! token, outside the vocabulary's id range, that no merge involves; it is
//! removed from the output.

use tokenizers::models::bpe::{Vocab as BpeVocab, BPE};
use tokenizers::tokenizer::{DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, TokenizerImpl};

use super::error::TokenizerError;
use super::pretokenize::LlamaPreTokenizer;
use super::vocab::{split_merge, Vocab};

/// The `tokenizers` pipeline used for the text between special tokens.
pub(crate) type BpePipeline =
    TokenizerImpl<BPE, NormalizerWrapper, LlamaPreTokenizer, PostProcessorWrapper, DecoderWrapper>;

/// The text of the sentinel token; it cannot occur in byte-level text (which
/// never contains U+0000).
const UNKNOWN_SENTINEL: &str = "\u{0}unknown";

/// The id of the sentinel token: the first id past the vocabulary.
pub(crate) fn sentinel_id(vocab: &Vocab) -> u32 {
    vocab.len() as u32
}

/// Builds the BPE pipeline of a byte-level vocabulary.
pub(crate) fn build(vocab: &Vocab, merges: &[String]) -> Result<BpePipeline, TokenizerError> {
    let preset = vocab
        .pre
        .as_ref()
        .ok_or_else(|| TokenizerError::metadata("tokenizer.ggml.pre", "missing for a BPE vocabulary"))?;
    let model = model(vocab, merges, preset.ignore_merges, false)?;
    let mut pipeline = TokenizerImpl::new(model);
    pipeline.with_pre_tokenizer(Some(LlamaPreTokenizer::new(preset.stages)));
    Ok(pipeline)
}

/// The `tokenizers` BPE model of a vocabulary and its merges (each merge
/// joining two tokens into a token, at its first rank), with the unknown
/// sentinel; `byte_fallback`: characters that are no token become their
/// bytes' `<0xXX>` tokens.
pub(crate) fn model(
    vocab: &Vocab,
    merges: &[String],
    ignore_merges: bool,
    byte_fallback: bool,
) -> Result<BPE, TokenizerError> {
    if merges.is_empty() {
        return Err(TokenizerError::metadata("tokenizer.ggml.merges", "missing for a BPE vocabulary"));
    }
    let mut seen = std::collections::HashSet::with_capacity(merges.len());
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, rule) in merges.iter().enumerate() {
        let (a, b) = split_merge(rule).ok_or_else(|| {
            TokenizerError::metadata(format!("tokenizer.ggml.merges[{i}]"), format!("expected 'a b', got {rule:?}"))
        })?;
        if !seen.insert((a, b)) {
            continue;
        }
        let joined_is_token = vocab.text_to_id.contains_key(&format!("{a}{b}"));
        if vocab.text_to_id.contains_key(a) && vocab.text_to_id.contains_key(b) && joined_is_token {
            pairs.push((a.to_string(), b.to_string()));
        }
    }

    let mut bpe_vocab: BpeVocab = vocab.text_to_id.iter().map(|(t, &id)| (t.clone(), id)).collect();
    bpe_vocab.insert(UNKNOWN_SENTINEL.to_string(), sentinel_id(vocab));
    BPE::builder()
        .vocab_and_merges(bpe_vocab, pairs)
        .unk_token(UNKNOWN_SENTINEL.to_string())
        .fuse_unk(false)
        .ignore_merges(ignore_merges)
        .byte_fallback(byte_fallback)
        .build()
        .map_err(|e| TokenizerError::metadata("tokenizer.ggml.merges", e.to_string()))
}

/// Appends the token ids of `text` (no special-token handling) to `out`.
pub(crate) fn encode_into(
    pipeline: &BpePipeline,
    vocab: &Vocab,
    text: &str,
    out: &mut Vec<u32>,
) -> Result<(), TokenizerError> {
    if text.is_empty() {
        return Ok(());
    }
    let encoding = pipeline.encode_fast(text, false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
    let sentinel = sentinel_id(vocab);
    out.extend(encoding.get_ids().iter().copied().filter(|&id| id != sentinel));
    Ok(())
}

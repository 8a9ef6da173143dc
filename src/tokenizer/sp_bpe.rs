//! BPE over raw UTF-8 with SentencePiece's spaces (`tokenizer.ggml.model =
//! "gemma4"`, Gemma 4), as llama.cpp runs it: every space becomes `▁`, the
//! text is cut only into runs of newlines and runs of anything else, merges
//! apply by rank over each run's characters (a `tokenizers` BPE model built
//! from the GGUF tokens and merges, as for byte-level vocabularies), and a
//! character that is no token falls back to its bytes' `<0xXX>` tokens. A
//! run of newlines that is itself a token stays one token.
use tokenizers::models::bpe::BPE;
use tokenizers::Model;

use super::error::TokenizerError;
use super::vocab::Vocab;

/// Builds the BPE model of such a vocabulary (with byte fallback).
pub(crate) fn build(vocab: &Vocab, merges: &[String]) -> Result<BPE, TokenizerError> {
    super::bpe::model(vocab, merges, false, true)
}

/// Appends the token ids of `text` (no special-token handling) to `out`.
pub(crate) fn encode_into(model: &BPE, vocab: &Vocab, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
    let escaped = text.replace(' ', "\u{2581}");
    for run in newline_runs(&escaped) {
        if run.bytes().all(|b| b == b'\n') {
            if let Some(id) = vocab.id(run) {
                out.push(id);
                continue;
            }
        }
        let tokens = model.tokenize(run).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let sentinel = super::bpe::sentinel_id(vocab);
        out.extend(tokens.iter().map(|t| t.id).filter(|&id| id != sentinel));
    }
    Ok(())
}

/// The runs of `[^\n]+|[\n]+`, in order.
fn newline_runs(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        let first = rest.bytes().next()?;
        let end = rest.bytes().position(|b| (b == b'\n') != (first == b'\n')).unwrap_or(rest.len());
        let (run, tail) = rest.split_at(end);
        rest = tail;
        Some(run)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_alternate_between_newlines_and_the_rest() {
        let runs: Vec<&str> = newline_runs("ab\n\ncd\ne\n").collect();
        assert_eq!(runs, ["ab", "\n\n", "cd", "\n", "e", "\n"]);
        assert_eq!(newline_runs("").count(), 0);
        assert_eq!(newline_runs("\u{2581}é").collect::<Vec<_>>(), ["\u{2581}é"]);
    }
}

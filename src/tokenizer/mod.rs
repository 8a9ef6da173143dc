//! Tokenization of GGUF vocabularies, identical to llama.cpp's.
//!
//! A [`VocabSpec`] (the `tokenizer.ggml.*` metadata) becomes a [`Tokenizer`]:
//!
//! * `gpt2` vocabularies run through a `tokenizers` pipeline: llama.cpp's
//!   pre-tokenizer for the `tokenizer.ggml.pre` in the file
//!   ([`pretokenize`]), the byte-level mapping, and a `tokenizers` BPE model
//!   built from the tokens and merges ([`bpe`]);
//! * `llama` (SentencePiece) vocabularies use llama.cpp's score-driven
//!   merging ([`spm`]);
//! * `gemma4` vocabularies are BPE over raw UTF-8 with SentencePiece's
//!   spaces and byte fallback ([`sp_bpe`]).
//!
//! Before either, special tokens are cut out of the text as llama.cpp does
//! ([`special`]). Decoding ([`piece`], [`stream`]) and chat templates
//! ([`template`]) complete the module. Nothing here prints.

mod bpe;
mod error;
mod piece;
mod pretokenize;
mod sp_bpe;
mod special;
mod spm;
mod stream;
mod template;
mod unicode;
mod vocab;

pub use error::TokenizerError;
pub use stream::{StreamDecoder, Utf8Stream};
pub use template::{strftime_now, ChatMessage, ChatTemplate};
pub use vocab::{TokenAttr, VocabSpec, VocabType};

use special::Fragment;
use vocab::Vocab;

/// A GGUF vocabulary ready to encode and decode, with its chat template.
#[derive(Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    engine: Engine,
    chat_template: Option<String>,
    kind: String,
    /// Every token's text (as [`Tokenizer::token_to_piece`] without
    /// control tokens), built on first use.
    pieces: std::sync::OnceLock<std::sync::Arc<[Vec<u8>]>>,
}

/// The family-specific tokenizer behind [`Tokenizer`].
enum Engine {
    Bpe(Box<bpe::BpePipeline>),
    Spm,
    SpBpe(Box<tokenizers::models::bpe::BPE>),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Bpe(_) => f.write_str("Bpe"),
            Engine::Spm => f.write_str("Spm"),
            Engine::SpBpe(_) => f.write_str("SpBpe"),
        }
    }
}

impl Tokenizer {
    /// Validates the metadata and builds the tokenizer. Malformed metadata
    /// gives an error naming the field (`tokenizer.ggml.merges[17]: ...`);
    /// an unknown `tokenizer.ggml.model` or `tokenizer.ggml.pre` gives an error
    /// naming the value and the supported ones.
    pub fn from_spec(spec: VocabSpec) -> Result<Self, TokenizerError> {
        let vocab = Vocab::from_spec(&spec)?;
        let engine = match vocab.vtype {
            VocabType::Bpe => Engine::Bpe(Box::new(bpe::build(&vocab, &spec.merges)?)),
            VocabType::Spm => Engine::Spm,
            VocabType::SpBpe => Engine::SpBpe(Box::new(sp_bpe::build(&vocab, &spec.merges)?)),
        };
        let kind = match (&vocab.vtype, &vocab.pre) {
            (VocabType::Bpe, Some(p)) => format!("gpt2 BPE (pre: {})", p.name),
            (VocabType::Bpe, None) => "gpt2 BPE".to_string(),
            (VocabType::Spm, _) => "llama SentencePiece".to_string(),
            (VocabType::SpBpe, _) => "gemma4 BPE (raw UTF-8, ▁ spaces, byte fallback)".to_string(),
        };
        Ok(Tokenizer { vocab, engine, chat_template: spec.chat_template, kind, pieces: Default::default() })
    }

    /// Tokenizes `text` like `llama_tokenize(vocab, text, add_special, parse_special)`:
    /// `add_special` adds BOS/EOS where the vocabulary asks for them;
    /// `parse_special` turns the text of control tokens (`<|im_start|>`) into
    /// those tokens.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let v = &self.vocab;
        let fragments = special::partition(v, text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && v.add_bos {
            out.extend(v.bos);
        }
        match &self.engine {
            Engine::Bpe(pipeline) => {
                for f in &fragments {
                    match *f {
                        Fragment::Text(t) => bpe::encode_into(pipeline, v, t, &mut out)?,
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            Engine::SpBpe(model) => {
                for f in &fragments {
                    match *f {
                        Fragment::Text(t) => sp_bpe::encode_into(model, v, t, &mut out)?,
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            Engine::Spm => {
                // A space is prefixed to the text at the start and after each special token.
                let mut after_special = true;
                for f in &fragments {
                    match *f {
                        Fragment::Text(t) => {
                            let mut s = String::with_capacity(t.len() + 3);
                            if v.add_space_prefix && after_special {
                                s.push(' ');
                            }
                            s.push_str(t);
                            let escaped = s.replace(' ', "\u{2581}");
                            spm::tokenize_into(v, &escaped, &mut out);
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
            }
        }
        if add_special && v.add_eos {
            out.extend(v.eos);
        }
        Ok(out)
    }

    /// The bytes of one token, like `llama_token_to_piece(vocab, id, buf, len, 0, special)`:
    /// control tokens render as their text only with `special`. Ids out of
    /// range give nothing.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Vec<u8> {
        piece::token_to_piece(&self.vocab, id, special)
    }

    /// The text of a token sequence, like `llama_detokenize(ids, remove_special = false,
    /// unparse_special = special)` (with its clean-up of spaces where the
    /// vocabulary asks for it); invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        String::from_utf8_lossy(&piece::detokenize(&self.vocab, ids, special)).into_owned()
    }

    /// A streaming decoder over this tokenizer.
    pub fn stream_decoder(&self, special: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, special)
    }

    /// The bytes of every token, indexed by id (empty for control tokens):
    /// what constrained sampling matches candidates against.
    pub fn pieces(&self) -> std::sync::Arc<[Vec<u8>]> {
        let all = || (0..self.vocab.len() as u32).map(|id| self.token_to_piece(id, false)).collect();
        self.pieces.get_or_init(all).clone()
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }

    /// The beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.vocab.bos
    }

    /// The end-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.vocab.eos
    }

    /// The end-of-turn token (from the file, or recognised by its text).
    pub fn eot(&self) -> Option<u32> {
        self.vocab.eot
    }

    /// The end-of-message token.
    pub fn eom(&self) -> Option<u32> {
        self.vocab.eom
    }

    /// The padding token.
    pub fn pad(&self) -> Option<u32> {
        self.vocab.pad
    }

    /// The unknown token.
    pub fn unk(&self) -> Option<u32> {
        self.vocab.unk
    }

    /// Whether [`Tokenizer::encode`] with `add_special` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    /// Whether [`Tokenizer::encode`] with `add_special` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }

    /// Whether `id` ends generation: EOS, EOT, EOM and the tokens llama.cpp
    /// adds by their text (`<|im_end|>`, `<|endoftext|>`, `<end_of_turn>` ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.contains(&id)
    }

    /// The end-of-generation tokens, in increasing order.
    pub fn eog_tokens(&self) -> Vec<u32> {
        self.vocab.eog.iter().copied().collect()
    }

    /// Whether `id` is a control token (rendered only with `special`).
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab.attr(id).intersects(TokenAttr::CONTROL)
    }

    /// The attributes of a token.
    pub fn token_attr(&self, id: u32) -> TokenAttr {
        self.vocab.attr(id)
    }

    /// The raw text of a token as stored in the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.texts.get(id as usize).map(String::as_str)
    }

    /// The id of a token text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }

    /// The tokenizer family.
    pub fn vocab_type(&self) -> VocabType {
        self.vocab.vtype
    }

    /// A one-line description for `decache info`, e.g. `gpt2 BPE (pre: smollm)`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The chat template the model file carries, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Tokenizer>();
        send_sync::<ChatTemplate>();
        send_sync::<VocabSpec>();
    }
}

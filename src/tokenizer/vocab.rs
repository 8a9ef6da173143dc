//! The vocabulary as GGUF metadata describes it ([`VocabSpec`]) and as the
//! tokenizer uses it ([`Vocab`]): token texts, attributes, special ids and the
//! end-of-generation set, derived with the same rules as llama.cpp's loader.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::error::TokenizerError;
use super::pretokenize::PrePreset;

/// The `tokenizer.ggml.*` metadata of a GGUF file (plus its chat template),
/// decoupled from the GGUF reader. `None` and empty vectors mean "absent".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VocabSpec {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE) or `"llama"` (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer of a BPE vocabulary (`"smollm"`, `"llama-bpe"`, `"qwen2"` ...).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.scores` (SentencePiece merge priorities; may be empty).
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.merges`: `"left right"` pairs, highest priority first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`.
    pub eot: Option<u32>,
    /// `tokenizer.ggml.eom_token_id`.
    pub eom: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

/// Token attributes (a bit set), as llama.cpp derives them from
/// `tokenizer.ggml.token_type` and from a few well-known token texts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TokenAttr(u16);

impl TokenAttr {
    /// No attribute (token type 0 or an unknown type).
    pub const UNDEFINED: TokenAttr = TokenAttr(0);
    /// The unknown token.
    pub const UNKNOWN: TokenAttr = TokenAttr(1 << 0);
    /// Unused (reserved) token.
    pub const UNUSED: TokenAttr = TokenAttr(1 << 1);
    /// Ordinary text token.
    pub const NORMAL: TokenAttr = TokenAttr(1 << 2);
    /// Control token (`<|im_start|>` ...): matched in text only with `parse_special`, rendered only with `special`.
    pub const CONTROL: TokenAttr = TokenAttr(1 << 3);
    /// User-defined token: always matched in text before tokenization, always rendered.
    pub const USER_DEFINED: TokenAttr = TokenAttr(1 << 4);
    /// Byte token `<0xXX>`.
    pub const BYTE: TokenAttr = TokenAttr(1 << 5);
    /// Whitespace before the token is dropped when it is matched in text.
    pub const LSTRIP: TokenAttr = TokenAttr(1 << 7);
    /// Whitespace after the token is dropped when it is matched in text.
    pub const RSTRIP: TokenAttr = TokenAttr(1 << 8);

    /// The attribute a GGUF token type maps to.
    pub fn from_token_type(token_type: i32) -> TokenAttr {
        match token_type {
            1 => TokenAttr::NORMAL,
            2 => TokenAttr::UNKNOWN,
            3 => TokenAttr::CONTROL,
            4 => TokenAttr::USER_DEFINED,
            5 => TokenAttr::UNUSED,
            6 => TokenAttr::BYTE,
            _ => TokenAttr::UNDEFINED,
        }
    }

    /// Whether any bit of `other` is set.
    pub fn intersects(self, other: TokenAttr) -> bool {
        self.0 & other.0 != 0
    }

    /// The union of two attribute sets.
    pub fn with(self, other: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 | other.0)
    }
}

impl std::ops::BitOr for TokenAttr {
    type Output = TokenAttr;
    fn bitor(self, rhs: TokenAttr) -> TokenAttr {
        self.with(rhs)
    }
}

/// The tokenizer family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabType {
    /// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`).
    Bpe,
    /// SentencePiece with score-driven merges (`tokenizer.ggml.model = "llama"`).
    Spm,
    /// BPE over raw UTF-8 with spaces as `▁` and `<0xXX>` byte fallback
    /// (`tokenizer.ggml.model = "gemma4"`).
    SpBpe,
}

/// Model names accepted in `tokenizer.ggml.model`.
pub(crate) const SUPPORTED_MODELS: &str = "gpt2, llama, gemma4";

/// Texts that make a token end generation (llama.cpp's list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Texts recognised as the end-of-turn token when the file names none.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Fill-in-the-middle token texts: prefix, suffix, middle (made control tokens).
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
/// Fill-in-the-middle pad, repository and file-separator texts (control and end-of-generation).
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// A validated vocabulary with everything the encoder and decoder need.
#[derive(Debug, Clone)]
pub(crate) struct Vocab {
    pub(crate) vtype: VocabType,
    /// The BPE pre-tokenizer preset (for SPM: `None`).
    pub(crate) pre: Option<PrePreset>,
    pub(crate) texts: Vec<String>,
    pub(crate) attrs: Vec<TokenAttr>,
    pub(crate) scores: Vec<f32>,
    pub(crate) text_to_id: HashMap<String, u32>,
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    pub(crate) eot: Option<u32>,
    pub(crate) eom: Option<u32>,
    pub(crate) unk: Option<u32>,
    pub(crate) pad: Option<u32>,
    pub(crate) add_bos: bool,
    pub(crate) add_eos: bool,
    pub(crate) add_space_prefix: bool,
    pub(crate) clean_spaces: bool,
    pub(crate) eog: BTreeSet<u32>,
    /// Control, user-defined and unknown tokens, longest text first: the
    /// order in which they are cut out of a text before tokenization.
    pub(crate) special_cache: Vec<u32>,
}

impl Vocab {
    /// Validates `spec` and derives attributes, defaults and the EOG set.
    pub(crate) fn from_spec(spec: &VocabSpec) -> Result<Vocab, TokenizerError> {
        let vtype = match spec.model.as_str() {
            "gpt2" => VocabType::Bpe,
            "llama" => VocabType::Spm,
            "gemma4" => VocabType::SpBpe,
            other => {
                return Err(TokenizerError::UnsupportedModel {
                    model: other.to_string(),
                    supported: SUPPORTED_MODELS.to_string(),
                })
            }
        };
        let pre = match vtype {
            VocabType::Bpe => Some(PrePreset::from_name(spec.pre.as_deref())?),
            VocabType::Spm | VocabType::SpBpe => None,
        };

        let n = spec.tokens.len();
        if n == 0 {
            return Err(TokenizerError::metadata("tokenizer.ggml.tokens", "the vocabulary is empty"));
        }
        if n > u32::MAX as usize {
            return Err(TokenizerError::metadata("tokenizer.ggml.tokens", format!("{n} tokens is too many")));
        }
        if !spec.token_types.is_empty() && spec.token_types.len() != n {
            return Err(TokenizerError::metadata(
                "tokenizer.ggml.token_type",
                format!("{} entries for {n} tokens", spec.token_types.len()),
            ));
        }
        if !spec.scores.is_empty() && spec.scores.len() != n {
            return Err(TokenizerError::metadata(
                "tokenizer.ggml.scores",
                format!("{} entries for {n} tokens", spec.scores.len()),
            ));
        }

        // Token texts: an empty text gets a placeholder, as in llama.cpp.
        let mut texts = Vec::with_capacity(n);
        let mut text_to_id = HashMap::with_capacity(n);
        for (i, t) in spec.tokens.iter().enumerate() {
            let text = if t.is_empty() { format!("[EMPTY_{i}]") } else { t.clone() };
            if let Some(prev) = text_to_id.insert(text.clone(), i as u32) {
                return Err(TokenizerError::metadata(
                    format!("tokenizer.ggml.tokens[{i}]"),
                    format!("duplicate of token {prev} ({text:?})"),
                ));
            }
            texts.push(text);
        }
        let mut attrs: Vec<TokenAttr> = if spec.token_types.is_empty() {
            vec![TokenAttr::NORMAL; n]
        } else {
            spec.token_types.iter().map(|&t| TokenAttr::from_token_type(t)).collect()
        };
        let scores = if spec.scores.is_empty() { vec![0.0; n] } else { spec.scores.clone() };

        // Family defaults, then the file's values.
        let preset = pre.clone();
        let (mut bos, mut eos, mut unk) = match vtype {
            VocabType::Bpe => (Some(11), Some(11), None),
            VocabType::Spm => (Some(1), Some(2), Some(0)),
            VocabType::SpBpe => (None, None, None),
        };
        if preset.as_ref().is_some_and(|p| p.no_bos) {
            bos = None;
        }
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        bos = in_range(bos);
        eos = in_range(eos);
        unk = in_range(unk);
        let check = |field: &str, id: Option<u32>| -> Result<Option<u32>, TokenizerError> {
            match id {
                Some(i) if i as usize >= n => Err(TokenizerError::metadata(
                    field,
                    format!("token id {i} out of range (vocabulary of {n} tokens)"),
                )),
                other => Ok(other),
            }
        };
        bos = check("tokenizer.ggml.bos_token_id", spec.bos)?.or(bos);
        eos = check("tokenizer.ggml.eos_token_id", spec.eos)?.or(eos);
        unk = check("tokenizer.ggml.unknown_token_id", spec.unk)?.or(unk);
        let mut eot = check("tokenizer.ggml.eot_token_id", spec.eot)?;
        let mut eom = check("tokenizer.ggml.eom_token_id", spec.eom)?;
        let pad = check("tokenizer.ggml.padding_token_id", spec.pad)?;

        let (default_add_bos, default_space_prefix, clean_spaces) = match (&vtype, &preset) {
            (VocabType::Bpe, Some(p)) => (p.add_bos, false, p.clean_spaces),
            (VocabType::SpBpe, _) => (true, false, true),
            _ => (true, true, false),
        };
        // Gemma 4 always starts with BOS (llama.cpp overrides the file's false).
        let add_bos = spec.add_bos.filter(|_| vtype != VocabType::SpBpe).unwrap_or(default_add_bos);
        let add_eos = spec.add_eos.unwrap_or(false);
        let add_space_prefix = spec.add_space_prefix.unwrap_or(default_space_prefix);
        if add_bos && bos.is_none() {
            return Err(TokenizerError::metadata(
                "tokenizer.ggml.add_bos_token",
                "is true but the vocabulary has no BOS token",
            ));
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::metadata(
                "tokenizer.ggml.add_eos_token",
                "is true but the vocabulary has no EOS token",
            ));
        }

        // Well-known texts: end of turn / message, fill-in-the-middle. llama.cpp
        // scans a hash map, so with several candidates its choice is arbitrary;
        // we take the lowest id. Every recognised token becomes a control token.
        let find = |list: &[&str]| -> Option<u32> { list.iter().filter_map(|t| text_to_id.get(*t).copied()).min() };
        let make_control = |id: Option<u32>, attrs: &mut Vec<TokenAttr>| {
            if let Some(i) = id {
                attrs[i as usize] = attrs[i as usize] | TokenAttr::CONTROL;
            }
        };
        if eot.is_none() {
            eot = find(EOT_TEXTS);
            make_control(eot, &mut attrs);
        }
        if eom.is_none() {
            eom = find(&["<|eom_id|>"]);
            make_control(eom, &mut attrs);
        }
        for list in [FIM_PRE_TEXTS, FIM_SUF_TEXTS, FIM_MID_TEXTS] {
            make_control(find(list), &mut attrs);
        }
        let fim_eog: Vec<u32> = [FIM_PAD_TEXTS, FIM_REP_TEXTS, FIM_SEP_TEXTS].iter().filter_map(|l| find(l)).collect();
        for &id in &fim_eog {
            make_control(Some(id), &mut attrs);
        }

        // Control tokens named "unused" are unused.
        for (text, attr) in texts.iter().zip(attrs.iter_mut()) {
            if attr.intersects(TokenAttr::CONTROL) && text.contains("unused") {
                *attr = *attr | TokenAttr::UNUSED;
            }
        }

        // The end-of-generation set.
        let mut eog: BTreeSet<u32> = fim_eog.into_iter().collect();
        for t in EOG_TEXTS {
            if let Some(&id) = text_to_id.get(*t) {
                eog.insert(id);
                attrs[id as usize] = attrs[id as usize] | TokenAttr::CONTROL;
            }
        }
        // gpt-oss channel markers are always rendered.
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(&id) = text_to_id.get(t) {
                attrs[id as usize] = TokenAttr::USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        // Harmony / solar-open: "<|end|>" ends a message, not the generation.
        let has = |eog: &BTreeSet<u32>, t: &str| text_to_id.get(t).is_some_and(|id| eog.contains(id));
        if (has(&eog, "<|return|>") && has(&eog, "<|call|>") && has(&eog, "<|end|>"))
            || ((has(&eog, "<|call|>") || has(&eog, "<|calls|>")) && has(&eog, "<|flush|>") && has(&eog, "<|end|>"))
        {
            let id = text_to_id["<|end|>"];
            eog.remove(&id);
            attrs[id as usize] = TokenAttr::USER_DEFINED;
        }
        // Gemma 4 / PLaMo: "</s>" is an ordinary token there.
        if (has(&eog, "<|tool_response>") || has(&eog, "<|plamo:eos|>")) && has(&eog, "</s>") {
            let id = text_to_id["</s>"];
            eog.remove(&id);
            attrs[id as usize] = TokenAttr::NORMAL;
        }

        // The special-token cache, longest first.
        let special_mask = TokenAttr::CONTROL | TokenAttr::USER_DEFINED | TokenAttr::UNKNOWN;
        let mut special_cache: Vec<u32> =
            (0..n as u32).filter(|&i| attrs[i as usize].intersects(special_mask)).collect();
        special_cache.sort_by(|&a, &b| texts[b as usize].len().cmp(&texts[a as usize].len()));

        // Per-pre-tokenizer attributes (llama.cpp keys these on the pre name).
        if let Some(p) = &preset {
            if p.mask_lstrip {
                if let Some(&id) = text_to_id.get("<mask>") {
                    attrs[id as usize] = attrs[id as usize] | TokenAttr::LSTRIP;
                }
            }
        }

        Ok(Vocab {
            vtype,
            pre,
            texts,
            attrs,
            scores,
            text_to_id,
            bos,
            eos,
            eot,
            eom,
            unk,
            pad,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            eog,
            special_cache,
        })
    }

    /// Number of tokens.
    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }

    /// The id of a token text, if the vocabulary has it.
    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.text_to_id.get(text).copied()
    }

    /// The attributes of `id` (`UNDEFINED` when out of range).
    pub(crate) fn attr(&self, id: u32) -> TokenAttr {
        self.attrs.get(id as usize).copied().unwrap_or_default()
    }
}

/// Splits a merge rule `"left right"` at its first space after the first byte
/// (a left part may itself be a space).
pub(crate) fn split_merge(rule: &str) -> Option<(&str, &str)> {
    let pos = rule.bytes().skip(1).position(|b| b == b' ')? + 1;
    Some((&rule[..pos], &rule[pos + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(tokens: &[&str], types: &[i32]) -> VocabSpec {
        VocabSpec {
            model: "gpt2".into(),
            pre: Some("smollm".into()),
            tokens: tokens.iter().map(|s| s.to_string()).collect(),
            token_types: types.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn merge_rules_split_at_first_inner_space() {
        assert_eq!(split_merge("a b"), Some(("a", "b")));
        assert_eq!(split_merge("  b"), Some((" ", "b")));
        assert_eq!(split_merge("ab"), None);
        assert_eq!(split_merge("é b"), Some(("é", "b")));
    }

    #[test]
    fn eog_and_attrs_follow_llama_cpp() {
        let v = Vocab::from_spec(&spec(
            &["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<reponame>", "a", "b", "<unused0>"],
            &[3, 3, 3, 3, 1, 1, 3],
        ))
        .unwrap();
        assert_eq!(v.eot, Some(0));
        assert!(v.eog.contains(&0) && v.eog.contains(&2) && v.eog.contains(&3));
        assert!(!v.eog.contains(&1));
        assert!(v.attr(6).intersects(TokenAttr::UNUSED));
        // gpt2 defaults: BOS/EOS 11 out of range -> none; add_bos false.
        assert_eq!(v.bos, None);
        assert!(!v.add_bos);
        assert_eq!(v.special_cache[0], 0); // longest text first
    }

    #[test]
    fn bad_metadata_names_the_field() {
        let mut s = spec(&["a", "b"], &[1]);
        let e = Vocab::from_spec(&s).unwrap_err().to_string();
        assert!(e.contains("tokenizer.ggml.token_type"), "{e}");
        s.token_types = vec![1, 1];
        s.eos = Some(9);
        let e = Vocab::from_spec(&s).unwrap_err().to_string();
        assert!(e.contains("tokenizer.ggml.eos_token_id") && e.contains('9'), "{e}");
        s.eos = None;
        s.tokens = vec!["a".into(), "a".into()];
        let e = Vocab::from_spec(&s).unwrap_err().to_string();
        assert!(e.contains("tokenizer.ggml.tokens[1]"), "{e}");
        s.model = "bert".into();
        let e = Vocab::from_spec(&s).unwrap_err().to_string();
        assert!(e.contains("bert") && e.contains("gpt2"), "{e}");
        s.model = "gpt2".into();
        s.tokens = vec!["a".into(), "b".into()];
        s.pre = Some("nonsense".into());
        let e = Vocab::from_spec(&s).unwrap_err().to_string();
        assert!(e.contains("nonsense") && e.contains("smollm"), "{e}");
        s.pre = Some("smollm".into());
        s.add_bos = Some(true);
        let e = Vocab::from_spec(&s).unwrap_err().to_string();
        assert!(e.contains("add_bos"), "{e}");
    }
}

//! Fill the tokenizer's input from a GGUF file's `tokenizer.*` metadata.
use super::{GgufError, GgufFile};
use crate::tokenizer::VocabSpec;

impl VocabSpec {
    pub fn from_gguf(f: &GgufFile) -> Result<VocabSpec, GgufError> {
        let missing = |key: &str| GgufError::Metadata {
            path: f.path.clone(),
            key: key.into(),
            msg: "missing (required for the tokenizer)".into(),
        };
        let model = f.get_str("tokenizer.ggml.model")?.ok_or_else(|| missing("tokenizer.ggml.model"))?.to_string();
        let tokens = f.get_str_array("tokenizer.ggml.tokens")?.ok_or_else(|| missing("tokenizer.ggml.tokens"))?;
        let token_types = match f.get_i64_array("tokenizer.ggml.token_type")? {
            Some(v) => v
                .into_iter()
                .enumerate()
                .map(|(i, t)| {
                    i32::try_from(t).map_err(|_| GgufError::Metadata {
                        path: f.path.clone(),
                        key: "tokenizer.ggml.token_type".into(),
                        msg: format!("element {i}: {t} is out of range"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        Ok(VocabSpec {
            model,
            pre: f.get_str("tokenizer.ggml.pre")?.map(str::to_string),
            tokens,
            token_types,
            scores: f.get_f32_array("tokenizer.ggml.scores")?.unwrap_or_default(),
            merges: f.get_str_array("tokenizer.ggml.merges")?.unwrap_or_default(),
            bos: f.get_u32("tokenizer.ggml.bos_token_id")?,
            eos: f.get_u32("tokenizer.ggml.eos_token_id")?,
            eot: f.get_u32("tokenizer.ggml.eot_token_id")?,
            eom: f.get_u32("tokenizer.ggml.eom_token_id")?,
            unk: f.get_u32("tokenizer.ggml.unknown_token_id")?,
            pad: f.get_u32("tokenizer.ggml.padding_token_id")?,
            add_bos: f.get_bool("tokenizer.ggml.add_bos_token")?,
            add_eos: f.get_bool("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: f.get_bool("tokenizer.ggml.add_space_prefix")?,
            chat_template: f.get_str("tokenizer.chat_template")?.map(str::to_string),
        })
    }
}

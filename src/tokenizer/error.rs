//! The tokenizer's error type: every variant names the metadata field, the
//! value or the template at fault.

/// Why a vocabulary could not be built, a text could not be encoded, or a chat
/// template could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenizerError {
    /// A `tokenizer.ggml.*` metadata value is malformed or inconsistent;
    /// `field` names the key, with the array index where one applies
    /// (e.g. `tokenizer.ggml.merges[17]`).
    #[error("{field}: {msg}")]
    Metadata {
        /// The metadata key (and index) at fault.
        field: String,
        /// What is wrong with it.
        msg: String,
    },
    /// `tokenizer.ggml.model` names a tokenizer family decache does not implement.
    #[error("tokenizer.ggml.model: unsupported tokenizer model '{model}' (supported: {supported})")]
    UnsupportedModel {
        /// The value found in the file.
        model: String,
        /// The supported values, comma-separated.
        supported: String,
    },
    /// `tokenizer.ggml.pre` names a pre-tokenizer decache does not implement.
    #[error("tokenizer.ggml.pre: unsupported pre-tokenizer '{pre}' (supported: {supported})")]
    UnsupportedPre {
        /// The value found in the file.
        pre: String,
        /// The supported values, comma-separated.
        supported: String,
    },
    /// A chat template failed to compile or to render.
    #[error("chat template: {0}")]
    Template(String),
    /// The underlying `tokenizers` pipeline failed while encoding.
    #[error("tokenizer: {0}")]
    Encode(String),
}

impl TokenizerError {
    /// Shorthand for [`TokenizerError::Metadata`].
    pub(crate) fn metadata(field: impl Into<String>, msg: impl Into<String>) -> Self {
        TokenizerError::Metadata { field: field.into(), msg: msg.into() }
    }
}

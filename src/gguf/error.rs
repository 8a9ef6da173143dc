//! Errors for malformed or unsupported GGUF files, always naming the file.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: cannot open: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a GGUF file (the first 4 bytes are {magic:?}, expected \"GGUF\")")]
    BadMagic { path: PathBuf, magic: String },
    #[error("{path}: file is too small to be a GGUF model ({size} bytes)")]
    TooSmall { path: PathBuf, size: u64 },
    #[error("{path}: unsupported GGUF version {version} (supported: 2, 3)")]
    Version { path: PathBuf, version: u32 },
    #[error("{path}: malformed header: {msg}")]
    Header { path: PathBuf, msg: String },
    #[error("{path}: tensor '{tensor}': {msg}")]
    Tensor { path: PathBuf, tensor: String, msg: String },
    #[error("{path}: metadata key '{key}': {msg}")]
    Metadata { path: PathBuf, key: String, msg: String },
    #[error("{path}: read error: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

//! The crate-wide error type: every failure names the problem and the place.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error("{path}: {msg}")]
    Model { path: PathBuf, msg: String },
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Sampling(#[from] crate::sampling::SamplingError),
    #[error(transparent)]
    Pull(#[from] crate::pull::PullError),
    #[error(transparent)]
    Compute(#[from] crate::ggml::ComputeError),
    #[error(transparent)]
    Kv(#[from] crate::kv::KvError),
    /// A compute backend (a GPU, an RPC server) could not be started.
    #[error("could not start a backend on {0}")]
    Backend(String),
    #[error("{0}")]
    Context(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A saved session that cannot be loaded (or written), and why.
    #[error("{path}: {msg}")]
    SessionFile { path: PathBuf, msg: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The crate-wide error type: every failure names the problem and the place,
//! and says what class of failure it is (`Error::class`), so the server can
//! answer with the right status and error type and the CLI with a clear
//! message, without reading the text.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error("{path}: {msg}")]
    Model { path: PathBuf, msg: String },
    /// A model whose architecture the engine has no recipe for.
    #[error("{path}: unsupported architecture '{arch}' (supported: {supported})")]
    UnsupportedArch { path: PathBuf, arch: String, supported: String },
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Sampling(#[from] crate::sampling::SamplingError),
    #[error(transparent)]
    Pull(#[from] crate::pull::PullError),
    #[error(transparent)]
    Compute(#[from] crate::ggml::ComputeError),
    /// The cache refused an operation (full, a sliding window that dropped
    /// a position, positions out of range, out of memory).
    #[error(transparent)]
    Kv(#[from] crate::kv::KvError),
    /// A prompt longer than the whole context.
    #[error("the prompt has {tokens} tokens but the context holds {n_ctx} (raise -c)")]
    PromptTooLong { tokens: usize, n_ctx: usize },
    /// A conversation that cannot make room: what is left is pinned or recent.
    #[error(
        "nothing left to forget: {live} live cells (system prompt, pinned and recent turns) and {need} new tokens exceed {n_ctx}"
    )]
    NothingToForget { live: usize, need: usize, n_ctx: usize },
    /// Something this model or configuration cannot do, said plainly.
    #[error("{0}")]
    Unsupported(String),
    /// A compute backend (a GPU, an RPC server) could not be started.
    #[error("could not start a backend on {0}")]
    Backend(String),
    /// llama.cpp (the oracle beside the engine in benchmarks) failed.
    #[error("llama.cpp: {0}")]
    Oracle(String),
    /// A replay whose tokens differ from the transcript's.
    #[error("{0}")]
    Diverged(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A saved session that cannot be loaded (or written), and why.
    #[error("{path}: {msg}")]
    SessionFile { path: PathBuf, msg: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The operating system refused something that is not a file: a
    /// thread, a socket, the terminal.
    #[error("{what}: {source}")]
    System { what: String, source: std::io::Error },
    /// A fault of the program itself (an invariant that did not hold).
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an error is, for whoever answers for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The input is wrong (a request, an argument, a file): fix it and retry.
    InvalidInput,
    /// The context cannot hold what was asked.
    ContextFull,
    /// Something the engine cannot do with this model or configuration.
    Unsupported,
    /// Not enough memory for the cache or the compute buffers.
    OutOfMemory,
    /// A resource is not available now (a device, a backend).
    Unavailable,
    /// A fault of the program or the machine.
    Internal,
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        use crate::ggml::ComputeError;
        use crate::kv::KvError;
        match self {
            Error::Kv(KvError::Full { .. } | KvError::WindowFull { .. }) => ErrorClass::ContextFull,
            Error::PromptTooLong { .. } | Error::NothingToForget { .. } => ErrorClass::ContextFull,
            Error::Kv(KvError::WindowDropped { .. } | KvError::WindowShift { .. } | KvError::Recurrent(_)) => {
                ErrorClass::Unsupported
            }
            Error::Kv(
                KvError::PositionRange(_)
                | KvError::PositionTaken(_)
                | KvError::Snapshot(_)
                | KvError::Shared { .. }
                | KvError::NoSequence { .. },
            ) => ErrorClass::InvalidInput,
            Error::Kv(KvError::Alloc { .. } | KvError::OutOfMemory { .. }) => ErrorClass::OutOfMemory,
            Error::Compute(ComputeError::Alloc) => ErrorClass::OutOfMemory,
            Error::Compute(_) => ErrorClass::Internal,
            Error::Unsupported(_) | Error::UnsupportedArch { .. } => ErrorClass::Unsupported,
            Error::Tokenizer(_) | Error::Sampling(_) | Error::InvalidArgument(_) => ErrorClass::InvalidInput,
            Error::Backend(_) => ErrorClass::Unavailable,
            Error::Pull(_) => ErrorClass::Unavailable,
            Error::Gguf(_) | Error::Model { .. } | Error::SessionFile { .. } => ErrorClass::InvalidInput,
            Error::Io { .. } | Error::System { .. } | Error::Oracle(_) | Error::Diverged(_) | Error::Internal(_) => {
                ErrorClass::Internal
            }
        }
    }
}

impl From<crate::kv::UnshareError> for Error {
    fn from(e: crate::kv::UnshareError) -> Self {
        match e {
            crate::kv::UnshareError::Kv(e) => Error::Kv(e),
            crate::kv::UnshareError::Compute(e) => Error::Compute(e),
        }
    }
}

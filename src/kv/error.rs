//! Why a cache operation was refused: each variant carries the sizes and
//! positions that explain it, so callers (the CLI, the server) can answer
//! with the right message and status without parsing text.
use super::cells::Pos;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// More tokens than free cells.
    #[error("the context is full: {live} of {size} cells are live and {need} more tokens do not fit (raise -c)")]
    Full { live: usize, size: usize, need: usize },
    /// The sliding-window pool cannot take a batch beside what its window still sees.
    #[error(
        "the sliding-window layers' {size} cells are full: {need} new tokens from position {from} on do not fit \
         beside the {seen} positions their window still sees"
    )]
    WindowFull { size: usize, need: usize, from: Pos, seen: usize },
    /// A query would need a position the sliding-window pool has dropped.
    #[error(
        "a query at position {query} would see position {pos}, which the sliding-window layers have already dropped \
         (their pool holds the last {pool} cells): the cache cannot go on from there exactly; prefill again, or use --swa-full"
    )]
    WindowDropped { query: Pos, pos: Pos, pool: usize },
    /// Closing a gap (`Some((p0, p1))`) or every gap (`None`) would bring a
    /// dropped position back into the sliding window.
    #[error("{}", window_shift_message(*.gap, *.pos, *.window))]
    WindowShift { gap: Option<(Pos, Pos)>, pos: Pos, window: u32 },
    /// A position outside what 32-bit positions can hold (or negative).
    #[error("{0}")]
    PositionRange(String),
    /// A cell other sequences hold too cannot move for one of them (it is
    /// copied first; this is the cells' own refusal).
    #[error("sequence {seq}'s position {pos} is shared with another sequence and cannot move for one of them")]
    Shared { seq: usize, pos: Pos },
    /// A sequence id outside the pool's sequences.
    #[error("sequence {seq} does not exist (this cache holds {n_seq})")]
    NoSequence { seq: usize, n_seq: usize },
    /// A new token's position is negative or already holds a token.
    #[error("position {0} is negative or already holds a token")]
    PositionTaken(Pos),
    /// The cache tensors could not be allocated.
    #[error("could not allocate a KV cache of {cells} cells (out of memory?)")]
    Alloc { cells: usize },
    /// The cache would need more memory than the system has.
    #[error("a context of {cells} cells needs {need_mib} MiB for its KV cache, but {avail_mib} MiB of memory are available (lower -c)")]
    OutOfMemory { cells: usize, need_mib: u64, avail_mib: u64 },
    /// A snapshot that does not fit this cache, or is inconsistent.
    #[error("{0}")]
    Snapshot(String),
    /// What the recurrent layers' state (hybrid models) cannot do.
    #[error("{0}")]
    Recurrent(String),
}

fn window_shift_message(gap: Option<(Pos, Pos)>, pos: Pos, window: u32) -> String {
    let (what, instead) = match gap {
        Some((p0, p1)) => (format!("the gap [{p0}, {p1})"), "remove with the keep policy"),
        None => ("every gap".to_string(), "keep positions"),
    };
    format!(
        "closing {what} would bring position {pos} back into the sliding window ({window} positions), \
         but the sliding-window layers have already dropped it: {instead}, or use --swa-full"
    )
}

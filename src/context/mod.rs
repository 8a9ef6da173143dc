//! Meaning without a model: segments (spans of the context with a kind),
//! the parts found inside a message (reminder and thinking blocks, lines),
//! and the decache policy that plans what to forget. `Session` and
//! `Conversation` record and carry these out; the server's auto-pruning
//! uses them on request text alone.
pub mod parts;
pub mod policy;
pub mod segments;

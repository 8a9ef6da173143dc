//! decache: a local runner for GGUF language models whose KV cache forgets
//! stale context in place. The library returns data and events; only the
//! `decache` binary (src/cli) prints.

pub mod agent;
pub mod bench;
pub mod context;
pub mod error;
pub mod eval;
pub mod ggml;
pub mod gguf;
pub mod kv;
pub mod model;
pub mod pull;
pub mod sampling;
pub mod server;
pub mod session;
pub mod tokenizer;
pub mod toolcall;
pub mod transcript;

pub use error::{Error, Result};

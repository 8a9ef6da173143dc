//! decache: a local runner for GGUF language models whose KV cache forgets
//! stale context in place. The library returns data and events; only the
//! `decache` binary (src/cli) prints.
//!
//! Cargo features, all on by default: `server` (the HTTP server), `agent`
//! (the coding agent), `pull` (model downloads) and `eval-plots` (the eval
//! report's SVG charts). With `default-features = false` the crate is the
//! engine alone: ggml, gguf, tokenizer, model, kv, session, sampling, ...

#[cfg(feature = "agent")]
pub mod agent;
pub mod bench;
pub mod context;
pub mod error;
pub mod eval;
pub mod ggml;
pub mod gguf;
pub mod harmony;
pub mod kv;
pub mod model;
pub mod pull;
pub mod sampling;
pub mod script;
#[cfg(feature = "server")]
pub mod server;
pub mod session;
pub mod tokenizer;
pub mod toolcall;
pub mod transcript;

pub use error::{Error, Result};

//! Settings of a session (llama.cpp's context parameters).
use crate::ggml::GgmlType;

#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// KV cells (`-c`); 0 = the model's trained context or 4096, whichever is smaller.
    pub n_ctx: usize,
    /// Logical batch (`-b`): tokens handed to one `eval` call at most per chunk.
    pub n_batch: usize,
    /// Physical micro-batch (`-ub`): tokens per graph.
    pub n_ubatch: usize,
    /// CPU threads (`-t`).
    pub n_threads: usize,
    /// K and V cache types (`-ctk`, `-ctv`): f16 or q8_0.
    pub type_k: GgmlType,
    pub type_v: GgmlType,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            n_ctx: 0,
            n_batch: 2048,
            n_ubatch: 512,
            n_threads: default_threads(),
            type_k: GgmlType::F16,
            type_v: GgmlType::F16,
        }
    }
}

/// The machine's physical parallelism (llama.cpp uses the core count).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(4)
}

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
    /// Attention through ggml's fused flash-attention op (`-fa`; the
    /// library's default is off, the CLI's `-fa auto` is on): V is then
    /// stored row per cell like K (and may be quantized), the mask is f16,
    /// and masked cells are skipped instead of multiplied.
    pub flash_attn: bool,
    /// With flash attention, attend in every step with ggml's fused op, as
    /// llama.cpp does (its oracle's bits). Off (the default), steps on the
    /// CPU over an f16 cache take decache's kernels: `Context::decode_attention`
    /// below 64 query rows (the query heads of a K/V head together, f32 sums:
    /// twice as fast at depth 3072, closer to exact) and
    /// `Context::prefill_attention` from 64 (each tile of cells converted once
    /// for a block of rows and all their heads).
    pub ggml_attention: bool,
    /// Multiply every weight with ggml's kernels. Off (the default), the Q4_1
    /// and Q5_0 weights the model packed at load (`Model::packed`) go
    /// through decache's products on the CPU: eight rows interleaved, one
    /// vector instruction over four values of each, two columns of a batch
    /// per weight load; the same bits as ggml's (see `ggml::packed_matmul`),
    /// about 3.3 times its prompt processing and 1.8 times its generation
    /// on SmolLM2 (Q4_1). The switch is there to measure that.
    pub ggml_matmul: bool,
    /// Give sliding-window layers as many cells as global ones (`--swa-full`,
    /// llama.cpp's spelling) instead of a pool sized to their window: more
    /// memory, but every removal, shift and resume is exact for them.
    pub swa_full: bool,
    /// Sequences one cache can hold (`-np`): sessions opened with
    /// `Session::sequence` share its cells, and their steps are computed
    /// together.
    pub n_seq: usize,
}

/// What `-fa auto` means: on, as in llama.cpp (whose `auto` is on for the
/// CPU). With ggml 0.26 the fused op is the faster path on the CPU at every
/// depth, prefill and decode alike (SmolLM2, 2 threads, depth 4096: pp512
/// 120 t/s against 98 without, tg128 37 against 34; docs/BENCHMARKS.md, "decache
/// against llama-bench"); the finding that it decoded several times slower
/// at depth held for older ggml builds only. The library's
/// `SessionConfig::default()` keeps plain attention: the oracle tests compare
/// evaluations split into different batches, and ggml-cpu's fused op takes
/// another kernel for many queries than for a few (rounding apart enough to
/// swap near-tied tokens), where plain attention's paths agree closely.
pub const FLASH_ATTN_AUTO: bool = true;

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            n_ctx: 0,
            n_batch: 2048,
            n_ubatch: 512,
            n_threads: default_threads(),
            type_k: GgmlType::F16,
            type_v: GgmlType::F16,
            flash_attn: false,
            ggml_attention: false,
            ggml_matmul: false,
            swa_full: false,
            n_seq: 1,
        }
    }
}

/// The machine's physical parallelism (llama.cpp uses the core count).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(4)
}

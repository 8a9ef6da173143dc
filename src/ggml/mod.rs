//! The only place with `unsafe` ggml calls: RAII contexts, tensors, graphs,
//! backends, buffers and the backend scheduler. No raw pointer leaves this module.
//!
//! The ggml libraries come from the pinned `llama-cpp-sys-2` build (see
//! `ggml-sys`), which also provides llama.cpp's C API: `oracle` wraps it for
//! tests and benchmarks only; the engine never calls it.

mod backend;
mod context;
mod decode_attention;
mod device;
mod log;
mod mmap;
mod ops;
mod ops_experts;
mod ops_recurrent;
pub mod oracle;
mod owned;
mod packed_matmul;
mod prefill_attention;
pub mod row_kernels;
pub mod rpc;
mod sched;
mod store;
mod types;

pub use backend::{Backend, Buffer, BufferType, CpuDevice, MappedRegion};
pub use context::{Context, Graph, Tensor};
pub use decode_attention::{decode_attention_fits, KernelArgs};
pub use device::{rpc_devices, serve_rpc, Device};
pub use log::route_logs_to_tracing;
pub use mmap::map_file_readonly;
pub use ops::RopeParams;
pub use owned::OwnedGraph;
pub use packed_matmul::{packs, PackError, PackedWeights};
pub use sched::{ComputeError, NodeTime, Scheduler};
pub use store::{Placement, TensorId, TensorSpec, TensorStore, WeightLoadError};
pub use types::GgmlType;

/// Sentinel used in attention masks for invisible cells.
pub const NEG_INF: f32 = f32::NEG_INFINITY;

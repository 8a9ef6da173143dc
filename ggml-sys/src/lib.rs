//! Raw FFI to ggml (ggml.h, ggml-alloc.h, ggml-backend.h, ggml-cpu.h, gguf.h).
//!
//! No logic lives here. The C libraries are compiled from source by the pinned
//! `llama-cpp-sys-2` crate; `decache` wraps these functions in `src/ggml/`.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code)]
#![allow(clippy::all)]

// Linking: the static ggml libraries are emitted by llama-cpp-sys-2.
pub use llama_cpp_sys_2 as llama;

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

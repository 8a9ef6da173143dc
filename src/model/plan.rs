//! What an architecture expects from a file: tensor names, exact shapes, and
//! the op that consumes each (which decides where its data is placed).

/// The op a weight feeds; matmul weights may go to repacked buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    MulMat,
    /// One matrix per expert, multiplied per token (`mul_mat_id`).
    MulMatId,
    GetRows,
    Elementwise,
}

#[derive(Clone, Debug)]
pub struct TensorReq {
    pub name: String,
    pub ne: Vec<i64>,
    pub required: bool,
    pub usage: Usage,
    /// When absent from the file, load a copy of this tensor under `name`
    /// (tied output embeddings: llama.cpp also keeps a separate copy, placed
    /// for its own op, so the output matmul may use a repacked layout).
    pub tied_to: Option<String>,
}

impl TensorReq {
    pub fn req(name: impl Into<String>, ne: &[i64], usage: Usage) -> TensorReq {
        TensorReq { name: name.into(), ne: ne.to_vec(), required: true, usage, tied_to: None }
    }

    pub fn opt(name: impl Into<String>, ne: &[i64], usage: Usage) -> TensorReq {
        TensorReq { name: name.into(), ne: ne.to_vec(), required: false, usage, tied_to: None }
    }

    /// Optional; a copy of `source` when absent.
    pub fn tied(name: impl Into<String>, ne: &[i64], usage: Usage, source: &str) -> TensorReq {
        TensorReq { name: name.into(), ne: ne.to_vec(), required: false, usage, tied_to: Some(source.to_string()) }
    }
}

/// Per-layer tensor name, `blk.{il}.{suffix}`.
pub fn blk(il: usize, suffix: &str) -> String {
    format!("blk.{il}.{suffix}")
}

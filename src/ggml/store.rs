//! Tensors that outlive any graph: model weights and KV cache layers.
//!
//! Model weights in ggml buffers: tensors placed in the memory-mapped file
//! (zero copy) or uploaded into buffers of a chosen type (plain CPU memory,
//! or ggml-cpu's repacked / AMX layouts, which convert on upload).
use super::backend::{Buffer, BufferType, MappedRegion};
use super::context::{Context, Tensor};
use super::types::GgmlType;
use ggml_sys as sys;
use std::borrow::Cow;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Arc;

/// Index of a weight in a `TensorStore`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorId(usize);

/// Where one weight's data goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// In place, inside the memory-mapped file.
    Mapped,
    /// Uploaded into a buffer of this type.
    Upload(BufferType),
}

/// Description of one weight to load.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    /// The file tensor holding the data (differs from `name` for tied copies).
    pub source: String,
    pub typ: GgmlType,
    pub ne: [i64; 4],
    pub n_dims: usize,
    /// Byte offset in the file (used for `Placement::Mapped`).
    pub file_offset: u64,
    pub placement: Placement,
}

/// Owns every weight tensor, its metadata context and its buffers.
pub struct TensorStore {
    tensors: Vec<NonNull<sys::ggml_tensor>>,
    names: HashMap<String, TensorId>,
    bytes_by_buffer: Vec<(String, usize)>,
    // Drop order: tensors' metadata (contexts) and buffers before the mapping.
    _contexts: Vec<Context>,
    _buffers: Vec<Buffer>,
    _mapped: Option<MappedRegion>,
    _map: Option<Arc<memmap2::Mmap>>,
}

// SAFETY: after loading, weights are immutable and shared read-only.
unsafe impl Send for TensorStore {}
unsafe impl Sync for TensorStore {}

impl TensorStore {
    /// Create every weight and fill it. `map` is the mapped file (needed for
    /// `Placement::Mapped`); `read` returns a weight's bytes for uploads.
    pub fn load<'f, E>(
        specs: &[TensorSpec],
        map: Option<Arc<memmap2::Mmap>>,
        mut read: impl FnMut(&TensorSpec) -> Result<Cow<'f, [u8]>, E>,
        on_progress: &mut dyn FnMut(usize, usize),
    ) -> Result<TensorStore, WeightLoadError<E>> {
        // One context per placement group, so each group gets one buffer.
        let mut groups: Vec<(Placement, Vec<usize>)> = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            match groups.iter_mut().find(|(p, _)| *p == s.placement) {
                Some((_, v)) => v.push(i),
                None => groups.push((s.placement, vec![i])),
            }
        }
        let mapped = match &map {
            Some(m) if groups.iter().any(|(p, _)| *p == Placement::Mapped) => Some(MappedRegion::new(&m[..])),
            _ => None,
        };
        let mut tensors = vec![None; specs.len()];
        let mut contexts = Vec::new();
        let mut buffers = Vec::new();
        let mut bytes_by_buffer = Vec::new();
        let total = specs.len();
        let mut done = 0;
        for (placement, idx) in &groups {
            let ctx = Context::new(idx.len(), 0);
            let ts: Vec<Tensor<'_>> = idx
                .iter()
                .map(|&i| {
                    let s = &specs[i];
                    let t = ctx.new_tensor(s.typ, &s.ne[..s.n_dims.max(1)]);
                    t.set_name(&s.name);
                    t
                })
                .collect();
            match placement {
                Placement::Mapped => {
                    let region = mapped.as_ref().ok_or(WeightLoadError::NoMapping)?;
                    for (&i, t) in idx.iter().zip(&ts) {
                        region.place(*t, specs[i].file_offset as usize).map_err(WeightLoadError::Place)?;
                        done += 1;
                        on_progress(done, total);
                    }
                    let sum: usize = ts.iter().map(|t| t.nbytes()).sum();
                    bytes_by_buffer.push(("mmap".to_string(), sum));
                }
                Placement::Upload(buft) => {
                    let buf = buft.alloc_ctx_tensors(&ctx).ok_or_else(|| WeightLoadError::Alloc(buft.name()))?;
                    buf.set_weights_usage();
                    for (&i, t) in idx.iter().zip(&ts) {
                        let bytes = read(&specs[i]).map_err(WeightLoadError::Read)?;
                        if bytes.len() != t.nbytes() {
                            return Err(WeightLoadError::Place(format!(
                                "tensor {}: {} bytes of data for {} expected",
                                specs[i].name,
                                bytes.len(),
                                t.nbytes()
                            )));
                        }
                        t.write_bytes(&bytes, 0);
                        done += 1;
                        on_progress(done, total);
                    }
                    bytes_by_buffer.push((buft.name(), buf.size()));
                    buffers.push(buf);
                }
            }
            for (&i, t) in idx.iter().zip(&ts) {
                tensors[i] = Some(NonNull::new(t.raw()).expect("tensor"));
            }
            drop(ts);
            contexts.push(ctx);
        }
        let tensors: Vec<_> = tensors.into_iter().map(|t| t.expect("every weight placed")).collect();
        let names = specs.iter().enumerate().map(|(i, s)| (s.name.clone(), TensorId(i))).collect();
        Ok(TensorStore {
            tensors,
            names,
            bytes_by_buffer,
            _contexts: contexts,
            _buffers: buffers,
            _mapped: mapped,
            _map: map,
        })
    }

    /// Allocate zero-filled tensors `(name, type, shape, buffer type)`, one
    /// buffer per buffer type (the KV cache, whose layers may live on
    /// different devices).
    pub fn allocate(specs: &[(String, GgmlType, Vec<i64>, BufferType)]) -> Option<TensorStore> {
        let mut groups: Vec<(BufferType, Vec<usize>)> = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            match groups.iter_mut().find(|(b, _)| *b == s.3) {
                Some((_, v)) => v.push(i),
                None => groups.push((s.3, vec![i])),
            }
        }
        let mut tensors = vec![None; specs.len()];
        let (mut contexts, mut buffers, mut bytes_by_buffer) = (Vec::new(), Vec::new(), Vec::new());
        for (buft, idx) in &groups {
            let ctx = Context::new(idx.len(), 0);
            let ts: Vec<Tensor<'_>> = idx
                .iter()
                .map(|&i| {
                    let t = ctx.new_tensor(specs[i].1, &specs[i].2);
                    t.set_name(&specs[i].0);
                    t
                })
                .collect();
            let buf = buft.alloc_ctx_tensors(&ctx)?;
            buf.clear(0);
            for (&i, t) in idx.iter().zip(&ts) {
                tensors[i] = Some(NonNull::new(t.raw()).expect("tensor"));
            }
            bytes_by_buffer.push((buft.name(), buf.size()));
            buffers.push(buf);
            drop(ts);
            contexts.push(ctx);
        }
        let tensors = tensors.into_iter().map(|t| t.expect("every tensor allocated")).collect();
        let names = specs.iter().enumerate().map(|(i, s)| (s.0.clone(), TensorId(i))).collect();
        Some(TensorStore {
            tensors,
            names,
            bytes_by_buffer,
            _contexts: contexts,
            _buffers: buffers,
            _mapped: None,
            _map: None,
        })
    }

    /// Number of tensors held.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The id of the `i`-th tensor, in creation order.
    pub fn nth(&self, i: usize) -> TensorId {
        assert!(i < self.tensors.len());
        TensorId(i)
    }

    /// Total bytes over all buffers.
    pub fn total_bytes(&self) -> usize {
        self.bytes_by_buffer.iter().map(|b| b.1).sum()
    }

    pub fn id(&self, name: &str) -> Option<TensorId> {
        self.names.get(name).copied()
    }

    pub fn get(&self, id: TensorId) -> Tensor<'_> {
        Tensor::from_raw(self.tensors[id.0].as_ptr())
    }

    /// Bytes held per buffer kind ("mmap", "CPU", "CPU_REPACK", "AMX", ...).
    pub fn buffer_sizes(&self) -> &[(String, usize)] {
        &self.bytes_by_buffer
    }
}

/// Why weights could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WeightLoadError<E> {
    #[error("{0}")]
    Read(E),
    #[error("{0}")]
    Place(String),
    #[error("could not allocate a {0} buffer for the weights (out of memory?)")]
    Alloc(String),
    #[error("weights were to be mapped but the file is not memory-mapped")]
    NoMapping,
}

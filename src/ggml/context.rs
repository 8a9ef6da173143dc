//! RAII ggml contexts, tensor handles and graphs.
//!
//! Every context here is `no_alloc`: it holds tensor metadata only, and data
//! lives in backend buffers (weights, KV cache) or in the scheduler's compute
//! buffers (graph intermediates).
use super::packed_matmul::Packing;
use super::types::GgmlType;
use ggml_sys as sys;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;

/// An owned ggml context (tensor metadata arena).
pub struct Context {
    ptr: NonNull<sys::ggml_context>,
    /// `mul_mat` multiplies each row of a batch as a lone row would be
    /// multiplied (see `multiply_rows_alone`).
    rows_alone: std::cell::Cell<bool>,
    /// Packed copies of weights (`use_packed`): weight → (packed, packing).
    pub(super) packed: RefCell<HashMap<usize, (usize, Packing)>>,
    /// Activations quantized for the packed products, by input.
    pub(super) quantized: RefCell<HashMap<usize, usize>>,
}

// SAFETY: a context is only used through `&mut`/`&` from one thread at a time;
// ggml contexts carry no thread affinity.
unsafe impl Send for Context {}

impl Context {
    /// A metadata-only context with room for `n_tensors` tensors and, if
    /// `graph_nodes > 0`, one graph of that size.
    pub fn new(n_tensors: usize, graph_nodes: usize) -> Context {
        let mut size = n_tensors.max(1) * unsafe { sys::ggml_tensor_overhead() };
        if graph_nodes > 0 {
            size += unsafe { sys::ggml_graph_overhead_custom(graph_nodes, false) };
        }
        let params = sys::ggml_init_params { mem_size: size, mem_buffer: std::ptr::null_mut(), no_alloc: true };
        // SAFETY: plain allocation; ggml returns NULL only when out of memory.
        let ptr = unsafe { sys::ggml_init(params) };
        Context {
            ptr: NonNull::new(ptr).expect("ggml_init: out of memory"),
            rows_alone: Default::default(),
            packed: Default::default(),
            quantized: Default::default(),
        }
    }

    pub(crate) fn raw(&self) -> *mut sys::ggml_context {
        self.ptr.as_ptr()
    }

    /// From now on, multiply a weight by a batch of rows as by each row
    /// alone, bit for bit, where ggml-cpu's kernel for the batch would differ
    /// (`row_kernels`): the batch goes in one row per plane, still one op.
    pub fn multiply_rows_alone(&self) {
        self.rows_alone.set(true);
    }

    pub(crate) fn rows_alone(&self) -> bool {
        self.rows_alone.get()
    }

    /// A new tensor of the given type and shape (1 to 4 dims, ggml order).
    pub fn new_tensor(&self, typ: GgmlType, ne: &[i64]) -> Tensor<'_> {
        assert!((1..=4).contains(&ne.len()), "ggml tensors have 1 to 4 dims");
        let c = self.raw();
        // SAFETY: valid context with reserved space; shapes are non-negative.
        let t = unsafe {
            match *ne {
                [a] => sys::ggml_new_tensor_1d(c, typ.0, a),
                [a, b] => sys::ggml_new_tensor_2d(c, typ.0, a, b),
                [a, b, d] => sys::ggml_new_tensor_3d(c, typ.0, a, b, d),
                [a, b, d, e] => sys::ggml_new_tensor_4d(c, typ.0, a, b, d, e),
                _ => unreachable!(),
            }
        };
        Tensor::from_raw(t)
    }

    /// A new input tensor (flagged so the scheduler allocates it for upload).
    pub fn new_input(&self, name: &str, typ: GgmlType, ne: &[i64]) -> Tensor<'_> {
        let t = self.new_tensor(typ, ne);
        t.set_name(name);
        unsafe { sys::ggml_set_input(t.raw()) };
        t
    }

    /// An input of shape `ne` (1 or 2 dims) backed by an allocation padded
    /// to a multiple of 64 bytes; returns the exact-size view (writes go
    /// through it). The allocator aligns tensors to 32 bytes only, and a
    /// small odd-sized input would shift every activation after it off the
    /// 64-byte alignment that the AVX-512/AMX kernels want (measured: ~13%
    /// slower prompt processing).
    pub fn new_input_aligned(&self, name: &str, typ: GgmlType, ne: &[i64]) -> Tensor<'_> {
        let elem = typ.type_size() as i64;
        let total: i64 = ne.iter().product();
        let padded = (total * elem + 63) / 64 * 64 / elem;
        let parent = self.new_input(name, typ, &[padded]);
        let exact = self.view(parent, &[total], &[], 0);
        if ne.len() == 1 {
            exact
        } else {
            self.reshape(exact, ne)
        }
    }

    /// A graph with room for `nodes` nodes, allocated in this context.
    pub fn new_graph(&self, nodes: usize) -> Graph<'_> {
        // SAFETY: the context was sized with room for one graph of this size.
        let g = unsafe { sys::ggml_new_graph_custom(self.raw(), nodes, false) };
        Graph { ptr: NonNull::new(g).expect("graph does not fit in its context"), _ctx: PhantomData }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: we own the context; tensor handles borrow it and are gone.
        unsafe { sys::ggml_free(self.ptr.as_ptr()) }
    }
}

/// A handle on a tensor that lives in a `Context` for `'a`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tensor<'a> {
    ptr: NonNull<sys::ggml_tensor>,
    _ctx: PhantomData<&'a Context>,
}

// SAFETY: tensor metadata is plain data owned by its context.
unsafe impl Send for Tensor<'_> {}
unsafe impl Sync for Tensor<'_> {}

impl<'a> Tensor<'a> {
    pub(crate) fn from_raw(t: *mut sys::ggml_tensor) -> Tensor<'a> {
        Tensor { ptr: NonNull::new(t).expect("ggml returned a null tensor"), _ctx: PhantomData }
    }

    pub(crate) fn raw(self) -> *mut sys::ggml_tensor {
        self.ptr.as_ptr()
    }

    fn get(&self) -> &sys::ggml_tensor {
        // SAFETY: the tensor lives as long as its context, which outlives 'a.
        unsafe { self.ptr.as_ref() }
    }

    pub fn ne(&self) -> [i64; 4] {
        self.get().ne
    }

    pub fn nb(&self) -> [usize; 4] {
        self.get().nb
    }

    pub fn typ(&self) -> GgmlType {
        GgmlType(self.get().type_)
    }

    pub fn nbytes(&self) -> usize {
        unsafe { sys::ggml_nbytes(self.raw()) }
    }

    pub fn is_contiguous(&self) -> bool {
        unsafe { sys::ggml_is_contiguous(self.raw()) }
    }

    pub fn nelements(&self) -> i64 {
        unsafe { sys::ggml_nelements(self.raw()) }
    }

    pub fn set_name(&self, name: &str) {
        let c = CString::new(name.replace('\0', "")).unwrap_or_default();
        unsafe { sys::ggml_set_name(self.raw(), c.as_ptr()) };
    }

    pub fn name(&self) -> String {
        let n = &self.get().name;
        let bytes: Vec<u8> = n.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Flag as a graph output (kept alive by the allocator).
    pub fn set_output(&self) {
        unsafe { sys::ggml_set_output(self.raw()) }
    }

    /// Whether this tensor's data has been placed in a buffer.
    pub fn is_allocated(&self) -> bool {
        !self.get().data.is_null() || !self.get().buffer.is_null()
    }

    /// Copy host bytes into the tensor (its buffer must be allocated).
    pub fn write_bytes(&self, bytes: &[u8], offset: usize) {
        assert!(offset + bytes.len() <= self.nbytes(), "write past the end of tensor {}", self.name());
        assert!(self.is_allocated(), "tensor {} has no buffer", self.name());
        // SAFETY: bounds checked above; the tensor has a backend buffer.
        unsafe { sys::ggml_backend_tensor_set(self.raw(), bytes.as_ptr().cast(), offset, bytes.len()) }
    }

    pub fn write_f32(&self, data: &[f32]) {
        assert_eq!(self.typ(), GgmlType::F32);
        self.write_bytes(as_bytes(data), 0)
    }

    pub fn write_i32(&self, data: &[i32]) {
        assert_eq!(self.typ(), GgmlType::I32);
        self.write_bytes(as_bytes(data), 0)
    }

    pub fn write_i64(&self, data: &[i64]) {
        assert_eq!(self.typ(), GgmlType::I64);
        self.write_bytes(as_bytes(data), 0)
    }

    /// Copy `out.len()` bytes of the tensor, from byte `offset` on, to the host.
    pub fn read_bytes(&self, out: &mut [u8], offset: usize) {
        assert!(offset + out.len() <= self.nbytes(), "read past the end of tensor {}", self.name());
        assert!(self.is_allocated(), "tensor {} has no buffer", self.name());
        // SAFETY: bounds checked above; `out` is a valid writable slice.
        unsafe { sys::ggml_backend_tensor_get(self.raw(), out.as_mut_ptr().cast(), offset, out.len()) }
    }

    /// `n` f32 values from element `offset` on, into `out` (cleared first;
    /// its memory is reused: a verified draft's logits take 1 MiB a row on
    /// gemma-3, and fresh pages cost more to fault in than to fill).
    pub fn read_f32_into(&self, out: &mut Vec<f32>, offset: usize, n: usize) {
        assert_eq!(self.typ(), GgmlType::F32);
        assert!((offset + n) * 4 <= self.nbytes(), "read past the end of tensor {}", self.name());
        out.clear();
        out.reserve(n);
        // SAFETY: bounds checked; ggml writes all n values into the reserved
        // capacity before the length covers them.
        unsafe {
            sys::ggml_backend_tensor_get(self.raw(), out.as_mut_ptr().cast(), offset * 4, n * 4);
            out.set_len(n);
        }
    }
}

fn as_bytes<T: Copy>(data: &[T]) -> &[u8] {
    // SAFETY: plain-old-data numeric slices reinterpreted as bytes.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast(), std::mem::size_of_val(data)) }
}

/// A computation graph, living in a `Context`.
pub struct Graph<'a> {
    ptr: NonNull<sys::ggml_cgraph>,
    _ctx: PhantomData<&'a Context>,
}

impl<'a> Graph<'a> {
    pub(crate) fn from_raw(g: *mut sys::ggml_cgraph) -> Graph<'a> {
        Graph { ptr: NonNull::new(g).expect("null graph"), _ctx: PhantomData }
    }

    pub(crate) fn raw(&self) -> *mut sys::ggml_cgraph {
        self.ptr.as_ptr()
    }

    /// Add `t` and everything it depends on.
    pub fn expand(&mut self, t: Tensor<'_>) {
        unsafe { sys::ggml_build_forward_expand(self.raw(), t.raw()) }
    }

    /// One line per node: op, name, shape and type (for debugging graphs).
    pub fn describe(&self) -> Vec<String> {
        (0..self.n_nodes())
            .map(|i| {
                let t = Tensor::from_raw(unsafe { sys::ggml_graph_node(self.raw(), i as i32) });
                let op = unsafe { std::ffi::CStr::from_ptr(sys::ggml_op_desc(t.raw())) }.to_string_lossy().into_owned();
                format!("{op} {} {:?} {}", t.name(), t.ne(), t.typ())
            })
            .collect()
    }

    pub fn n_nodes(&self) -> usize {
        unsafe { sys::ggml_graph_n_nodes(self.raw()) as usize }
    }
}

//! Backends, buffer types and buffers (RAII), and the CPU device's extra
//! buffer types (repacked / AMX weight layouts), chosen per weight as
//! llama.cpp chooses them.
use super::context::{Context, Tensor};
use ggml_sys as sys;
use std::ffi::{c_void, CStr, CString};
use std::ptr::NonNull;

/// A compute backend (the CPU, or a GPU when built with a GPU feature).
pub struct Backend {
    ptr: NonNull<sys::ggml_backend>,
    threadpool: Option<NonNull<sys::ggml_threadpool>>,
}

// SAFETY: a backend is used by one thread at a time (the session owning it).
unsafe impl Send for Backend {}

impl Backend {
    /// The CPU backend with a persistent thread pool of `n_threads`.
    pub fn cpu(n_threads: usize) -> Backend {
        super::log::route_logs_to_tracing();
        let n = n_threads.clamp(1, 512) as i32;
        // SAFETY: plain constructors; NULL is checked.
        unsafe {
            let ptr = NonNull::new(sys::ggml_backend_cpu_init()).expect("ggml_backend_cpu_init failed");
            sys::ggml_backend_cpu_set_n_threads(ptr.as_ptr(), n);
            let mut params = sys::ggml_threadpool_params_default(n);
            let tp = NonNull::new(sys::ggml_threadpool_new(&mut params));
            if let Some(tp) = tp {
                sys::ggml_backend_cpu_set_threadpool(ptr.as_ptr(), tp.as_ptr());
            }
            Backend { ptr, threadpool: tp }
        }
    }

    /// Own a backend made by a device (no CPU thread pool of ours).
    pub(crate) fn from_raw(ptr: NonNull<sys::ggml_backend>) -> Backend {
        Backend { ptr, threadpool: None }
    }

    pub(crate) fn raw(&self) -> sys::ggml_backend_t {
        self.ptr.as_ptr()
    }

    pub fn name(&self) -> String {
        unsafe { CStr::from_ptr(sys::ggml_backend_name(self.raw())) }.to_string_lossy().into_owned()
    }

    /// Put the CPU thread pool to sleep until the next graph computation
    /// (its workers otherwise poll for a while after each graph).
    pub fn pause_threads(&self) {
        if let Some(tp) = self.threadpool {
            unsafe { sys::ggml_threadpool_pause(tp.as_ptr()) }
        }
    }

    /// The backend's default buffer type.
    pub fn buffer_type(&self) -> BufferType {
        BufferType(unsafe { sys::ggml_backend_get_default_buffer_type(self.raw()) })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // SAFETY: we own both; the backend is freed before its thread pool.
        unsafe {
            sys::ggml_backend_free(self.ptr.as_ptr());
            if let Some(tp) = self.threadpool {
                sys::ggml_threadpool_free(tp.as_ptr());
            }
        }
    }
}

/// A buffer type (where and in which layout tensor data lives).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BufferType(sys::ggml_backend_buffer_type_t);

// SAFETY: buffer types are static descriptors.
unsafe impl Send for BufferType {}
unsafe impl Sync for BufferType {}

impl BufferType {
    pub(crate) fn from_raw(b: sys::ggml_backend_buffer_type_t) -> BufferType {
        BufferType(b)
    }

    pub fn name(&self) -> String {
        unsafe { CStr::from_ptr(sys::ggml_backend_buft_name(self.0)) }.to_string_lossy().into_owned()
    }

    /// Allocate one buffer holding every tensor of `ctx`, placing each one.
    pub fn alloc_ctx_tensors(&self, ctx: &Context) -> Option<Buffer> {
        let b = unsafe { sys::ggml_backend_alloc_ctx_tensors_from_buft(ctx.raw(), self.0) };
        NonNull::new(b).map(|ptr| Buffer { ptr })
    }

    pub(crate) fn raw(&self) -> sys::ggml_backend_buffer_type_t {
        self.0
    }
}

/// A backend buffer holding tensor data.
pub struct Buffer {
    ptr: NonNull<sys::ggml_backend_buffer>,
}

// SAFETY: owned handle; used from one thread at a time.
unsafe impl Send for Buffer {}

impl Buffer {
    pub fn size(&self) -> usize {
        unsafe { sys::ggml_backend_buffer_get_size(self.ptr.as_ptr()) }
    }

    pub fn clear(&self, value: u8) {
        unsafe { sys::ggml_backend_buffer_clear(self.ptr.as_ptr(), value) }
    }

    /// Mark as holding weights (lets the scheduler keep ops next to them).
    pub fn set_weights_usage(&self) {
        unsafe { sys::ggml_backend_buffer_set_usage(self.ptr.as_ptr(), sys::GGML_BACKEND_BUFFER_USAGE_WEIGHTS) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        unsafe { sys::ggml_backend_buffer_free(self.ptr.as_ptr()) }
    }
}

/// Host memory that a CPU buffer wraps without copying (a memory-mapped
/// model file): tensors are placed at offsets into it.
pub struct MappedRegion {
    buffer: Buffer,
    base: *const u8,
    len: usize,
}

// SAFETY: the region is read-only model data; the owner keeps the mapping alive.
unsafe impl Send for MappedRegion {}

impl MappedRegion {
    /// Wrap `bytes` (which must outlive the returned region: the caller keeps
    /// the mapping alive alongside it).
    pub fn new(bytes: &[u8]) -> MappedRegion {
        // SAFETY: ggml only reads weight data through this buffer.
        let b = unsafe { sys::ggml_backend_cpu_buffer_from_ptr(bytes.as_ptr() as *mut c_void, bytes.len()) };
        let buffer = Buffer { ptr: NonNull::new(b).expect("cpu_buffer_from_ptr failed") };
        buffer.set_weights_usage();
        MappedRegion { buffer, base: bytes.as_ptr(), len: bytes.len() }
    }

    /// Point `t` at `offset` in the region; the range must lie inside it.
    pub fn place(&self, t: Tensor<'_>, offset: usize) -> Result<(), String> {
        let end = offset.checked_add(t.nbytes()).ok_or("offset overflow")?;
        if end > self.len {
            return Err(format!("tensor {} ends at byte {end}, past the mapped {} bytes", t.name(), self.len));
        }
        // SAFETY: [offset, end) is inside the mapped region (checked above).
        let st = unsafe {
            sys::ggml_backend_tensor_alloc(self.buffer.ptr.as_ptr(), t.raw(), self.base.add(offset) as *mut c_void)
        };
        if st != sys::GGML_STATUS_SUCCESS {
            return Err(format!("ggml could not place tensor {}", t.name()));
        }
        Ok(())
    }
}

/// The CPU device: its buffer types and op support.
pub struct CpuDevice(sys::ggml_backend_dev_t);

type ExtraBuftsFn = unsafe extern "C" fn(sys::ggml_backend_dev_t) -> *mut sys::ggml_backend_buffer_type_t;

impl CpuDevice {
    pub fn get() -> CpuDevice {
        CpuDevice(super::device::Device::cpu().raw())
    }

    pub fn buffer_type(&self) -> BufferType {
        BufferType(unsafe { sys::ggml_backend_dev_buffer_type(self.0) })
    }

    /// The extra (repacking, AMX, ...) buffer types this CPU offers, in
    /// llama.cpp's order of preference.
    pub fn extra_buffer_types(&self) -> Vec<BufferType> {
        let mut out = Vec::new();
        unsafe {
            let reg = sys::ggml_backend_dev_backend_reg(self.0);
            let name = CString::new("ggml_backend_dev_get_extra_bufts").unwrap();
            let f = sys::ggml_backend_reg_get_proc_address(reg, name.as_ptr());
            if f.is_null() {
                return out;
            }
            let f: ExtraBuftsFn = std::mem::transmute(f);
            let mut p = f(self.0);
            while !p.is_null() && !(*p).is_null() {
                out.push(BufferType(*p));
                p = p.add(1);
            }
        }
        out
    }

    /// Whether a weight `w` stored in `buft` can serve as the first operand of
    /// a matrix multiplication on this device (probed with a dummy op, as
    /// llama.cpp does). With `experts_used`, the weight holds one matrix per
    /// expert (`ne[2]`) and the op is the per-token expert matmul.
    pub fn supports_mul_mat_weight(
        &self,
        typ: super::types::GgmlType,
        ne: [i64; 4],
        buft: BufferType,
        experts_used: Option<i64>,
    ) -> bool {
        use super::types::GgmlType;
        let probe = Context::new(8, 0);
        let wt = probe.new_tensor(typ, &ne);
        let op = match experts_used {
            None => probe.mul_mat(wt, probe.new_tensor(GgmlType::F32, &[ne[0], 512, ne[2], ne[3]])),
            Some(n) => {
                let b = probe.new_tensor(GgmlType::F32, &[ne[0], n, 512]);
                let ids = probe.new_tensor(GgmlType::I32, &[n, 512]);
                probe.mul_mat_id(wt, b, ids)
            }
        };
        unsafe {
            let dummy = sys::ggml_backend_buft_alloc_buffer(buft.raw(), 0);
            if dummy.is_null() {
                return false;
            }
            (*wt.raw()).buffer = dummy;
            let ok = sys::ggml_backend_dev_supports_op(self.0, op.raw());
            (*wt.raw()).buffer = std::ptr::null_mut();
            sys::ggml_backend_buffer_free(dummy);
            ok
        }
    }
}

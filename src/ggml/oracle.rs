//! llama.cpp's C API from the same ggml build, as the reference for tests and
//! benchmarks (`decache bench` runs it beside our engine). Never the engine.
use ggml_sys::llama as ll;
use std::ffi::CString;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Once;

/// A model loaded by llama.cpp.
pub struct OracleModel {
    ptr: NonNull<ll::llama_model>,
}

// SAFETY: llama_model is immutable after load and documented thread-safe for reads.
unsafe impl Send for OracleModel {}
unsafe impl Sync for OracleModel {}

fn backend_init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        super::log::route_logs_to_tracing();
        unsafe { ll::llama_backend_init() };
    });
}

impl OracleModel {
    /// Load with llama.cpp's defaults on the CPU (mmap on, no GPU layers).
    pub fn load(path: &Path) -> Result<OracleModel, String> {
        Self::load_with(path, true)
    }

    /// Load, choosing whether llama.cpp may use repacked/AMX weight buffers.
    pub fn load_with(path: &Path, extra_buffers: bool) -> Result<OracleModel, String> {
        Self::load_on(path, extra_buffers, &[], 0)
    }

    /// Load with `n_gpu_layers` layers on `devices` (GPUs, RPC servers), as
    /// llama.cpp's `-ngl` places them; the same devices and count give the
    /// same placement as ours (see `model::offload`).
    pub fn load_on(
        path: &Path,
        extra_buffers: bool,
        devices: &[super::Device],
        n_gpu_layers: i32,
    ) -> Result<OracleModel, String> {
        backend_init();
        let c = CString::new(path.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
        let mut params = unsafe { ll::llama_model_default_params() };
        params.n_gpu_layers = n_gpu_layers;
        params.use_extra_bufts = extra_buffers;
        // A NULL-terminated list, read during the load only.
        let mut devs: Vec<ll::ggml_backend_dev_t> = devices.iter().map(|d| d.raw() as ll::ggml_backend_dev_t).collect();
        devs.push(std::ptr::null_mut());
        if !devices.is_empty() {
            params.devices = devs.as_mut_ptr();
        }
        let m = unsafe { ll::llama_model_load_from_file(c.as_ptr(), params) };
        NonNull::new(m)
            .map(|ptr| OracleModel { ptr })
            .ok_or_else(|| format!("llama.cpp could not load {}", path.display()))
    }

    fn vocab(&self) -> *const ll::llama_vocab {
        unsafe { ll::llama_model_get_vocab(self.ptr.as_ptr()) }
    }

    pub fn n_vocab(&self) -> usize {
        unsafe { ll::llama_vocab_n_tokens(self.vocab()) as usize }
    }

    pub fn n_params(&self) -> u64 {
        unsafe { ll::llama_model_n_params(self.ptr.as_ptr()) }
    }

    pub fn size_bytes(&self) -> u64 {
        unsafe { ll::llama_model_size(self.ptr.as_ptr()) }
    }

    /// `llama_tokenize(vocab, text, add_special, parse_special)`.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<i32> {
        let mut out = vec![0i32; text.len() + 8];
        loop {
            let n = unsafe {
                ll::llama_tokenize(
                    self.vocab(),
                    text.as_ptr().cast(),
                    text.len() as i32,
                    out.as_mut_ptr(),
                    out.len() as i32,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                out.truncate(n as usize);
                return out;
            }
            out.resize((-n) as usize, 0);
        }
    }

    /// `llama_token_to_piece(vocab, id, lstrip = 0, special)`.
    pub fn token_to_piece(&self, id: i32, special: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        loop {
            let n = unsafe {
                ll::llama_token_to_piece(self.vocab(), id, buf.as_mut_ptr().cast(), buf.len() as i32, 0, special)
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf.resize((-n) as usize, 0);
        }
    }
}

impl Drop for OracleModel {
    fn drop(&mut self) {
        unsafe { ll::llama_model_free(self.ptr.as_ptr()) }
    }
}

/// Settings of an oracle context, mirroring the engine's.
#[derive(Clone, Debug)]
pub struct OracleParams {
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub n_threads: i32,
    pub flash_attn: bool,
    /// K and V cache types.
    pub type_k: crate::ggml::GgmlType,
    pub type_v: crate::ggml::GgmlType,
    /// Sliding-window layers in a full-size cache (llama.cpp's default for
    /// `llama_context_default_params`); false gives them the smaller one.
    pub swa_full: bool,
    /// Sequences (1 unless a test needs more: they then share one unified
    /// cache of `n_ctx` cells, as `seq_cp` needs to share cells).
    pub n_seq_max: u32,
}

impl Default for OracleParams {
    fn default() -> Self {
        OracleParams {
            n_ctx: 4096,
            n_batch: 2048,
            n_ubatch: 512,
            n_threads: 2,
            flash_attn: false,
            type_k: crate::ggml::GgmlType::F16,
            type_v: crate::ggml::GgmlType::F16,
            swa_full: true,
            n_seq_max: 1,
        }
    }
}

/// A llama.cpp context over an `OracleModel`: sequence 0 unless a method
/// names another (see `OracleParams::n_seq_max`).
pub struct OracleContext<'m> {
    ptr: NonNull<ll::llama_context>,
    threadpool: Option<NonNull<ggml_sys::ggml_threadpool>>,
    n_batch: usize,
    _model: &'m OracleModel,
}

impl<'m> OracleContext<'m> {
    pub fn new(model: &'m OracleModel, p: &OracleParams) -> Result<OracleContext<'m>, String> {
        let mut cp = unsafe { ll::llama_context_default_params() };
        cp.n_ctx = p.n_ctx;
        cp.n_batch = p.n_batch;
        cp.n_ubatch = p.n_ubatch;
        cp.n_seq_max = p.n_seq_max.max(1);
        cp.kv_unified = p.n_seq_max > 1;
        cp.n_threads = p.n_threads;
        cp.n_threads_batch = p.n_threads;
        cp.flash_attn_type =
            if p.flash_attn { ll::LLAMA_FLASH_ATTN_TYPE_ENABLED } else { ll::LLAMA_FLASH_ATTN_TYPE_DISABLED };
        cp.no_perf = true;
        cp.type_k = p.type_k.id() as ll::ggml_type;
        cp.type_v = p.type_v.id() as ll::ggml_type;
        cp.swa_full = p.swa_full;
        let c = unsafe { ll::llama_init_from_model(model.ptr.as_ptr(), cp) };
        let ptr = NonNull::new(c).ok_or("llama.cpp could not create a context")?;
        // A persistent thread pool, as llama-bench and our engine use.
        let threadpool = unsafe {
            let mut tpp = ggml_sys::ggml_threadpool_params_default(p.n_threads);
            let tp = NonNull::new(ggml_sys::ggml_threadpool_new(&mut tpp));
            if let Some(tp) = tp {
                ll::llama_attach_threadpool(ptr.as_ptr(), tp.as_ptr().cast(), tp.as_ptr().cast());
            }
            tp
        };
        Ok(OracleContext { ptr, threadpool, n_batch: p.n_batch as usize, _model: model })
    }

    /// Decode `tokens` at `positions` (sequence 0). Returns the logits of
    /// every token when `all_logits`, else of the last one.
    pub fn decode(&mut self, tokens: &[i32], positions: &[i32], all_logits: bool) -> Result<Vec<Vec<f32>>, String> {
        self.decode_seq(0, tokens, positions, all_logits)
    }

    /// `decode` into sequence `seq` (llama.cpp requires its first position
    /// to follow the sequence's last one).
    pub fn decode_seq(
        &mut self,
        seq: i32,
        tokens: &[i32],
        positions: &[i32],
        all_logits: bool,
    ) -> Result<Vec<Vec<f32>>, String> {
        assert_eq!(tokens.len(), positions.len());
        let n_vocab = self._model.n_vocab();
        let mut out = Vec::new();
        for (chunk_i, (toks, poss)) in tokens.chunks(self.n_batch).zip(positions.chunks(self.n_batch)).enumerate() {
            let is_last_chunk = (chunk_i + 1) * self.n_batch >= tokens.len();
            let mut batch = unsafe { ll::llama_batch_init(toks.len() as i32, 0, 1) };
            unsafe {
                for (i, (&t, &p)) in toks.iter().zip(poss).enumerate() {
                    *batch.token.add(i) = t;
                    *batch.pos.add(i) = p;
                    *batch.n_seq_id.add(i) = 1;
                    *(*batch.seq_id.add(i)) = seq;
                    *batch.logits.add(i) = (all_logits || (is_last_chunk && i + 1 == toks.len())) as i8;
                }
                batch.n_tokens = toks.len() as i32;
            }
            let rc = unsafe { ll::llama_decode(self.ptr.as_ptr(), batch) };
            if rc != 0 {
                unsafe { ll::llama_batch_free(batch) };
                return Err(format!("llama_decode returned {rc}"));
            }
            for i in 0..toks.len() {
                let wanted = unsafe { *batch.logits.add(i) } != 0;
                if wanted {
                    let l = unsafe { ll::llama_get_logits_ith(self.ptr.as_ptr(), i as i32) };
                    if l.is_null() {
                        unsafe { ll::llama_batch_free(batch) };
                        return Err(format!("no logits for batch row {i}"));
                    }
                    out.push(unsafe { std::slice::from_raw_parts(l, n_vocab) }.to_vec());
                }
            }
            unsafe { ll::llama_batch_free(batch) };
        }
        Ok(out)
    }

    /// Remove positions [p0, p1) of sequence 0 (`llama_memory_seq_rm`).
    pub fn seq_rm(&mut self, p0: i32, p1: i32) -> bool {
        unsafe { ll::llama_memory_seq_rm(ll::llama_get_memory(self.ptr.as_ptr()), 0, p0, p1) }
    }

    /// Remove positions [p0, p1) of sequence `seq` (-1 = every sequence; a
    /// cell other sequences hold stays theirs).
    pub fn seq_rm_in(&mut self, seq: i32, p0: i32, p1: i32) -> bool {
        unsafe { ll::llama_memory_seq_rm(ll::llama_get_memory(self.ptr.as_ptr()), seq, p0, p1) }
    }

    /// Let sequence `dst` hold the cells of `src` at positions [p0, p1)
    /// too (`llama_memory_seq_cp`; the cells are shared, nothing is copied).
    pub fn seq_cp(&mut self, src: i32, dst: i32, p0: i32, p1: i32) {
        unsafe { ll::llama_memory_seq_cp(ll::llama_get_memory(self.ptr.as_ptr()), src, dst, p0, p1) }
    }

    /// Shift positions [p0, p1) of sequence 0 by `delta` (`llama_memory_seq_add`).
    pub fn seq_add(&mut self, p0: i32, p1: i32, delta: i32) {
        unsafe { ll::llama_memory_seq_add(ll::llama_get_memory(self.ptr.as_ptr()), 0, p0, p1, delta) }
    }

    /// Empty the cache.
    pub fn clear(&mut self) {
        unsafe { ll::llama_memory_clear(ll::llama_get_memory(self.ptr.as_ptr()), true) }
    }

    /// Put the thread pool to sleep until the next decode.
    pub fn pause_threads(&mut self) {
        if let Some(tp) = self.threadpool {
            unsafe { ggml_sys::ggml_threadpool_pause(tp.as_ptr()) }
        }
    }

    pub fn synchronize(&mut self) {
        unsafe { ll::llama_synchronize(self.ptr.as_ptr()) }
    }
}

impl Drop for OracleContext<'_> {
    fn drop(&mut self) {
        unsafe {
            ll::llama_free(self.ptr.as_ptr());
            if let Some(tp) = self.threadpool {
                ggml_sys::ggml_threadpool_free(tp.as_ptr());
            }
        }
    }
}

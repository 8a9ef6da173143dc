//! Route ggml's (and llama.cpp's, for the oracle) log output to `tracing`, so
//! that the library never writes to the terminal by itself.
use ggml_sys as sys;
use std::ffi::{c_char, c_void, CStr};
use std::sync::Once;

unsafe extern "C" fn forward(level: sys::ggml_log_level, text: *const c_char, _user: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: ggml passes a NUL-terminated string valid for this call.
    let msg = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let msg = msg.trim_end();
    if msg.is_empty() {
        return;
    }
    match level {
        sys::GGML_LOG_LEVEL_ERROR => tracing::error!(target: "ggml", "{msg}"),
        sys::GGML_LOG_LEVEL_WARN => tracing::warn!(target: "ggml", "{msg}"),
        sys::GGML_LOG_LEVEL_INFO => tracing::debug!(target: "ggml", "{msg}"),
        _ => tracing::trace!(target: "ggml", "{msg}"),
    }
}

/// Install the log router once per process (ggml and llama.cpp).
pub fn route_logs_to_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `forward` is a valid callback for the life of the process.
        unsafe {
            sys::ggml_log_set(Some(forward), std::ptr::null_mut());
            sys::llama::llama_log_set(Some(forward), std::ptr::null_mut());
        }
    });
}

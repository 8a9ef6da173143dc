//! Compute devices: the accelerators ggml was built with (the `cuda`,
//! `metal` and `vulkan` features) and devices that other machines serve
//! over ggml's RPC protocol (`decache rpc-server`). A device has a buffer
//! type, where offloaded weights and KV rows live, and makes a backend for
//! the scheduler.
use super::backend::{Backend, BufferType};
use ggml_sys as sys;
use std::ffi::{CStr, CString};
use std::ptr::NonNull;

/// One ggml device (a registry entry: it lives as long as the program).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Device(sys::ggml_backend_dev_t);

// SAFETY: devices are static registry entries; ggml's device calls are thread-safe.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

impl Device {
    /// The host CPU.
    pub fn cpu() -> Device {
        super::log::route_logs_to_tracing();
        let d = unsafe { sys::ggml_backend_dev_by_type(sys::GGML_BACKEND_DEVICE_TYPE_CPU) };
        assert!(!d.is_null(), "ggml has no CPU device");
        Device(d)
    }

    /// The GPUs (discrete or integrated) of this build, in ggml's order;
    /// none in a CPU-only build. RPC devices are not listed here (see `rpc_devices`).
    pub fn gpus() -> Vec<Device> {
        super::log::route_logs_to_tracing();
        let n = unsafe { sys::ggml_backend_dev_count() };
        (0..n)
            .map(|i| Device(unsafe { sys::ggml_backend_dev_get(i) }))
            .filter(|d| !d.0.is_null())
            .filter(|d| {
                let t = unsafe { sys::ggml_backend_dev_type(d.0) };
                t == sys::GGML_BACKEND_DEVICE_TYPE_GPU || t == sys::GGML_BACKEND_DEVICE_TYPE_IGPU
            })
            .collect()
    }

    pub(crate) fn raw(&self) -> sys::ggml_backend_dev_t {
        self.0
    }

    pub fn name(&self) -> String {
        unsafe { CStr::from_ptr(sys::ggml_backend_dev_name(self.0)) }.to_string_lossy().into_owned()
    }

    pub fn description(&self) -> String {
        unsafe { CStr::from_ptr(sys::ggml_backend_dev_description(self.0)) }.to_string_lossy().into_owned()
    }

    /// Free and total memory, in bytes.
    pub fn memory(&self) -> (usize, usize) {
        let (mut free, mut total) = (0usize, 0usize);
        unsafe { sys::ggml_backend_dev_memory(self.0, &mut free, &mut total) };
        (free, total)
    }

    pub fn is_cpu(&self) -> bool {
        unsafe { sys::ggml_backend_dev_type(self.0) == sys::GGML_BACKEND_DEVICE_TYPE_CPU }
    }

    /// Where this device keeps tensors.
    pub fn buffer_type(&self) -> BufferType {
        BufferType::from_raw(unsafe { sys::ggml_backend_dev_buffer_type(self.0) })
    }

    /// A backend computing on this device (`n_threads` applies to the CPU).
    pub fn backend(&self, n_threads: usize) -> Option<Backend> {
        if self.is_cpu() {
            return Some(Backend::cpu(n_threads));
        }
        let b = unsafe { sys::ggml_backend_dev_init(self.0, std::ptr::null()) };
        NonNull::new(b).map(Backend::from_raw)
    }
}

/// The devices an RPC server at `endpoint` ("host:port") offers. The server
/// must already have answered `super::rpc::probe`: ggml aborts the program
/// when it cannot connect or the handshake fails.
pub fn rpc_devices(endpoint: &str) -> Result<Vec<Device>, String> {
    super::log::route_logs_to_tracing();
    let c = CString::new(endpoint).map_err(|_| format!("--rpc {endpoint:?}: contains a NUL byte"))?;
    let reg = unsafe { sys::ggml_backend_rpc_add_server(c.as_ptr()) };
    if reg.is_null() {
        return Err(format!("--rpc {endpoint}: the server offers no devices"));
    }
    let n = unsafe { sys::ggml_backend_reg_dev_count(reg) };
    Ok((0..n).map(|i| Device(unsafe { sys::ggml_backend_reg_dev_get(reg, i) })).filter(|d| !d.0.is_null()).collect())
}

/// Serve `devices` to the network at `endpoint` until the process ends.
/// Returns only when the server could not start (ggml prints the reason).
pub fn serve_rpc(
    endpoint: &str,
    cache_dir: Option<&std::path::Path>,
    n_threads: usize,
    devices: &[Device],
) -> Result<(), String> {
    super::log::route_logs_to_tracing();
    let ep = CString::new(endpoint).map_err(|_| format!("endpoint {endpoint:?} contains a NUL byte"))?;
    let cache = match cache_dir {
        Some(p) => Some(
            CString::new(p.to_string_lossy().as_bytes())
                .map_err(|_| format!("cache directory {} contains a NUL byte", p.display()))?,
        ),
        None => None,
    };
    let mut raw: Vec<sys::ggml_backend_dev_t> = devices.iter().map(|d| d.0).collect();
    // SAFETY: valid C strings and device handles that outlive the call.
    unsafe {
        sys::ggml_backend_rpc_start_server(
            ep.as_ptr(),
            cache.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            n_threads.max(1),
            raw.len(),
            raw.as_mut_ptr(),
        )
    };
    Err(format!("the RPC server at {endpoint} could not start (is the port already in use?)"))
}

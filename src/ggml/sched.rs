//! The backend scheduler: allocates a graph's intermediates and runs it.
use super::backend::Backend;
use super::context::Graph;
use ggml_sys as sys;
use std::ptr::NonNull;

/// Owns a `ggml_backend_sched` over a set of backends (CPU last).
pub struct Scheduler {
    ptr: NonNull<sys::ggml_backend_sched>,
}

// SAFETY: used by the one session that owns it.
unsafe impl Send for Scheduler {}

/// Why a graph could not run.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error("could not allocate the compute graph (out of memory?)")]
    Alloc,
    #[error("graph computation failed with ggml status {0}")]
    Status(i32),
    #[error("computation aborted")]
    Aborted,
}

impl Scheduler {
    pub fn new(backends: &[&Backend], graph_size: usize) -> Scheduler {
        let mut raw: Vec<sys::ggml_backend_t> = backends.iter().map(|b| b.raw()).collect();
        // SAFETY: valid backends that outlive the scheduler (the owner keeps them).
        let s = unsafe {
            sys::ggml_backend_sched_new(raw.as_mut_ptr(), std::ptr::null_mut(), raw.len() as i32, graph_size, false, true)
        };
        Scheduler { ptr: NonNull::new(s).expect("ggml_backend_sched_new failed") }
    }

    /// Reserve compute memory for the worst-case graph.
    pub fn reserve(&mut self, g: &Graph<'_>) -> Result<(), ComputeError> {
        if unsafe { sys::ggml_backend_sched_reserve(self.ptr.as_ptr(), g.raw()) } {
            Ok(())
        } else {
            Err(ComputeError::Alloc)
        }
    }

    /// Allocate `g`'s tensors; inputs can be written after this.
    pub fn alloc(&mut self, g: &Graph<'_>) -> Result<(), ComputeError> {
        unsafe { sys::ggml_backend_sched_reset(self.ptr.as_ptr()) };
        if unsafe { sys::ggml_backend_sched_alloc_graph(self.ptr.as_ptr(), g.raw()) } {
            Ok(())
        } else {
            Err(ComputeError::Alloc)
        }
    }

    pub fn compute(&mut self, g: &Graph<'_>) -> Result<(), ComputeError> {
        let st = unsafe { sys::ggml_backend_sched_graph_compute(self.ptr.as_ptr(), g.raw()) };
        match st {
            sys::GGML_STATUS_SUCCESS => Ok(()),
            sys::GGML_STATUS_ABORTED => Err(ComputeError::Aborted),
            s => Err(ComputeError::Status(s as i32)),
        }
    }

    pub fn n_splits(&self) -> i32 {
        unsafe { sys::ggml_backend_sched_get_n_splits(self.ptr.as_ptr()) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        unsafe { sys::ggml_backend_sched_free(self.ptr.as_ptr()) }
    }
}

//! The backend scheduler: allocates a graph's intermediates and runs it.
use super::backend::Backend;
use super::context::Graph;
use ggml_sys as sys;
use std::ptr::NonNull;

/// Owns a `ggml_backend_sched` over a set of backends (CPU last).
pub struct Scheduler {
    ptr: NonNull<sys::ggml_backend_sched>,
    profile: Option<Box<ProfileState>>,
    /// Graphs allocated so far (each allocation replaces the previous one's).
    allocations: u64,
    /// Graphs computed so far.
    computes: u64,
}

/// Time spent in one graph node (profiling runs nodes one by one).
#[derive(Clone, Debug)]
pub struct NodeTime {
    pub op: String,
    pub name: String,
    /// Output shape, and the first operand's type and buffer ("q4_1@AMX").
    pub detail: String,
    pub us: f64,
}

struct ProfileState {
    last: std::time::Instant,
    nodes: Vec<NodeTime>,
}

unsafe extern "C" fn profile_cb(t: *mut sys::ggml_tensor, ask: bool, user: *mut std::ffi::c_void) -> bool {
    // SAFETY: `user` is the Box<ProfileState> owned by the scheduler while the callback is set.
    let st = unsafe { &mut *(user as *mut ProfileState) };
    if ask {
        st.last = std::time::Instant::now();
        return true; // observe every node: the scheduler then runs them one at a time
    }
    let t = super::context::Tensor::from_raw(t);
    let op = unsafe { std::ffi::CStr::from_ptr(sys::ggml_op_desc(t.raw())) }.to_string_lossy().into_owned();
    let src0 = unsafe { (*t.raw()).src[0] };
    let detail = if src0.is_null() {
        format!("{:?}", t.ne())
    } else {
        let s0 = super::context::Tensor::from_raw(src0);
        let buf = unsafe { (*src0).buffer };
        let bname = if buf.is_null() {
            "-".to_string()
        } else {
            unsafe { std::ffi::CStr::from_ptr(sys::ggml_backend_buffer_name(buf)) }.to_string_lossy().into_owned()
        };
        let s1 = unsafe { (*t.raw()).src[1] };
        let a64 = if s1.is_null() {
            ""
        } else if (unsafe { (*s1).data } as usize).is_multiple_of(64) {
            " src1:aligned64"
        } else {
            " src1:unaligned64"
        };
        format!("{:?} {}@{bname}{a64}", t.ne(), s0.typ())
    };
    st.nodes.push(NodeTime { op, name: t.name(), detail, us: st.last.elapsed().as_secs_f64() * 1e6 });
    st.last = std::time::Instant::now();
    true
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
            sys::ggml_backend_sched_new(
                raw.as_mut_ptr(),
                std::ptr::null_mut(),
                raw.len() as i32,
                graph_size,
                false,
                true,
            )
        };
        Scheduler {
            ptr: NonNull::new(s).expect("ggml_backend_sched_new failed"),
            profile: None,
            allocations: 0,
            computes: 0,
        }
    }

    /// Reserve compute memory for the worst-case graph.
    pub fn reserve(&mut self, g: &Graph<'_>) -> Result<(), ComputeError> {
        self.allocations += 1;
        if unsafe { sys::ggml_backend_sched_reserve(self.ptr.as_ptr(), g.raw()) } {
            Ok(())
        } else {
            Err(ComputeError::Alloc)
        }
    }

    /// Allocate `g`'s tensors; inputs can be written after this.
    pub fn alloc(&mut self, g: &Graph<'_>) -> Result<(), ComputeError> {
        self.allocations += 1;
        unsafe { sys::ggml_backend_sched_reset(self.ptr.as_ptr()) };
        if unsafe { sys::ggml_backend_sched_alloc_graph(self.ptr.as_ptr(), g.raw()) } {
            Ok(())
        } else {
            Err(ComputeError::Alloc)
        }
    }

    pub fn compute(&mut self, g: &Graph<'_>) -> Result<(), ComputeError> {
        self.computes += 1;
        // SAFETY: the scheduler and the graph it allocated are valid for the call.
        let st = unsafe { sys::ggml_backend_sched_graph_compute(self.ptr.as_ptr(), g.raw()) };
        match st {
            sys::GGML_STATUS_SUCCESS => Ok(()),
            sys::GGML_STATUS_ABORTED => Err(ComputeError::Aborted),
            s => Err(ComputeError::Status(s)),
        }
    }

    /// Bytes of compute buffer reserved on `backend`.
    pub fn buffer_size(&self, backend: &Backend) -> usize {
        unsafe { sys::ggml_backend_sched_get_buffer_size(self.ptr.as_ptr(), backend.raw()) }
    }

    /// Record per-node times from now on (slower: nodes run one by one).
    pub fn start_profile(&mut self) {
        let mut st = Box::new(ProfileState { last: std::time::Instant::now(), nodes: Vec::new() });
        let user = &mut *st as *mut ProfileState as *mut std::ffi::c_void;
        unsafe { sys::ggml_backend_sched_set_eval_callback(self.ptr.as_ptr(), Some(profile_cb), user) };
        self.profile = Some(st);
    }

    /// Stop profiling and return the recorded node times.
    pub fn stop_profile(&mut self) -> Vec<NodeTime> {
        unsafe { sys::ggml_backend_sched_set_eval_callback(self.ptr.as_ptr(), None, std::ptr::null_mut()) };
        self.profile.take().map(|p| p.nodes).unwrap_or_default()
    }

    /// Allocations so far: a graph allocated when this was `n` still owns
    /// its memory while this is `n` (a later allocation reuses that memory).
    pub fn allocations(&self) -> u64 {
        self.allocations
    }

    /// Graphs computed so far.
    pub fn computes(&self) -> u64 {
        self.computes
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

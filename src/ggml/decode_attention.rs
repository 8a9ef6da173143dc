//! Attention for a few query rows over many cached cells (decoding), on the
//! CPU, as ggml custom ops.
//!
//! ggml-cpu's fused attention takes one query head at a time over the cells:
//! each K and V row is read once per query head that shares it, and every
//! cell costs a scalar `expf` and an update of an f16 accumulator. Here the
//! query heads that share a K/V head (grouped-query attention) are taken
//! together: each K and V row is converted once and used by all of them, the
//! scores of a run of cells are exponentiated in vector code, and the sums
//! are kept in f32.
//!
//! 1. `partials`: per query row, K/V head and run of [`CHUNK`] cells, each
//!    query head's max score, sum of exponentials and weighted V sum.
//! 2. `reduce`: per query row and head, the runs joined in their order (and
//!    the head's sink logit, gpt-oss), divided by the sum.
//!
//! Over a single run (a shallow cache) one op does both, each job joining
//! its own sums with the same `join`.
//!
//! The runs are fixed cell ranges, joined in a fixed order: a row's result
//! does not depend on the threads, on the other rows of its batch, or on
//! how many cells past its own the batch attends (masked cells are skipped),
//! so a verified draft's rows come out as the lone steps' would.
use super::context::{Context, Tensor};
use super::types::GgmlType;
use ggml_sys as sys;
use std::os::raw::{c_int, c_void};

/// Cells per partial sum.
pub const CHUNK: usize = 256;
/// Most query heads that share one K/V head.
pub(super) const MAX_GROUP: usize = 8;
/// Largest head size.
pub(super) const MAX_HEAD_DIM: usize = 512;
/// ggml_fp16_t's bits of -inf: a hidden cell in the mask.
pub(super) const F16_NEG_INF: u16 = 0xFC00;

/// Whether `Context::decode_attention` can take these shapes here: f16 K
/// and V, at most 8 query heads per K/V head, a head size that is a whole
/// number of 8-lane vectors, and a CPU with AVX2, FMA and F16C.
pub fn decode_attention_fits(n_head: i64, n_head_kv: i64, head_dim: i64, k: GgmlType, v: GgmlType) -> bool {
    k == GgmlType::F16
        && v == GgmlType::F16
        && n_head_kv > 0
        && n_head % n_head_kv == 0
        && (n_head / n_head_kv) as usize <= MAX_GROUP
        && head_dim > 0
        && head_dim % 8 == 0
        && head_dim as usize <= MAX_HEAD_DIM
        && simd::available()
}

/// What decache's attention kernels take (`Context::decode_attention`,
/// `Context::prefill_attention`): q f32 [d, n_head, n_rows]; k and v f16
/// [d, n_head_kv, n_kv] over cell rows; the mask f16, row r's n_kv values at
/// row r (-inf hides a cell); one f32 sink logit per head when given.
#[derive(Clone, Copy)]
pub struct KernelArgs<'a> {
    pub q: Tensor<'a>,
    pub k: Tensor<'a>,
    pub v: Tensor<'a>,
    pub mask: Tensor<'a>,
    pub sinks: Option<Tensor<'a>>,
    pub scale: f32,
}

impl<'a> KernelArgs<'a> {
    /// Checked: `decode_attention_fits`, the types, a mask covering the rows
    /// and cells, one sink per head.
    pub(super) fn checked(self) -> Self {
        let (q, k, v, mask) = (self.q, self.k, self.v, self.mask);
        let [d, n_head, n_rows, _] = q.ne();
        assert!(
            decode_attention_fits(n_head, k.ne()[1], d, k.typ(), v.typ()) && q.typ() == GgmlType::F32,
            "attention kernels: shapes or types they do not take"
        );
        assert!(mask.typ() == GgmlType::F16 && mask.ne()[0] >= k.ne()[2] && mask.ne()[1] >= n_rows, "attention mask");
        if let Some(s) = self.sinks {
            assert!(s.typ() == GgmlType::F32 && s.ne()[0] == n_head, "attention sinks");
        }
        self
    }
}

impl Context {
    /// A custom op of shape `ne` over `args`, run by `fun` on every thread
    /// with `userdata` (a scale's bits, not a pointer: nothing has to
    /// outlive the graph).
    pub(super) fn custom_op<'a>(
        &'a self,
        ne: [i64; 4],
        args: &mut [*mut sys::ggml_tensor],
        fun: unsafe extern "C" fn(*mut sys::ggml_tensor, c_int, c_int, *mut c_void),
        userdata: *mut c_void,
    ) -> Tensor<'a> {
        // SAFETY: valid context and tensors (the callers checked their
        // shapes); `fun` reads them through those shapes.
        Tensor::from_raw(unsafe {
            sys::ggml_custom_4d(
                self.raw(),
                GgmlType::F32.0,
                ne[0],
                ne[1],
                ne[2],
                ne[3],
                args.as_mut_ptr(),
                args.len() as c_int,
                Some(fun),
                -1,
                userdata,
            )
        })
    }

    /// softmax(q·kᵀ * scale + mask)·v for each query row alone (the sink
    /// logit of its head added to the sum when given). Returns f32 [d,
    /// n_head, n_rows]. The caller checks `decode_attention_fits`.
    pub fn decode_attention<'a>(&'a self, a: KernelArgs<'a>) -> Tensor<'a> {
        let KernelArgs { q, k, v, mask, sinks, scale } = a.checked();
        let [d, n_head, n_rows, _] = q.ne();
        let n_chunk = (k.ne()[2] as usize).div_ceil(CHUNK) as i64;
        let scale_bits = scale.to_bits() as usize as *mut c_void;
        let mut args = vec![q.raw(), k.raw(), v.raw(), mask.raw()];
        if n_chunk == 1 {
            // One run: each job joins its own sums (as `reduce_op` would,
            // the same arithmetic), and the step has one node less per layer.
            args.extend(sinks.map(|t| t.raw()));
            return self.custom_op([d, n_head, n_rows, 1], &mut args, one_run_op, scale_bits);
        }
        let partials = self.custom_op([d + 2, n_chunk, n_head, n_rows], &mut args, partials_op, scale_bits);
        let mut args = vec![partials.raw()];
        args.extend(sinks.map(|t| t.raw()));
        self.custom_op([d, n_head, n_rows, 1], &mut args, reduce_op, std::ptr::null_mut())
    }
}

/// A tensor's data pointer, shape and strides, as the ops read them.
#[derive(Clone, Copy)]
pub(super) struct View {
    pub(super) data: *const u8,
    pub(super) ne: [usize; 4],
    pub(super) nb: [usize; 4],
}

impl View {
    /// SAFETY: `t` is a live, allocated tensor.
    pub(super) unsafe fn of(t: *const sys::ggml_tensor) -> View {
        let t = unsafe { &*t };
        View { data: t.data as *const u8, ne: t.ne.map(|n| n as usize), nb: t.nb }
    }

    pub(super) fn at(&self, i1: usize, i2: usize, i3: usize) -> *const u8 {
        self.data.wrapping_add(i1 * self.nb[1] + i2 * self.nb[2] + i3 * self.nb[3])
    }
}

/// Partial sums: dst [d + 2, n_chunk, n_head, n_rows], each
/// (max, sum of exponentials, weighted V sum).
unsafe extern "C" fn partials_op(dst: *mut sys::ggml_tensor, ith: c_int, nth: c_int, userdata: *mut c_void) {
    let scale = f32::from_bits(userdata as usize as u32);
    // SAFETY: ggml calls this with the node built by `decode_attention`,
    // its sources allocated.
    let (out, srcs) = unsafe { (View::of(dst), Sources::of(dst)) };
    for_jobs(&srcs, out, out.ne[1], scale, ith, nth, |job| {
        // SAFETY: `decode_attention_fits` checked the CPU's features and the
        // shapes; the job's pointers stay inside the tensors.
        unsafe { simd::partial(job) }
    });
}

/// One run of cells in all (a shallow cache): dst [d, n_head, n_rows], each
/// job's sums joined at once, by `join` as `reduce_op` joins them.
unsafe extern "C" fn one_run_op(dst: *mut sys::ggml_tensor, ith: c_int, nth: c_int, userdata: *mut c_void) {
    let scale = f32::from_bits(userdata as usize as u32);
    // SAFETY: as in `partials_op`; the sinks, when given, are source 4.
    let (out, srcs, sinks) = unsafe {
        let src = (*dst).src;
        (View::of(dst), Sources::of(dst), (!src[4].is_null()).then(|| View::of(src[4])))
    };
    let (d, n_head) = (out.ne[0], out.ne[1]);
    // The jobs' partials go here, a head's at its index ([d + 2] each).
    let mut parts = vec![0f32; n_head * (d + 2)];
    let scratch = View { data: parts.as_mut_ptr() as *const u8, ne: [d + 2, 1, n_head, 1], nb: [4, 0, 4 * (d + 2), 0] };
    for_jobs(&srcs, scratch, 1, scale, ith, nth, |job| {
        // SAFETY: as in `partials_op`; `scratch` holds every head's partial.
        unsafe { simd::partial(job) };
        for g in 0..job.heads {
            let h = job.head(g);
            // SAFETY: the partial was just written; the output row and head
            // are inside dst.
            unsafe {
                let part = std::slice::from_raw_parts(scratch.at(0, h, 0) as *const f32, d + 2);
                let o = std::slice::from_raw_parts_mut(out.at(h, job.row, 0) as *mut f32, d);
                join(1, |_| part, sinks.map(|s| *(s.data as *const f32).add(h)), o);
            }
        }
    });
}

/// The sources of `partials_op` and `one_run_op`.
struct Sources {
    q: View,
    k: View,
    v: View,
    mask: View,
}

impl Sources {
    /// SAFETY: `dst` is a node built by `decode_attention`, its sources allocated.
    unsafe fn of(dst: *const sys::ggml_tensor) -> Sources {
        let src = unsafe { (*dst).src };
        unsafe { Sources { q: View::of(src[0]), k: View::of(src[1]), v: View::of(src[2]), mask: View::of(src[3]) } }
    }
}

/// Thread `ith` of `nth`'s jobs, their partials written to `out`
/// ([d + 2, n_chunk, n_head, n_rows]).
fn for_jobs(s: &Sources, out: View, n_chunk: usize, scale: f32, ith: c_int, nth: c_int, mut each: impl FnMut(&Job)) {
    let (q, k, v, mask) = (s.q, s.k, s.v, s.mask);
    let (n_head, n_rows, n_head_kv, n_kv) = (q.ne[1], q.ne[2], k.ne[1], k.ne[2]);
    // A unit is a run of cells of one row for one K/V head's group of query
    // heads, or for part of that group when the units would be too few to
    // share out (a shallow cache: one run). The units go to the threads in
    // contiguous stretches, so a thread reads a run's K and V rows whole
    // and the runs in order. Each query head's sums are its own, whichever
    // unit takes it: the split does not change a bit.
    let group = n_head / n_head_kv;
    let nth = nth.max(1) as usize;
    let whole = n_rows * n_chunk * n_head_kv;
    let parts = if whole >= 4 * nth { 1 } else { group.min((4 * nth).div_ceil(whole)) };
    let size = group.div_ceil(parts);
    let units = whole * parts;
    let (u0, u1) = (units * ith as usize / nth, units * (ith as usize + 1) / nth);
    let mut fetched = usize::MAX;
    for u in u0..u1 {
        let (p, h, run) = (u % parts, u / parts % n_head_kv, u / parts / n_head_kv);
        let (c, r) = (run % n_chunk, run / n_chunk);
        let first = p * size;
        if first >= group {
            continue;
        }
        let job = Job {
            q,
            k,
            v,
            mask: mask.at(r, 0, 0) as *const u16,
            out,
            row: r,
            kv_head: h,
            group,
            first,
            heads: size.min(group - first),
            c0: c * CHUNK,
            len: CHUNK.min(n_kv - c * CHUNK),
            chunk: c,
            scale,
            prefetch: fetched != run,
        };
        fetched = run;
        each(&job);
    }
}

/// One run of cells for one query row and K/V head.
struct Job {
    q: View,
    k: View,
    v: View,
    mask: *const u16,
    out: View,
    row: usize,
    kv_head: usize,
    /// Query heads per K/V head.
    group: usize,
    /// The job's query heads: `first..first + heads` of the group.
    first: usize,
    heads: usize,
    c0: usize,
    len: usize,
    chunk: usize,
    scale: f32,
    /// Fetch the run's K and V rows (every head's) ahead: the thread's first
    /// job on this run.
    prefetch: bool,
}

impl Job {
    /// Query head `g` of the job's (its index in q).
    fn head(&self, g: usize) -> usize {
        self.kv_head * self.group + self.first + g
    }

    /// Where the job's query head `g` writes its partial.
    fn out(&self, g: usize) -> *mut f32 {
        self.out.at(self.chunk, self.head(g), self.row) as *mut f32
    }
}

/// The runs joined: dst [d, n_head, n_rows].
unsafe extern "C" fn reduce_op(dst: *mut sys::ggml_tensor, ith: c_int, nth: c_int, _: *mut c_void) {
    // SAFETY: as in `partials_op`.
    let (out, partials, sinks) = unsafe {
        let src = (*dst).src;
        (View::of(dst), View::of(src[0]), (!src[1].is_null()).then(|| View::of(src[1])))
    };
    let (d, n_head, n_rows) = (out.ne[0], out.ne[1], out.ne[2]);
    let n_chunk = partials.ne[1];
    for t in (ith as usize..n_head * n_rows).step_by(nth.max(1) as usize) {
        let (h, r) = (t % n_head, t / n_head);
        // SAFETY: every index is inside the shapes read above; the partials
        // were written by the op before this one.
        unsafe {
            let part = |c: usize| std::slice::from_raw_parts(partials.at(c, h, r) as *const f32, d + 2);
            let o = std::slice::from_raw_parts_mut(out.at(h, r, 0) as *mut f32, d);
            join(n_chunk, part, sinks.map(|s| *(s.data as *const f32).add(h)), o);
        }
    }
}

/// One query head's output from its `n` runs' partials (max, sum, V sums;
/// `part(c)`), in their order, and its sink logit: the weighted V sums over
/// the sum.
fn join<'p>(n: usize, part: impl Fn(usize) -> &'p [f32], sink: Option<f32>, o: &mut [f32]) {
    let mut m = sink.unwrap_or(f32::NEG_INFINITY);
    for c in 0..n {
        m = m.max(part(c)[0]);
    }
    o.fill(0.0);
    let mut sum = 0.0f32;
    for c in 0..n {
        let p = part(c);
        if p[0] == f32::NEG_INFINITY {
            continue;
        }
        let f = (p[0] - m).exp();
        sum += p[1] * f;
        for (o, &a) in o.iter_mut().zip(&p[2..]) {
            *o += a * f;
        }
    }
    if let Some(s) = sink {
        sum += (s - m).exp();
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    o.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(target_arch = "x86_64")]
pub(super) mod simd {
    use super::{Job, CHUNK, F16_NEG_INF, MAX_GROUP, MAX_HEAD_DIM};
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }

    /// Horizontal sum of 8 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::ggml) fn hsum(x: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// Horizontal max of 8 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::ggml) fn hmax(x: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
    }

    /// e^x for x ≤ 0 (larger x is not asked for): 2^n · p(r), r = x - n·ln 2
    /// in [-ln2/2, ln2/2], p of degree 6 (within 2 ulp); 0 below -87.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::ggml) fn exp_neg(x: __m256) -> __m256 {
        let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(-87.0));
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        _mm256_andnot_ps(tiny, _mm256_mul_ps(p, pow2))
    }

    /// Cells ahead whose rows are fetched.
    const AHEAD: usize = 32;

    /// Ask for the cache lines of `bytes` bytes at `p`.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn prefetch(p: *const u8, bytes: usize) {
        for off in (0..bytes).step_by(64) {
            // SAFETY: a prefetch does not fault, wherever it points.
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off) as *const i8);
        }
    }

    /// 8 f16 values at `p`, as f32.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::ggml) unsafe fn load_f16(p: *const u16) -> __m256 {
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p as *const __m128i) })
    }

    /// One job's partials (see `partials_op`).
    ///
    /// SAFETY: the CPU has AVX2, FMA and F16C; the job's views and mask
    /// cover the row, heads and cells it names.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn partial(job: &Job) {
        SCRATCH.with_borrow_mut(|scratch| {
            let (q, s) = scratch.split_at_mut(MAX_GROUP * MAX_HEAD_DIM);
            // The group's size, as a constant: its sums stay in registers.
            unsafe {
                match job.heads {
                    1 => run::<1, 4>(job, q, s),
                    2 => run::<2, 4>(job, q, s),
                    3 => run::<3, 4>(job, q, s),
                    4 => run::<4, 2>(job, q, s),
                    5 => run::<5, 2>(job, q, s),
                    6 => run::<6, 2>(job, q, s),
                    7 => run::<7, 1>(job, q, s),
                    _ => run::<8, 1>(job, q, s),
                }
            }
        })
    }

    thread_local! {
        /// Each thread's working memory: the group's queries (rounded
        /// through f16) and scores.
        static SCRATCH: std::cell::RefCell<Vec<f32>> =
            std::cell::RefCell::new(vec![0.0; MAX_GROUP * (MAX_HEAD_DIM + CHUNK)]);
    }

    /// `partial` for a group of `G` query heads; the V sums are taken `B`
    /// vectors of the head at a time (G·B accumulators in registers).
    ///
    /// SAFETY: as `partial`'s; `q` and `s` hold `MAX_GROUP` heads' rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run<const G: usize, const B: usize>(job: &Job, q: &mut [f32], s: &mut [f32]) {
        let d = job.q.ne[0];
        let lanes = d / 8;
        let full = job.len.div_ceil(8) * 8;
        // The group's query heads, rounded through f16 as ggml's own kernel
        // rounds them before its f16 dot products.
        for g in 0..G {
            let src = job.q.at(job.head(g), job.row, 0) as *const f32;
            for x in 0..lanes {
                let v = unsafe { _mm256_loadu_ps(src.add(8 * x)) };
                let v = _mm256_cvtph_ps(_mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(v));
                unsafe { _mm256_storeu_ps(q.as_mut_ptr().add(g * d + 8 * x), v) };
            }
            s[g * CHUNK..g * CHUNK + full].fill(f32::NEG_INFINITY);
        }
        // Scores of the visible cells, each K row converted once for the group.
        let mut seen = [0u16; CHUNK];
        let mut n_seen = 0;
        for i in 0..job.len {
            let m = unsafe { *job.mask.add(job.c0 + i) };
            if job.prefetch && i + AHEAD < job.len {
                // The K and V rows (every head's) a few cells on: the V
                // pass below and the other heads' jobs find them in cache.
                let row = 2 * d * job.k.ne[1];
                prefetch(job.k.at(0, job.c0 + i + AHEAD, 0), row);
                prefetch(job.v.at(0, job.c0 + i + AHEAD, 0), row);
            }
            if m == F16_NEG_INF {
                continue;
            }
            seen[n_seen] = i as u16;
            n_seen += 1;
            let mv = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(m as i32)));
            let krow = job.k.at(job.kv_head, job.c0 + i, 0) as *const u16;
            let mut acc = [_mm256_setzero_ps(); G];
            for x in 0..lanes {
                let kx = unsafe { load_f16(krow.add(8 * x)) };
                for (g, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(kx, unsafe { _mm256_loadu_ps(q.as_ptr().add(g * d + 8 * x)) }, *a);
                }
            }
            for (g, a) in acc.iter().enumerate() {
                s[g * CHUNK + i] = hsum(*a) * job.scale + mv;
            }
        }
        let mut max = [f32::NEG_INFINITY; G];
        let mut sum = [0f32; G];
        if n_seen > 0 {
            // Whole vectors (hidden cells are -inf, their exponentials 0),
            // so every cell goes the same way whatever the run's length.
            for g in 0..G {
                let sg = &mut s[g * CHUNK..(g + 1) * CHUNK];
                let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
                for i in (0..full).step_by(8) {
                    mx = _mm256_max_ps(mx, unsafe { _mm256_loadu_ps(sg.as_ptr().add(i)) });
                }
                let m = hmax(mx);
                for i in (0..full).step_by(8) {
                    let e = exp_neg(_mm256_sub_ps(unsafe { _mm256_loadu_ps(sg.as_ptr().add(i)) }, _mm256_set1_ps(m)));
                    unsafe { _mm256_storeu_ps(sg.as_mut_ptr().add(i), e) };
                }
                // Summed in the order of the visible cells, as the V sums
                // below: where hidden cells fall in the run changes nothing.
                max[g] = m;
                sum[g] = seen[..n_seen].iter().map(|&i| sg[i as usize]).sum();
            }
        }
        for g in 0..G {
            let o = job.out(g);
            unsafe {
                *o = max[g];
                *o.add(1) = sum[g];
            }
        }
        // The weighted V sums, B vectors of the head at a time over the
        // visible cells.
        let mut x = 0;
        while x < lanes {
            let b = B.min(lanes - x);
            let mut acc = [[_mm256_setzero_ps(); B]; G];
            for &i in &seen[..n_seen] {
                let i = i as usize;
                let vrow = job.v.at(job.kv_head, job.c0 + i, 0) as *const u16;
                let mut vv = [_mm256_setzero_ps(); B];
                for (j, v) in vv.iter_mut().enumerate().take(b) {
                    *v = unsafe { load_f16(vrow.add(8 * (x + j))) };
                }
                for (g, ag) in acc.iter_mut().enumerate() {
                    let p = _mm256_set1_ps(s[g * CHUNK + i]);
                    for (a, v) in ag.iter_mut().zip(&vv) {
                        *a = _mm256_fmadd_ps(p, *v, *a);
                    }
                }
            }
            for (g, ag) in acc.iter().enumerate() {
                let o = job.out(g);
                for (j, a) in ag.iter().enumerate().take(b) {
                    unsafe { _mm256_storeu_ps(o.add(2 + 8 * (x + j)), *a) };
                }
            }
            x += b;
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    pub fn available() -> bool {
        false
    }

    pub unsafe fn partial(_: &super::Job) {
        unreachable!("decode attention is only built for x86-64")
    }
}

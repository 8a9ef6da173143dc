//! Attention for many query rows (prefill) over an f16 cache, on the CPU,
//! as one ggml custom op.
//!
//! ggml-cpu's tiled kernel takes 64 query rows of one head at a time and,
//! for every 64 cells, converts their K rows to f32 into a transposed tile
//! element by element, and their V rows again: each K and V tile is
//! converted once per query head that shares it and per 64 rows. Here a
//! unit is a block of query rows for every query head of one K/V head: each
//! tile of cells is converted once for all of them (the transposition in
//! 8×8 register blocks), the scores of 8 cells come from one vector of
//! products (no horizontal sums), and the sums are kept in f32.
use super::context::{Context, Tensor};
use super::decode_attention::{KernelArgs, View};
use ggml_sys as sys;
use std::os::raw::{c_int, c_void};

/// Query rows per unit.
const ROWS: usize = 16;
/// Cells per tile.
const TILE: usize = 64;

impl Context {
    /// What `decode_attention` computes, for many rows: blocks of rows at a
    /// time (the caller checks `decode_attention_fits`).
    pub fn prefill_attention<'a>(&'a self, a: KernelArgs<'a>) -> Tensor<'a> {
        let KernelArgs { q, k, v, mask, sinks, scale } = a.checked();
        let [d, n_head, n_rows, _] = q.ne();
        let mut args = vec![q.raw(), k.raw(), v.raw(), mask.raw()];
        args.extend(sinks.map(|t| t.raw()));
        self.custom_op([d, n_head, n_rows, 1], &mut args, prefill_op, scale.to_bits() as usize as *mut c_void)
    }
}

/// One block of query rows for the query heads of one K/V head.
struct Unit {
    q: View,
    k: View,
    v: View,
    mask: View,
    sinks: Option<View>,
    out: View,
    kv_head: usize,
    group: usize,
    r0: usize,
    r1: usize,
    scale: f32,
}

unsafe extern "C" fn prefill_op(dst: *mut sys::ggml_tensor, ith: c_int, nth: c_int, userdata: *mut c_void) {
    let scale = f32::from_bits(userdata as usize as u32);
    // SAFETY: ggml calls this with the node built by `prefill_attention`,
    // its sources allocated.
    let (out, q, k, v, mask, sinks) = unsafe {
        let src = (*dst).src;
        let sinks = (!src[4].is_null()).then(|| View::of(src[4]));
        (View::of(dst), View::of(src[0]), View::of(src[1]), View::of(src[2]), View::of(src[3]), sinks)
    };
    let (n_head, n_rows, n_head_kv) = (q.ne[1], q.ne[2], k.ne[1]);
    let blocks = n_rows.div_ceil(ROWS);
    let units = blocks * n_head_kv;
    let nth = nth.max(1) as usize;
    for u in (ith as usize..units).step_by(nth) {
        let (h, b) = (u % n_head_kv, u / n_head_kv);
        let unit = Unit {
            q,
            k,
            v,
            mask,
            sinks,
            out,
            kv_head: h,
            group: n_head / n_head_kv,
            r0: b * ROWS,
            r1: (b * ROWS + ROWS).min(n_rows),
            scale,
        };
        // SAFETY: `decode_attention_fits` checked the CPU's features and
        // the shapes; the unit's pointers stay inside the tensors.
        unsafe { simd::unit(&unit) };
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{Unit, ROWS, TILE};
    use crate::ggml::decode_attention::simd::{exp_neg, hmax, hsum, load_f16};
    use crate::ggml::decode_attention::{F16_NEG_INF, MAX_GROUP, MAX_HEAD_DIM};
    use std::arch::x86_64::*;

    thread_local! {
        /// Each thread's working memory: a K tile transposed and a V tile
        /// (f32), and the unit's queries' running sums.
        static SCRATCH: std::cell::RefCell<Vec<f32>> = std::cell::RefCell::new(vec![
            0.0;
            2 * TILE * MAX_HEAD_DIM + ROWS * MAX_GROUP * (MAX_HEAD_DIM + 2)
        ]);
    }

    /// 8×8 transpose of `r` (rows) in place.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn transpose8(r: &mut [__m256; 8]) {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        r[0] = _mm256_permute2f128_ps::<0x20>(s0, s4);
        r[1] = _mm256_permute2f128_ps::<0x20>(s1, s5);
        r[2] = _mm256_permute2f128_ps::<0x20>(s2, s6);
        r[3] = _mm256_permute2f128_ps::<0x20>(s3, s7);
        r[4] = _mm256_permute2f128_ps::<0x31>(s0, s4);
        r[5] = _mm256_permute2f128_ps::<0x31>(s1, s5);
        r[6] = _mm256_permute2f128_ps::<0x31>(s2, s6);
        r[7] = _mm256_permute2f128_ps::<0x31>(s3, s7);
    }

    /// One unit (see `prefill_op`).
    ///
    /// SAFETY: the CPU has AVX2, FMA and F16C; the unit's views cover the
    /// rows, heads and cells it names.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn unit(u: &Unit) {
        SCRATCH.with_borrow_mut(|scratch| unsafe { run(u, scratch) })
    }

    /// SAFETY: as `unit`'s.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run(u: &Unit, scratch: &mut [f32]) {
        let d = u.q.ne[0];
        let lanes = d / 8;
        let n_kv = u.k.ne[2];
        let nq = (u.r1 - u.r0) * u.group;
        let (kt, rest) = scratch.split_at_mut(TILE * MAX_HEAD_DIM);
        let (vt, rest) = rest.split_at_mut(TILE * MAX_HEAD_DIM);
        let (acc, state) = rest.split_at_mut(ROWS * MAX_GROUP * MAX_HEAD_DIM);
        acc[..nq * d].fill(0.0);
        // Per query: running max, then sum.
        for i in 0..nq {
            state[2 * i] = f32::NEG_INFINITY;
            state[2 * i + 1] = 0.0;
        }
        let mask_row = |r: usize| u.mask.at(r, 0, 0) as *const u16;
        let mut c0 = 0;
        while c0 < n_kv {
            let len = TILE.min(n_kv - c0);
            // A tile no row of the block sees is skipped (the causal corner).
            let seen = (u.r0..u.r1).any(|r| (0..len).any(|j| unsafe { *mask_row(r).add(c0 + j) } != F16_NEG_INF));
            if !seen {
                c0 += TILE;
                continue;
            }
            // K transposed: kt[dim * TILE + cell]; V as rows: vt[cell * d + dim].
            for j0 in (0..TILE).step_by(8) {
                for x in 0..lanes {
                    let mut r = [_mm256_setzero_ps(); 8];
                    for (t, row) in r.iter_mut().enumerate() {
                        if j0 + t < len {
                            let p = u.k.at(u.kv_head, c0 + j0 + t, 0) as *const u16;
                            *row = unsafe { load_f16(p.add(8 * x)) };
                        }
                    }
                    transpose8(&mut r);
                    for (t, row) in r.iter().enumerate() {
                        unsafe { _mm256_storeu_ps(kt.as_mut_ptr().add((8 * x + t) * TILE + j0), *row) };
                    }
                }
            }
            for j in 0..len {
                let p = u.v.at(u.kv_head, c0 + j, 0) as *const u16;
                for x in 0..lanes {
                    unsafe { _mm256_storeu_ps(vt.as_mut_ptr().add(j * d + 8 * x), load_f16(p.add(8 * x))) };
                }
            }
            for r in u.r0..u.r1 {
                // The row's mask over the tile, as f32 (-inf past the cells).
                let mut mv = [_mm256_set1_ps(f32::NEG_INFINITY); TILE / 8];
                let mrow = mask_row(r);
                let mut any = false;
                for (jb, m) in mv.iter_mut().enumerate() {
                    let j = 8 * jb;
                    if j + 8 <= len {
                        *m = unsafe { load_f16(mrow.add(c0 + j)) };
                    } else if j < len {
                        let mut tmp = [f32::NEG_INFINITY; 8];
                        for (t, x) in tmp.iter_mut().enumerate().take(len - j) {
                            *x =
                                _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(unsafe { *mrow.add(c0 + j + t) } as i32)));
                        }
                        *m = unsafe { _mm256_loadu_ps(tmp.as_ptr()) };
                    }
                    any |= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_OQ>(*m, _mm256_set1_ps(f32::NEG_INFINITY))) != 0;
                }
                if !any {
                    continue;
                }
                for g in 0..u.group {
                    let qi = (r - u.r0) * u.group + g;
                    let qp = u.q.at(u.kv_head * u.group + g, r, 0) as *const f32;
                    // Scores of the tile's 64 cells, 8 per vector.
                    let mut s = [_mm256_setzero_ps(); TILE / 8];
                    for dim in 0..d {
                        let qd = _mm256_set1_ps(unsafe { *qp.add(dim) });
                        let row = unsafe { kt.as_ptr().add(dim * TILE) };
                        for (jb, sj) in s.iter_mut().enumerate() {
                            *sj = _mm256_fmadd_ps(qd, unsafe { _mm256_loadu_ps(row.add(8 * jb)) }, *sj);
                        }
                    }
                    let sc = _mm256_set1_ps(u.scale);
                    let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
                    for (sj, m) in s.iter_mut().zip(&mv) {
                        *sj = _mm256_fmadd_ps(*sj, sc, *m);
                        mx = _mm256_max_ps(mx, *sj);
                    }
                    let tile_max = hmax(mx);
                    if tile_max == f32::NEG_INFINITY {
                        continue;
                    }
                    let (m_old, s_old) = (state[2 * qi], state[2 * qi + 1]);
                    let m_new = m_old.max(tile_max);
                    let a = &mut acc[qi * d..(qi + 1) * d];
                    let mut sum = s_old;
                    if m_new > m_old {
                        let f = (m_old - m_new).exp();
                        sum *= f;
                        let fv = _mm256_set1_ps(f);
                        for x in 0..lanes {
                            unsafe {
                                let p = a.as_mut_ptr().add(8 * x);
                                _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_loadu_ps(p), fv));
                            }
                        }
                    }
                    let mut ps = [0f32; TILE];
                    let mut tot = _mm256_setzero_ps();
                    for (jb, sj) in s.iter().enumerate() {
                        let e = exp_neg(_mm256_sub_ps(*sj, _mm256_set1_ps(m_new)));
                        tot = _mm256_add_ps(tot, e);
                        unsafe { _mm256_storeu_ps(ps.as_mut_ptr().add(8 * jb), e) };
                    }
                    state[2 * qi] = m_new;
                    state[2 * qi + 1] = sum + hsum(tot);
                    // V, 4 vectors of the head at a time over the tile's cells.
                    let mut x = 0;
                    while x < lanes {
                        let b = 4.min(lanes - x);
                        let mut o = [_mm256_setzero_ps(); 4];
                        for (t, ot) in o.iter_mut().enumerate().take(b) {
                            *ot = unsafe { _mm256_loadu_ps(a.as_ptr().add(8 * (x + t))) };
                        }
                        for (j, &pj) in ps.iter().enumerate().take(len) {
                            if pj == 0.0 {
                                continue;
                            }
                            let pb = _mm256_set1_ps(pj);
                            let vr = unsafe { vt.as_ptr().add(j * d + 8 * x) };
                            for (t, ot) in o.iter_mut().enumerate().take(b) {
                                *ot = _mm256_fmadd_ps(pb, unsafe { _mm256_loadu_ps(vr.add(8 * t)) }, *ot);
                            }
                        }
                        for (t, ot) in o.iter().enumerate().take(b) {
                            unsafe { _mm256_storeu_ps(a.as_mut_ptr().add(8 * (x + t)), *ot) };
                        }
                        x += b;
                    }
                }
            }
            c0 += TILE;
        }
        // Each query's sums divided out (with its head's sink), to the output.
        for r in u.r0..u.r1 {
            for g in 0..u.group {
                let qi = (r - u.r0) * u.group + g;
                let h = u.kv_head * u.group + g;
                let (m, mut sum) = (state[2 * qi], state[2 * qi + 1]);
                let a = &mut acc[qi * d..(qi + 1) * d];
                if let Some(sv) = u.sinks {
                    // The sink joins the sum as one more score.
                    let sink = unsafe { *(sv.data as *const f32).add(h) };
                    let m_new = m.max(sink);
                    let f = if m == f32::NEG_INFINITY { 0.0 } else { (m - m_new).exp() };
                    sum = sum * f + (sink - m_new).exp();
                    a.iter_mut().for_each(|x| *x *= f);
                }
                let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
                let o = u.out.at(h, r, 0) as *mut f32;
                for (i, &x) in a.iter().enumerate() {
                    unsafe { *o.add(i) = x * inv };
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    pub unsafe fn unit(_: &super::Unit) {
        unreachable!("prefill attention is only built for x86-64")
    }
}

//! Products of 4- and 5-bit weights (ggml's Q4_1 and Q5_0) with activations,
//! on the CPU, as ggml custom ops over weights packed at load time.
//!
//! ggml-cpu multiplies these types one weight row by one activation row at a
//! time: every block of 32 weights converts its scales, widens its integer
//! sum and scales it on its own, and a batch of activations reads each
//! weight block again per row. Here the weights are packed eight rows
//! together: each block of 32 columns holds the eight rows' 4-bit values
//! interleaved so that one 32-bit lane of a vector is one row (four values),
//! then their high bits (Q5_0), scales and minimums (Q4_1). One vector
//! instruction takes four products of each of the eight rows, and the eight
//! rows' block sums are scaled together.
//!
//! The activations are quantized once per product input (the q, k and v
//! products share theirs) exactly as ggml-cpu quantizes them for these
//! types (q8_1, q8_0): 8-bit values, f16 scales and sums. The sums then
//! follow ggml-cpu's AVX2 dot products operation for operation, so the
//! results are llama.cpp's bits: its kernel keeps, per row, eight lanes of
//! float sums, lane j adding each block's integer sum over values 4j..4j+4
//! times the two scales; here vector j holds lane j of the eight rows. At
//! the end the lanes are added in the order of ggml's horizontal sum, and
//! (Q4_1) the minimums' chain m·s after them.
//! - Q4_1 (w = d·u + m, u in 0..16): lanes d·dx·Σ u·q, then + Σ m·s with
//!   s = dx·Σ q (f16);
//! - Q5_0 (w = d·(u - 16), u in 0..32): lanes d·dx·Σ (u - 16)·q, the
//!   integer sums started at -16 times the activations' four-value sums.
//!
//! Every (row, column) is computed the same way whether a product has one
//! column or many, whatever the threads: a row of a batch comes out as it
//! would alone.
use super::context::{Context, Tensor};
use super::decode_attention::View;
use super::store::{TensorId, TensorSpec, TensorStore};
use super::types::GgmlType;
use super::BufferType;
use ggml_sys as sys;
use std::borrow::Cow;
use std::collections::HashMap;
use std::os::raw::{c_int, c_void};

/// Weight rows packed together.
pub const ROWS: usize = 8;
/// Columns per block.
const QK: usize = 32;
/// Columns of a batch taken together per packed group (each keeps eight
/// vectors of sums).
const TILE: usize = 2;

/// A packed layout: what one block of eight rows holds after their 4-bit
/// values (128 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// Q4_1: eight f16 scales, eight f16 minimums.
    Min4,
    /// Q5_0: the high bits (32 bytes), eight f16 scales; m = -16·d.
    High5,
}

impl Packing {
    /// The packing for weights of this type, if any.
    pub fn of(typ: GgmlType) -> Option<Packing> {
        match typ {
            GgmlType::Q4_1 => Some(Packing::Min4),
            GgmlType::Q5_0 => Some(Packing::High5),
            _ => None,
        }
    }

    /// Bytes of one block of eight rows.
    pub const fn block_bytes(self) -> usize {
        match self {
            Packing::Min4 => 128 + 16 + 16,
            Packing::High5 => 128 + 32 + 16,
        }
    }

    /// Offset of the scales in a block.
    const fn scales_at(self) -> usize {
        match self {
            Packing::Min4 => 128,
            Packing::High5 => 160,
        }
    }

    fn id(self) -> usize {
        self as usize
    }

    fn from_id(id: usize) -> Packing {
        if id == Packing::High5 as usize {
            Packing::High5
        } else {
            Packing::Min4
        }
    }
}

/// Whether a weight of this type and shape ([k, m]) can be packed and
/// multiplied here: Q4_1 or Q5_0, two dimensions, rows a multiple of eight,
/// on a CPU with AVX2, FMA and F16C.
pub fn packs(typ: GgmlType, ne: [i64; 4]) -> bool {
    Packing::of(typ).is_some()
        && ne[2] == 1
        && ne[3] == 1
        && ne[0] > 0
        && ne[0] % QK as i64 == 0
        && ne[1] > 0
        && ne[1] % ROWS as i64 == 0
        && simd::available()
}

/// One weight row's 32-value block, read from ggml's layout: the unsigned
/// values, and the bits of its f16 scale and (Q4_1) minimum.
fn read_block(p: Packing, b: &[u8]) -> ([u8; QK], [u8; 2], [u8; 2]) {
    let mut u = [0u8; QK];
    match p {
        Packing::Min4 => {
            // block_q4_1: d, m, qs[16] (value i low nibble, i + 16 high).
            for i in 0..16 {
                u[i] = b[4 + i] & 0x0F;
                u[i + 16] = b[4 + i] >> 4;
            }
            (u, [b[0], b[1]], [b[2], b[3]])
        }
        Packing::High5 => {
            // block_q5_0: d, qh (u32), qs[16]; value = (low | high << 4) - 16.
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            for i in 0..16 {
                u[i] = (b[6 + i] & 0x0F) | ((((qh >> i) & 1) as u8) << 4);
                u[i + 16] = (b[6 + i] >> 4) | ((((qh >> (i + 16)) & 1) as u8) << 4);
            }
            (u, [b[0], b[1]], [0, 0])
        }
    }
}

/// Bytes of one ggml block of this type.
fn ggml_block_bytes(p: Packing) -> usize {
    match p {
        Packing::Min4 => 20,
        Packing::High5 => 22,
    }
}

/// A weight's file bytes (rows of ggml blocks, [k, m]) packed eight rows
/// together: `m / 8` groups of `k / 32` blocks. Checked by `packs`.
fn pack(typ: GgmlType, ne: [i64; 4], src: &[u8]) -> Vec<u8> {
    let p = Packing::of(typ).expect("packed type");
    let (k, m) = (ne[0] as usize, ne[1] as usize);
    let nb = k / QK;
    let row_bytes = nb * ggml_block_bytes(p);
    assert_eq!(src.len(), row_bytes * m, "packed weight: {} bytes for [{k}, {m}]", src.len());
    let mut out = vec![0u8; m / ROWS * nb * p.block_bytes()];
    for (g, group) in out.chunks_exact_mut(nb * p.block_bytes()).enumerate() {
        for (b, blk) in group.chunks_exact_mut(p.block_bytes()).enumerate() {
            for r in 0..ROWS {
                let row = g * ROWS + r;
                let at = row * row_bytes + b * ggml_block_bytes(p);
                let (u, d, min) = read_block(p, &src[at..at + ggml_block_bytes(p)]);
                // Vector t (32 bytes): lane r holds values 4t..4t+4 of row r
                // in its low nibbles and values 16+4t..16+4t+4 in its high ones.
                for t in 0..4 {
                    for i in 0..4 {
                        blk[32 * t + 4 * r + i] = (u[4 * t + i] & 0x0F) | ((u[16 + 4 * t + i] & 0x0F) << 4);
                    }
                }
                if p == Packing::High5 {
                    // Byte i of lane r: bit j is the high bit of value 4j + i.
                    for i in 0..4 {
                        blk[128 + 4 * r + i] = (0..8).fold(0u8, |acc, j| acc | (((u[4 * j + i] >> 4) & 1) << j));
                    }
                }
                let s = p.scales_at();
                blk[s + 2 * r..s + 2 * r + 2].copy_from_slice(&d);
                if p == Packing::Min4 {
                    blk[s + 16 + 2 * r..s + 18 + 2 * r].copy_from_slice(&min);
                }
            }
        }
    }
    out
}

/// The packed copies of a model's Q4_1 and Q5_0 weights, by weight.
pub struct PackedWeights {
    store: TensorStore,
    by_weight: HashMap<usize, (TensorId, Packing)>,
}

impl PackedWeights {
    /// Pack `specs`' weights of `weights` (those `packs` takes) into a
    /// buffer of type `buft`; `read` gives a weight's file bytes. `None`
    /// when there are none.
    pub fn pack<'f, E>(
        weights: &TensorStore,
        specs: &[&TensorSpec],
        buft: BufferType,
        mut read: impl FnMut(&TensorSpec) -> Result<Cow<'f, [u8]>, E>,
    ) -> Result<Option<PackedWeights>, PackError<E>> {
        let specs: Vec<&TensorSpec> = specs.iter().copied().filter(|s| packs(s.typ, s.ne)).collect();
        if specs.is_empty() {
            return Ok(None);
        }
        let shapes: Vec<_> = specs
            .iter()
            .map(|s| {
                let p = Packing::of(s.typ).expect("packed type");
                let group = s.ne[0] as usize / QK * p.block_bytes();
                (format!("{}.packed", s.name), GgmlType::I8, vec![group as i64, s.ne[1] / ROWS as i64], buft)
            })
            .collect();
        let store = TensorStore::allocate(&shapes).ok_or(PackError::Alloc)?;
        let mut by_weight = HashMap::new();
        for (i, s) in specs.iter().enumerate() {
            let bytes = read(s).map_err(PackError::Read)?;
            let id = store.nth(i);
            store.get(id).write_bytes(&pack(s.typ, s.ne, &bytes), 0);
            let w = weights.id(&s.name).expect("packed weight is in the store");
            by_weight.insert(weights.get(w).raw() as usize, (id, Packing::of(s.typ).expect("packed type")));
        }
        Ok(Some(PackedWeights { store, by_weight }))
    }

    /// Weights packed.
    pub fn len(&self) -> usize {
        self.by_weight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_weight.is_empty()
    }

    /// Bytes of the packed copies.
    pub fn total_bytes(&self) -> usize {
        self.store.total_bytes()
    }
}

/// Why weights could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError<E> {
    #[error("{0}")]
    Read(E),
    #[error("could not allocate a buffer for the packed weights (out of memory?)")]
    Alloc,
}

/// Bytes of one column quantized for the packed products: the k values
/// (i8), then per block its scale dx and s = dx·Σ q (both f32 holding f16
/// values, as ggml stores them), then per block eight i32: -16 times the
/// sums of its values 4j..4j+4.
fn quantized_row_bytes(k: usize) -> usize {
    k + 40 * (k / QK)
}

/// The columns' length k from a quantized column's 4-byte words.
fn quantized_k(words: usize) -> usize {
    words * 4 * QK / (QK + 40)
}

impl Context {
    /// From now on, `mul_mat` multiplies the weights packed in `p` by its
    /// packed products (see `PackedWeights`).
    pub fn use_packed(&self, p: &PackedWeights) {
        let mut m = self.packed.borrow_mut();
        for (&w, &(id, packing)) in &p.by_weight {
            m.insert(w, (p.store.get(id).raw() as usize, packing));
        }
    }

    /// `a`·`b` by the packed product when `a` was packed (`use_packed`) and
    /// `b` is a plain f32 matrix [k, n] with contiguous rows.
    pub(super) fn packed_product<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Option<Tensor<'a>> {
        let (packed, packing) = *self.packed.borrow().get(&(a.raw() as usize))?;
        let [k, n, n2, n3] = b.ne();
        if b.typ() != GgmlType::F32 || n2 != 1 || n3 != 1 || b.nb()[0] != 4 || k != a.ne()[0] {
            return None;
        }
        let xq = self.quantized(b);
        let mut args = [packed as *mut sys::ggml_tensor, xq.raw()];
        Some(self.custom_op([a.ne()[1], n, 1, 1], &mut args, product_op, packing.id() as *mut c_void))
    }

    /// `x` [k, n] quantized for the packed products, once per `x`.
    fn quantized<'a>(&'a self, x: Tensor<'a>) -> Tensor<'a> {
        if let Some(&q) = self.quantized.borrow().get(&(x.raw() as usize)) {
            return Tensor::from_raw(q as *mut sys::ggml_tensor);
        }
        let [k, n, _, _] = x.ne();
        let words = quantized_row_bytes(k as usize) as i64 / 4;
        let q = self.custom_op([words, n, 1, 1], &mut [x.raw()], quantize_op, std::ptr::null_mut());
        self.quantized.borrow_mut().insert(x.raw() as usize, q.raw() as usize);
        q
    }
}

/// Thread `ith` of `nth`'s share of `n` units: a contiguous range.
fn share(n: usize, ith: c_int, nth: c_int) -> std::ops::Range<usize> {
    let (ith, nth) = (ith.max(0) as usize, nth.max(1) as usize);
    n * ith / nth..n * (ith + 1) / nth
}

/// dst [words, n]: each column of src 0 ([k, n] f32) quantized.
unsafe extern "C" fn quantize_op(dst: *mut sys::ggml_tensor, ith: c_int, nth: c_int, _: *mut c_void) {
    // SAFETY: ggml calls this with the node built by `quantized`, its source
    // allocated: f32 rows of k values (a multiple of 32), contiguous.
    let (out, x) = unsafe { (View::of(dst), View::of((*dst).src[0])) };
    let k = x.ne[0];
    let nb = k / QK;
    for unit in share(nb * x.ne[1], ith, nth) {
        let (col, b) = (unit / nb, unit % nb);
        // SAFETY: block b of column col is inside both tensors.
        unsafe {
            let src = std::slice::from_raw_parts((x.at(col, 0, 0) as *const f32).add(b * QK), QK);
            let row = out.at(col, 0, 0) as *mut u8;
            let q = std::slice::from_raw_parts_mut(row.add(b * QK) as *mut i8, QK);
            let sums = std::slice::from_raw_parts_mut((row.add(k + 8 * nb) as *mut i32).add(8 * b), 8);
            let (d, s) = simd::quantize_block(src, q, sums);
            *(row.add(k) as *mut f32).add(b) = d;
            *(row.add(k + 4 * nb) as *mut f32).add(b) = s;
        }
    }
}

/// dst [m, n] f32: packed weight (src 0) times quantized columns (src 1).
unsafe extern "C" fn product_op(dst: *mut sys::ggml_tensor, ith: c_int, nth: c_int, userdata: *mut c_void) {
    let packing = Packing::from_id(userdata as usize);
    // SAFETY: ggml calls this with the node built by `packed_product`.
    let (out, w, xq) = unsafe { (View::of(dst), View::of((*dst).src[0]), View::of((*dst).src[1])) };
    let (m, n) = (out.ne[0], out.ne[1]);
    let k = quantized_k(xq.ne[0]);
    let nb = k / QK;
    // Each thread takes whole groups of rows, and their weights stay in its
    // cache while it goes through the columns a tile at a time.
    let groups = share(m / ROWS, ith, nth);
    let vnni = simd::vnni();
    let mut col = 0;
    while col < n {
        let tile = TILE.min(n - col);
        for g in groups.clone() {
            let cols: [usize; TILE] = std::array::from_fn(|c| col + c.min(tile - 1));
            let job = simd::Group {
                w: w.at(g, 0, 0),
                nb,
                x: cols.map(|c| xq.at(c, 0, 0)),
                out: cols.map(|c| (out.at(c, 0, 0) as *mut f32).wrapping_add(g * ROWS)),
            };
            // SAFETY: `packs` checked the CPU's features; the group's blocks
            // and the tile's columns are inside the tensors.
            unsafe { simd::group(&job, tile, packing, vnni) };
        }
        col += tile;
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{Packing, QK, TILE};
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        super::super::decode_attention::simd::available()
    }

    pub fn vnni() -> bool {
        std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512vl")
    }

    /// One group of eight weight rows by a tile of columns (its last column
    /// repeated to fill it: such lanes write the same values twice).
    pub struct Group {
        pub w: *const u8,
        pub nb: usize,
        pub x: [*const u8; TILE],
        pub out: [*mut f32; TILE],
    }

    /// Quantize 32 values as ggml's q8_1 and q8_0 do: d = max |x| / 127,
    /// q = round(x · 127 / max |x|) (to even); returns d and d·Σq rounded
    /// to f16 (as f32), and writes -16 times each four values' sum.
    pub fn quantize_block(x: &[f32], q: &mut [i8], sums: &mut [i32]) -> (f32, f32) {
        assert!(x.len() == 32 && q.len() == 32 && sums.len() == 8);
        // SAFETY: `available` was checked before any packed product was
        // built; the slices hold 32 values and 8 sums.
        unsafe { quantize_32(x.as_ptr(), q.as_mut_ptr(), sums.as_mut_ptr()) }
    }

    /// f32 rounded to f16 (to nearest even, as ggml's conversion), as f32.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn f16_round(x: f32) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(_mm_set_ss(x))))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quantize_32(x: *const f32, q: *mut i8, sums: *mut i32) -> (f32, f32) {
        let v: [__m256; 4] = std::array::from_fn(|i| unsafe { _mm256_loadu_ps(x.add(8 * i)) });
        let sign = _mm256_set1_ps(-0.0);
        let abs = |a| _mm256_andnot_ps(sign, a);
        let m = _mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3])));
        let amax = super::super::decode_attention::simd::hmax(m);
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let r: [__m256i; 4] = std::array::from_fn(|i| {
            _mm256_cvtps_epi32(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
                v[i], id,
            )))
        });
        let s4 = _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3]));
        let s2 = _mm_add_epi32(_mm256_castsi256_si128(s4), _mm256_extracti128_si256::<1>(s4));
        let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32::<0b01_00_11_10>(s2));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(s1, _mm_shuffle_epi32::<0b10_11_00_01>(s1)));
        // i32 → i16 → i8, then the lanes put back in order.
        let packed = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
        let ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        unsafe { _mm256_storeu_si256(q as *mut __m256i, ordered) };
        let fours = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), ordered), _mm256_set1_epi16(-16));
        unsafe { _mm256_storeu_si256(sums as *mut __m256i, fours) };
        (f16_round(d), f16_round(d * sum as f32))
    }

    /// SAFETY: the CPU has AVX2, FMA, F16C (and the VNNI extensions when
    /// `vnni`); the job's pointers cover its blocks, columns and rows.
    pub unsafe fn group(job: &Group, tile: usize, p: Packing, vnni: bool) {
        macro_rules! go {
            ($f:ident) => {
                match (tile, p) {
                    (1, Packing::Min4) => $f::<1, false>(job),
                    (_, Packing::Min4) => $f::<TILE, false>(job),
                    (1, Packing::High5) => $f::<1, true>(job),
                    (_, Packing::High5) => $f::<TILE, true>(job),
                }
            };
        }
        unsafe {
            if vnni {
                go!(group_vnni)
            } else {
                go!(group_avx2)
            }
        }
    }

    /// acc + the four-value dot products of u (unsigned) and x (signed), per lane.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn dot_avx2(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        // |u·x| pairs stay below 2 · 31 · 128: no saturation.
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)))
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    #[inline]
    fn dot_vnni(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, x)
    }

    /// A block's eight vectors of values: vector j, lane r = values 4j..4j+4
    /// of row r.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn values<const HIGH: bool>(blk: *const u8) -> [__m256i; 8] {
        let low = _mm256_set1_epi8(0x0F);
        let p: [__m256i; 4] = std::array::from_fn(|t| unsafe { _mm256_loadu_si256(blk.add(32 * t) as *const __m256i) });
        let mut v = [
            _mm256_and_si256(p[0], low),
            _mm256_and_si256(p[1], low),
            _mm256_and_si256(p[2], low),
            _mm256_and_si256(p[3], low),
            _mm256_and_si256(_mm256_srli_epi16::<4>(p[0]), low),
            _mm256_and_si256(_mm256_srli_epi16::<4>(p[1]), low),
            _mm256_and_si256(_mm256_srli_epi16::<4>(p[2]), low),
            _mm256_and_si256(_mm256_srli_epi16::<4>(p[3]), low),
        ];
        if HIGH {
            // Bit j of each byte is vector j's fifth bit: moved to bit 4.
            let h = unsafe { _mm256_loadu_si256(blk.add(128) as *const __m256i) };
            let bit = _mm256_set1_epi8(0x10);
            let hs = [
                _mm256_slli_epi16::<4>(h),
                _mm256_slli_epi16::<3>(h),
                _mm256_slli_epi16::<2>(h),
                _mm256_slli_epi16::<1>(h),
                h,
                _mm256_srli_epi16::<1>(h),
                _mm256_srli_epi16::<2>(h),
                _mm256_srli_epi16::<3>(h),
            ];
            for j in 0..8 {
                v[j] = _mm256_or_si256(v[j], _mm256_and_si256(hs[j], bit));
            }
        }
        v
    }

    macro_rules! group_kernel {
        ($name:ident, $features:literal, $dot:ident) => {
            /// Eight rows by NC columns, block by block.
            #[target_feature(enable = $features)]
            unsafe fn $name<const NC: usize, const HIGH: bool>(job: &Group) {
                let p = if HIGH { Packing::High5 } else { Packing::Min4 };
                let (k, nb) = (job.nb * QK, job.nb);
                // Lane j of each row (ggml's), and the minimums' chain.
                let mut lanes = [[_mm256_setzero_ps(); 8]; NC];
                let mut mins = [_mm256_setzero_ps(); NC];
                for b in 0..nb {
                    // SAFETY (whole body): the job covers nb blocks of the
                    // group and of each column.
                    unsafe {
                        let blk = job.w.add(b * p.block_bytes());
                        let v = values::<HIGH>(blk);
                        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(p.scales_at()) as *const __m128i));
                        let m = if HIGH {
                            _mm256_setzero_ps()
                        } else {
                            _mm256_cvtph_ps(_mm_loadu_si128(blk.add(p.scales_at() + 16) as *const __m128i))
                        };
                        for c in 0..NC {
                            let x = job.x[c];
                            let xq = x.add(b * QK) as *const i32;
                            let start = (x.add(k + 8 * nb) as *const i32).add(8 * b);
                            let dx = (x.add(k) as *const f32).add(b).read_unaligned();
                            let dd = _mm256_mul_ps(d, _mm256_set1_ps(dx));
                            for j in 0..8 {
                                let init = if HIGH {
                                    _mm256_set1_epi32(start.add(j).read_unaligned())
                                } else {
                                    _mm256_setzero_si256()
                                };
                                let sum = $dot(init, v[j], _mm256_set1_epi32(xq.add(j).read_unaligned()));
                                lanes[c][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), dd, lanes[c][j]);
                            }
                            if !HIGH {
                                let s = (x.add(k + 4 * nb) as *const f32).add(b).read_unaligned();
                                mins[c] = _mm256_fmadd_ps(m, _mm256_set1_ps(s), mins[c]);
                            }
                        }
                    }
                }
                for c in 0..NC {
                    // ggml's horizontal sum: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
                    let l = &lanes[c];
                    let (a, b) = (_mm256_add_ps(l[0], l[4]), _mm256_add_ps(l[1], l[5]));
                    let (e, f) = (_mm256_add_ps(l[2], l[6]), _mm256_add_ps(l[3], l[7]));
                    let mut y = _mm256_add_ps(_mm256_add_ps(a, e), _mm256_add_ps(b, f));
                    if !HIGH {
                        y = _mm256_add_ps(y, mins[c]);
                    }
                    // SAFETY: the output column holds the group's rows.
                    unsafe { _mm256_storeu_ps(job.out[c], y) };
                }
            }
        };
    }

    group_kernel!(group_avx2, "avx2,fma,f16c", dot_avx2);
    group_kernel!(group_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", dot_vnni);
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    pub fn available() -> bool {
        false
    }
    pub fn vnni() -> bool {
        false
    }
    pub struct Group {
        pub w: *const u8,
        pub nb: usize,
        pub x: [*const u8; super::TILE],
        pub out: [*mut f32; super::TILE],
    }
    pub fn quantize_block(_: &[f32], _: &mut [i8], _: &mut [i32]) -> (f32, f32) {
        unreachable!("packed products need x86-64")
    }
    pub unsafe fn group(_: &Group, _: usize, _: super::Packing, _: bool) {
        unreachable!("packed products need x86-64")
    }
}

//! ggml tensor types, checked: a type id read from a file becomes a `GgmlType`
//! only if this ggml build knows it, so later size computations cannot abort.
use ggml_sys as sys;
use std::ffi::CStr;

/// A ggml element type known to this build (F32, F16, Q4_0, Q4_K, ...).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct GgmlType(pub(crate) sys::ggml_type);

impl GgmlType {
    pub const F32: GgmlType = GgmlType(sys::GGML_TYPE_F32);
    pub const F16: GgmlType = GgmlType(sys::GGML_TYPE_F16);
    pub const Q8_0: GgmlType = GgmlType(sys::GGML_TYPE_Q8_0);
    pub const Q4_1: GgmlType = GgmlType(sys::GGML_TYPE_Q4_1);
    pub const Q5_0: GgmlType = GgmlType(sys::GGML_TYPE_Q5_0);
    pub const I8: GgmlType = GgmlType(sys::GGML_TYPE_I8);
    pub const I32: GgmlType = GgmlType(sys::GGML_TYPE_I32);
    pub const I64: GgmlType = GgmlType(sys::GGML_TYPE_I64);

    /// The type with this on-disk id, if ggml supports it (removed and
    /// out-of-range ids give `None`).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        if id >= sys::GGML_TYPE_COUNT {
            return None;
        }
        let t = id as sys::ggml_type;
        // SAFETY: `t` is below GGML_TYPE_COUNT; the traits table is static.
        let size = unsafe { sys::ggml_type_size(t) };
        let blck = unsafe { sys::ggml_blck_size(t) };
        if size == 0 || blck <= 0 {
            return None; // removed types (Q4_2, Q4_3, ...) have empty traits
        }
        Some(GgmlType(t))
    }

    /// Look a type up by its ggml name ("f16", "q8_0", ...), case-insensitive.
    pub fn from_name(name: &str) -> Option<GgmlType> {
        (0..sys::GGML_TYPE_COUNT).filter_map(GgmlType::from_id).find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub fn id(self) -> u32 {
        self.0
    }

    pub fn name(self) -> &'static str {
        // SAFETY: valid type id; ggml returns a static C string.
        unsafe { CStr::from_ptr(sys::ggml_type_name(self.0)) }.to_str().unwrap_or("?")
    }

    /// Elements per block (1 for plain types, 32 or 256 for quantized ones).
    pub fn block_size(self) -> u64 {
        unsafe { sys::ggml_blck_size(self.0) as u64 }
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        unsafe { sys::ggml_type_size(self.0) as u64 }
    }

    /// F32, F16 or BF16.
    pub fn is_float(self) -> bool {
        matches!(self.0, sys::GGML_TYPE_F32 | sys::GGML_TYPE_F16 | sys::GGML_TYPE_BF16)
    }

    /// `bytes` of this float type (F32, F16 or BF16, native byte order)
    /// as f32 values; `None` for other types or a length that is not a
    /// whole number of elements.
    pub fn floats(self, bytes: &[u8]) -> Option<Vec<f32>> {
        let el = match self.0 {
            sys::GGML_TYPE_F32 => 4,
            sys::GGML_TYPE_F16 | sys::GGML_TYPE_BF16 => 2,
            _ => return None,
        };
        if !bytes.len().is_multiple_of(el) {
            return None;
        }
        let n = bytes.len() / el;
        if el == 4 {
            return Some(bytes.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect());
        }
        let halves: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_ne_bytes([c[0], c[1]])).collect();
        let mut out = vec![0f32; n];
        // SAFETY: `halves` and `out` both hold `n` elements; ggml's ggml_fp16_t
        // and ggml_bf16_t are 16-bit values read and written within them.
        unsafe {
            if self.0 == sys::GGML_TYPE_F16 {
                sys::ggml_fp16_to_fp32_row(halves.as_ptr().cast(), out.as_mut_ptr(), n as i64);
            } else {
                sys::ggml_bf16_to_fp32_row(halves.as_ptr().cast(), out.as_mut_ptr(), n as i64);
            }
        }
        Some(out)
    }

    pub fn is_quantized(self) -> bool {
        unsafe { sys::ggml_is_quantized(self.0) }
    }

    /// Bytes of one row of `n` elements, or `None` if `n` is not a multiple
    /// of the block size or the size overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let b = self.block_size();
        if !n.is_multiple_of(b) {
            return None;
        }
        (n / b).checked_mul(self.type_size())
    }

    /// Whether `quantize` can produce this type (ggml's quantizers).
    pub fn can_quantize(self) -> bool {
        use sys::*;
        matches!(
            self.0,
            GGML_TYPE_Q1_0
                | GGML_TYPE_Q2_0
                | GGML_TYPE_Q4_0
                | GGML_TYPE_Q4_1
                | GGML_TYPE_Q5_0
                | GGML_TYPE_Q5_1
                | GGML_TYPE_Q8_0
                | GGML_TYPE_MXFP4
                | GGML_TYPE_NVFP4
                | GGML_TYPE_Q2_K
                | GGML_TYPE_Q3_K
                | GGML_TYPE_Q4_K
                | GGML_TYPE_Q5_K
                | GGML_TYPE_Q6_K
                | GGML_TYPE_TQ1_0
                | GGML_TYPE_TQ2_0
                | GGML_TYPE_IQ2_XXS
                | GGML_TYPE_IQ2_XS
                | GGML_TYPE_IQ3_XXS
                | GGML_TYPE_IQ3_S
                | GGML_TYPE_IQ2_S
                | GGML_TYPE_IQ1_S
                | GGML_TYPE_IQ1_M
                | GGML_TYPE_IQ4_NL
                | GGML_TYPE_IQ4_XS
                | GGML_TYPE_F16
                | GGML_TYPE_BF16
        )
    }

    /// Quantize `src` (rows of `n_per_row` values) into this type with
    /// ggml's reference quantizers (an all-ones importance matrix where one
    /// is required). For tools and tests that write GGUF files.
    pub fn quantize(self, src: &[f32], n_per_row: usize) -> Result<Vec<u8>, String> {
        if !self.can_quantize() {
            return Err(format!("ggml cannot quantize to {self}"));
        }
        if n_per_row == 0 || !src.len().is_multiple_of(n_per_row) {
            return Err(format!("{} values are not whole rows of {n_per_row}", src.len()));
        }
        let row = self
            .row_bytes(n_per_row as u64)
            .ok_or_else(|| format!("rows of {n_per_row} are not whole {self} blocks"))?;
        let nrows = src.len() / n_per_row;
        let mut out = vec![0u8; row as usize * nrows];
        let imatrix = vec![1.0f32; n_per_row];
        // SAFETY: src holds nrows*n_per_row floats, out holds nrows rows of this
        // type, imatrix holds n_per_row floats; the type is one ggml quantizes.
        let written = unsafe {
            sys::ggml_quantize_init(self.0);
            sys::ggml_quantize_chunk(
                self.0,
                src.as_ptr(),
                out.as_mut_ptr().cast(),
                0,
                nrows as i64,
                n_per_row as i64,
                imatrix.as_ptr(),
            )
        };
        if written != out.len() {
            return Err(format!("ggml wrote {written} bytes for {self}, expected {}", out.len()));
        }
        Ok(out)
    }

    /// Check raw tensor data for this type (NaN/Inf in scales and values).
    pub fn validate_data(self, data: &[u8]) -> bool {
        // SAFETY: ggml reads exactly `data.len()` bytes from a valid slice.
        unsafe { sys::ggml_validate_row_data(self.0, data.as_ptr().cast(), data.len()) }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn known_and_unknown_ids() {
        assert_eq!(GgmlType::from_id(0), Some(GgmlType::F32));
        assert_eq!(GgmlType::from_id(4), None, "Q4_2 was removed");
        assert_eq!(GgmlType::from_id(10_000), None);
        assert_eq!(GgmlType::from_name("q8_0"), Some(GgmlType::Q8_0));
        assert_eq!(GgmlType::Q8_0.row_bytes(64), Some(68));
        assert_eq!(GgmlType::Q8_0.row_bytes(63), None);
    }
}

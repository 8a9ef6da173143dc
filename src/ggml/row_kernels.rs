//! Which weight products ggml-cpu computes for the rows of a batch with
//! another kernel than for a lone row, so that the two round apart:
//!
//! - weights in an extra (repacked) buffer: from 4 rows on, groups of 4
//!   rows go through the layout's gemm, a lone row through its gemv;
//! - the K- and IQ-quant types it multiplies in tiles: from 8 rows on (its
//!   `tiled` product, on x86; `GGML_CPU_TILED_MM=0` turns the tiles off).
//!
//! Both kernels are chosen by the rows of one plane of the second operand
//! (`ne[1]`), so a batch laid out one row per plane (`[k, 1, n]`) is
//! multiplied row by row, each as alone, in one op (`Context::mul_mat` does
//! this while `Context::multiply_rows_alone` is on).
use super::backend::CpuDevice;
use super::context::Tensor;
use ggml_sys as sys;
use std::sync::OnceLock;

/// Weight types ggml-cpu multiplies in tiles from 8 rows on.
const TILED_TYPES: &[&str] = &[
    "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_xs", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s",
    "iq1_m",
];
/// Rows from which a repacked weight's batch takes the gemm.
const REPACK_GEMM_ROWS: i64 = 4;
/// Rows from which a tiled type's batch takes the tiles.
const TILE_ROWS: i64 = 8;

/// Whether ggml-cpu multiplies `n_rows` rows by `w` with another kernel than
/// one row (see the module's text).
pub(crate) fn batch_kernel_differs(w: Tensor<'_>, n_rows: i64) -> bool {
    (n_rows >= REPACK_GEMM_ROWS && in_extra_buffer(w)) || (n_rows >= TILE_ROWS && tiled(w.typ().name()))
}

/// Whether ggml-cpu multiplies weights of type `name` (ggml's spelling) in
/// tiles for batches of 8 rows and more.
pub fn tiled(name: &str) -> bool {
    tiles_on() && TILED_TYPES.contains(&name)
}

/// ggml-cpu's `GGML_CPU_TILED_MM` switch, read as it reads it: on unless set
/// to a value whose leading integer (C's `atoi`) is 0.
fn tiles_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("GGML_CPU_TILED_MM").map_or(true, |v| atoi(&v) != 0))
}

/// C's `atoi`: the leading integer, 0 when none.
fn atoi(s: &str) -> i64 {
    let s = s.trim_start();
    let end = s.char_indices().find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))));
    s[..end.map_or(s.len(), |(i, _)| i)].parse().unwrap_or(0)
}

/// Whether `w`'s data lives in one of the CPU's extra buffer types.
fn in_extra_buffer(w: Tensor<'_>) -> bool {
    static EXTRA: OnceLock<Vec<usize>> = OnceLock::new();
    let extra = EXTRA.get_or_init(|| CpuDevice::get().extra_buffer_types().iter().map(|b| b.raw() as usize).collect());
    // SAFETY: the tensor and its view source live as long as their
    // contexts; a buffer's type is plain metadata.
    unsafe {
        let t = &*w.raw();
        let buffer = if t.buffer.is_null() && !t.view_src.is_null() { (*t.view_src).buffer } else { t.buffer };
        !buffer.is_null() && extra.contains(&(sys::ggml_backend_buffer_get_type(buffer) as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_read_as_ggml_reads_them() {
        for (s, n) in [("0", 0), ("1", 1), (" 12x", 12), ("-3", -3), ("abc", 0), ("", 0), ("+", 0)] {
            assert_eq!(atoi(s), n, "{s:?}");
        }
    }
}

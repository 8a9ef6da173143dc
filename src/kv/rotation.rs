//! The orthonormal Hadamard rotation applied to queries and keys when the K
//! cache is quantized (as llama.cpp does): q·k is unchanged, but the rotated
//! keys spread outliers over all elements and quantize with less error. A
//! quantized V cache (flash attention) holds rotated values the same way, and
//! attention's output is rotated back (the matrix is its own inverse).

/// Head sizes that get a rotation, and the rotation's size for one.
pub fn k_rotation_size(head_dim: usize, k_quantized: bool) -> Option<usize> {
    if !k_quantized || head_dim == 0 || !head_dim.is_multiple_of(64) {
        return None;
    }
    let mut n = 64;
    while head_dim.is_multiple_of(2 * n) {
        n *= 2;
    }
    Some(n)
}

/// The V rotation's size: 64 for a quantized V cache whose heads are a
/// multiple of 64 (llama.cpp keeps V's rotation small; larger ones did not help).
pub fn v_rotation_size(head_dim: usize, v_quantized: bool) -> Option<usize> {
    (v_quantized && head_dim > 0 && head_dim.is_multiple_of(64)).then_some(64)
}

/// The n x n Sylvester-Hadamard matrix scaled by 1/sqrt(n) (n a power of 2), row-major.
pub fn hadamard(n: usize) -> Vec<f32> {
    assert!(n.is_power_of_two(), "Hadamard size {n} is not a power of two");
    let mut h = vec![0f32; n * n];
    h[0] = 1.0 / (n as f32).sqrt();
    let mut s = 1;
    while s < n {
        for i in 0..s {
            for j in 0..s {
                let v = h[i * n + j];
                h[(i + s) * n + j] = v;
                h[i * n + j + s] = v;
                h[(i + s) * n + j + s] = -v;
            }
        }
        s *= 2;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hadamard_is_orthonormal_and_symmetric() {
        for n in [1, 2, 64, 128] {
            let h = hadamard(n);
            for i in 0..n {
                for j in 0..n {
                    assert_eq!(h[i * n + j], h[j * n + i]);
                    let dot: f32 = (0..n).map(|k| h[i * n + k] * h[j * n + k]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-5, "n={n} row {i}·row {j} = {dot}");
                }
            }
        }
    }

    #[test]
    fn rotation_sizes() {
        assert_eq!(k_rotation_size(64, true), Some(64));
        assert_eq!(k_rotation_size(128, true), Some(128));
        assert_eq!(k_rotation_size(192, true), Some(64));
        assert_eq!(k_rotation_size(80, true), None);
        assert_eq!(k_rotation_size(128, false), None);
    }
}

//! One entry of a GGUF tensor table, checked against ggml's type traits.
use crate::ggml::GgmlType;

/// A tensor as the file describes it, with sizes computed by us (never trusted).
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub typ: GgmlType,
    /// Shape in ggml order (ne[0] is the contiguous dim); unused dims are 1.
    pub ne: [i64; 4],
    pub n_dims: u32,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    pub nbytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().map(|&d| d as u64).product()
    }

    /// The shape with trailing 1s dropped, as the file gave it.
    pub fn shape(&self) -> &[i64] {
        &self.ne[..self.n_dims.max(1) as usize]
    }
}

/// Byte size of a tensor of type `typ` and shape `ne`, or why it is invalid.
pub(crate) fn tensor_nbytes(typ: GgmlType, ne: &[i64; 4]) -> Result<u64, String> {
    if ne.iter().any(|&d| d <= 0) {
        return Err(format!("invalid shape {ne:?} (every dimension must be at least 1)"));
    }
    if !(ne[0] as u64).is_multiple_of(typ.block_size()) {
        return Err(format!(
            "first dimension {} is not a multiple of the {} block size {}",
            ne[0],
            typ,
            typ.block_size()
        ));
    }
    let row = typ.row_bytes(ne[0] as u64).ok_or_else(|| format!("size of shape {ne:?} overflows"))?;
    ne[1..]
        .iter()
        .try_fold(row, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| format!("size of shape {ne:?} overflows"))
}

//! Graph operations for mixture-of-experts layers: routing (softmax,
//! top-k, renormalisation) and the per-token expert matmul.
use super::context::{Context, Tensor};
use super::types::GgmlType;
use ggml_sys as sys;

impl Context {
    /// Per-token expert matmul: `experts` [k, m, n_expert] (one matrix per
    /// expert), `b` [k, n_used or 1, n_tokens], `ids` I32 [n_used, n_tokens]
    /// naming the expert for each slot; returns [m, n_used, n_tokens].
    pub fn mul_mat_id<'a>(&'a self, experts: Tensor<'a>, b: Tensor<'a>, ids: Tensor<'a>) -> Tensor<'a> {
        assert_eq!(experts.ne()[0], b.ne()[0], "mul_mat_id: inner dims of {} and {}", experts.name(), b.name());
        assert_eq!(ids.typ(), GgmlType::I32, "mul_mat_id takes I32 expert ids");
        Tensor::from_raw(unsafe { sys::ggml_mul_mat_id(self.raw(), experts.raw(), b.raw(), ids.raw()) })
    }

    /// Indices (I32) of the `k` largest values of each row, largest first.
    pub fn argsort_top_k<'a>(&'a self, a: Tensor<'a>, k: i64) -> Tensor<'a> {
        assert!(k > 0 && k <= a.ne()[0], "top-{k} of rows of {}", a.ne()[0]);
        Tensor::from_raw(unsafe { sys::ggml_argsort_top_k(self.raw(), a.raw(), k as i32) })
    }

    /// softmax over each row.
    pub fn soft_max<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        Tensor::from_raw(unsafe { sys::ggml_soft_max(self.raw(), a.raw()) })
    }

    pub fn sigmoid<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        Tensor::from_raw(unsafe { sys::ggml_sigmoid(self.raw(), a.raw()) })
    }

    /// The sum of each row: [1, rows...].
    pub fn sum_rows<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        Tensor::from_raw(unsafe { sys::ggml_sum_rows(self.raw(), a.raw()) })
    }

    pub fn clamp<'a>(&'a self, a: Tensor<'a>, min: f32, max: f32) -> Tensor<'a> {
        Tensor::from_raw(unsafe { sys::ggml_clamp(self.raw(), a.raw(), min, max) })
    }

    /// a / b, b broadcast over a.
    pub fn div<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        Tensor::from_raw(unsafe { sys::ggml_div(self.raw(), a.raw(), b.raw()) })
    }
}

//! Graph operations for mixture-of-experts layers (routing: softmax,
//! top-k, renormalisation; the per-token expert matmul and biases; gpt-oss's
//! clamped SwiGLU) and for attention sinks.
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

impl Context {
    /// a + b[:, ids]: per-slot bias rows `b` [n, n_expert] picked by `ids`
    /// (I32 [n_used, n_tokens]) and added to `a` [n, n_used, n_tokens].
    /// `a` repeated to [ne0, ne1, ne2, ne3] (each a multiple of `a`'s).
    pub fn repeat_4d<'a>(&'a self, a: Tensor<'a>, ne: [i64; 4]) -> Tensor<'a> {
        Tensor::from_raw(unsafe { sys::ggml_repeat_4d(self.raw(), a.raw(), ne[0], ne[1], ne[2], ne[3]) })
    }

    pub fn add_id<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>, ids: Tensor<'a>) -> Tensor<'a> {
        Tensor::from_raw(unsafe { sys::ggml_add_id(self.raw(), a.raw(), b.raw(), ids.raw()) })
    }

    /// gpt-oss's clamped SwiGLU: (min(g, limit) · σ(alpha · min(g, limit)))
    /// · (clamp(u, ±limit) + 1).
    pub fn swiglu_oai<'a>(&'a self, gate: Tensor<'a>, up: Tensor<'a>, alpha: f32, limit: f32) -> Tensor<'a> {
        Tensor::from_raw(unsafe { sys::ggml_swiglu_oai(self.raw(), gate.raw(), up.raw(), alpha, limit) })
    }

    /// Attention sinks (one learned logit per head that takes part in the
    /// softmax and attends to nothing) on a soft_max_ext result.
    pub fn soft_max_add_sinks(&self, softmax: Tensor<'_>, sinks: Tensor<'_>) {
        unsafe { sys::ggml_soft_max_add_sinks(softmax.raw(), sinks.raw()) }
    }

    /// The same on a flash_attn_ext result.
    pub fn flash_attn_add_sinks(&self, attn: Tensor<'_>, sinks: Tensor<'_>) {
        unsafe { sys::ggml_flash_attn_ext_add_sinks(attn.raw(), sinks.raw()) }
    }
}

//! Graph operations for recurrent (linear-attention) layers: the short
//! causal convolution over a state of past inputs, the gated delta rule
//! with its per-head state matrix, and the helpers their inputs need
//! (L2 norms, softplus, concatenation); and multi-section RoPE.
use super::context::{Context, Tensor};
use super::ops::RopeParams;
use ggml_sys as sys;

impl Context {
    /// Depthwise causal convolution: `sx` [d_conv - 1 + n_t, channels,
    /// n_seqs] (the state's columns, then the new inputs), `c` [d_conv,
    /// channels]; returns [channels, n_t, n_seqs].
    pub fn ssm_conv<'a>(&'a self, sx: Tensor<'a>, c: Tensor<'a>) -> Tensor<'a> {
        assert_eq!(sx.ne()[1], c.ne()[1], "ssm_conv: channels of {} and {}", sx.name(), c.name());
        Tensor::from_raw(unsafe { sys::ggml_ssm_conv(self.raw(), sx.raw(), c.raw()) })
    }

    /// The gated delta rule over `n_tokens` per sequence: q, k [S, H_k,
    /// n_tokens, n_seqs], v [S, H_v, ...], gate g and beta [1, H_v, ...],
    /// state [S, S, H_v, n_seqs]. The result holds the outputs [S, H_v,
    /// n_tokens, n_seqs] followed by the final state (`snapshots` = 1) or the
    /// states after each of the last `snapshots` tokens, newest first.
    #[allow(clippy::too_many_arguments)]
    pub fn gated_delta_net<'a>(
        &'a self,
        q: Tensor<'a>,
        k: Tensor<'a>,
        v: Tensor<'a>,
        g: Tensor<'a>,
        beta: Tensor<'a>,
        state: Tensor<'a>,
        snapshots: i64,
    ) -> Tensor<'a> {
        Tensor::from_raw(unsafe {
            sys::ggml_gated_delta_net(
                self.raw(),
                q.raw(),
                k.raw(),
                v.raw(),
                g.raw(),
                beta.raw(),
                state.raw(),
                snapshots,
            )
        })
    }

    /// Each row divided by its L2 norm (eps under the square root).
    pub fn l2_norm<'a>(&'a self, a: Tensor<'a>, eps: f32) -> Tensor<'a> {
        Tensor::from_raw(unsafe { sys::ggml_l2_norm(self.raw(), a.raw(), eps) })
    }

    /// ln(1 + e^x).
    pub fn softplus<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        Tensor::from_raw(unsafe { sys::ggml_softplus(self.raw(), a.raw()) })
    }

    /// `a` and `b` joined along dimension `dim`.
    pub fn concat<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>, dim: i32) -> Tensor<'a> {
        Tensor::from_raw(unsafe { sys::ggml_concat(self.raw(), a.raw(), b.raw(), dim) })
    }

    /// RoPE with four position sections (M-RoPE and its interleaved form):
    /// `pos` holds 4 positions per token, section-major.
    pub fn rope_multi<'a>(&'a self, a: Tensor<'a>, pos: Tensor<'a>, sections: [i32; 4], p: &RopeParams) -> Tensor<'a> {
        let mut sections = sections;
        Tensor::from_raw(unsafe {
            sys::ggml_rope_multi(
                self.raw(),
                a.raw(),
                pos.raw(),
                std::ptr::null_mut(),
                p.n_dims,
                sections.as_mut_ptr(),
                p.mode,
                p.n_ctx_orig,
                p.freq_base,
                p.freq_scale,
                p.ext_factor,
                p.attn_factor,
                p.beta_fast,
                p.beta_slow,
            )
        })
    }
}

//! Graph operations used by the model blocks, as methods on `Context`.
//! Shapes are validated when a model is loaded, so these thin wrappers only
//! check the few preconditions that depend on runtime values.
use super::context::{Context, Tensor};
use super::types::GgmlType;
use ggml_sys as sys;

/// RoPE parameters, as ggml_rope_ext takes them.
#[derive(Clone, Copy, Debug)]
pub struct RopeParams {
    pub n_dims: i32,
    pub mode: i32,
    pub n_ctx_orig: i32,
    pub freq_base: f32,
    pub freq_scale: f32,
    pub ext_factor: f32,
    pub attn_factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
}

impl Context {
    fn wrap<'a>(&'a self, t: *mut sys::ggml_tensor) -> Tensor<'a> {
        Tensor::from_raw(t)
    }

    pub fn get_rows<'a>(&'a self, a: Tensor<'a>, rows: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_get_rows(self.raw(), a.raw(), rows.raw()) })
    }

    pub fn rms_norm<'a>(&'a self, a: Tensor<'a>, eps: f32) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_rms_norm(self.raw(), a.raw(), eps) })
    }

    pub fn mul<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_mul(self.raw(), a.raw(), b.raw()) })
    }

    pub fn add<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_add(self.raw(), a.raw(), b.raw()) })
    }

    pub fn scale<'a>(&'a self, a: Tensor<'a>, s: f32) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_scale(self.raw(), a.raw(), s) })
    }

    /// `a` (weights, [k, m]) times `b` ([k, n]) = [m, n].
    pub fn mul_mat<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        assert_eq!(a.ne()[0], b.ne()[0], "mul_mat: inner dims of {} and {}", a.name(), b.name());
        let [k, n, n2, n3] = b.ne();
        if let Some(y) = self.packed_product(a, b) {
            return y;
        }
        let two_dims = n2 == 1 && n3 == 1 && a.ne()[2] == 1 && a.ne()[3] == 1;
        if self.rows_alone() && two_dims && super::row_kernels::batch_kernel_differs(a, n) {
            // One row per plane: ggml-cpu picks its kernel by the rows of a plane.
            let b = if b.is_contiguous() { b } else { self.cont(b) };
            let planes = self.reshape(b, &[k, 1, n]);
            let y = self.wrap(unsafe { sys::ggml_mul_mat(self.raw(), a.raw(), planes.raw()) });
            return self.reshape(y, &[a.ne()[1], n]);
        }
        self.wrap(unsafe { sys::ggml_mul_mat(self.raw(), a.raw(), b.raw()) })
    }

    /// Ask for f32 accumulation in a matmul (attention scores).
    pub fn set_prec_f32(&self, t: Tensor<'_>) {
        unsafe { sys::ggml_prec_set_acc(t.raw(), sys::GGML_PREC_F32) };
    }

    /// Rotate the rows of `x` (contiguous in chunks of `rot.ne[0]`) by the
    /// Hadamard matrix `rot`, hinting ggml that it is one.
    pub fn hadamard_rotate<'a>(&'a self, x: Tensor<'a>, rot: Tensor<'a>) -> Tensor<'a> {
        let n = rot.ne()[0];
        let ne = x.ne();
        let flat = if is_contiguous(x) {
            self.reshape(x, &[n, x.nelements() / n])
        } else {
            self.cont_2d(x, n, x.nelements() / n)
        };
        let r = self.mul_mat(rot, flat);
        unsafe { sys::ggml_mul_mat_set_hint(r.raw(), sys::GGML_HINT_SRC0_IS_HADAMARD) };
        self.reshape(r, &ne)
    }

    pub fn swiglu_split<'a>(&'a self, gate: Tensor<'a>, up: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_swiglu_split(self.raw(), gate.raw(), up.raw()) })
    }

    pub fn geglu_split<'a>(&'a self, gate: Tensor<'a>, up: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_geglu_split(self.raw(), gate.raw(), up.raw()) })
    }

    /// silu(first half of dim 0) * second half.
    pub fn swiglu<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_swiglu(self.raw(), a.raw()) })
    }

    pub fn silu<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_silu(self.raw(), a.raw()) })
    }

    pub fn gelu<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_gelu(self.raw(), a.raw()) })
    }

    pub fn tanh<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_tanh(self.raw(), a.raw()) })
    }

    pub fn reshape<'a>(&'a self, a: Tensor<'a>, ne: &[i64]) -> Tensor<'a> {
        let want: i64 = ne.iter().product();
        assert_eq!(want, a.nelements(), "reshape of {} changes the element count", a.name());
        let c = self.raw();
        self.wrap(unsafe {
            match *ne {
                [x] => sys::ggml_reshape_1d(c, a.raw(), x),
                [x, y] => sys::ggml_reshape_2d(c, a.raw(), x, y),
                [x, y, z] => sys::ggml_reshape_3d(c, a.raw(), x, y, z),
                [x, y, z, w] => sys::ggml_reshape_4d(c, a.raw(), x, y, z, w),
                _ => panic!("reshape to {} dims", ne.len()),
            }
        })
    }

    /// A strided view: `ne` elements per dim, `nb` byte strides for dims 1..,
    /// starting `offset` bytes into `a`.
    pub fn view<'a>(&'a self, a: Tensor<'a>, ne: &[i64], nb: &[usize], offset: usize) -> Tensor<'a> {
        assert_eq!(nb.len() + 1, ne.len(), "view strides");
        let c = self.raw();
        self.wrap(unsafe {
            match (ne, nb) {
                ([x], []) => sys::ggml_view_1d(c, a.raw(), *x, offset),
                ([x, y], [b1]) => sys::ggml_view_2d(c, a.raw(), *x, *y, *b1, offset),
                ([x, y, z], [b1, b2]) => sys::ggml_view_3d(c, a.raw(), *x, *y, *z, *b1, *b2, offset),
                ([x, y, z, w], [b1, b2, b3]) => sys::ggml_view_4d(c, a.raw(), *x, *y, *z, *w, *b1, *b2, *b3, offset),
                _ => panic!("view with {} dims", ne.len()),
            }
        })
    }

    pub fn permute<'a>(&'a self, a: Tensor<'a>, axes: [i32; 4]) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_permute(self.raw(), a.raw(), axes[0], axes[1], axes[2], axes[3]) })
    }

    /// `a` with `p0` zeros appended to each row.
    pub fn pad<'a>(&'a self, a: Tensor<'a>, p0: i32) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_pad(self.raw(), a.raw(), p0, 0, 0, 0) })
    }

    pub fn cont<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_cont(self.raw(), a.raw()) })
    }

    pub fn cont_2d<'a>(&'a self, a: Tensor<'a>, ne0: i64, ne1: i64) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_cont_2d(self.raw(), a.raw(), ne0, ne1) })
    }

    pub fn transpose<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_transpose(self.raw(), a.raw()) })
    }

    /// Copy `a` into `b` (with type conversion); returns the view of `b`.
    pub fn cpy<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        assert_eq!(a.nelements(), b.nelements(), "cpy between different sizes");
        self.wrap(unsafe { sys::ggml_cpy(self.raw(), a.raw(), b.raw()) })
    }

    pub fn cast<'a>(&'a self, a: Tensor<'a>, typ: GgmlType) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_cast(self.raw(), a.raw(), typ.0) })
    }

    /// Rotary position embedding of `a` ([head_dim, n_head, n_tokens]) at
    /// positions `pos` (I32, n_tokens), with optional frequency factors.
    pub fn rope<'a>(
        &'a self,
        a: Tensor<'a>,
        pos: Tensor<'a>,
        factors: Option<Tensor<'a>>,
        p: &RopeParams,
    ) -> Tensor<'a> {
        let f = factors.map_or(std::ptr::null_mut(), |t| t.raw());
        self.wrap(unsafe {
            sys::ggml_rope_ext(
                self.raw(),
                a.raw(),
                pos.raw(),
                f,
                p.n_dims,
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

    /// RoPE applied in place (the result is a view of `a`).
    pub fn rope_inplace<'a>(
        &'a self,
        a: Tensor<'a>,
        pos: Tensor<'a>,
        factors: Option<Tensor<'a>>,
        p: &RopeParams,
    ) -> Tensor<'a> {
        let f = factors.map_or(std::ptr::null_mut(), |t| t.raw());
        self.wrap(unsafe {
            sys::ggml_rope_ext_inplace(
                self.raw(),
                a.raw(),
                pos.raw(),
                f,
                p.n_dims,
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

    /// softmax(a * scale + mask) over dim 0.
    pub fn soft_max_ext<'a>(&'a self, a: Tensor<'a>, mask: Option<Tensor<'a>>, scale: f32) -> Tensor<'a> {
        let m = mask.map_or(std::ptr::null_mut(), |t| t.raw());
        self.wrap(unsafe { sys::ggml_soft_max_ext(self.raw(), a.raw(), m, scale, 0.0) })
    }

    /// Fused attention: softmax(q·kᵀ * scale + mask)·v with f32
    /// accumulation. q: [d, n_tokens, n_head], k and v: [d, n_kv, n_head_kv]
    /// (rows, not transposed), mask: f16 [n_kv, n_tokens]; returns
    /// [d, n_head, n_tokens]. Cells masked with -inf are skipped.
    pub fn flash_attn_ext<'a>(
        &'a self,
        q: Tensor<'a>,
        k: Tensor<'a>,
        v: Tensor<'a>,
        mask: Tensor<'a>,
        scale: f32,
    ) -> Tensor<'a> {
        assert_eq!(mask.typ(), GgmlType::F16, "flash attention takes an f16 mask");
        let t = self.wrap(unsafe {
            sys::ggml_flash_attn_ext(self.raw(), q.raw(), k.raw(), v.raw(), mask.raw(), scale, 0.0, 0.0)
        });
        unsafe { sys::ggml_prec_set_acc(t.raw(), sys::GGML_PREC_F32) };
        t
    }

    /// Scatter the rows of `src` into `dst` at row indices `idx` (I64).
    pub fn set_rows<'a>(&'a self, dst: Tensor<'a>, src: Tensor<'a>, idx: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_set_rows(self.raw(), dst.raw(), src.raw(), idx.raw()) })
    }
}

fn is_contiguous(t: Tensor<'_>) -> bool {
    unsafe { sys::ggml_is_contiguous(t.raw()) }
}

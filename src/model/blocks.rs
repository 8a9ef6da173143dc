//! Graph building blocks shared by the architectures: norms, rotary
//! embeddings, attention over the KV cache, feed-forward networks.
use crate::ggml::{Context, Graph, RopeParams, Tensor};

/// The per-step inputs attention needs.
pub struct AttnInputs<'c> {
    /// Cell index of each new token (I64), where its K row is written.
    pub k_idxs: Tensor<'c>,
    /// Element-wise destination of each new token's V values (I64), for the
    /// transposed V layout.
    pub v_idxs: Tensor<'c>,
    /// [n_kv, n_tokens] mask: 0 visible, -inf hidden.
    pub mask: Tensor<'c>,
    /// Number of cells attended (a prefix of the layer's pool).
    pub n_kv: i64,
    /// Cells of the layer's pool (rows of its K and V).
    pub kv_size: i64,
    /// Hadamard rotation for q and k when the K cache is quantized.
    pub k_rot: Option<Tensor<'c>>,
    /// Hadamard rotation for v and the output when the V cache is quantized.
    pub v_rot: Option<Tensor<'c>>,
    /// Flash attention: V is row per cell, the mask f16, and one fused op
    /// attends (skipping masked cells).
    pub flash: bool,
    /// With flash attention, take decache's kernels where they fit the layer
    /// (`Context::decode_attention`, `Context::prefill_attention`).
    pub own_kernels: bool,
    /// With flash attention, attend from each query row alone over its own
    /// count of cells (what a step of that token alone would attend): see
    /// `runner::rows_alone`.
    pub rows: Option<Vec<i64>>,
}

/// Most query rows a step attends row by row with decache's decoding kernel
/// (`Context::decode_attention`); more take blocks of rows
/// (`Context::prefill_attention`). ggml-cpu's own fused op switches to tiles
/// of queries at 64 rows too.
pub const DECODE_ROWS_MAX: i64 = 63;

/// Shapes of one attention layer.
#[derive(Clone, Copy)]
pub struct AttnShape {
    pub head_dim: i64,
    pub n_head: i64,
    pub n_head_kv: i64,
    pub scale: f32,
}

/// x * w after RMS normalisation.
pub fn rms_norm<'c>(ctx: &'c Context, x: Tensor<'c>, w: Tensor<'c>, eps: f32) -> Tensor<'c> {
    ctx.mul(ctx.rms_norm(x, eps), w)
}

/// w·x (+ b).
pub fn linear<'c>(ctx: &'c Context, w: Tensor<'c>, x: Tensor<'c>, b: Option<Tensor<'c>>) -> Tensor<'c> {
    let y = ctx.mul_mat(w, x);
    match b {
        Some(b) => ctx.add(y, b),
        None => y,
    }
}

/// down( silu(gate·x) * up·x ), the SwiGLU feed-forward.
pub fn ffn_swiglu<'c>(
    ctx: &'c Context,
    x: Tensor<'c>,
    gate: Tensor<'c>,
    up: Tensor<'c>,
    down: Tensor<'c>,
) -> Tensor<'c> {
    let u = ctx.mul_mat(up, x);
    let g = ctx.mul_mat(gate, x);
    ctx.mul_mat(down, ctx.swiglu_split(g, u))
}

/// down( gelu_tanh(gate·x) * up·x ), the GeGLU feed-forward (Gemma).
pub fn ffn_geglu<'c>(
    ctx: &'c Context,
    x: Tensor<'c>,
    gate: Tensor<'c>,
    up: Tensor<'c>,
    down: Tensor<'c>,
) -> Tensor<'c> {
    let u = ctx.mul_mat(up, x);
    let g = ctx.mul_mat(gate, x);
    ctx.mul_mat(down, ctx.geglu_split(g, u))
}

/// down( silu(a) * b ) where up·x = [a; b] (Phi-3's fused gate and up).
pub fn ffn_swiglu_fused<'c>(ctx: &'c Context, x: Tensor<'c>, up: Tensor<'c>, down: Tensor<'c>) -> Tensor<'c> {
    ctx.mul_mat(down, ctx.swiglu(ctx.mul_mat(up, x)))
}

/// Store this step's K and V in the cache, then attend from q over the
/// first `n_kv` cells, with one sink logit per head when given (gpt-oss). q: [head_dim, n_head, n_tokens]; k, v: [head_dim,
/// n_head_kv, n_tokens]. Returns [head_dim * n_head, n_tokens].
#[allow(clippy::too_many_arguments)]
pub fn attention<'c>(
    ctx: &'c Context,
    gf: &mut Graph<'c>,
    q: Tensor<'c>,
    k: Tensor<'c>,
    v: Tensor<'c>,
    k_cache: Tensor<'c>,
    v_cache: Tensor<'c>,
    inp: &AttnInputs<'c>,
    s: AttnShape,
    sinks: Option<Tensor<'c>>,
) -> Tensor<'c> {
    store_kv(ctx, gf, k, v, k_cache, v_cache, inp, s);
    attend(ctx, gf, q, k_cache, v_cache, inp, s, sinks)
}

/// Write this step's K and V ([head_dim, n_head_kv, n_tokens]) to their
/// cells: K rows, and V rows or (transposed, padded to the cache's width
/// when the layer is narrower) V elements.
#[allow(clippy::too_many_arguments)]
pub fn store_kv<'c>(
    ctx: &'c Context,
    gf: &mut Graph<'c>,
    k: Tensor<'c>,
    v: Tensor<'c>,
    k_cache: Tensor<'c>,
    v_cache: Tensor<'c>,
    inp: &AttnInputs<'c>,
    s: AttnShape,
) {
    let n_tokens = k.ne()[2];
    let n_embd_kv = s.head_dim * s.n_head_kv;
    let k = match inp.k_rot {
        Some(rot) => ctx.hadamard_rotate(k, rot),
        None => k,
    };
    let v = match inp.v_rot {
        Some(rot) => ctx.hadamard_rotate(v, rot),
        None => v,
    };
    gf.expand(v);
    gf.expand(k);
    let k2 = ctx.view(k, &[n_embd_kv, n_tokens], &[k.nb()[2]], 0);
    gf.expand(ctx.set_rows(k_cache, k2, inp.k_idxs));
    let contiguous = v.nb()[2] == v.typ().row_bytes(n_embd_kv as u64).unwrap_or(0) as usize;
    let v2 = if contiguous { ctx.reshape(v, &[n_embd_kv, n_tokens]) } else { ctx.cont_2d(v, n_embd_kv, n_tokens) };
    if inp.flash {
        // V rows go to their cells, as K's do.
        gf.expand(ctx.set_rows(v_cache, v2, inp.v_idxs));
    } else {
        // V is transposed in the cache: scatter element by element.
        let width = v_cache.ne()[0];
        let v2 = if width > n_embd_kv { ctx.pad(v2, (width - n_embd_kv) as i32) } else { v2 };
        let v2 = ctx.reshape(v2, &[1, width * n_tokens]);
        let v_all = ctx.reshape(v_cache, &[1, v_cache.nelements()]);
        gf.expand(ctx.set_rows(v_all, v2, inp.v_idxs));
    }
}

/// Attend from q ([head_dim, n_head, n_tokens]) over the first `n_kv`
/// cells of a layer's cache, with one sink logit per head when given.
/// Returns [head_dim * n_head, n_tokens].
#[allow(clippy::too_many_arguments)]
pub fn attend<'c>(
    ctx: &'c Context,
    gf: &mut Graph<'c>,
    q: Tensor<'c>,
    k_cache: Tensor<'c>,
    v_cache: Tensor<'c>,
    inp: &AttnInputs<'c>,
    s: AttnShape,
    sinks: Option<Tensor<'c>>,
) -> Tensor<'c> {
    let n_tokens = q.ne()[2];
    let n_embd_kv = s.head_dim * s.n_head_kv;
    let q = match inp.k_rot {
        Some(rot) => ctx.hadamard_rotate(q, rot),
        None => q,
    };
    gf.expand(q);
    let kt = k_cache.typ();
    let vt = v_cache.typ();
    let row = |t: crate::ggml::GgmlType, n: i64| t.row_bytes(n as u64).expect("cache row") as usize;
    // [head_dim, n_head_kv, n_kv] over cell rows (K, and V with flash attention).
    let rows_view = |cache: Tensor<'c>, t: crate::ggml::GgmlType, n_kv: i64| {
        let width = cache.ne()[0];
        ctx.view(
            cache,
            &[s.head_dim, s.n_head_kv, n_kv, 1],
            &[row(t, s.head_dim), row(t, width), row(t, width * inp.kv_size)],
            0,
        )
    };
    if inp.flash
        && inp.own_kernels
        && inp.k_rot.is_none()
        && crate::ggml::decode_attention_fits(s.n_head, s.n_head_kv, s.head_dim, kt, vt)
    {
        let (k, v) = (rows_view(k_cache, kt, inp.n_kv), rows_view(v_cache, vt, inp.n_kv));
        let a = crate::ggml::KernelArgs { q, k, v, mask: inp.mask, sinks, scale: s.scale };
        // Few query rows, or rows that must come out as their lone steps'
        // (a verified draft): each row alone. Many: blocks of rows.
        let out = if inp.rows.is_some() || n_tokens <= DECODE_ROWS_MAX {
            ctx.decode_attention(a)
        } else {
            ctx.prefill_attention(a)
        };
        return ctx.reshape(out, &[s.head_dim * s.n_head, n_tokens]);
    }
    if inp.flash {
        // q in the fused op's layout: [head_dim, queries, heads].
        let fused = |q: Tensor<'c>, n_kv: i64, mask: Tensor<'c>, sinks: Option<Tensor<'c>>| {
            let kp = ctx.permute(rows_view(k_cache, kt, n_kv), [0, 2, 1, 3]);
            let vp = ctx.permute(rows_view(v_cache, vt, n_kv), [0, 2, 1, 3]);
            let fa = ctx.flash_attn_ext(q, kp, vp, mask, s.scale);
            if let Some(sinks) = sinks {
                ctx.flash_attn_add_sinks(fa, sinks);
            }
            fa
        };
        let fa = match &inp.rows {
            None => fused(ctx.permute(q, [0, 2, 1, 3]), inp.n_kv, inp.mask, sinks),
            Some(rows) => {
                let parts = row_groups(rows)
                    .into_iter()
                    .map(|(r0, r1)| attend_alone(ctx, q, inp.mask, sinks, s, r0, r1, rows[r0], &fused))
                    .collect();
                concat_tree(ctx, parts, 2)
            }
        };
        // Out: [head_dim, n_head, n_tokens], already in the order the output projection takes.
        let out = ctx.reshape(fa, &[s.head_dim * s.n_head, n_tokens]);
        return match inp.v_rot {
            Some(rot) => ctx.hadamard_rotate(out, rot),
            None => out,
        };
    }
    let kview = rows_view(k_cache, kt, inp.n_kv);
    let vview = ctx.view(
        v_cache,
        &[inp.n_kv, s.n_head_kv, s.head_dim, 1],
        &[row(vt, inp.kv_size * s.head_dim), row(vt, inp.kv_size), row(vt, inp.kv_size * n_embd_kv)],
        0,
    );
    let q = ctx.permute(q, [0, 2, 1, 3]);
    let kp = ctx.permute(kview, [0, 2, 1, 3]);
    let vp = ctx.permute(vview, [0, 2, 1, 3]);
    let kq = ctx.mul_mat(kp, q);
    ctx.set_prec_f32(kq);
    let kq = ctx.soft_max_ext(kq, Some(inp.mask), s.scale);
    if let Some(sinks) = sinks {
        ctx.soft_max_add_sinks(kq, sinks);
    }
    let kqv = ctx.mul_mat(vp, kq);
    let cur = ctx.permute(kqv, [0, 2, 1, 3]);
    ctx.cont_2d(cur, s.head_dim * s.n_head, n_tokens)
}

/// Runs of rows attending the same count of cells, as [first, end).
fn row_groups(rows: &[i64]) -> Vec<(usize, usize)> {
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for (i, &n) in rows.iter().enumerate() {
        match groups.last_mut() {
            Some(g) if rows[g.0] == n => g.1 = i + 1,
            _ => groups.push((i, i + 1)),
        }
    }
    groups
}

/// Attend from query rows `r0..r1` of q ([head_dim, n_head, n_tokens]),
/// each as a lone query over the first `n_kv` cells: the rows go to the
/// fused op as heads of one query ([head_dim, 1, n_head * rows], row
/// fastest), each head with its own mask row and sink, so ggml-cpu takes
/// the lone query's path for every one of them (from 512 cells, keys split
/// between the threads and the partial sums joined in the same order).
/// Returns [head_dim, n_head, rows].
#[allow(clippy::too_many_arguments)]
fn attend_alone<'c>(
    ctx: &'c Context,
    q: Tensor<'c>,
    mask: Tensor<'c>,
    sinks: Option<Tensor<'c>>,
    s: AttnShape,
    r0: usize,
    r1: usize,
    n_kv: i64,
    fused: &dyn Fn(Tensor<'c>, i64, Tensor<'c>, Option<Tensor<'c>>) -> Tensor<'c>,
) -> Tensor<'c> {
    let m = (r1 - r0) as i64;
    let qg = ctx.view(q, &[s.head_dim, s.n_head, m], &[q.nb()[1], q.nb()[2]], r0 * q.nb()[2]);
    let qg = ctx.reshape(ctx.cont(ctx.permute(qg, [0, 2, 1, 3])), &[s.head_dim, 1, m * s.n_head]);
    // Head h*m + i reads mask row i (ggml takes a mask plane modulo its planes).
    let row_bytes = mask.nb()[1];
    let mg = ctx.view(mask, &[n_kv, 1, m, 1], &[row_bytes, row_bytes, row_bytes * m as usize], r0 * row_bytes);
    let mg = if m > 1 && mask.ne()[0] != n_kv { ctx.cont(mg) } else { mg };
    let sinks =
        sinks.map(|t| ctx.reshape(ctx.repeat_4d(ctx.reshape(t, &[1, s.n_head]), [m, s.n_head, 1, 1]), &[m * s.n_head]));
    let fa = fused(qg, n_kv, mg, sinks); // [head_dim, n_head * m, 1]
    ctx.cont(ctx.permute(ctx.reshape(fa, &[s.head_dim, m, s.n_head]), [0, 2, 1, 3]))
}

/// `parts` joined along `dim`, pairwise (each element is copied about
/// log2(parts) times rather than once per later part).
fn concat_tree<'c>(ctx: &'c Context, mut parts: Vec<Tensor<'c>>, dim: i32) -> Tensor<'c> {
    assert!(!parts.is_empty(), "nothing to join");
    while parts.len() > 1 {
        parts = parts.chunks(2).map(|p| if p.len() == 2 { ctx.concat(p[0], p[1], dim) } else { p[0] }).collect();
    }
    parts[0]
}

/// Rotate the cached keys of one layer by each cell's position change
/// (`shift`, I32 per cell) after positions were closed up: RoPE composes,
/// so R(p + d) = R(d) R(p) and no key is recomputed from hidden states. A
/// quantized cache is rotated back from its Hadamard basis, roped, rotated
/// forward and re-quantized, as llama.cpp does.
#[allow(clippy::too_many_arguments)]
pub fn k_shift<'c>(
    ctx: &'c Context,
    k_cache: Tensor<'c>,
    shift: Tensor<'c>,
    rope: &RopeParams,
    factors: Option<Tensor<'c>>,
    head_dim: i64,
    n_head_kv: i64,
    k_rot: Option<Tensor<'c>>,
) -> Tensor<'c> {
    let t = k_cache.typ();
    let size = k_cache.ne()[1];
    let row = |n: i64| t.row_bytes(n as u64).expect("cache row") as usize;
    let k = ctx.view(k_cache, &[rope.n_dims as i64, n_head_kv, size], &[row(head_dim), row(head_dim * n_head_kv)], 0);
    if t.is_quantized() {
        let mut x = ctx.cast(k, crate::ggml::GgmlType::F32);
        if let Some(r) = k_rot {
            x = ctx.hadamard_rotate(x, r);
        }
        x = ctx.rope(x, shift, factors, rope);
        if let Some(r) = k_rot {
            x = ctx.hadamard_rotate(x, r);
        }
        ctx.cpy(x, k)
    } else {
        ctx.rope_inplace(k, shift, factors, rope)
    }
}

//! Random-weight GGUF files of llama.cpp's `gemma4` architecture (Gemma 4
//! text decoders), as llama.cpp's loader reads them (`src/models/gemma4.cpp`);
//! `docs/gemma4-spec.md` describes the forward pass they drive.
//!
//! - `Gemma4Shape`: the hyper-parameters; `tiny()` is a dense E2B-like shape
//!   (6 layers, every third global, the last 3 reading earlier layers' KV
//!   cache, per-layer embeddings, a double-wide FFN in the shared layers),
//!   `tiny_moe()` a 26B-A4B-like one (experts beside the dense FFN in every
//!   layer, no per-layer embeddings, no shared KV).
//! - Layer `il` is global (full attention) when `(il + 1) % swa_period == 0`,
//!   else sliding-window; written as the bool array
//!   `attention.sliding_window_pattern` (true = sliding), as the converter
//!   writes it. The two kinds have different head sizes (`key_length` /
//!   `value_length` for global, `key_length_swa` / `value_length_swa` for
//!   sliding), kv head counts (`attention.head_count_kv` is a per-layer
//!   array) and RoPE (global: `rope.freq_base`, `rope.dimension_count` =
//!   the whole head, `rope_freqs.weight` [head_dim_full/2] of 1.0 for the
//!   first `rope_pairs_full` pairs and 1e30 for the rest, i.e. partial
//!   "proportional" RoPE; sliding: `rope.freq_base_swa`,
//!   `rope.dimension_count_swa`, no factors).
//! - Shared KV: the last `n_kv_shared` layers (`attention.shared_kv_layers`)
//!   compute no K/V; llama.cpp maps a shared sliding layer to the cache of
//!   layer `n_layer - n_kv_shared - 2` and a shared global one to layer
//!   `n_layer - n_kv_shared - 1`, so those two must be sliding and global.
//!   Shared layers get no `attn_k`, `attn_v`, `attn_k_norm` (llama.cpp does
//!   not require them) unless `shared_kv_weights` writes unused ones.
//! - Every layer: `attn_norm`, `attn_q` [n_embd, hd·n_head], `attn_k` /
//!   `attn_v` [n_embd, hd·n_head_kv] (`attn_v` absent on global layers when
//!   `k_eq_v_full`: V is then K's projection), `attn_q_norm`, `attn_k_norm`
//!   [hd], `attn_output` [hd·n_head, n_embd], `post_attention_norm`,
//!   `ffn_norm`, `ffn_gate` / `ffn_up` [n_embd, n_ff(il)], `ffn_down`,
//!   `post_ffw_norm` [n_embd]; `layer_output_scale` [1] when `out_scale`.
//! - Experts (`tiny_moe`): `ffn_gate_inp` [n_embd, n_expert],
//!   `ffn_gate_inp.scale` [n_embd], `pre_ffw_norm_2`, `post_ffw_norm_1`,
//!   `post_ffw_norm_2` [n_embd], `ffn_gate_up_exps` [n_embd, 2·n_ff_exp,
//!   n_expert] (gate rows first; or `ffn_gate_exps` + `ffn_up_exps` when
//!   `fused_gate_up_exps` is false), `ffn_down_exps` [n_ff_exp, n_embd,
//!   n_expert], `ffn_down_exps.scale` [n_expert] (the per-expert scale).
//! - Per-layer embeddings (`embedding_length_per_layer_input` = P > 0):
//!   `per_layer_token_embd` [P·n_layer, n_vocab], `per_layer_model_proj`
//!   [n_embd, P·n_layer], `per_layer_proj_norm` [P]; per layer `inp_gate`
//!   [n_embd, P], `proj` [P, n_embd], `post_norm` [n_embd].
//! - Globals: `token_embd`, `output_norm`, `output` unless `tied_output`
//!   (real Gemma 4 files tie it; `Gemma4Shape::tied`),
//!   `final_logit_softcapping` when non-zero.
//! - Keys: `arch_header`'s (tiny gpt2 vocabulary, context 256), rms eps
//!   1e-6, the keys above, `attention.sliding_window`,
//!   `feed_forward_length` (a per-layer array when the shared layers are
//!   double-wide), `expert_count` / `expert_used_count` /
//!   `expert_feed_forward_length` with experts.
//! - Values: norms 1 ± 0.3 (Gemma 4 norms are used as stored, no +1),
//!   matrices uniform ±2/√ne0, embeddings ±1 (`token_embd` ±`embd_range`),
//!   output scales 1 ± 0.3,
//!   all f32.
#![allow(dead_code)]

use super::gguf_writer::{arch_header, blk, f32_bytes, tiny_vocab, tt, vt, Gguf, Rng, Value};

/// The hyper-parameters of a `gemma4` file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemma4Shape {
    pub n_layer: u64,
    pub n_embd: u64,
    /// Query heads (every layer).
    pub n_head: u64,
    /// KV heads of the sliding-window layers.
    pub n_head_kv_swa: u64,
    /// KV heads of the global layers.
    pub n_head_kv_full: u64,
    /// Head size of the sliding-window layers (`key_length_swa`).
    pub head_dim_swa: u64,
    /// Head size of the global layers (`key_length`).
    pub head_dim_full: u64,
    /// Rotated dimensions of a sliding head (`rope.dimension_count_swa`).
    pub n_rot_swa: u64,
    /// Rotated pairs of a global head: `rope_freqs` holds this many 1.0 then
    /// 1e30 (no rotation) up to head_dim_full/2.
    pub rope_pairs_full: u64,
    pub freq_base: f32,
    pub freq_base_swa: f32,
    /// Width of the dense FFN.
    pub n_ff: u64,
    /// Shared-KV layers get a FFN of 2·n_ff (E2B's `use_double_wide_mlp`).
    pub double_wide_shared: bool,
    /// Every `swa_period`-th layer is global, the others sliding.
    pub swa_period: u64,
    pub sliding_window: u64,
    /// The last `n_kv_shared` layers read an earlier layer's KV cache.
    pub n_kv_shared: u64,
    /// Write (unused) `attn_k`, `attn_v`, `attn_k_norm` in shared layers too.
    pub shared_kv_weights: bool,
    /// Global layers have no `attn_v` (V = K's projection, then an
    /// unweighted RMSNorm).
    pub k_eq_v_full: bool,
    /// Width of each per-layer embedding (0: none).
    pub n_embd_per_layer: u64,
    /// `layer_output_scale.weight` in every layer.
    pub out_scale: bool,
    /// 0: no `final_logit_softcapping` key.
    pub final_logit_softcapping: f32,
    /// No `output.weight`: the head is `token_embd`.
    pub tied_output: bool,
    /// `token_embd` is uniform in ±`embd_range`. With a tied head keep it
    /// well under 1 (0.1): the embedding, × sqrt(n_embd), otherwise
    /// dominates the residual and every argmax echoes the input token.
    pub embd_range: f32,
    /// (experts, used per token, width of each): experts beside the dense
    /// FFN in every layer.
    pub experts: Option<(u64, u64, u64)>,
    /// Experts' gate and up in one `ffn_gate_up_exps` (as converted files).
    pub fused_gate_up_exps: bool,
}

impl Gemma4Shape {
    /// 6 layers (S S G S S G: global 2 and 5), n_embd 128, 4 query heads;
    /// sliding layers 2 kv heads of 32 (all rotated, base 1e4, window 8),
    /// global layers 1 kv head of 64 (8 of 32 pairs rotated, base 1e6, no
    /// `attn_v`); layers 3-5 share KV (3, 4 read layer 1's cache, 5 reads
    /// layer 2's) and have a FFN of 512 instead of 256; per-layer
    /// embeddings of 16; output scales; an untied head (`tied()` ties it),
    /// logits soft-capped at 30.
    pub fn tiny() -> Gemma4Shape {
        Gemma4Shape {
            n_layer: 6,
            n_embd: 128,
            n_head: 4,
            n_head_kv_swa: 2,
            n_head_kv_full: 1,
            head_dim_swa: 32,
            head_dim_full: 64,
            n_rot_swa: 32,
            rope_pairs_full: 8,
            freq_base: 1_000_000.0,
            freq_base_swa: 10_000.0,
            n_ff: 256,
            double_wide_shared: true,
            swa_period: 3,
            sliding_window: 8,
            n_kv_shared: 3,
            shared_kv_weights: false,
            k_eq_v_full: true,
            n_embd_per_layer: 16,
            out_scale: true,
            final_logit_softcapping: 30.0,
            tied_output: false,
            embd_range: 1.0,
            experts: None,
            fused_gate_up_exps: true,
        }
    }

    /// `tiny()` with the head tied to the embeddings (as real Gemma 4
    /// files), embeddings ±0.1.
    pub fn tied(self) -> Gemma4Shape {
        Gemma4Shape { tied_output: true, embd_range: 0.1, ..self }
    }

    /// `tiny()` without per-layer embeddings or shared KV (every layer has
    /// its own cache, FFN 256), with 8 experts of 64, 2 per token, beside
    /// the dense FFN of every layer, gate and up fused.
    pub fn tiny_moe() -> Gemma4Shape {
        Gemma4Shape {
            n_kv_shared: 0,
            double_wide_shared: false,
            n_embd_per_layer: 0,
            experts: Some((8, 2, 64)),
            ..Gemma4Shape::tiny()
        }
    }

    /// Whether layer `il` is a sliding-window layer.
    pub fn is_swa(&self, il: u64) -> bool {
        !(il + 1).is_multiple_of(self.swa_period)
    }

    /// First layer without its own KV (n_layer when none is shared).
    pub fn n_layer_kv(&self) -> u64 {
        self.n_layer - self.n_kv_shared
    }

    /// Whether layer `il` computes and stores its own K and V.
    pub fn has_kv(&self, il: u64) -> bool {
        il < self.n_layer_kv()
    }

    /// The layer whose cache layer `il` attends to (itself unless shared),
    /// as llama.cpp maps it.
    pub fn kv_source(&self, il: u64) -> u64 {
        if self.has_kv(il) {
            il
        } else if self.is_swa(il) {
            self.n_layer_kv() - 2
        } else {
            self.n_layer_kv() - 1
        }
    }

    pub fn head_dim(&self, il: u64) -> u64 {
        if self.is_swa(il) {
            self.head_dim_swa
        } else {
            self.head_dim_full
        }
    }

    pub fn n_head_kv(&self, il: u64) -> u64 {
        if self.is_swa(il) {
            self.n_head_kv_swa
        } else {
            self.n_head_kv_full
        }
    }

    /// Whether layer `il` has an `attn_v` tensor.
    pub fn has_v(&self, il: u64) -> bool {
        (self.has_kv(il) || self.shared_kv_weights) && (self.is_swa(il) || !self.k_eq_v_full)
    }

    /// FFN width of layer `il`.
    pub fn n_ff(&self, il: u64) -> u64 {
        if self.double_wide_shared && !self.has_kv(il) {
            2 * self.n_ff
        } else {
            self.n_ff
        }
    }

    fn check(&self) {
        assert!(self.n_layer > 0 && self.swa_period > 0, "{self:?}");
        assert!((0..self.n_layer).any(|il| self.is_swa(il)), "llama.cpp's gemma4 needs a sliding layer: {self:?}");
        assert!(self.n_head.is_multiple_of(self.n_head_kv_swa), "{self:?}");
        assert!(self.n_head.is_multiple_of(self.n_head_kv_full), "{self:?}");
        assert!(self.n_rot_swa > 0 && self.n_rot_swa <= self.head_dim_swa, "{self:?}");
        assert!(self.rope_pairs_full <= self.head_dim_full / 2, "{self:?}");
        if self.n_kv_shared > 0 {
            let k = self.n_layer_kv();
            assert!(k >= 2, "llama.cpp asserts n_layer_kv_from_start >= 2: {self:?}");
            let shared = k..self.n_layer;
            if shared.clone().any(|il| self.is_swa(il)) {
                assert!(self.is_swa(k - 2), "shared sliding layers read layer {}, which must be sliding", k - 2);
            }
            if shared.clone().any(|il| !self.is_swa(il)) {
                assert!(!self.is_swa(k - 1), "shared global layers read layer {}, which must be global", k - 1);
            }
        }
        if let Some((n, used, _)) = self.experts {
            assert!(used > 0 && used <= n, "{self:?}");
        }
    }
}

fn rand(rng: &mut Rng, n: u64, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.f32_sym() * scale).collect()
}

/// Norm weights around 1 (so a wrong norm shows).
fn norm(rng: &mut Rng, n: u64) -> Vec<u8> {
    f32_bytes(&(0..n).map(|_| 1.0 + 0.3 * rng.f32_sym()).collect::<Vec<_>>())
}

/// A `gemma4` file of shape `s` with f32 random weights.
pub fn gemma4(s: &Gemma4Shape, seed: u64) -> Gguf {
    s.check();
    let arch = "gemma4";
    let n_vocab = tiny_vocab().0.len() as u64;
    let mut g = Gguf::new();
    arch_header(&mut g, arch, s.n_layer, s.n_embd, s.n_ff, s.n_head, s.n_head_kv_full);
    let k = |x: &str| format!("{arch}.{x}");
    let u32s = |v: Vec<u64>| Value::Array(vt::U32, v.into_iter().map(|x| Value::U32(x as u32)).collect());
    let swa: Vec<Value> = (0..s.n_layer).map(|il| Value::Bool(s.is_swa(il))).collect();
    g.set("general.name", Value::str("random gemma4"))
        .set("general.file_type", Value::U32(0))
        .set(&k("attention.layer_norm_rms_epsilon"), Value::F32(1e-6))
        .set(&k("attention.head_count_kv"), u32s((0..s.n_layer).map(|il| s.n_head_kv(il)).collect()))
        .set(&k("attention.key_length"), Value::U32(s.head_dim_full as u32))
        .set(&k("attention.value_length"), Value::U32(s.head_dim_full as u32))
        .set(&k("attention.key_length_swa"), Value::U32(s.head_dim_swa as u32))
        .set(&k("attention.value_length_swa"), Value::U32(s.head_dim_swa as u32))
        .set(&k("attention.sliding_window"), Value::U32(s.sliding_window as u32))
        .set(&k("attention.sliding_window_pattern"), Value::Array(vt::BOOL, swa))
        .set(&k("attention.shared_kv_layers"), Value::U32(s.n_kv_shared as u32))
        .set(&k("embedding_length_per_layer_input"), Value::U32(s.n_embd_per_layer as u32))
        .set(&k("rope.freq_base"), Value::F32(s.freq_base))
        .set(&k("rope.freq_base_swa"), Value::F32(s.freq_base_swa))
        .set(&k("rope.dimension_count"), Value::U32(s.head_dim_full as u32))
        .set(&k("rope.dimension_count_swa"), Value::U32(s.n_rot_swa as u32));
    if s.double_wide_shared {
        g.set(&k("feed_forward_length"), u32s((0..s.n_layer).map(|il| s.n_ff(il)).collect()));
    }
    if s.final_logit_softcapping != 0.0 {
        g.set(&k("final_logit_softcapping"), Value::F32(s.final_logit_softcapping));
    }
    if let Some((n, used, ff)) = s.experts {
        g.set(&k("expert_count"), Value::U32(n as u32))
            .set(&k("expert_used_count"), Value::U32(used as u32))
            .set(&k("expert_feed_forward_length"), Value::U32(ff as u32));
    }

    let mut rng = Rng::new(seed);
    let mat = |g: &mut Gguf, name: &str, dims: &[u64], scale: f32, rng: &mut Rng| {
        let n: u64 = dims.iter().product();
        g.tensor(name, tt::F32, dims, f32_bytes(&rand(rng, n, scale)));
    };
    let nrm = |g: &mut Gguf, name: &str, n: u64, rng: &mut Rng| {
        g.tensor(name, tt::F32, &[n], norm(rng, n));
    };
    let sc = |ne0: u64| 2.0 / (ne0 as f32).sqrt();
    let e = s.n_embd;
    let p = s.n_embd_per_layer;

    mat(&mut g, "token_embd.weight", &[e, n_vocab], s.embd_range, &mut rng);
    nrm(&mut g, "output_norm.weight", e, &mut rng);
    if !s.tied_output {
        mat(&mut g, "output.weight", &[e, n_vocab], sc(e), &mut rng);
    }
    if (0..s.n_layer).any(|il| !s.is_swa(il)) {
        let half = s.head_dim_full / 2;
        let f: Vec<f32> = (0..half).map(|i| if i < s.rope_pairs_full { 1.0 } else { 1e30 }).collect();
        g.tensor("rope_freqs.weight", tt::F32, &[half], f32_bytes(&f));
    }
    if p > 0 {
        mat(&mut g, "per_layer_token_embd.weight", &[p * s.n_layer, n_vocab], 1.0, &mut rng);
        mat(&mut g, "per_layer_model_proj.weight", &[e, p * s.n_layer], sc(e), &mut rng);
        nrm(&mut g, "per_layer_proj_norm.weight", p, &mut rng);
    }

    for il in 0..s.n_layer {
        let b = |x: &str| blk(il, x);
        let (hd, q, kv) = (s.head_dim(il), s.head_dim(il) * s.n_head, s.head_dim(il) * s.n_head_kv(il));
        nrm(&mut g, &b("attn_norm.weight"), e, &mut rng);
        mat(&mut g, &b("attn_q.weight"), &[e, q], sc(e), &mut rng);
        nrm(&mut g, &b("attn_q_norm.weight"), hd, &mut rng);
        if s.has_kv(il) || s.shared_kv_weights {
            mat(&mut g, &b("attn_k.weight"), &[e, kv], sc(e), &mut rng);
            nrm(&mut g, &b("attn_k_norm.weight"), hd, &mut rng);
        }
        if s.has_v(il) {
            mat(&mut g, &b("attn_v.weight"), &[e, kv], sc(e), &mut rng);
        }
        mat(&mut g, &b("attn_output.weight"), &[q, e], sc(q), &mut rng);
        nrm(&mut g, &b("post_attention_norm.weight"), e, &mut rng);

        let ff = s.n_ff(il);
        nrm(&mut g, &b("ffn_norm.weight"), e, &mut rng);
        mat(&mut g, &b("ffn_gate.weight"), &[e, ff], sc(e), &mut rng);
        mat(&mut g, &b("ffn_up.weight"), &[e, ff], sc(e), &mut rng);
        mat(&mut g, &b("ffn_down.weight"), &[ff, e], sc(ff), &mut rng);
        nrm(&mut g, &b("post_ffw_norm.weight"), e, &mut rng);
        if let Some((n, _, fe)) = s.experts {
            mat(&mut g, &b("ffn_gate_inp.weight"), &[e, n], sc(e), &mut rng);
            nrm(&mut g, &b("ffn_gate_inp.scale"), e, &mut rng);
            nrm(&mut g, &b("pre_ffw_norm_2.weight"), e, &mut rng);
            nrm(&mut g, &b("post_ffw_norm_1.weight"), e, &mut rng);
            nrm(&mut g, &b("post_ffw_norm_2.weight"), e, &mut rng);
            if s.fused_gate_up_exps {
                mat(&mut g, &b("ffn_gate_up_exps.weight"), &[e, 2 * fe, n], sc(e), &mut rng);
            } else {
                mat(&mut g, &b("ffn_gate_exps.weight"), &[e, fe, n], sc(e), &mut rng);
                mat(&mut g, &b("ffn_up_exps.weight"), &[e, fe, n], sc(e), &mut rng);
            }
            mat(&mut g, &b("ffn_down_exps.weight"), &[fe, e, n], sc(fe), &mut rng);
            nrm(&mut g, &b("ffn_down_exps.scale"), n, &mut rng);
        }
        if p > 0 {
            mat(&mut g, &b("inp_gate.weight"), &[e, p], sc(e), &mut rng);
            mat(&mut g, &b("proj.weight"), &[p, e], sc(p), &mut rng);
            nrm(&mut g, &b("post_norm.weight"), e, &mut rng);
        }
        if s.out_scale {
            nrm(&mut g, &b("layer_output_scale.weight"), 1, &mut rng);
        }
    }
    g
}

//! Hyper-parameters read from GGUF metadata (`<arch>.*` keys), validated.
use crate::gguf::{GgufError, GgufFile};

/// RoPE layouts (ggml's `mode`): adjacent pairs (llama), halves (neox), or
/// interleaved multi-section (Qwen3.5's, four positions per token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeKind {
    Norm = 0,
    Neox = 2,
    IMrope = 40,
}

/// Sliding-window attention: which layers see only the last `window`
/// positions, and the RoPE base those layers use.
#[derive(Clone, Debug, PartialEq)]
pub struct Swa {
    pub window: u32,
    /// Per layer: true for a sliding-window layer, false for a global one.
    pub layers: Vec<bool>,
    pub rope_base: f32,
    pub rope_scale: f32,
}

/// How an architecture reads its hyper-parameters.
#[derive(Clone, Copy, Debug)]
pub struct ArchHp {
    pub rope_kind: RopeKind,
    /// Reads `attention.sliding_window` and its layer pattern.
    pub swa: Option<SwaHp>,
    pub moe: MoeHp,
    /// Reads `attention.temperature_scale` (Llama 4's and Mistral 3's
    /// position-dependent scaling of q).
    pub attn_temp: bool,
    /// Has recurrent (gated delta net) layers beside attention: reads the
    /// `ssm.*` keys and the layer pattern.
    pub recurrent: bool,
    /// Layers of different shapes (Gemma 4): per-layer kv heads and FFN
    /// widths, the sliding-window layers' own head size and rotary
    /// dimensions (`key_length_swa`, `rope.dimension_count_swa`), the last
    /// `attention.shared_kv_layers` layers reading earlier layers' cache,
    /// and per-layer embeddings (`embedding_length_per_layer_input`).
    pub layer_shapes: bool,
}

/// The shape of one layer. Most models have one shape for every layer;
/// Gemma 4's sliding-window and global layers differ in head size, kv
/// heads and rotary dimensions, its shared-KV layers in FFN width.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerHp {
    pub head_dim: u32,
    pub n_head_kv: u32,
    pub n_ff: u32,
    pub n_rot: u32,
    /// The layer whose K/V cells this one attends over: itself, or an
    /// earlier layer of the same kind (Gemma 4's shared-KV layers compute
    /// no K/V of their own).
    pub kv_from: usize,
}

/// YaRN RoPE scaling (`rope.scaling.type = yarn`): frequencies blended
/// between interpolated and extrapolated per dimension.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    pub beta_fast: f32,
    pub beta_slow: f32,
}

/// Attention temperature: q of the token at position p is multiplied by
/// `1 + scale * ln(floor(p / floor_scale) + 1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnTemp {
    pub scale: f32,
    pub floor_scale: u32,
}

impl AttnTemp {
    pub fn factor(&self, pos: i32) -> f32 {
        ((pos as f32 / self.floor_scale as f32).floor() as f64 + 1.0).ln() as f32 * self.scale + 1.0
    }
}

impl ArchHp {
    /// Full attention, dense, no attention temperature.
    pub const fn new(rope_kind: RopeKind) -> ArchHp {
        ArchHp { rope_kind, swa: None, moe: MoeHp::Never, attn_temp: false, recurrent: false, layer_shapes: false }
    }
}

/// How an architecture's sliding-window layers are laid out and roped.
#[derive(Clone, Copy, Debug)]
pub struct SwaHp {
    /// Without a pattern key, every `period`-th layer is global.
    pub period: u32,
    /// Without `rope.freq_base_swa`: Some(base) and no scaling on window
    /// layers (Gemma 3), or None for the global base and scaling (gpt-oss).
    pub rope_base: Option<f32>,
}

/// Whether an architecture's feed-forward may be a mixture of experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoeHp {
    /// Dense only: `expert_count` is refused.
    Never,
    /// Experts when the file has `expert_count` > 0 (llama for Mixtral,
    /// mistral3); each expert as wide as `feed_forward_length`.
    IfPresent,
    /// Always experts; without `expert_feed_forward_length` each expert is
    /// `feed_forward_length / expert_used_count` wide (qwen3moe).
    Required,
}

/// A mixture-of-experts feed-forward: a router picks `n_used` of
/// `n_expert` expert networks per token and sums their outputs, weighted.
#[derive(Clone, Debug, PartialEq)]
pub struct Experts {
    pub n_expert: u32,
    pub n_used: u32,
    /// Width of each expert's feed-forward.
    pub n_ff: u32,
}

/// Recurrent layers (Qwen3.5's gated delta net): a causal convolution of
/// `d_conv` taps over the q/k/v channels, then per value head a state
/// matrix of `d_state`² updated by the gated delta rule. Each sequence
/// carries both states from token to token.
#[derive(Clone, Debug, PartialEq)]
pub struct Recurrent {
    pub d_conv: u32,
    /// Width of the values (value heads × their size).
    pub d_inner: u32,
    /// Size of a key head (and of a value head).
    pub d_state: u32,
    /// Key heads (`ssm.group_count`).
    pub n_k_heads: u32,
    /// Value heads (`ssm.time_step_rank`), a multiple of the key heads.
    pub n_v_heads: u32,
    /// Per layer: true for a recurrent layer, false for attention.
    pub layers: Vec<bool>,
}

impl Recurrent {
    /// Channels the convolution runs over: q, k and v.
    pub fn conv_channels(&self) -> u32 {
        self.d_inner + 2 * self.n_k_heads * self.d_state
    }

    pub fn head_v_dim(&self) -> u32 {
        self.d_inner / self.n_v_heads
    }

    /// Floats of one sequence's convolution state in one layer.
    pub fn n_embd_r(&self) -> usize {
        (self.d_conv as usize - 1) * self.conv_channels() as usize
    }

    /// Floats of one sequence's delta-rule state in one layer.
    pub fn n_embd_s(&self) -> usize {
        self.d_state as usize * self.d_inner as usize
    }

    pub fn n_recurrent(&self) -> usize {
        self.layers.iter().filter(|&&r| r).count()
    }
}

#[derive(Clone, Debug)]
pub struct HParams {
    pub arch: String,
    pub n_vocab: u32,
    pub n_ctx_train: u32,
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub head_dim: u32,
    pub n_ff: u32,
    pub rms_eps: f32,
    pub n_rot: u32,
    pub rope_base: f32,
    pub rope_scale: f32,
    pub rope_kind: RopeKind,
    /// The context RoPE scaling was trained for (`rope.scaling.original_context_length`).
    pub n_ctx_orig: u32,
    /// Multiplies RoPE's cos and sin (`rope.scaling.attn_factor`, Phi-3
    /// long contexts; with YaRN, its magnitude correction as llama.cpp
    /// computes it, net of the factor ggml's YaRN kernel applies itself).
    pub rope_attn_factor: f32,
    pub yarn: Option<Yarn>,
    pub attn_temp: Option<AttnTemp>,
    pub swa: Option<Swa>,
    /// Mixture of experts in every layer's feed-forward.
    pub experts: Option<Experts>,
    /// Width of the shared expert beside the routed ones
    /// (`expert_shared_feed_forward_length`), when the file gives it.
    pub n_ff_shared: Option<u32>,
    /// `final_logit_softcapping`: logits = cap * tanh(logits / cap).
    pub final_softcap: Option<f32>,
    /// Positions per section of multi-section RoPE (`rope.dimension_sections`).
    pub rope_sections: Option<[i32; 4]>,
    /// Recurrent layers beside the attention ones (hybrid models).
    pub recurrent: Option<Recurrent>,
    /// Per layer: its shape (the scalar fields above are layer 0's, or the
    /// model-wide value where every layer has one).
    pub layers: Vec<LayerHp>,
    /// Width of each layer's slice of the per-layer embeddings (Gemma 4's
    /// `embedding_length_per_layer_input`); 0: none.
    pub n_embd_per_layer: u32,
    /// The architecture's layers differ in shape (`ArchHp::layer_shapes`);
    /// its sliding-window layers then take no RoPE factors.
    pub layer_shapes: bool,
}

impl HParams {
    /// Layer `il`'s shape.
    pub fn layer(&self, il: usize) -> &LayerHp {
        &self.layers[il]
    }

    /// K (and V) values per token of layer `il`: its head size × kv heads.
    pub fn n_embd_k_gqa(&self, il: usize) -> u32 {
        let l = self.layer(il);
        l.head_dim * l.n_head_kv
    }

    /// The widest layer's K (and V) values per token.
    pub fn n_embd_k_gqa_max(&self) -> u32 {
        (0..self.layers.len()).map(|il| self.n_embd_k_gqa(il)).max().unwrap_or(0)
    }

    /// Whether every attention layer has the same head size (a quantized
    /// cache's Hadamard rotation needs one).
    pub fn uniform_heads(&self) -> bool {
        self.layers.iter().all(|l| l.head_dim == self.layers[0].head_dim)
    }

    /// Whether layer `il` computes and stores its own K/V (false for
    /// recurrent layers and for layers reading an earlier layer's cache).
    pub fn owns_kv(&self, il: usize) -> bool {
        !self.is_recurrent(il) && self.layer(il).kv_from == il
    }

    /// Whether layer `il` is recurrent (holds no K/V cells).
    pub fn is_recurrent(&self, il: usize) -> bool {
        self.recurrent.as_ref().is_some_and(|r| r.layers.get(il).copied().unwrap_or(false))
    }

    /// Whether layer `il` attends through a sliding window.
    pub fn is_swa(&self, il: usize) -> bool {
        self.swa.as_ref().is_some_and(|s| s.layers.get(il).copied().unwrap_or(false))
    }

    pub fn from_gguf(f: &GgufFile, ah: ArchHp) -> Result<HParams, GgufError> {
        let rope_kind = ah.rope_kind;
        let arch = f.architecture()?.to_string();
        let req_u32 = |k: &str| -> Result<u32, GgufError> {
            let key = format!("{arch}.{k}");
            f.get_u32(&key)?.ok_or_else(|| GgufError::Metadata {
                path: f.path.clone(),
                key,
                msg: "missing (required)".into(),
            })
        };
        let bad = |k: &str, msg: String| GgufError::Metadata { path: f.path.clone(), key: format!("{arch}.{k}"), msg };
        let n_layer = req_u32("block_count")?;
        if n_layer == 0 || n_layer > 4096 {
            return Err(bad("block_count", format!("{n_layer} layers is out of range (1..=4096)")));
        }
        let n_embd = req_u32("embedding_length")?;
        let n_head = per_layer_uniform(f, &format!("{arch}.attention.head_count"), n_layer)?
            .ok_or_else(|| bad("attention.head_count", "missing (required)".into()))?;
        let per_layer = |k: &str| -> Result<Option<Vec<u32>>, GgufError> {
            let key = format!("{arch}.{k}");
            match ah.layer_shapes {
                true => f.get_u32_per_layer(&key, n_layer as usize),
                false => Ok(per_layer_uniform(f, &key, n_layer)?.map(|v| vec![v; n_layer as usize])),
            }
        };
        let n_head_kv_l = per_layer("attention.head_count_kv")?.unwrap_or_else(|| vec![n_head; n_layer as usize]);
        let n_head_kv = n_head_kv_l[0];
        let expert_ff = f.get_u32(&format!("{arch}.expert_feed_forward_length"))?;
        let n_ff_l = match per_layer("feed_forward_length")? {
            Some(n) => n,
            None if ah.moe == MoeHp::Required && expert_ff.is_some() => vec![0; n_layer as usize],
            None => return Err(bad("feed_forward_length", "missing (required)".into())),
        };
        let n_ff = n_ff_l.iter().copied().max().unwrap_or(0);
        let experts = read_experts(f, &arch, ah.moe, n_ff, expert_ff)?;
        if n_embd == 0 || n_head == 0 || n_head_kv_l.contains(&0) || (n_ff_l.contains(&0) && experts.is_none()) {
            return Err(bad(
                "embedding_length",
                "embedding length, head counts and feed-forward length must be positive".into(),
            ));
        }
        if let Some(&nkv) = n_head_kv_l.iter().find(|&&nkv| n_head % nkv != 0) {
            return Err(bad("attention.head_count_kv", format!("{n_head} heads are not a multiple of {nkv} kv heads")));
        }
        let head_dim = match f.get_u32(&format!("{arch}.attention.key_length"))? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => return Err(bad("embedding_length", format!("{n_embd} is not divisible by {n_head} heads"))),
        };
        if head_dim == 0 || head_dim > 1024 {
            return Err(bad("attention.key_length", format!("head size {head_dim} is out of range")));
        }
        let n_rot = f.get_u32(&format!("{arch}.rope.dimension_count"))?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(bad(
                "rope.dimension_count",
                format!("{n_rot} must be even and at most the head size {head_dim}"),
            ));
        }
        if let Some(v) = f.get_u32(&format!("{arch}.attention.value_length"))?.filter(|&v| v != head_dim) {
            return Err(bad("attention.value_length", format!("{v} differs from the key length {head_dim}")));
        }
        let n_vocab = match f.get_u32(&format!("{arch}.vocab_size"))? {
            Some(v) => v,
            None => f.get_str_array("tokenizer.ggml.tokens")?.map(|t| t.len() as u32).unwrap_or(0),
        };
        let n_ctx_train = f.get_u32(&format!("{arch}.context_length"))?.unwrap_or(2048).max(1);
        let rms_eps = f.get_f32(&format!("{arch}.attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5);
        let rope_base = f.get_f32(&format!("{arch}.rope.freq_base"))?.unwrap_or(10000.0);
        let is_yarn = match f.get_str(&format!("{arch}.rope.scaling.type"))? {
            // Llama-3 scaling comes as `rope_freqs.weight` and Phi-3's as
            // long/short factor tensors; the type key says linear or nothing.
            None | Some("none") | Some("linear") | Some("longrope") => false,
            Some("yarn") => true,
            Some(other) => {
                return Err(bad(
                    "rope.scaling.type",
                    format!("'{other}' is not supported yet (supported: none, linear, longrope, yarn)"),
                ));
            }
        };
        let rope_scale = match f.get_f32(&format!("{arch}.rope.scaling.factor"))? {
            Some(s) if s > 0.0 => 1.0 / s,
            _ => 1.0,
        };
        if rope_base.is_nan() || rope_base <= 0.0 {
            return Err(bad("rope.freq_base", format!("{rope_base} must be positive")));
        }
        let n_ctx_orig =
            f.get_u32(&format!("{arch}.rope.scaling.original_context_length"))?.unwrap_or(n_ctx_train).max(1);
        let file_attn_factor = f.get_f32(&format!("{arch}.rope.scaling.attn_factor"))?.unwrap_or(1.0);
        if !(file_attn_factor > 0.0 && file_attn_factor.is_finite()) {
            return Err(bad("rope.scaling.attn_factor", format!("{file_attn_factor} must be positive")));
        }
        let (yarn, rope_attn_factor) = if is_yarn {
            let get = |k: &str, d: f32| f.get_f32(&format!("{arch}.rope.scaling.{k}")).map(|v| v.unwrap_or(d));
            let y = Yarn { beta_fast: get("yarn_beta_fast", 32.0)?, beta_slow: get("yarn_beta_slow", 1.0)? };
            let log_mul = get("yarn_log_multiplier", 0.0)?;
            (Some(y), yarn_attn_factor(1.0 / rope_scale, log_mul) * file_attn_factor)
        } else {
            (None, file_attn_factor)
        };
        let attn_temp = match f.get_f32(&format!("{arch}.attention.temperature_scale"))? {
            Some(scale) if ah.attn_temp && scale != 0.0 => Some(AttnTemp { scale, floor_scale: n_ctx_orig }),
            _ => None,
        };
        let swa = match ah.swa {
            Some(sh) => read_swa(f, &arch, n_layer, sh, (rope_base, rope_scale))?,
            None => None,
        };
        let final_softcap = f.get_f32(&format!("{arch}.final_logit_softcapping"))?.filter(|&c| c != 0.0);
        if let Some(c) = final_softcap.filter(|c| !(*c > 0.0 && c.is_finite())) {
            return Err(bad("final_logit_softcapping", format!("{c} must be positive")));
        }
        let rope_sections = match f.get_bool_or_int_array(&format!("{arch}.rope.dimension_sections"))? {
            Some(v) if v.len() <= 4 => {
                let mut out = [0i32; 4];
                for (o, x) in out.iter_mut().zip(&v) {
                    *o = i32::try_from(*x)
                        .map_err(|_| bad("rope.dimension_sections", format!("{x} is out of range")))?;
                }
                Some(out)
            }
            Some(v) => return Err(bad("rope.dimension_sections", format!("has {} entries, at most 4", v.len()))),
            None if rope_kind == RopeKind::IMrope => {
                return Err(bad("rope.dimension_sections", "missing (required)".into()));
            }
            None => None,
        };
        let recurrent = if ah.recurrent { Some(read_recurrent(f, &arch, n_layer)?) } else { None };
        let mut layers: Vec<LayerHp> = (0..n_layer as usize)
            .map(|il| LayerHp { head_dim, n_head_kv: n_head_kv_l[il], n_ff: n_ff_l[il], n_rot, kv_from: il })
            .collect();
        let n_embd_per_layer = match ah.layer_shapes {
            true => read_layer_shapes(f, &arch, (head_dim, n_rot), swa.as_ref(), &mut layers)?,
            false => 0,
        };
        let n_ff_shared = f.get_u32(&format!("{arch}.expert_shared_feed_forward_length"))?.filter(|&n| n > 0);
        Ok(HParams {
            arch,
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            rms_eps,
            n_rot,
            rope_base,
            rope_scale,
            rope_kind,
            n_ctx_orig,
            rope_attn_factor,
            yarn,
            attn_temp,
            swa,
            experts,
            n_ff_shared,
            final_softcap,
            rope_sections,
            recurrent,
            layers,
            n_embd_per_layer,
            layer_shapes: ah.layer_shapes,
        })
    }
}

/// Gemma 4's layer shapes: the sliding-window layers' head size
/// (`key_length_swa`, required) and rotary dimensions
/// (`rope.dimension_count_swa`, default the global one), and the shared-KV
/// layers (`attention.shared_kv_layers`): of the last layers, each
/// sliding-window one reads the cache of the last layer with its own
/// sliding layer before them, each global one that of the last own global
/// layer (llama.cpp's rule: layers n_layer_kv - 2 and n_layer_kv - 1).
/// Returns the per-layer embedding width.
fn read_layer_shapes(
    f: &GgufFile,
    arch: &str,
    (head_dim, n_rot): (u32, u32),
    swa: Option<&Swa>,
    layers: &mut [LayerHp],
) -> Result<u32, GgufError> {
    let bad = |k: &str, msg: String| GgufError::Metadata { path: f.path.clone(), key: format!("{arch}.{k}"), msg };
    let n_layer = layers.len();
    let is_swa = |il: usize| swa.is_some_and(|s| s.layers[il]);
    let head_swa = f
        .get_u32(&format!("{arch}.attention.key_length_swa"))?
        .ok_or_else(|| bad("attention.key_length_swa", "missing (required)".into()))?;
    if head_swa == 0 || head_swa > 1024 {
        return Err(bad("attention.key_length_swa", format!("head size {head_swa} is out of range")));
    }
    if let Some(v) = f.get_u32(&format!("{arch}.attention.value_length_swa"))?.filter(|&v| v != head_swa) {
        return Err(bad("attention.value_length_swa", format!("{v} differs from the key length {head_swa}")));
    }
    let rot_swa = f.get_u32(&format!("{arch}.rope.dimension_count_swa"))?.unwrap_or(n_rot);
    if rot_swa > head_swa || rot_swa % 2 != 0 {
        return Err(bad(
            "rope.dimension_count_swa",
            format!("{rot_swa} must be even and at most the sliding-window head size {head_swa}"),
        ));
    }
    let n_shared = f.get_u32(&format!("{arch}.attention.shared_kv_layers"))?.unwrap_or(0) as usize;
    let n_layer_kv = n_layer.checked_sub(n_shared).filter(|&n| n_shared == 0 || n >= 2).ok_or_else(|| {
        bad(
            "attention.shared_kv_layers",
            format!("{n_shared} shared layers leave fewer than 2 of {n_layer} with a cache"),
        )
    })?;
    for (il, l) in layers.iter_mut().enumerate() {
        (l.head_dim, l.n_rot) = if is_swa(il) { (head_swa, rot_swa) } else { (head_dim, n_rot) };
    }
    for il in n_layer_kv..n_layer {
        let from = if is_swa(il) { n_layer_kv - 2 } else { n_layer_kv - 1 };
        if is_swa(from) != is_swa(il) || layers[from].n_head_kv != layers[il].n_head_kv {
            return Err(bad(
                "attention.shared_kv_layers",
                format!(
                    "layer {il} would read layer {from}'s cache, which is of another kind or kv head count \
                     (the last own layers must be sliding-window, then global)"
                ),
            ));
        }
        layers[il].kv_from = from;
    }
    let per_layer = f
        .get_u32(&format!("{arch}.embedding_length_per_layer_input"))?
        .ok_or_else(|| bad("embedding_length_per_layer_input", "missing (required; 0 for none)".into()))?;
    Ok(per_layer)
}

/// `attention.sliding_window` (absent or 0: every layer is global) and the
/// layer pattern: `sliding_window_pattern` as one number N (layers
/// il % N < N - 1 slide) or one entry per layer (non-zero slides).
fn read_swa(
    f: &GgufFile,
    arch: &str,
    n_layer: u32,
    sh: SwaHp,
    (global_base, global_scale): (f32, f32),
) -> Result<Option<Swa>, GgufError> {
    let Some(window) = f.get_u32(&format!("{arch}.attention.sliding_window"))?.filter(|&w| w > 0) else {
        return Ok(None);
    };
    let key = format!("{arch}.attention.sliding_window_pattern");
    let layers = match f.get_bool_or_int_array(&key)? {
        Some(v) if v.len() == n_layer as usize => v.into_iter().map(|x| x != 0).collect(),
        Some(v) => {
            return Err(GgufError::Metadata {
                path: f.path.clone(),
                key,
                msg: format!("has {} entries, expected one per layer ({n_layer})", v.len()),
            })
        }
        None => {
            let n = f.get_u32(&key)?.unwrap_or(sh.period);
            (0..n_layer).map(|il| n == 0 || il % n < n - 1).collect()
        }
    };
    let (default_base, rope_scale) = match sh.rope_base {
        Some(b) => (b, 1.0),
        None => (global_base, global_scale),
    };
    let rope_base = f.get_f32(&format!("{arch}.rope.freq_base_swa"))?.unwrap_or(default_base);
    if rope_base.is_nan() || rope_base <= 0.0 {
        return Err(GgufError::Metadata {
            path: f.path.clone(),
            key: format!("{arch}.rope.freq_base_swa"),
            msg: format!("{rope_base} must be positive"),
        });
    }
    Ok(Some(Swa { window, layers, rope_base, rope_scale }))
}

/// llama.cpp's YaRN attention factor for a context `factor` times the
/// trained one: the magnitude correction 0.1 ln(factor) + 1 (or its ratio
/// to the one scaled by `yarn_log_multiplier`), divided by the correction
/// ggml's YaRN kernel multiplies in itself.
fn yarn_attn_factor(factor: f32, log_mul: f32) -> f32 {
    let mscale = |m: f32| if factor <= 1.0 { 1.0 } else { 0.1 * m * factor.ln() + 1.0 };
    let wanted = if log_mul != 0.0 { mscale(1.0) / mscale(log_mul) } else { mscale(1.0) };
    wanted / (1.0 + 0.1 * factor.ln())
}

/// The `ssm.*` keys of a hybrid model and which layers are recurrent:
/// `attention.recurrent_layers` (one entry per layer), else every layer
/// but each `full_attention_interval`-th (default 4).
fn read_recurrent(f: &GgufFile, arch: &str, n_layer: u32) -> Result<Recurrent, GgufError> {
    let bad = |k: &str, msg: String| GgufError::Metadata { path: f.path.clone(), key: format!("{arch}.{k}"), msg };
    let req = |k: &str| -> Result<u32, GgufError> {
        f.get_u32(&format!("{arch}.{k}"))?.ok_or_else(|| bad(k, "missing (required)".into()))
    };
    let r = Recurrent {
        d_conv: req("ssm.conv_kernel")?,
        d_inner: req("ssm.inner_size")?,
        d_state: req("ssm.state_size")?,
        n_v_heads: req("ssm.time_step_rank")?,
        n_k_heads: req("ssm.group_count")?,
        layers: Vec::new(),
    };
    if !(2..=16).contains(&r.d_conv) {
        return Err(bad("ssm.conv_kernel", format!("{} taps is out of range (2..=16)", r.d_conv)));
    }
    if r.d_state == 0 || r.d_state > 1024 {
        return Err(bad("ssm.state_size", format!("{} is out of range (1..=1024)", r.d_state)));
    }
    if r.n_k_heads == 0 || r.n_v_heads == 0 || !r.n_v_heads.is_multiple_of(r.n_k_heads) {
        return Err(bad(
            "ssm.time_step_rank",
            format!("{} value heads must be a positive multiple of {} key heads", r.n_v_heads, r.n_k_heads),
        ));
    }
    if r.d_inner != r.n_v_heads * r.d_state {
        return Err(bad(
            "ssm.inner_size",
            format!("{} is not {} value heads of {}", r.d_inner, r.n_v_heads, r.d_state),
        ));
    }
    let key = format!("{arch}.attention.recurrent_layers");
    let layers: Vec<bool> = match f.get_bool_or_int_array(&key)? {
        Some(v) if v.len() == n_layer as usize => v.into_iter().map(|x| x != 0).collect(),
        Some(v) => {
            return Err(bad("attention.recurrent_layers", format!("has {} entries, expected {n_layer}", v.len())))
        }
        None => {
            let n = f.get_u32(&format!("{arch}.full_attention_interval"))?.unwrap_or(4);
            if n == 0 {
                return Err(bad("full_attention_interval", "must be positive".into()));
            }
            (0..n_layer).map(|il| (il + 1) % n != 0).collect()
        }
    };
    Ok(Recurrent { layers, ..r })
}

/// `expert_count` and `expert_used_count`, as the architecture allows.
fn read_experts(
    f: &GgufFile,
    arch: &str,
    moe: MoeHp,
    n_ff: u32,
    expert_ff: Option<u32>,
) -> Result<Option<Experts>, GgufError> {
    let bad = |k: &str, msg: String| GgufError::Metadata { path: f.path.clone(), key: format!("{arch}.{k}"), msg };
    let n_expert = f.get_u32(&format!("{arch}.expert_count"))?.unwrap_or(0);
    match (moe, n_expert) {
        (MoeHp::Never, 0) | (MoeHp::IfPresent, 0) => return Ok(None),
        (MoeHp::Never, _) => {
            return Err(bad("expert_count", format!("{n_expert} experts: the {arch} architecture has none")));
        }
        (MoeHp::Required, 0) => return Err(bad("expert_count", "missing or 0 (required)".into())),
        _ => {}
    }
    if n_expert > 512 {
        return Err(bad("expert_count", format!("{n_expert} experts is out of range (1..=512)")));
    }
    let n_used = f.get_u32(&format!("{arch}.expert_used_count"))?.unwrap_or(0);
    if n_used == 0 || n_used > n_expert {
        return Err(bad("expert_used_count", format!("{n_used} must be between 1 and the {n_expert} experts")));
    }
    let n_ff = match expert_ff {
        Some(n) => n,
        None if moe == MoeHp::Required => n_ff / n_used,
        None => n_ff,
    };
    if n_ff == 0 {
        return Err(bad("expert_feed_forward_length", "an expert's width must be positive".into()));
    }
    Ok(Some(Experts { n_expert, n_used, n_ff }))
}

/// A per-layer key whose value must be the same for every layer (mixed
/// layer shapes belong to architectures that need their own recipe).
fn per_layer_uniform(f: &GgufFile, key: &str, n_layer: u32) -> Result<Option<u32>, GgufError> {
    let Some(v) = f.get_u32_per_layer(key, n_layer as usize)? else { return Ok(None) };
    if v.iter().any(|&x| x != v[0]) {
        return Err(GgufError::Metadata {
            path: f.path.clone(),
            key: key.into(),
            msg: "differs between layers (not supported for this architecture)".into(),
        });
    }
    Ok(v.first().copied())
}

//! Hyper-parameters read from GGUF metadata (`<arch>.*` keys), validated.
use crate::gguf::{GgufError, GgufFile};

/// RoPE layouts (ggml's `mode`): adjacent pairs (llama) or halves (neox).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeKind {
    Norm = 0,
    Neox = 2,
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
}

impl HParams {
    pub fn n_embd_k_gqa(&self) -> u32 {
        self.head_dim * self.n_head_kv
    }

    pub fn from_gguf(f: &GgufFile, rope_kind: RopeKind) -> Result<HParams, GgufError> {
        let arch = f.architecture()?.to_string();
        let req_u32 = |k: &str| -> Result<u32, GgufError> {
            let key = format!("{arch}.{k}");
            f.get_u32(&key)?.ok_or_else(|| GgufError::Metadata { path: f.path.clone(), key, msg: "missing (required)".into() })
        };
        let bad = |k: &str, msg: String| GgufError::Metadata { path: f.path.clone(), key: format!("{arch}.{k}"), msg };
        let n_layer = req_u32("block_count")?;
        if n_layer == 0 || n_layer > 4096 {
            return Err(bad("block_count", format!("{n_layer} layers is out of range (1..=4096)")));
        }
        let n_embd = req_u32("embedding_length")?;
        let n_head = per_layer_uniform(f, &format!("{arch}.attention.head_count"), n_layer)?
            .ok_or_else(|| bad("attention.head_count", "missing (required)".into()))?;
        let n_head_kv = per_layer_uniform(f, &format!("{arch}.attention.head_count_kv"), n_layer)?.unwrap_or(n_head);
        let n_ff = per_layer_uniform(f, &format!("{arch}.feed_forward_length"), n_layer)?
            .ok_or_else(|| bad("feed_forward_length", "missing (required)".into()))?;
        if n_embd == 0 || n_head == 0 || n_head_kv == 0 || n_ff == 0 {
            return Err(bad("embedding_length", "embedding length, head counts and feed-forward length must be positive".into()));
        }
        if n_head % n_head_kv != 0 {
            return Err(bad("attention.head_count_kv", format!("{n_head} heads are not a multiple of {n_head_kv} kv heads")));
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
            return Err(bad("rope.dimension_count", format!("{n_rot} must be even and at most the head size {head_dim}")));
        }
        let n_vocab = match f.get_u32(&format!("{arch}.vocab_size"))? {
            Some(v) => v,
            None => f.get_str_array("tokenizer.ggml.tokens")?.map(|t| t.len() as u32).unwrap_or(0),
        };
        let n_ctx_train = f.get_u32(&format!("{arch}.context_length"))?.unwrap_or(2048).max(1);
        let rms_eps = f.get_f32(&format!("{arch}.attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5);
        let rope_base = f.get_f32(&format!("{arch}.rope.freq_base"))?.unwrap_or(10000.0);
        match f.get_str(&format!("{arch}.rope.scaling.type"))? {
            None | Some("none") | Some("linear") => {}
            Some(other) => {
                return Err(bad("rope.scaling.type", format!("'{other}' is not supported yet (supported: none, linear)")));
            }
        }
        let rope_scale = match f.get_f32(&format!("{arch}.rope.scaling.factor"))? {
            Some(s) if s > 0.0 => 1.0 / s,
            _ => 1.0,
        };
        if !(rope_base > 0.0) {
            return Err(bad("rope.freq_base", format!("{rope_base} must be positive")));
        }
        Ok(HParams {
            arch, n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, rms_eps, n_rot,
            rope_base, rope_scale, rope_kind,
        })
    }
}

/// A per-layer key whose value must be the same for every layer (mixed
/// layer shapes belong to architectures that need their own recipe).
fn per_layer_uniform(f: &GgufFile, key: &str, n_layer: u32) -> Result<Option<u32>, GgufError> {
    let Some(v) = f.get_u32_per_layer(key, n_layer as usize)? else { return Ok(None) };
    if v.iter().any(|&x| x != v[0]) {
        return Err(GgufError::Metadata { path: f.path.clone(), key: key.into(), msg: "differs between layers (not supported for this architecture)".into() });
    }
    Ok(v.first().copied())
}

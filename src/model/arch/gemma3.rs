//! gemma3 (Gemma 3 text models): embeddings scaled by sqrt(n_embd), q/k
//! norms, RMSNorm after attention and after the feed-forward, GeGLU, NeoX
//! RoPE, and sliding-window attention on five layers of every six (their
//! RoPE base is `rope.freq_base_swa`, 10000 by default). Soft-capping of
//! the logits when the file asks for it.
use crate::model::decoder::{Ffn, Recipe};
use crate::model::hparams::{ArchHp, RopeKind, SwaHp};

pub const HP: ArchHp =
    ArchHp { swa: Some(SwaHp { period: 6, rope_base: Some(10000.0) }), ..ArchHp::new(RopeKind::Neox) };

pub const RECIPE: Recipe =
    Recipe { embd_scale: true, qk_norm: true, q_scale: true, fused_qkv: false, ffn: Ffn::GeGlu, post_norms: true };

//! qwen3: qwen2 without the biases and with an RMSNorm over each head of
//! q and k before RoPE.
use crate::model::decoder::{Ffn, Recipe};
use crate::model::hparams::{ArchHp, RopeKind};

pub const HP: ArchHp = ArchHp::new(RopeKind::Neox);

pub const RECIPE: Recipe =
    Recipe { embd_scale: false, qk_norm: true, q_scale: false, fused_qkv: false, ffn: Ffn::SwiGlu, post_norms: false };

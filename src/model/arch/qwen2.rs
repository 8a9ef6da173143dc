//! qwen2 (Qwen2, Qwen2.5): llama with biases on q, k and v (optional in
//! every recipe) and RoPE on the two halves of each head (NeoX layout).
use crate::model::decoder::{Ffn, Recipe};
use crate::model::hparams::{ArchHp, RopeKind};

pub const HP: ArchHp = ArchHp::new(RopeKind::Neox);

pub const RECIPE: Recipe =
    Recipe { embd_scale: false, qk_norm: false, q_scale: false, fused_qkv: false, ffn: Ffn::SwiGlu, post_norms: false };

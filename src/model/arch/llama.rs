//! llama (SmolLM2, Llama 2 and 3, Mistral): RMSNorm, RoPE on adjacent
//! pairs, grouped-query attention, SwiGLU, tied or separate output. Llama
//! 3's RoPE scaling arrives as `rope_freqs.weight`, the per-frequency
//! factors the decoder hands to RoPE.
use crate::model::decoder::{Ffn, Recipe};
use crate::model::hparams::{ArchHp, MoeHp, RopeKind};

pub const HP: ArchHp = ArchHp { moe: MoeHp::IfPresent, ..ArchHp::new(RopeKind::Norm) };

pub const RECIPE: Recipe =
    Recipe { embd_scale: false, qk_norm: false, q_scale: false, fused_qkv: false, ffn: Ffn::SwiGlu, post_norms: false };

//! qwen3moe (Qwen3-30B-A3B, Qwen3-Coder-30B-A3B, Qwen3-235B-A22B): qwen3's
//! attention (q/k norms, NeoX RoPE) with a mixture of experts in every
//! layer (softmax router, top-k renormalised, SwiGLU experts).
use crate::model::hparams::{ArchHp, MoeHp, RopeKind};

pub const HP: ArchHp = ArchHp { moe: MoeHp::Required, ..ArchHp::new(RopeKind::Neox) };

pub use super::qwen3::RECIPE;

//! mistral3 (Ministral 3, Mistral Small 3.x text, Devstral Small 2): the
//! llama decoder with YaRN RoPE scaling (read for every architecture), an
//! optional attention temperature (q scaled by position, as Llama 4 does,
//! `attention.temperature_scale` over `rope.scaling.original_context_length`
//! positions), and experts when the file has them.
use crate::model::hparams::{ArchHp, MoeHp, RopeKind};

pub const HP: ArchHp = ArchHp { moe: MoeHp::IfPresent, attn_temp: true, ..ArchHp::new(RopeKind::Norm) };

pub use super::llama::RECIPE;

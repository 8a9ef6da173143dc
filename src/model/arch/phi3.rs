//! phi3 (Phi-3, Phi-3.5, Phi-4-mini): one fused QKV weight, one fused
//! gate-and-up weight, NeoX RoPE with Phi-3's long/short frequency factors
//! (and their attention factor), q scaled before attention. llama.cpp runs
//! Phi-3's sliding window as full attention, and so does decache.
use crate::model::decoder::{Ffn, Recipe};
use crate::model::hparams::{ArchHp, RopeKind};

pub const HP: ArchHp = ArchHp::new(RopeKind::Neox);

pub const RECIPE: Recipe = Recipe {
    embd_scale: false,
    qk_norm: false,
    q_scale: true,
    fused_qkv: true,
    ffn: Ffn::SwiGluFused,
    post_norms: false,
};

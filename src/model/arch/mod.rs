//! One short recipe per architecture over the shared decoder (`decoder.rs`),
//! or, where the layer differs in kind (gpt-oss), a small builder of its own
//! over the same blocks (`decoder`'s attention, embeddings and head, `moe`).
pub mod gemma3;
pub mod gemma4;
pub mod gpt_oss;
pub mod llama;
pub mod mistral3;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod qwen35;
pub mod qwen3moe;

use super::decoder::{self, Recipe};
use super::graph::StepGraph;
use super::hparams::{ArchHp, HParams};
use super::plan::TensorReq;
use crate::ggml::Tensor;

/// The architectures decache runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Qwen3Moe,
    Phi3,
    Gemma3,
    Gemma4,
    Mistral3,
    GptOss,
    Qwen35,
    Qwen35Moe,
}

impl Arch {
    pub const ALL: [Arch; 11] = [
        Arch::Llama,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::Qwen3Moe,
        Arch::Phi3,
        Arch::Gemma3,
        Arch::Gemma4,
        Arch::Mistral3,
        Arch::GptOss,
        Arch::Qwen35,
        Arch::Qwen35Moe,
    ];

    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The supported names, for error messages.
    pub fn supported() -> String {
        Arch::ALL.map(Arch::name).join(", ")
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Phi3 => "phi3",
            Arch::Gemma3 => "gemma3",
            Arch::Gemma4 => "gemma4",
            Arch::Mistral3 => "mistral3",
            Arch::GptOss => "gpt-oss",
            Arch::Qwen35 => "qwen35",
            Arch::Qwen35Moe => "qwen35moe",
        }
    }

    /// How its hyper-parameters are read (RoPE layout, sliding window).
    pub fn hparams(self) -> ArchHp {
        match self {
            Arch::Llama => llama::HP,
            Arch::Qwen2 => qwen2::HP,
            Arch::Qwen3 => qwen3::HP,
            Arch::Qwen3Moe => qwen3moe::HP,
            Arch::Phi3 => phi3::HP,
            Arch::Gemma3 => gemma3::HP,
            Arch::Gemma4 => gemma4::HP,
            Arch::Mistral3 => mistral3::HP,
            Arch::GptOss => gpt_oss::HP,
            Arch::Qwen35 => qwen35::HP,
            Arch::Qwen35Moe => qwen35::HP_MOE,
        }
    }

    /// The shared decoder's variant, for the architectures that are one;
    /// None for those with a builder of their own (over the same blocks).
    fn recipe(self) -> Option<Recipe> {
        match self {
            Arch::Llama => Some(llama::RECIPE),
            Arch::Qwen2 => Some(qwen2::RECIPE),
            Arch::Qwen3 => Some(qwen3::RECIPE),
            Arch::Qwen3Moe => Some(qwen3moe::RECIPE),
            Arch::Phi3 => Some(phi3::RECIPE),
            Arch::Gemma3 => Some(gemma3::RECIPE),
            Arch::Mistral3 => Some(mistral3::RECIPE),
            Arch::Gemma4 | Arch::GptOss | Arch::Qwen35 | Arch::Qwen35Moe => None,
        }
    }

    /// Every tensor the file must (or may) hold, with exact shapes.
    pub fn tensors(self, hp: &HParams) -> Vec<TensorReq> {
        match (self, self.recipe()) {
            (_, Some(r)) => decoder::tensors(hp, &r),
            (Arch::GptOss, None) => gpt_oss::tensors(hp),
            (Arch::Gemma4, None) => gemma4::tensors(hp),
            (Arch::Qwen35 | Arch::Qwen35Moe, None) => qwen35::tensors(hp),
            (a, None) => unreachable!("{} has a recipe or a builder", a.name()),
        }
    }

    /// What the tensor list alone cannot say (one of two optional layouts
    /// must be there): `has` tells whether the file holds a tensor.
    pub fn check_tensors(self, hp: &HParams, has: &dyn Fn(&str) -> bool) -> Result<(), String> {
        match self {
            Arch::Qwen35 | Arch::Qwen35Moe => qwen35::check(hp, has),
            Arch::Gemma4 => gemma4::check(hp, has),
            _ => Ok(()),
        }
    }

    /// Build the forward pass of one micro-batch; returns the logits.
    pub fn build<'c>(self, g: &mut StepGraph<'c>) -> Tensor<'c> {
        match (self, self.recipe()) {
            (_, Some(r)) => decoder::build(g, &r),
            (Arch::GptOss, None) => gpt_oss::build(g),
            (Arch::Gemma4, None) => gemma4::build(g),
            (Arch::Qwen35 | Arch::Qwen35Moe, None) => qwen35::build(g),
            (a, None) => unreachable!("{} has a recipe or a builder", a.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_none() {
        for a in Arch::ALL {
            assert_eq!(Arch::from_name(a.name()), Some(a));
            assert!(Arch::supported().contains(a.name()));
        }
        assert_eq!(Arch::from_name("mamba"), None);
    }
}

//! One short recipe per architecture over the shared decoder (`decoder.rs`).
pub mod gemma3;
pub mod llama;
pub mod mistral3;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
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
    Mistral3,
}

impl Arch {
    pub const ALL: [Arch; 7] =
        [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Qwen3Moe, Arch::Phi3, Arch::Gemma3, Arch::Mistral3];

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
            Arch::Mistral3 => "mistral3",
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
            Arch::Mistral3 => mistral3::HP,
        }
    }

    pub fn recipe(self) -> Recipe {
        match self {
            Arch::Llama => llama::RECIPE,
            Arch::Qwen2 => qwen2::RECIPE,
            Arch::Qwen3 => qwen3::RECIPE,
            Arch::Qwen3Moe => qwen3moe::RECIPE,
            Arch::Phi3 => phi3::RECIPE,
            Arch::Gemma3 => gemma3::RECIPE,
            Arch::Mistral3 => mistral3::RECIPE,
        }
    }

    /// Every tensor the file must (or may) hold, with exact shapes.
    pub fn tensors(self, hp: &HParams) -> Vec<TensorReq> {
        decoder::tensors(hp, &self.recipe())
    }

    /// Build the forward pass of one micro-batch; returns the logits.
    pub fn build<'c>(self, g: &mut StepGraph<'c>) -> Tensor<'c> {
        decoder::build(g, &self.recipe())
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

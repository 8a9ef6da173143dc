//! One short recipe per architecture, built from the shared blocks.
pub mod llama;

use super::graph::StepGraph;
use super::hparams::{HParams, RopeKind};
use super::plan::TensorReq;
use crate::ggml::Tensor;

/// The architectures decache runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
}

impl Arch {
    pub const SUPPORTED: &'static [&'static str] = &["llama"];

    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "llama" => Some(Arch::Llama),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
        }
    }

    pub fn rope_kind(self) -> RopeKind {
        match self {
            Arch::Llama => RopeKind::Norm,
        }
    }

    /// Every tensor the file must (or may) hold, with exact shapes.
    pub fn tensors(self, hp: &HParams) -> Vec<TensorReq> {
        match self {
            Arch::Llama => llama::tensors(hp),
        }
    }

    /// Build the forward pass of one micro-batch; returns the logits.
    pub fn build<'c>(self, g: &mut StepGraph<'c>) -> Tensor<'c> {
        match self {
            Arch::Llama => llama::build(g),
        }
    }
}

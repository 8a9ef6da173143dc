//! User-facing sampling parameters and their validation.

use serde::{Deserialize, Serialize};

use super::dist::RANDOM_SEED;

/// A sampling parameter that cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// The value is NaN or infinite.
    #[error("sampling parameter `{field}` must be finite, got {value}")]
    NotFinite {
        /// Name of the field in [`SamplingParams`].
        field: &'static str,
        /// The value given.
        value: f32,
    },
    /// The value is outside its allowed range.
    #[error("sampling parameter `{field}` = {value} is out of range: expected {expected}")]
    OutOfRange {
        /// Name of the field in [`SamplingParams`].
        field: &'static str,
        /// The value given.
        value: f64,
        /// The allowed range, in words.
        expected: &'static str,
    },
}

impl SamplingError {
    /// Name of the offending field.
    pub fn field(&self) -> &'static str {
        match self {
            SamplingError::NotFinite { field, .. } | SamplingError::OutOfRange { field, .. } => field,
        }
    }
}

/// Sampling parameters, with llama.cpp's defaults. Missing fields take their
/// default when deserialised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Temperature; `<= 0` samples greedily. Default 0.8.
    pub temperature: f32,
    /// Keep the k most likely tokens; `<= 0` disables. Default 40.
    pub top_k: i32,
    /// Nucleus mass in `[0, 1]`; `1` disables. Default 0.95.
    pub top_p: f32,
    /// Drop tokens with `p < min_p * p_max`, in `[0, 1]`; `0` disables. Default 0.05.
    pub min_p: f32,
    /// Repetition penalty, `> 0`; `1` disables. Default 1.0.
    pub repeat_penalty: f32,
    /// Window of accepted tokens the penalties look at; `0` disables, `-1`
    /// means every token accepted since the last reset. Default 64.
    pub repeat_last_n: i32,
    /// Subtracted once per occurrence in the window. Default 0.
    pub frequency_penalty: f32,
    /// Subtracted once if the token occurs in the window. Default 0.
    pub presence_penalty: f32,
    /// Seed of the random draw; [`RANDOM_SEED`] (`u64::MAX`, the default)
    /// picks a random one, readable afterwards from [`super::SamplerChain::seed`].
    pub seed: u64,
    /// The tools a call may name: once the model opens a `<tool_call>`, the
    /// name it writes is held to one of these (see [`super::ToolNames`]).
    /// Empty (the default): no constraint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_names: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: RANDOM_SEED,
            tool_names: Vec::new(),
        }
    }
}

fn finite(field: &'static str, value: f32) -> Result<f32, SamplingError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(SamplingError::NotFinite { field, value })
    }
}

fn unit(field: &'static str, value: f32) -> Result<(), SamplingError> {
    if (0.0..=1.0).contains(&finite(field, value)?) {
        Ok(())
    } else {
        Err(SamplingError::OutOfRange { field, value: value as f64, expected: "0 to 1" })
    }
}

impl SamplingParams {
    /// Greedy decoding: temperature 0, the other parameters at their defaults.
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, ..Default::default() }
    }

    /// `true` when these parameters select greedily (temperature `<= 0`).
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Checks every field and names the first bad one.
    ///
    /// Like llama.cpp: any finite temperature is fine (`<= 0` is greedy), any
    /// `top_k` is fine (`<= 0` disables), the repetition penalty must be
    /// finite and `> 0`. Beyond llama.cpp: `top_p` and `min_p` must lie in
    /// `[0, 1]`, and `repeat_last_n` must be `>= -1`. NaN is always an error.
    pub fn validate(&self) -> Result<(), SamplingError> {
        finite("temperature", self.temperature)?;
        unit("top_p", self.top_p)?;
        unit("min_p", self.min_p)?;
        let repeat = finite("repeat_penalty", self.repeat_penalty)?;
        if repeat <= 0.0 || !(1.0 / repeat).is_finite() {
            return Err(SamplingError::OutOfRange {
                field: "repeat_penalty",
                value: repeat as f64,
                expected: "greater than 0",
            });
        }
        if self.repeat_last_n < -1 {
            return Err(SamplingError::OutOfRange {
                field: "repeat_last_n",
                value: self.repeat_last_n as f64,
                expected: "-1 (all), 0 (off) or a positive count",
            });
        }
        finite("frequency_penalty", self.frequency_penalty)?;
        finite("presence_penalty", self.presence_penalty)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_llama_cpp_and_valid() {
        let p = SamplingParams::default();
        assert_eq!((p.temperature, p.top_k, p.top_p, p.min_p), (0.8, 40, 0.95, 0.05));
        assert_eq!((p.repeat_penalty, p.repeat_last_n), (1.0, 64));
        assert_eq!(p.seed, RANDOM_SEED);
        assert!(p.validate().is_ok());
        assert!(SamplingParams::greedy().is_greedy());
    }

    #[test]
    fn validate_names_the_bad_field() {
        let bad = |f: fn(&mut SamplingParams)| {
            let mut p = SamplingParams::default();
            f(&mut p);
            p.validate().unwrap_err().field()
        };
        assert_eq!(bad(|p| p.temperature = f32::NAN), "temperature");
        assert_eq!(bad(|p| p.top_p = 1.01), "top_p");
        assert_eq!(bad(|p| p.top_p = -0.1), "top_p");
        assert_eq!(bad(|p| p.top_p = f32::NAN), "top_p");
        assert_eq!(bad(|p| p.min_p = 2.0), "min_p");
        assert_eq!(bad(|p| p.repeat_penalty = 0.0), "repeat_penalty");
        assert_eq!(bad(|p| p.repeat_penalty = f32::INFINITY), "repeat_penalty");
        assert_eq!(bad(|p| p.repeat_last_n = -2), "repeat_last_n");
        assert_eq!(bad(|p| p.frequency_penalty = f32::NAN), "frequency_penalty");
        assert_eq!(bad(|p| p.presence_penalty = f32::NEG_INFINITY), "presence_penalty");
    }

    #[test]
    fn accepted_edge_values() {
        for f in [
            |p: &mut SamplingParams| p.temperature = -1.0,
            |p: &mut SamplingParams| p.temperature = 0.0,
            |p: &mut SamplingParams| p.top_k = -5,
            |p: &mut SamplingParams| p.top_k = i32::MAX,
            |p: &mut SamplingParams| p.top_p = 0.0,
            |p: &mut SamplingParams| p.top_p = 1.0,
            |p: &mut SamplingParams| p.repeat_last_n = -1,
        ] {
            let mut p = SamplingParams::default();
            f(&mut p);
            assert!(p.validate().is_ok(), "{p:?}");
        }
    }

    #[test]
    fn serde_fills_missing_fields_with_defaults() {
        let p: SamplingParams = serde_json::from_str(r#"{"temperature":0.2,"seed":9}"#).unwrap();
        assert_eq!(p.temperature, 0.2);
        assert_eq!(p.seed, 9);
        assert_eq!(p.top_k, 40);
        let back: SamplingParams = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}

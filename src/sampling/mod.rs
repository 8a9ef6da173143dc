//! Token sampling: a [`Sampler`] trait, one small sampler per file, and a
//! [`SamplerChain`] that runs several in order and is itself a sampler.
//!
//! The behaviour follows llama.cpp's samplers (`llama-sampler.cpp`) and the
//! default order of its common code: penalties, top-k, top-p, min-p,
//! temperature, dist; or penalties then greedy when the temperature is
//! `<= 0`. Nothing here panics on odd inputs (empty or NaN logits, extreme
//! parameters), and nothing prints.
//!
//! ```
//! use decache::sampling::{SamplerChain, SamplingParams};
//! let params = SamplingParams { seed: 42, ..Default::default() };
//! params.validate().unwrap();
//! let mut chain = SamplerChain::from_params(&params);
//! let token = chain.sample(&[0.1, 2.0, -1.0]);
//! chain.accept(token);
//! ```

mod candidates;
mod chain;
mod dist;
mod greedy;
mod logit_bias;
mod min_p;
mod params;
mod penalties;
mod temperature;
mod tool_names;
mod top_k;
mod top_p;

pub use candidates::{Candidates, TokenData};
pub use chain::SamplerChain;
pub use dist::{Dist, RANDOM_SEED};
pub use greedy::Greedy;
pub use logit_bias::LogitBias;
pub use min_p::MinP;
pub use params::{SamplingError, SamplingParams};
pub use penalties::Penalties;
pub use temperature::Temperature;
pub use tool_names::ToolNames;
pub use top_k::TopK;
pub use top_p::TopP;

/// One step of token selection. A sampler may drop, reorder or rewrite the
/// candidates, and a selecting sampler (greedy, dist) sets
/// [`Candidates::selected`].
pub trait Sampler: Send {
    /// Short name, e.g. `"top_k"`.
    fn name(&self) -> &'static str;

    /// Transforms the candidates of one sampling step.
    fn apply(&mut self, c: &mut Candidates);

    /// Records a token that was emitted or given (for samplers with history).
    fn accept(&mut self, _token: u32) {}

    /// Forgets all state gathered since creation.
    fn reset(&mut self) {}

    /// The seed in use, for samplers that draw random numbers.
    fn seed(&self) -> Option<u64> {
        None
    }
}

//! The KV cache: cells (pure data), per-layer tensors, and masks built from
//! liveness and positions.
pub mod cache;
pub mod cells;
pub mod defrag;
pub mod mask;
pub mod rotation;
pub mod swa;

pub use cache::{KvCache, Pool, SwaLayout};
pub use cells::{Cells, Pos};
pub use swa::SwaPool;

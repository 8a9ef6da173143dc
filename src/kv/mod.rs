//! The KV cache: cells (pure data), the cache that owns its tensors and
//! every operation on them (placing tokens, removal, moving positions,
//! K-shift, defrag, masks and inputs, snapshots), for one pool or for a
//! global pool and a sliding-window pool together; one cache serves
//! several sequences, which share the cells of a common prefix.
pub mod cache;
pub mod cells;
mod defrag;
pub mod error;
mod inputs;
pub mod mask;
pub mod recurrent;
pub mod rotation;
pub mod rows;
mod shift;
pub mod state;
pub mod swa;

pub use cache::{KvCache, KvParams, LayerKv, Placement, Pool, SwaLayout, N_KV_PAD};
pub use cells::{Cells, Pos, SeqId, MAX_SEQ};
pub use defrag::UnshareError;
pub use error::KvError;
pub use inputs::KvInputs;
pub use recurrent::{RecurrentLayout, RecurrentStates};
pub use shift::KShift;
pub use state::{KvLayout, KvSnapshot, SwaCells};
pub use swa::SwaPool;

//! Checkpoint loading: reading files ([`Checkpoint`]), mapping reference key names onto the
//! crate's modules ([`KeyMap`], [`load_module`]) and the per-model key maps.
//!
//! Loading never modifies the caller's model on failure, and a mismatch error lists every
//! missing, unexpected and mis-shaped key in the checkpoint's own naming.

pub mod checkpoint;
pub mod dit;
pub mod loader;
pub mod microdit;
pub mod mmdit;
pub mod udit;
pub mod vae;

pub use checkpoint::Checkpoint;
pub use dit::DiTCheckpointLayout;
pub use loader::{KeyMap, export_module, load_burnpack, load_module, save_burnpack};

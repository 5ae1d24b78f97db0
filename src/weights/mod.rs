//! Checkpoint loading: one loader for every model. A file is opened lazily
//! ([`LazyCheckpoint`]: headers only), a model's [`CheckpointFormat`] maps its module paths to
//! the file's keys and fixes layouts up, and [`load`] streams the tensors into the model after
//! checking every key and shape ([`LoadWeights`] gives every model the same methods).
//! [`Checkpoint`] holds tensors in memory (exports, tests, hand-built checkpoints).
//!
//! Loading never modifies the caller's model on a mismatch, and a mismatch error lists every
//! missing, unexpected and mis-shaped key in the checkpoint's own naming.

mod apply;
mod buffer;
pub mod checkpoint;
pub mod composed;
mod copy;
pub mod dit;
mod file;
pub mod format;
pub mod layout;
pub mod lazy;
pub mod loader;
pub mod microdit;
pub mod mmdit;
pub mod udit;
pub mod vae;

pub use buffer::set_huge_pages;
pub use checkpoint::Checkpoint;
pub use composed::ComposedFormat;
pub use dit::DiTCheckpointLayout;
pub use format::{BATCH_BYTES, CheckpointFormat, KeyFn, LoadWeights, export, load, load_with};
pub use layout::{LinearLayout, LoadOptions};
pub use lazy::{LazyCheckpoint, LazyTensor};
pub use loader::{KeyMap, load_burnpack, save_burnpack};
pub use microdit::MicroDiTOfficial;
pub use mmdit::MMDiTDiffusers;
pub use udit::UDiTOfficial;
pub use vae::VaeDiffusers;

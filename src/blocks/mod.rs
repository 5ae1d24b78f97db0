//! Transformer blocks built from [`crate::layers`].

pub mod dit_block;
pub mod final_layer;

pub use dit_block::{BlockKind, DiTBlock, DiTBlockConfig};
pub use final_layer::FinalLayer;

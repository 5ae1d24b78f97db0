//! Complete models.

pub mod dit;

pub use dit::{DiT, DiTConfig, DiTSize};

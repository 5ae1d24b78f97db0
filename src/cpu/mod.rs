//! CPU performance: vectorised GELUs (tanh and exact) for the flex backend and an opt-in allocator
//! setting that removes most of the page-fault cost of large activations.

mod allocator;
mod gelu;
#[cfg(feature = "flex")]
mod simd;

pub use allocator::tune_allocator;
pub use gelu::{gelu, gelu_tanh};

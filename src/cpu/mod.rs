//! CPU performance: a vectorised tanh-GELU for the flex backend and an opt-in allocator
//! setting that removes most of the page-fault cost of large activations.

mod allocator;
mod gelu;
#[cfg(feature = "flex")]
mod simd;

pub use allocator::tune_allocator;
pub use gelu::gelu_tanh;

//! Seeded random tensors for the unit tests (Burn's `Tensor::random` draws from a
//! process-wide seed that parallel tests interleave, so its draws are not reproducible).

use burn::prelude::*;
use rand::{Rng, SeedableRng};

/// Standard normal samples from `StdRng::seed_from_u64(seed)`.
pub(crate) fn randn<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    crate::contracts::randn(shape, &mut rand::rngs::StdRng::seed_from_u64(seed), device)
}

/// Uniform samples in `[-1, 1)` from `StdRng::seed_from_u64(seed)`.
pub(crate) fn uniform<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let len: usize = shape.iter().product();
    let v: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

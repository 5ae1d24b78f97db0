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

/// A byte-level BPE vocabulary with no merges, as CLIP's starts: GPT-2's 256 byte symbols (ids
/// 0..256, in byte order) and the same with `</w>` (ids 256..512).
#[cfg(feature = "text")]
pub(crate) fn byte_level_vocab() -> serde_json::Map<String, serde_json::Value> {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let mut shifted = 0;
    let symbols: Vec<String> = (0..=255u8)
        .map(|b| {
            if printable(b) {
                char::from(b).to_string()
            } else {
                shifted += 1;
                char::from_u32(255 + shifted).expect("valid").to_string()
            }
        })
        .collect();
    let ends = symbols.iter().map(|s| format!("{s}</w>"));
    symbols.iter().cloned().chain(ends).enumerate().map(|(i, s)| (s, i.into())).collect()
}

//! The training objective: the scalar loss of a model on a batch of clean data.

use burn::prelude::*;

use crate::contracts::{Denoiser, TrainRng};
use crate::error::Result;

/// A training objective: the scalar loss of a model on a batch of clean data. Implemented by
/// the crate's DDPM, rectified-flow and EDM objectives; implement it for your own.
pub trait Objective<M: Denoiser> {
    /// Mean loss over the batch; timesteps and noise are drawn from `rng`.
    ///
    /// # Shapes
    /// - `x0`: `[B, C, H, W]` clean data; output `[1]`
    fn loss(&self, model: &M, x0: Tensor<4>, cond: &M::Cond, rng: &mut TrainRng) -> Result<Tensor<1>>;
}

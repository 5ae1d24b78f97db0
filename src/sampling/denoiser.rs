//! The one trait samplers and training objectives need from a model.

use burn::prelude::*;

use crate::error::Result;
use crate::models::DiT;

/// A network that maps a noisy sample, its timesteps and a conditioning to a prediction
/// (noise, velocity, x0, ... as the objective defines). Every model of the crate implements
/// it; users implement it for their own models to use the crate's samplers.
pub trait Denoiser {
    /// The conditioning the model takes (class labels, text embeddings, ...).
    type Cond: Clone;

    /// # Shapes
    /// - `x`: `[B, C, H, W]`, `t`: `[B]` timesteps in the model's own scale
    /// - output: `[B, C_out, H, W]`
    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>>;
}

impl Denoiser for DiT {
    /// Class labels (`None` for unconditional models); the null class is `num_classes`.
    type Cond = Option<Tensor<1, Int>>;

    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
        self.forward(x, t, cond.clone())
    }
}

/// A shared reference denoises like the model itself, so wrappers such as
/// [`ClassifierFreeGuidance`](crate::sampling::ClassifierFreeGuidance) can borrow a model.
impl<M: Denoiser + ?Sized> Denoiser for &M {
    type Cond = M::Cond;

    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
        (**self).denoise(x, t, cond)
    }
}

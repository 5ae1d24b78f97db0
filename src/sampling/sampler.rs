//! The interface shared by the samplers of a discrete Gaussian diffusion.

use burn::prelude::*;
use rand::Rng;

use crate::diffusion::gaussian::GaussianDiffusion;
use crate::error::Result;
use crate::contracts::randn;
use crate::contracts::Denoiser;
use crate::sampling::ProgressCallback;

/// A sampler that runs the reverse process of a [`GaussianDiffusion`] (usually respaced:
/// its number of timesteps is the number of model evaluations) with any [`Denoiser`],
/// including a [`ClassifierFreeGuidance`](crate::sampling::ClassifierFreeGuidance) wrapper.
pub trait GaussianSampler {
    /// Runs the reverse process from `x_t` (pure noise at the last timestep) to `x_0`,
    /// drawing any step noise from `rng` and reporting each step to `progress`.
    ///
    /// # Shapes
    /// - `x_t`: `[B, C, H, W]` -> `[B, C, H, W]`
    ///
    /// # Errors
    /// Invalid sampler parameters, a model output of the wrong shape or the model's errors.
    fn sample_from<M: Denoiser + ?Sized, R: Rng + ?Sized>(
        &self,
        diffusion: &GaussianDiffusion,
        model: &M,
        cond: &M::Cond,
        x_t: Tensor<4>,
        rng: &mut R,
        progress: &mut dyn ProgressCallback,
    ) -> Result<Tensor<4>>;

    /// Draws `x_T ~ N(0, I)` of `shape` from `rng` on `device`, then
    /// [`GaussianSampler::sample_from`]. The same seed gives the same samples.
    ///
    /// # Errors
    /// As [`GaussianSampler::sample_from`].
    #[allow(clippy::too_many_arguments)]
    fn sample<M: Denoiser + ?Sized, R: Rng + ?Sized>(
        &self,
        diffusion: &GaussianDiffusion,
        model: &M,
        cond: &M::Cond,
        shape: [usize; 4],
        device: &Device,
        rng: &mut R,
        progress: &mut dyn ProgressCallback,
    ) -> Result<Tensor<4>> {
        let x = randn(shape, rng, device);
        self.sample_from(diffusion, model, cond, x, rng, progress)
    }
}

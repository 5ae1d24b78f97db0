//! DDIM sampling (Song et al. 2021, arXiv:2010.02502; reference `ddim_sample_loop`).

use burn::prelude::*;
use rand::Rng;

use crate::diffusion::gaussian::{ClipMode, GaussianDiffusion, check_eta};
use crate::error::Result;
use crate::contracts::randn_like;
use crate::sampling::sampler::GaussianSampler;
use crate::contracts::Denoiser;
use crate::sampling::{Progress, ProgressCallback};

/// DDIM over the diffusion's (respaced) timesteps, e.g. `GaussianDiffusionConfig::dit("ddim50")`:
/// `eta = 0` is the deterministic probability-flow-like sampler (same seed, same output),
/// `eta = 1` matches DDPM's marginals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdimSampler {
    /// Stochasticity `eta >= 0`.
    eta: f64,
    /// Processing of the predicted `x_0`. Default: off.
    pub clip: ClipMode,
}

impl DdimSampler {
    /// A DDIM sampler with the given `eta` and no clipping.
    ///
    /// # Errors
    /// A negative or non-finite `eta`.
    pub fn new(eta: f64) -> Result<Self> {
        check_eta(eta)?;
        Ok(Self { eta, clip: ClipMode::Off })
    }

    /// Sets the processing of the predicted `x_0`.
    pub fn with_clip(mut self, clip: ClipMode) -> Self {
        self.clip = clip;
        self
    }

    /// The stochasticity `eta`.
    pub fn eta(&self) -> f64 {
        self.eta
    }
}

impl GaussianSampler for DdimSampler {
    fn sample_from<M: Denoiser + ?Sized, R: Rng + ?Sized>(
        &self,
        diffusion: &GaussianDiffusion,
        model: &M,
        cond: &M::Cond,
        x_t: Tensor<4>,
        rng: &mut R,
        progress: &mut dyn ProgressCallback,
    ) -> Result<Tensor<4>> {
        self.clip.validate()?;
        let n = diffusion.num_timesteps();
        let b = x_t.dims()[0];
        let mut x = x_t;
        for (k, i) in (0..n).rev().enumerate() {
            let t = vec![i; b];
            let out = diffusion.denoise(model, x.clone(), &t, cond)?;
            let noise = (self.eta > 0.0 && i > 0).then(|| randn_like(&x, rng));
            x = diffusion.ddim_sample(out, x, &t, self.clip, self.eta, noise)?.sample;
            progress.on_step(&Progress { step: k + 1, total_steps: n, timestep: diffusion.timestep_map()[i] as f64 });
        }
        Ok(x)
    }
}

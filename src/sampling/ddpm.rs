//! Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2; reference `p_sample_loop`).

use burn::prelude::*;
use rand::Rng;

use crate::diffusion::gaussian::{ClipMode, GaussianDiffusion};
use crate::error::Result;
use crate::contracts::randn_like;
use crate::sampling::sampler::GaussianSampler;
use crate::contracts::Denoiser;
use crate::sampling::{Progress, ProgressCallback};

/// Ancestral sampling: at each (respaced) timestep, `x_{t-1} ~ p(x_{t-1} | x_t)` with the
/// diffusion's variance (learned range for DiT), one model call per step. DiT samples with
/// `GaussianDiffusionConfig::dit("250")` and this sampler.
///
/// ```
/// use burn::prelude::*;
/// use rand::SeedableRng;
/// use diffusion_transformers::diffusion::gaussian::GaussianDiffusionConfig;
/// use diffusion_transformers::models::DiTConfig;
/// use diffusion_transformers::sampling::{ClassifierFreeGuidance, DdpmSampler, GaussianSampler};
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let device = Device::flex();
/// let dit = DiTConfig::new().with_input_size(8).with_hidden_size(32).with_depth(1)
///     .with_num_heads(2).with_num_classes(10).init(&device)?;
/// let model = ClassifierFreeGuidance::new(&dit, 10, 4.0)?;
/// let diffusion = GaussianDiffusionConfig::dit("5").init()?;
/// let labels = Some(Tensor::<1, Int>::from_ints([3, 7], &device));
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let mut bar = |p: &diffusion_transformers::sampling::Progress| println!("{}/{}", p.step, p.total_steps);
/// let x0 = DdpmSampler::new().sample(&diffusion, &model, &labels, [2, 4, 8, 8], &device, &mut rng, &mut bar)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdpmSampler {
    /// Processing of the predicted `x_0`. Default: off (latent models; the reference's
    /// pixel-space default is `ClipMode::Clamp(1.0)`).
    pub clip: ClipMode,
}

impl Default for DdpmSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl DdpmSampler {
    /// A sampler without clipping.
    pub fn new() -> Self {
        Self { clip: ClipMode::Off }
    }

    /// Sets the processing of the predicted `x_0`.
    pub fn with_clip(mut self, clip: ClipMode) -> Self {
        self.clip = clip;
        self
    }
}

impl GaussianSampler for DdpmSampler {
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
            let noise = (i > 0).then(|| randn_like(&x, rng));
            x = diffusion.p_sample(out, x, &t, self.clip, noise)?.sample;
            progress.on_step(&Progress { step: k + 1, total_steps: n, timestep: diffusion.timestep_map()[i] as f64 });
        }
        Ok(x)
    }
}

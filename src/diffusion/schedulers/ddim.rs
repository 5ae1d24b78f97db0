//! diffusers' `DDIMScheduler`: deterministic (eta = 0) or stochastic steps over the shared
//! beta tables.

use burn::prelude::*;
use rand::Rng;

use super::{SchedulerConfig, SchedulerOutput, Tables};
use crate::contracts::randn_like;
use crate::diffusion::gaussian::check_eta;
use crate::error::{Error, Result};

/// Per-step options of [`DdimScheduler::step`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DdimStepOptions {
    /// Stochasticity: 0 is deterministic DDIM, 1 is DDPM-like. Default: 0.
    pub eta: f64,
    /// Re-derive `eps` from the clipped `x_0` (GLIDE). Default: false.
    pub use_clipped_model_output: bool,
}

/// diffusers' `DDIMScheduler` (Song et al. 2021, arXiv:2010.02502).
///
/// ```
/// use burn::prelude::*;
/// use diffusion_transformers::diffusion::schedulers::{DdimScheduler, DdimStepOptions, SchedulerConfig};
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let mut s = DdimScheduler::new(&SchedulerConfig::new())?;
/// s.set_timesteps(25)?;
/// let x = Tensor::<4>::zeros([1, 4, 8, 8], &Device::flex());
/// let out = s.step(x.clone(), s.timesteps()[0], x, DdimStepOptions::default(), None)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    tables: Tables,
    final_alpha_cumprod: f64,
}

impl DdimScheduler {
    /// Builds the scheduler.
    ///
    /// # Errors
    /// Invalid schedule or clip parameters.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let tables = Tables::new(config)?;
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { tables.alphas_cumprod[0] };
        Ok(Self { tables, final_alpha_cumprod })
    }

    shared_scheduler_api!();

    /// One DDIM step from training timestep `t` to `t - T / num_inference_steps`:
    /// `x_prev = sqrt(abar_prev) x_0 + sqrt(1 - abar_prev - sigma^2) eps + sigma noise`,
    /// `sigma = eta sqrt((1 - abar_prev) / (1 - abar_t) (1 - abar_t / abar_prev))`.
    /// `noise` is required when `eta > 0`.
    ///
    /// # Shapes
    /// - `model_output`, `sample`, `noise`: `[B, C, ...]`
    ///
    /// # Errors
    /// `set_timesteps` not called, a bad timestep or `eta`, mismatched shapes or missing noise.
    pub fn step<const D: usize>(
        &self,
        model_output: Tensor<D>,
        t: usize,
        sample: Tensor<D>,
        options: DdimStepOptions,
        noise: Option<Tensor<D>>,
    ) -> Result<SchedulerOutput<D>> {
        check_eta(options.eta)?;
        let n = self
            .tables
            .num_inference_steps
            .ok_or_else(|| Error::InvalidArgument("call set_timesteps before step".into()))?;
        self.tables.check_timestep(t)?;
        Tables::check_shapes("model_output", sample.dims(), model_output.dims())?;
        let prev = t as i64 - (self.tables.config.num_train_timesteps / n) as i64;
        let ac = &self.tables.alphas_cumprod;
        let a_t = ac[t];
        let a_prev = if prev >= 0 { ac[prev as usize] } else { self.final_alpha_cumprod };
        let b_t = 1.0 - a_t;
        let (x0, eps) = self.tables.predict(model_output, sample.clone(), a_t);
        let x0 = Tables::clip_mode(&self.tables.config).apply(x0)?;
        let variance = (1.0 - a_prev) / b_t * (1.0 - a_t / a_prev);
        let std = options.eta * variance.sqrt();
        let eps = if options.use_clipped_model_output { (sample.clone() - x0.clone() * a_t.sqrt()) / b_t.sqrt() } else { eps };
        let mut prev_sample = x0.clone() * a_prev.sqrt() + eps * (1.0 - a_prev - std * std).max(0.0).sqrt();
        if options.eta > 0.0 {
            let noise = noise.ok_or_else(|| Error::InvalidArgument("a DDIM step with eta > 0 needs noise".into()))?;
            Tables::check_shapes("noise", sample.dims(), noise.dims())?;
            prev_sample = prev_sample + noise * std;
        }
        Ok(SchedulerOutput { prev_sample, pred_original_sample: x0 })
    }

    /// [`DdimScheduler::step`] drawing the noise (needed when `eta > 0`) from `rng`.
    ///
    /// # Errors
    /// As [`DdimScheduler::step`].
    pub fn step_with_rng<const D: usize, R: Rng + ?Sized>(
        &self,
        model_output: Tensor<D>,
        t: usize,
        sample: Tensor<D>,
        options: DdimStepOptions,
        rng: &mut R,
    ) -> Result<SchedulerOutput<D>> {
        let noise = (options.eta > 0.0).then(|| randn_like(&sample, rng));
        self.step(model_output, t, sample, options, noise)
    }
}

//! diffusers' `DDPMScheduler`: ancestral steps over the shared beta tables.

use burn::prelude::*;
use rand::Rng;

use super::{DdpmVarianceType, SchedulerConfig, SchedulerOutput, Tables};
use crate::contracts::randn_like;
use crate::error::{Error, Result, ensure_config};

/// diffusers' `DDPMScheduler` (Ho et al. 2020, ancestral sampling).
///
/// ```
/// use burn::prelude::*;
/// use diffusion_transformers::diffusion::schedulers::{DdpmScheduler, SchedulerConfig};
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let mut s = DdpmScheduler::new(&SchedulerConfig::new().with_clip_sample(false))?;
/// s.set_timesteps(50)?;
/// assert_eq!(&s.timesteps()[..3], &[980, 960, 940]);
/// let device = Device::flex();
/// let x = Tensor::<4>::zeros([1, 4, 8, 8], &device);
/// let noise = Tensor::<4>::zeros([1, 4, 8, 8], &device);
/// let out = s.step(x.clone(), 980, x, Some(noise))?; // model_output, timestep, sample
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    tables: Tables,
}

impl DdpmScheduler {
    /// Builds the scheduler (timesteps are all training steps until `set_timesteps`).
    ///
    /// # Errors
    /// Invalid schedule or clip parameters.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        Ok(Self { tables: Tables::new(config)? })
    }

    shared_scheduler_api!();

    /// Sets custom descending timesteps (diffusers' `set_timesteps(timesteps=...)`).
    ///
    /// # Errors
    /// An empty, non-descending or out-of-range list.
    pub fn set_custom_timesteps(&mut self, timesteps: Vec<usize>) -> Result<()> {
        ensure_config(!timesteps.is_empty(), || "custom timesteps are empty".into())?;
        ensure_config(timesteps.windows(2).all(|w| w[0] > w[1]), || "custom timesteps must be strictly descending".into())?;
        self.tables.check_timestep(timesteps[0])?;
        self.tables.timesteps = timesteps;
        self.tables.num_inference_steps = None;
        Ok(())
    }

    fn custom(&self) -> bool {
        self.tables.timesteps.len() != self.tables.config.num_train_timesteps || self.tables.num_inference_steps.is_some()
    }

    /// The timestep after `t` in the inference sequence (`None` after the last one);
    /// before `set_timesteps`, `t - 1`.
    ///
    /// # Errors
    /// A timestep that is not in the inference sequence.
    pub fn previous_timestep(&self, t: usize) -> Result<Option<usize>> {
        self.tables.check_timestep(t)?;
        if !self.custom() {
            return Ok(t.checked_sub(1));
        }
        let ts = &self.tables.timesteps;
        let i = ts
            .iter()
            .position(|&s| s == t)
            .ok_or_else(|| Error::InvalidArgument(format!("timestep {t} is not one of the scheduler's timesteps")))?;
        Ok(ts.get(i + 1).copied())
    }

    /// One DDPM step from training timestep `t` to the previous inference timestep:
    /// `x_prev = c0 x_0 + ct x_t + sigma noise` with `c0 = sqrt(abar_prev) beta_t / (1 - abar_t)`,
    /// `ct = sqrt(alpha_t) (1 - abar_prev) / (1 - abar_t)`, `alpha_t = abar_t / abar_prev`; no
    /// noise at `t = 0`. `noise` is required for `t > 0`.
    ///
    /// # Shapes
    /// - `model_output`: `[B, C, ...]` (`[B, 2C, ...]` for learned variances), `sample`,
    ///   `noise`: `[B, C, ...]`
    ///
    /// # Errors
    /// Bad timestep, mismatched shapes or missing noise.
    pub fn step<const D: usize>(
        &self,
        model_output: Tensor<D>,
        t: usize,
        sample: Tensor<D>,
        noise: Option<Tensor<D>>,
    ) -> Result<SchedulerOutput<D>> {
        let prev = self.previous_timestep(t)?;
        let c = sample.dims()[1];
        let vt = self.tables.config.variance_type;
        let (out, predicted_variance) = if vt.is_learned() {
            let mut expected = sample.dims();
            expected[1] = 2 * c;
            Tables::check_shapes("model_output", expected, model_output.dims())?;
            (model_output.clone().narrow(1, 0, c), Some(model_output.narrow(1, c, c)))
        } else {
            Tables::check_shapes("model_output", sample.dims(), model_output.dims())?;
            (model_output, None)
        };
        let ac = &self.tables.alphas_cumprod;
        let a_t = ac[t];
        let a_prev = prev.map_or(1.0, |p| ac[p]);
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let cur_alpha = a_t / a_prev;
        let cur_beta = 1.0 - cur_alpha;
        let (x0, _) = self.tables.predict(out, sample.clone(), a_t);
        let x0 = Tables::clip_mode(&self.tables.config).apply(x0)?;
        let mean = x0.clone() * (a_prev.sqrt() * cur_beta / b_t) + sample.clone() * (cur_alpha.sqrt() * b_prev / b_t);
        if t == 0 {
            return Ok(SchedulerOutput { prev_sample: mean, pred_original_sample: x0 });
        }
        let noise = noise.ok_or_else(|| Error::InvalidArgument("a DDPM step with t > 0 needs noise".into()))?;
        Tables::check_shapes("noise", sample.dims(), noise.dims())?;
        let small = (b_prev / b_t * cur_beta).max(1e-20);
        let noise_term = match (vt, predicted_variance) {
            (DdpmVarianceType::FixedSmall, _) => noise * small.sqrt(),
            (DdpmVarianceType::FixedSmallLog, _) => noise * (0.5 * small.ln()).exp(),
            (DdpmVarianceType::FixedLarge, _) => noise * cur_beta.sqrt(),
            (DdpmVarianceType::Learned, Some(v)) => v.sqrt() * noise,
            (DdpmVarianceType::LearnedRange, Some(v)) => {
                let (min_log, max_log) = (small.ln(), cur_beta.ln());
                let frac = (v + 1.0) / 2.0;
                let log_var = frac.clone() * max_log + (frac.neg() + 1.0) * min_log;
                (log_var * 0.5).exp() * noise
            }
            (_, None) => unreachable!("learned variance types always split the model output"),
        };
        Ok(SchedulerOutput { prev_sample: mean + noise_term, pred_original_sample: x0 })
    }

    /// [`DdpmScheduler::step`] drawing the noise from `rng`.
    ///
    /// # Errors
    /// As [`DdpmScheduler::step`].
    pub fn step_with_rng<const D: usize, R: Rng + ?Sized>(
        &self,
        model_output: Tensor<D>,
        t: usize,
        sample: Tensor<D>,
        rng: &mut R,
    ) -> Result<SchedulerOutput<D>> {
        let noise = (t > 0).then(|| randn_like(&sample, rng));
        self.step(model_output, t, sample, noise)
    }
}

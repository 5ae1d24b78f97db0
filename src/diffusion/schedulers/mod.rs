//! diffusers-compatible discrete schedulers: [`DdpmScheduler`] (`DDPMScheduler`) and
//! [`DdimScheduler`] (`DDIMScheduler`), with `set_timesteps` and `step` behaving as in
//! diffusers 0.3x/0.4x, for pipelines and checkpoints that were trained or tuned with them.
//!
//! As in diffusers, the beta and `alphas_cumprod` tables are stored in `f32` precision
//! (`torch.float32` tensors); the step coefficients are computed from those values in `f64`.
//! Timesteps here are *training* timesteps `0..num_train_timesteps` (unlike
//! [`GaussianDiffusion`](crate::diffusion::gaussian::GaussianDiffusion), whose indices are
//! respaced).

use burn::prelude::*;

use crate::diffusion::gaussian::{ClipMode, PredictionType};
use crate::diffusion::schedule::{BetaSchedule, linspace};
use crate::error::{Error, Result, ensure_config};

/// How `set_timesteps` spaces the inference timesteps (Lin et al. 2024, arXiv:2305.08891,
/// Table 2).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// `(0..n) * (T / n)` reversed, plus `steps_offset` (diffusers' default).
    Leading,
    /// `round(arange(T, 0, -T / n)) - 1`: always starts at `T - 1`.
    Trailing,
    /// `round(linspace(0, T - 1, n))` reversed.
    Linspace,
}

/// `DDPMScheduler.variance_type`.
///
/// diffusers' `fixed_large_log` is not offered: its `step` takes the square root of a log
/// variance there.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum DdpmVarianceType {
    /// Posterior variance `beta~_t`, clamped at 1e-20 (default).
    FixedSmall,
    /// The same, applied through its log (`exp(0.5 ln beta~_t)`).
    FixedSmallLog,
    /// `beta_t` of the (inference) step.
    FixedLarge,
    /// The model's extra channels are the variance itself.
    Learned,
    /// The model's extra channels `v in [-1, 1]` interpolate the log variance between
    /// `ln beta~_t` and `ln beta_t`.
    LearnedRange,
}

impl DdpmVarianceType {
    fn is_learned(self) -> bool {
        matches!(self, Self::Learned | Self::LearnedRange)
    }
}

/// Configuration shared by [`DdpmScheduler`] and [`DdimScheduler`], with diffusers' field
/// names and defaults.
#[derive(Config, Debug)]
pub struct SchedulerConfig {
    /// Training timesteps `T`. Default: 1000.
    #[config(default = 1000)]
    pub num_train_timesteps: usize,
    /// Betas; see [`BetaSchedule::from_diffusers`]. Default: diffusers' `"linear"`,
    /// `beta_start = 1e-4`, `beta_end = 0.02`.
    #[config(default = "BetaSchedule::LinearRange { start: 0.0001, end: 0.02 }")]
    pub beta_schedule: BetaSchedule,
    /// What the model predicts. Default: epsilon.
    #[config(default = "PredictionType::Epsilon")]
    pub prediction_type: PredictionType,
    /// Clamp the predicted `x_0` to `[-clip_sample_range, clip_sample_range]`. Default: true.
    #[config(default = true)]
    pub clip_sample: bool,
    /// Clamp range. Default: 1.0.
    #[config(default = 1.0)]
    pub clip_sample_range: f64,
    /// Dynamic thresholding instead of clamping. Default: false.
    #[config(default = false)]
    pub thresholding: bool,
    /// Quantile of dynamic thresholding. Default: 0.995.
    #[config(default = 0.995)]
    pub dynamic_thresholding_ratio: f64,
    /// Largest dynamic threshold. Default: 1.0.
    #[config(default = 1.0)]
    pub sample_max_value: f64,
    /// Inference timestep spacing. Default: leading.
    #[config(default = "TimestepSpacing::Leading")]
    pub timestep_spacing: TimestepSpacing,
    /// Offset added to leading timesteps. Default: 0.
    #[config(default = 0)]
    pub steps_offset: usize,
    /// Rescale betas to zero terminal SNR (Lin et al. 2024, Algorithm 1). Default: false.
    #[config(default = false)]
    pub rescale_betas_zero_snr: bool,
    /// DDPM only: the step variance. Default: fixed small.
    #[config(default = "DdpmVarianceType::FixedSmall")]
    pub variance_type: DdpmVarianceType,
    /// DDIM only: the final step goes to `abar = 1` (else to `abar_0`). Default: true.
    #[config(default = true)]
    pub set_alpha_to_one: bool,
}

impl BetaSchedule {
    /// diffusers' `beta_schedule` names: `"linear"` (plain `linspace(beta_start, beta_end)`),
    /// `"scaled_linear"` and `"squaredcos_cap_v2"`.
    ///
    /// # Errors
    /// Any other name.
    pub fn from_diffusers(name: &str, beta_start: f64, beta_end: f64) -> Result<Self> {
        match name {
            "linear" => Ok(Self::LinearRange { start: beta_start, end: beta_end }),
            "scaled_linear" => Ok(Self::ScaledLinear { start: beta_start, end: beta_end }),
            "squaredcos_cap_v2" => Ok(Self::SquaredCosCapV2),
            other => Err(Error::InvalidConfig(format!(
                "unsupported diffusers beta_schedule `{other}` (linear, scaled_linear, squaredcos_cap_v2)"
            ))),
        }
    }
}

/// Lin et al. 2024 (arXiv:2305.08891) Algorithm 1: shift and scale `sqrt(abar)` so that the
/// last timestep has zero SNR, keeping the first.
pub fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    let mut sqrt_ab: Vec<f64> = betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc.sqrt()
        })
        .collect();
    let (first, last) = (sqrt_ab[0], sqrt_ab[sqrt_ab.len() - 1]);
    for v in &mut sqrt_ab {
        *v = (*v - last) * first / (first - last);
    }
    let ab: Vec<f64> = sqrt_ab.iter().map(|v| v * v).collect();
    std::iter::once(1.0 - ab[0]).chain(ab.windows(2).map(|w| 1.0 - w[1] / w[0])).collect()
}

fn f32_round(v: f64) -> f64 {
    v as f32 as f64
}

/// The state both schedulers share: `f32`-precision tables and the inference timesteps.
#[derive(Debug, Clone)]
struct Tables {
    config: SchedulerConfig,
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    timesteps: Vec<usize>,
    num_inference_steps: Option<usize>,
}

impl Tables {
    fn new(config: &SchedulerConfig) -> Result<Self> {
        let t = config.num_train_timesteps;
        let mut betas = config.beta_schedule.betas(t)?;
        if config.rescale_betas_zero_snr {
            ensure_config(t > 1, || "zero terminal SNR needs at least two timesteps".into())?;
            betas = rescale_zero_terminal_snr(&betas);
        }
        let betas: Vec<f64> = betas.into_iter().map(f32_round).collect();
        let mut acc = 1.0f64;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= f32_round(1.0 - b);
                f32_round(acc)
            })
            .collect();
        Self::clip_mode(config).validate()?;
        Ok(Self {
            config: config.clone(),
            betas,
            alphas_cumprod,
            timesteps: (0..t).rev().collect(),
            num_inference_steps: None,
        })
    }

    fn clip_mode(config: &SchedulerConfig) -> ClipMode {
        if config.thresholding {
            ClipMode::DynamicThreshold { ratio: config.dynamic_thresholding_ratio, max_value: config.sample_max_value }
        } else if config.clip_sample {
            ClipMode::Clamp(config.clip_sample_range)
        } else {
            ClipMode::Off
        }
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let t = self.config.num_train_timesteps;
        if n == 0 || n > t {
            return Err(Error::InvalidArgument(format!("num_inference_steps must be in 1..={t}, got {n}")));
        }
        let steps: Vec<i64> = match self.config.timestep_spacing {
            TimestepSpacing::Linspace => {
                linspace(0.0, (t - 1) as f64, n).iter().rev().map(|v| v.round_ties_even() as i64).collect()
            }
            TimestepSpacing::Leading => {
                let ratio = t / n;
                (0..n).rev().map(|i| (i * ratio + self.config.steps_offset) as i64).collect()
            }
            TimestepSpacing::Trailing => {
                // np.round(np.arange(T, 0, -T / n)) - 1
                let ratio = t as f64 / n as f64;
                let count = (-(t as f64) / -ratio).ceil() as usize;
                (0..count).map(|i| (t as f64 - i as f64 * ratio).round_ties_even() as i64 - 1).collect()
            }
        };
        if let Some(bad) = steps.iter().find(|s| **s < 0 || **s >= t as i64) {
            return Err(Error::InvalidConfig(format!("inference timestep {bad} is outside 0..{t}")));
        }
        self.timesteps = steps.into_iter().map(|s| s as usize).collect();
        self.num_inference_steps = Some(n);
        Ok(())
    }

    fn check_timestep(&self, t: usize) -> Result<()> {
        if t < self.config.num_train_timesteps {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "timestep {t} is outside 0..{}",
                self.config.num_train_timesteps
            )))
        }
    }

    fn check_shapes<const D: usize>(name: &str, expected: [usize; D], got: [usize; D]) -> Result<()> {
        if expected == got {
            Ok(())
        } else {
            Err(Error::Shape { name: name.into(), expected: format!("{expected:?}"), got: format!("{got:?}") })
        }
    }

    /// `(x_0, eps)` from a model output at `alpha_prod_t`, before clipping.
    fn predict<const D: usize>(&self, out: Tensor<D>, sample: Tensor<D>, alpha_prod_t: f64) -> (Tensor<D>, Tensor<D>) {
        let (sa, sb) = (alpha_prod_t.sqrt(), (1.0 - alpha_prod_t).sqrt());
        match self.config.prediction_type {
            PredictionType::Epsilon => ((sample - out.clone() * sb) / sa, out),
            PredictionType::Sample => (out.clone(), (sample - out * sa) / sb),
            PredictionType::VPrediction => (sample.clone() * sa - out.clone() * sb, out * sa + sample * sb),
        }
    }

    fn add_noise<const D: usize>(&self, original: Tensor<D>, noise: Tensor<D>, timesteps: &[usize]) -> Result<Tensor<D>> {
        Self::check_shapes("noise", original.dims(), noise.dims())?;
        let b = original.dims()[0];
        if timesteps.len() != b {
            return Err(Error::Shape { name: "timesteps".into(), expected: format!("{b} entries"), got: format!("{}", timesteps.len()) });
        }
        for &t in timesteps {
            self.check_timestep(t)?;
        }
        let coef = |f: &dyn Fn(f64) -> f64| {
            let mut shape = [1usize; D];
            shape[0] = b;
            let v: Vec<f32> = timesteps.iter().map(|&t| f(self.alphas_cumprod[t]) as f32).collect();
            Tensor::<D>::from_data(TensorData::new(v, shape), (&original.device(), original.dtype()))
        };
        Ok(coef(&|a| a.sqrt()) * original.clone() + coef(&|a| (1.0 - a).sqrt()) * noise)
    }
}

/// Output of a scheduler step.
#[derive(Debug, Clone)]
pub struct SchedulerOutput<const D: usize> {
    /// The sample at the previous timestep, `[B, C, ...]`.
    pub prev_sample: Tensor<D>,
    /// The (processed) `x_0` prediction, `[B, C, ...]`.
    pub pred_original_sample: Tensor<D>,
}

macro_rules! shared_scheduler_api {
    () => {
        /// The configuration.
        pub fn config(&self) -> &SchedulerConfig {
            &self.tables.config
        }

        /// Betas (`f32` precision, as diffusers stores them).
        pub fn betas(&self) -> &[f64] {
            &self.tables.betas
        }

        /// `alphas_cumprod` (`f32` precision, as diffusers stores them).
        pub fn alphas_cumprod(&self) -> &[f64] {
            &self.tables.alphas_cumprod
        }

        /// The inference timesteps, descending (all training timesteps before
        /// `set_timesteps`).
        pub fn timesteps(&self) -> &[usize] {
            &self.tables.timesteps
        }

        /// The number of inference steps, once set.
        pub fn num_inference_steps(&self) -> Option<usize> {
            self.tables.num_inference_steps
        }

        /// Sets `num_inference_steps` timesteps spaced by `config.timestep_spacing`.
        ///
        /// # Errors
        /// Zero or more than `num_train_timesteps` steps, or timesteps pushed out of range
        /// by `steps_offset`.
        pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
            self.tables.set_timesteps(num_inference_steps)
        }

        /// Forward process `sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise` at training timesteps.
        ///
        /// # Shapes
        /// - `original`, `noise`: `[B, ...]`; `timesteps`: `B` entries -> `[B, ...]`
        ///
        /// # Errors
        /// Mismatched shapes or timesteps out of range.
        pub fn add_noise<const D: usize>(&self, original: Tensor<D>, noise: Tensor<D>, timesteps: &[usize]) -> Result<Tensor<D>> {
            self.tables.add_noise(original, noise, timesteps)
        }
    };
}

mod ddim;
mod ddpm;

pub use ddim::{DdimScheduler, DdimStepOptions};
pub use ddpm::DdpmScheduler;


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacings_match_diffusers() {
        let mut s = DdimScheduler::new(&SchedulerConfig::new()).unwrap();
        s.set_timesteps(10).unwrap();
        assert_eq!(s.timesteps(), &[900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
        let mut s = DdimScheduler::new(&SchedulerConfig::new().with_steps_offset(1)).unwrap();
        s.set_timesteps(10).unwrap();
        assert_eq!(s.timesteps()[0], 901);
        let mut s = DdimScheduler::new(&SchedulerConfig::new().with_timestep_spacing(TimestepSpacing::Trailing)).unwrap();
        s.set_timesteps(10).unwrap();
        assert_eq!(s.timesteps(), &[999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
        let mut s = DdimScheduler::new(&SchedulerConfig::new().with_timestep_spacing(TimestepSpacing::Linspace)).unwrap();
        s.set_timesteps(4).unwrap();
        assert_eq!(s.timesteps(), &[999, 666, 333, 0]);
    }

    #[test]
    fn zero_snr_rescale_ends_at_zero() {
        let betas = BetaSchedule::ScaledLinear { start: 0.00085, end: 0.012 }.betas(1000).unwrap();
        let r = rescale_zero_terminal_snr(&betas);
        assert_eq!(r[999], 1.0);
        assert!((r[0] - betas[0]).abs() < 1e-12);
    }

    #[test]
    fn ddpm_previous_timestep_follows_the_sequence() {
        let mut s = DdpmScheduler::new(&SchedulerConfig::new()).unwrap();
        assert_eq!(s.previous_timestep(5).unwrap(), Some(4));
        s.set_custom_timesteps(vec![999, 500, 20]).unwrap();
        assert_eq!(s.previous_timestep(500).unwrap(), Some(20));
        assert_eq!(s.previous_timestep(20).unwrap(), None);
        assert!(s.previous_timestep(21).is_err());
        assert!(s.set_custom_timesteps(vec![5, 7]).is_err());
        assert!(s.set_custom_timesteps(vec![1000]).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let device = Device::flex();
        let x = Tensor::<4>::zeros([1, 2, 2, 2], &device);
        let mut d = DdimScheduler::new(&SchedulerConfig::new()).unwrap();
        assert!(d.step(x.clone(), 500, x.clone(), DdimStepOptions::default(), None).is_err()); // no set_timesteps
        assert!(d.set_timesteps(0).is_err() && d.set_timesteps(1001).is_err());
        d.set_timesteps(10).unwrap();
        let neg = DdimStepOptions { eta: -1.0, ..Default::default() };
        assert!(d.step(x.clone(), 500, x.clone(), neg, None).is_err());
        let sto = DdimStepOptions { eta: 1.0, ..Default::default() };
        assert!(d.step(x.clone(), 500, x.clone(), sto, None).is_err());
        assert!(d.step(x.clone(), 1000, x.clone(), DdimStepOptions::default(), None).is_err());
        assert!(d.add_noise(x.clone(), x.clone(), &[0, 1]).is_err());
        let p = DdpmScheduler::new(&SchedulerConfig::new()).unwrap();
        assert!(p.step(x.clone(), 10, x.clone(), None).is_err());
        assert!(p.step(x.clone(), 0, x.clone(), None).is_ok());
        let learned = DdpmScheduler::new(&SchedulerConfig::new().with_variance_type(DdpmVarianceType::LearnedRange)).unwrap();
        assert!(learned.step(x.clone(), 0, x.clone(), None).is_err());
        assert!(DdpmScheduler::new(&SchedulerConfig::new().with_clip_sample_range(0.0)).is_err());
        assert!(BetaSchedule::from_diffusers("sigmoid", 1e-4, 0.02).is_err());
        let mut off = DdimScheduler::new(&SchedulerConfig::new().with_steps_offset(600)).unwrap();
        assert!(off.set_timesteps(2).is_err());
    }
}

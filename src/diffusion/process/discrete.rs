//! Discrete variance-preserving diffusion (DDPM): a table of `alphas_cumprod` over `T`
//! training timesteps, `alpha_t = sqrt(abar_t)`, `sigma_t = sqrt(1 - abar_t)`, the model
//! seeing the integer (or interpolated) training timestep.

use crate::diffusion::gaussian::{ClipMode, GaussianDiffusion, PredictionType, VarianceType};
use crate::diffusion::process::{
    Level, OdeFrame, Plan, Prediction, Process, chain_targets, exponential_sigmas, karras_sigmas,
};
use crate::diffusion::schedule::BetaSchedule;
use crate::diffusion::timesteps::{FinalSigma, SigmaSpacing, StepTarget, TimestepSchedule};
use crate::error::{Error, Result, ensure_config};

/// The coordinates of the sample a sampler carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coordinates {
    /// `x = sqrt(abar) x_0 + sqrt(1 - abar) eps` (DDPM, DDIM, DPM-Solver, UniPC).
    VariancePreserving,
    /// `x = x_0 + s eps`, `s = sqrt((1 - abar) / abar)`, the model seeing `x / sqrt(1 + s^2)`
    /// (k-diffusion; diffusers' Euler schedulers, whose initial noise scale is `s_max` for
    /// `linspace` / `trailing` spacing and `sqrt(s_max^2 + 1)` for `leading`).
    VarianceExploding,
}

/// A discrete VP process over a training table of `alphas_cumprod`.
///
/// ```
/// use diffusion_transformers::diffusion::process::{DiscreteVp, Prediction, Process};
/// use diffusion_transformers::diffusion::schedule::BetaSchedule;
/// use diffusion_transformers::diffusion::timesteps::TimestepSchedule;
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let vp = DiscreteVp::diffusers(&BetaSchedule::LinearRange { start: 1e-4, end: 0.02 }, 1000, Prediction::Epsilon)?;
/// let plan = vp.plan(10, &TimestepSchedule::diffusers("DPMSolverMultistepScheduler")?)?;
/// assert_eq!(plan.levels[0].timestep, 999.0);
/// assert_eq!(plan.targets[9].sigma, 0.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteVp {
    alphas_cumprod: Vec<f64>,
    prediction: Prediction,
    variance: VarianceType,
    coordinates: Coordinates,
    clip: ClipMode,
}

impl DiscreteVp {
    /// A process over `alphas_cumprod` (each in `(0, 1)`, decreasing).
    ///
    /// # Errors
    /// An empty table or values outside `(0, 1)`.
    pub fn new(alphas_cumprod: Vec<f64>, prediction: Prediction) -> Result<Self> {
        ensure_config(!alphas_cumprod.is_empty(), || "empty alphas_cumprod".into())?;
        ensure_config(alphas_cumprod.iter().all(|a| *a > 0.0 && *a < 1.0), || "alphas_cumprod must lie in (0, 1)".into())?;
        ensure_config(!matches!(prediction, Prediction::FlowVelocity | Prediction::EdmPreconditioned { .. }), || {
            format!("a discrete VP process cannot use the {prediction:?} parametrisation")
        })?;
        Ok(Self {
            alphas_cumprod,
            prediction,
            variance: VarianceType::FixedSmall,
            coordinates: Coordinates::VariancePreserving,
            clip: ClipMode::Off,
        })
    }

    /// diffusers' tables: `T` betas of `schedule` and their cumulative product, both rounded
    /// to `f32` as diffusers stores them.
    ///
    /// # Errors
    /// As [`BetaSchedule::betas`].
    pub fn diffusers(schedule: &BetaSchedule, num_train_timesteps: usize, prediction: Prediction) -> Result<Self> {
        let mut acc = 1.0f64;
        let ac = schedule
            .betas(num_train_timesteps)?
            .into_iter()
            .map(|b| {
                acc *= f64::from(1.0 - b as f32);
                acc = f64::from(acc as f32);
                acc
            })
            .collect();
        Self::new(ac, prediction)
    }

    /// Sets the sample's coordinates.
    pub fn with_coordinates(mut self, coordinates: Coordinates) -> Self {
        self.coordinates = coordinates;
        self
    }

    /// Sets the variance of ancestral steps.
    pub fn with_variance(mut self, variance: VarianceType) -> Self {
        self.variance = variance;
        self
    }

    /// Sets the processing of `x_0` predictions.
    pub fn with_clip(mut self, clip: ClipMode) -> Self {
        self.clip = clip;
        self
    }

    /// The training table.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// `s = sqrt((1 - abar) / abar)` at a (fractional) training timestep, interpolated linearly.
    fn ve_sigma_at(&self, t: f64) -> f64 {
        let ac = &self.alphas_cumprod;
        let s = |i: usize| ((1.0 - ac[i]) / ac[i]).sqrt();
        let t = t.clamp(0.0, (ac.len() - 1) as f64);
        let lo = t.floor() as usize;
        let hi = (lo + 1).min(ac.len() - 1);
        let w = t - lo as f64;
        s(lo) + w * (s(hi) - s(lo))
    }

    /// diffusers' `_sigma_to_t`: interpolation of `ln s` in the table.
    fn t_of_ve_sigma(&self, sigma: f64) -> f64 {
        let ac = &self.alphas_cumprod;
        let log_s: Vec<f64> = ac.iter().map(|a| ((1.0 - a) / a).sqrt().ln()).collect();
        let ls = sigma.max(1e-10).ln();
        let low = log_s.iter().filter(|&&l| ls - l >= 0.0).count().saturating_sub(1).min(log_s.len().saturating_sub(2));
        let high = (low + 1).min(log_s.len() - 1);
        if low == high {
            return low as f64;
        }
        let w = ((log_s[low] - ls) / (log_s[low] - log_s[high])).clamp(0.0, 1.0);
        (1.0 - w) * low as f64 + w * high as f64
    }

    /// The level of VE sigma `s` (rounded to `f32` as diffusers stores sigmas) seen at `t`.
    fn level(&self, s: f64, t: f64) -> Level {
        let s = f64::from(s as f32);
        match self.coordinates {
            Coordinates::VariancePreserving => {
                let a = 1.0 / (s * s + 1.0).sqrt();
                Level::new(a, s * a, t)
            }
            Coordinates::VarianceExploding => Level { alpha: 1.0, sigma: s, timestep: t, input_scale: 1.0 / (s * s + 1.0).sqrt() },
        }
    }

    fn final_level(&self, schedule: &TimestepSchedule) -> Level {
        match schedule.final_sigma {
            FinalSigma::Zero => Level::new(1.0, 0.0, 0.0),
            FinalSigma::SigmaMin => self.level(self.ve_sigma_at(0.0), 0.0),
        }
    }
}

impl Process for DiscreteVp {
    fn plan(&self, num_steps: usize, schedule: &TimestepSchedule) -> Result<Plan> {
        let big = self.alphas_cumprod.len();
        let ts = schedule.spaced_timesteps(num_steps, big)?;
        let (s_min, s_max) = (self.ve_sigma_at(0.0), self.ve_sigma_at((big - 1) as f64));
        let sigmas: Vec<(f64, f64)> = match schedule.sigmas {
            SigmaSpacing::Timesteps => ts.iter().map(|&t| (self.ve_sigma_at(t), t)).collect(),
            spacing => {
                let s = if spacing == SigmaSpacing::Karras {
                    karras_sigmas(s_min, s_max, 7.0, num_steps)
                } else {
                    exponential_sigmas(s_min, s_max, num_steps)
                };
                s.into_iter()
                    .map(|s| {
                        let t = self.t_of_ve_sigma(s);
                        (s, if schedule.round_sigma_timesteps { t.round_ties_even() } else { t })
                    })
                    .collect()
            }
        };
        let levels: Vec<Level> = sigmas.iter().map(|&(s, t)| self.level(s, t)).collect();
        let last = self.final_level(schedule);
        let targets = match schedule.step_target {
            StepTarget::Next => chain_targets(&levels, last),
            StepTarget::Stride => {
                ensure_config(schedule.sigmas == SigmaSpacing::Timesteps, || "stride targets need timestep sigmas".into())?;
                let stride = (big / num_steps) as f64;
                ts.iter()
                    .map(|&t| if t - stride >= 0.0 { self.level(self.ve_sigma_at(t - stride), t - stride) } else { last })
                    .collect()
            }
        };
        let init_noise_scale = match self.coordinates {
            Coordinates::VariancePreserving => 1.0,
            Coordinates::VarianceExploding => {
                let m = levels.iter().map(|l| l.sigma).fold(0.0, f64::max);
                match schedule.timestep_spacing {
                    crate::diffusion::timesteps::TimestepSpacing::Leading => (m * m + 1.0).sqrt(),
                    _ => m,
                }
            }
        };
        let plan = Plan {
            levels,
            targets,
            init_noise_scale,
            prediction: self.prediction,
            frame: OdeFrame::VarianceExploding,
            variance: self.variance,
            clip: self.clip,
            continuous_time: None,
        };
        plan.validate()?;
        Ok(plan)
    }
}

/// The official DiT diffusion as a process: its (respaced) timesteps, noisiest first, the
/// model seeing the original timesteps; its prediction and variance types. The timestep
/// schedule's spacing is ignored (the respacing was chosen when building the diffusion);
/// `num_steps` must be its number of timesteps.
impl Process for GaussianDiffusion {
    fn plan(&self, num_steps: usize, _schedule: &TimestepSchedule) -> Result<Plan> {
        let n = self.num_timesteps();
        if num_steps != n {
            return Err(Error::InvalidArgument(format!(
                "this diffusion is respaced to {n} timesteps; sample it with {n} steps, not {num_steps}"
            )));
        }
        let ac = self.schedule().alphas_cumprod();
        let map = self.timestep_map();
        let levels: Vec<Level> = (0..n).rev().map(|i| Level::new(ac[i].sqrt(), (1.0 - ac[i]).sqrt(), map[i] as f64)).collect();
        let targets = chain_targets(&levels, Level::new(1.0, 0.0, 0.0));
        let prediction = match self.prediction_type() {
            PredictionType::Epsilon => Prediction::Epsilon,
            PredictionType::Sample => Prediction::Sample,
            PredictionType::VPrediction => Prediction::V,
        };
        let plan = Plan {
            levels,
            targets,
            init_noise_scale: 1.0,
            prediction,
            frame: OdeFrame::VarianceExploding,
            variance: self.variance_type(),
            clip: ClipMode::Off,
            continuous_time: None,
        };
        plan.validate()?;
        Ok(plan)
    }
}

//! Continuous variance-preserving diffusion (Song et al. 2021, the VP SDE with linear
//! `beta(t) = beta_min + t (beta_max - beta_min)`, `t in [eps, 1]`):
//! `alpha(t) = exp(-t^2 (beta_max - beta_min) / 4 - t beta_min / 2)`,
//! `sigma(t) = sqrt(1 - alpha(t)^2)`, the model seeing `time_scale * t`.

use crate::diffusion::gaussian::{ClipMode, VarianceType};
use crate::diffusion::process::{Level, OdeFrame, Plan, Prediction, Process, chain_targets};
use crate::diffusion::schedule::linspace;
use crate::diffusion::timesteps::{FinalSigma, SigmaSpacing, StepTarget, TimestepSchedule};
use crate::error::{Error, Result, ensure_config};

/// A continuous VP process (see the [module docs](super)); DDPM's linear schedule in the limit
/// is `ContinuousVp::new(0.1, 20.0, 1e-3, 1000.0, Prediction::Epsilon)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuousVp {
    beta_min: f64,
    beta_max: f64,
    t_min: f64,
    time_scale: f64,
    prediction: Prediction,
    clip: ClipMode,
}

impl ContinuousVp {
    /// The VP SDE with `beta(t)` from `beta_min` to `beta_max`, sampled down to `t_min`.
    ///
    /// # Errors
    /// Unless `0 <= beta_min <= beta_max`, `0 < t_min < 1`, a positive `time_scale`, and an
    /// epsilon, sample or v prediction.
    pub fn new(beta_min: f64, beta_max: f64, t_min: f64, time_scale: f64, prediction: Prediction) -> Result<Self> {
        ensure_config(beta_min >= 0.0 && beta_max >= beta_min && beta_max > 0.0 && beta_max.is_finite(), || {
            format!("need 0 <= beta_min <= beta_max, got {beta_min} and {beta_max}")
        })?;
        ensure_config(t_min > 0.0 && t_min < 1.0, || format!("t_min must be in (0, 1), got {t_min}"))?;
        ensure_config(time_scale > 0.0 && time_scale.is_finite(), || format!("time_scale must be positive, got {time_scale}"))?;
        ensure_config(matches!(prediction, Prediction::Epsilon | Prediction::Sample | Prediction::V), || {
            format!("a VP process cannot use the {prediction:?} parametrisation")
        })?;
        Ok(Self { beta_min, beta_max, t_min, time_scale, prediction, clip: ClipMode::Off })
    }

    /// Sets the processing of `x_0` predictions.
    pub fn with_clip(mut self, clip: ClipMode) -> Self {
        self.clip = clip;
        self
    }

    /// `(alpha(t), sigma(t))`.
    pub fn alpha_sigma(&self, t: f64) -> (f64, f64) {
        let log_alpha = -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min;
        (log_alpha.exp(), (-(2.0 * log_alpha).exp_m1()).sqrt())
    }

    fn level(&self, t: f64) -> Level {
        let (a, s) = self.alpha_sigma(t);
        Level::new(a, s, self.time_scale * t)
    }
}

impl Process for ContinuousVp {
    fn plan(&self, num_steps: usize, schedule: &TimestepSchedule) -> Result<Plan> {
        ensure_config(num_steps > 0, || "the number of inference steps must be at least 1".into())?;
        if schedule.sigmas != SigmaSpacing::Timesteps || schedule.step_target != StepTarget::Next {
            return Err(Error::InvalidConfig("the continuous VP process supports only uniform times".into()));
        }
        let levels: Vec<Level> = linspace(1.0, self.t_min, num_steps).into_iter().map(|t| self.level(t)).collect();
        let last = match schedule.final_sigma {
            FinalSigma::Zero => Level::new(1.0, 0.0, 0.0),
            FinalSigma::SigmaMin => self.level(self.t_min),
        };
        let plan = Plan {
            targets: chain_targets(&levels, last),
            levels,
            init_noise_scale: 1.0,
            prediction: self.prediction,
            frame: OdeFrame::VarianceExploding,
            variance: VarianceType::FixedSmall,
            clip: self.clip,
            continuous_time: None,
        };
        plan.validate()?;
        Ok(plan)
    }
}

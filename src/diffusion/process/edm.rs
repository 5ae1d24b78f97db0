//! EDM / variance-exploding diffusion (Karras et al. 2022): `x = x_0 + sigma eps`, the network
//! `F` preconditioned with `c_in = 1 / sqrt(sigma^2 + sigma_d^2)`, `c_noise = ln(sigma) / 4`
//! and `x_0 = c_skip x + c_out F` (see [`crate::diffusion::edm`]), over Karras (`rho`) or
//! log-uniform sigmas between `sigma_min` and `sigma_max`.

use crate::diffusion::gaussian::{ClipMode, VarianceType};
use crate::diffusion::process::{ContinuousTime, Level, OdeFrame, Plan, Prediction, Process, chain_targets, exponential_sigmas, karras_sigmas};
use crate::diffusion::timesteps::{FinalSigma, SigmaSpacing, StepTarget, TimestepSchedule};
use crate::error::{Error, Result, ensure_config};

/// An EDM process (see the [module docs](super)); MicroDiT's defaults are
/// `EdmProcess::new(0.002, 80.0, 7.0, 0.9)`.
///
/// ```
/// use diffusion_transformers::diffusion::process::{EdmProcess, Process};
/// use diffusion_transformers::diffusion::timesteps::{SigmaSpacing, TimestepSchedule};
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let edm = EdmProcess::new(0.002, 80.0, 7.0, 0.5)?;
/// let plan = edm.plan(18, &TimestepSchedule::new().with_sigmas(SigmaSpacing::Karras))?;
/// assert_eq!(plan.levels[0].sigma, 80.0);
/// assert_eq!(plan.init_noise_scale, 80.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EdmProcess {
    sigma_min: f64,
    sigma_max: f64,
    rho: f64,
    sigma_data: f64,
    clip: ClipMode,
}

impl EdmProcess {
    /// Noise levels in `[sigma_min, sigma_max]` with Karras curvature `rho`, data standard
    /// deviation `sigma_data`.
    ///
    /// # Errors
    /// Unless `0 < sigma_min < sigma_max < inf`, `rho > 0` and `sigma_data > 0`.
    pub fn new(sigma_min: f64, sigma_max: f64, rho: f64, sigma_data: f64) -> Result<Self> {
        ensure_config(sigma_min > 0.0 && sigma_max > sigma_min && sigma_max.is_finite(), || {
            format!("need 0 < sigma_min < sigma_max < inf, got {sigma_min} and {sigma_max}")
        })?;
        ensure_config(rho > 0.0 && rho.is_finite(), || format!("rho must be positive, got {rho}"))?;
        ensure_config(sigma_data > 0.0 && sigma_data.is_finite(), || format!("sigma_data must be positive, got {sigma_data}"))?;
        Ok(Self { sigma_min, sigma_max, rho, sigma_data, clip: ClipMode::Off })
    }

    /// Sets the processing of `x_0` predictions.
    pub fn with_clip(mut self, clip: ClipMode) -> Self {
        self.clip = clip;
        self
    }

    fn level(&self, s: f64) -> Level {
        let d2 = self.sigma_data * self.sigma_data;
        Level { alpha: 1.0, sigma: s, timestep: s.ln() / 4.0, input_scale: 1.0 / (s * s + d2).sqrt() }
    }
}

impl Process for EdmProcess {
    fn plan(&self, num_steps: usize, schedule: &TimestepSchedule) -> Result<Plan> {
        ensure_config(num_steps > 0, || "the number of inference steps must be at least 1".into())?;
        let sigmas = match schedule.sigmas {
            SigmaSpacing::Karras | SigmaSpacing::Timesteps => karras_sigmas(self.sigma_min, self.sigma_max, self.rho, num_steps),
            SigmaSpacing::Exponential => exponential_sigmas(self.sigma_min, self.sigma_max, num_steps),
        };
        if schedule.step_target != StepTarget::Next {
            return Err(Error::InvalidConfig("EDM supports only next-level targets".into()));
        }
        let levels: Vec<Level> = sigmas.into_iter().map(|s| self.level(s)).collect();
        let last = match schedule.final_sigma {
            FinalSigma::Zero => Level::new(1.0, 0.0, 0.0),
            FinalSigma::SigmaMin => self.level(self.sigma_min),
        };
        let plan = Plan {
            targets: chain_targets(&levels, last),
            init_noise_scale: levels[0].sigma,
            levels,
            prediction: Prediction::EdmPreconditioned { sigma_data: self.sigma_data },
            frame: OdeFrame::VarianceExploding,
            variance: VarianceType::FixedSmall,
            clip: self.clip,
            continuous_time: Some(ContinuousTime::Edm { sigma_data: self.sigma_data }),
        };
        plan.validate()?;
        Ok(plan)
    }
}

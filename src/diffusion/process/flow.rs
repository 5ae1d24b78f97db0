//! Rectified flow (Liu et al. 2022; SD3, Esser et al. 2024): `x_t = (1 - t) x_0 + t eps`,
//! `alpha = 1 - sigma`, the model predicting the velocity `eps - x_0` at timestep `T sigma`,
//! with SD3's timestep shift `shift(s) = shift s / (1 + (shift - 1) s)` and the
//! resolution-dependent dynamic shift `shift = e^mu`.

pub use crate::diffusion::timesteps::FlowSigmas;

use crate::diffusion::gaussian::{ClipMode, VarianceType};
use crate::diffusion::process::{ContinuousTime, Level, OdeFrame, Plan, Prediction, Process, chain_targets};
use crate::diffusion::schedule::linspace;
use crate::diffusion::timestep_sampling::check_shift;
use crate::diffusion::timesteps::{FinalSigma, SigmaSpacing, StepTarget, TimestepSchedule};
use crate::error::{Error, Result, ensure_config};

/// A rectified-flow process (see the [module docs](super)).
///
/// ```
/// use diffusion_transformers::diffusion::process::{Process, RectifiedFlowProcess};
/// use diffusion_transformers::diffusion::timesteps::TimestepSchedule;
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let sd3 = RectifiedFlowProcess::new(1000, 3.0)?;
/// let plan = sd3.plan(28, &TimestepSchedule::new())?;
/// assert_eq!(plan.levels[0].sigma, 1.0);
/// assert_eq!(plan.levels[0].timestep, 1000.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RectifiedFlowProcess {
    num_train_timesteps: usize,
    shift: f64,
    clip: ClipMode,
}

impl RectifiedFlowProcess {
    /// A flow whose model sees `num_train_timesteps * sigma`, with timestep `shift` (1: none).
    ///
    /// # Errors
    /// Zero training timesteps or a shift that is not finite and positive.
    pub fn new(num_train_timesteps: usize, shift: f64) -> Result<Self> {
        ensure_config(num_train_timesteps > 0, || "num_train_timesteps must be at least 1".into())?;
        check_shift(shift)?;
        Ok(Self { num_train_timesteps, shift, clip: ClipMode::Off })
    }

    /// Sets the processing of `x_0` predictions.
    pub fn with_clip(mut self, clip: ClipMode) -> Self {
        self.clip = clip;
        self
    }

    /// The static shift.
    pub fn shift(&self) -> f64 {
        self.shift
    }

    fn sigmas(&self, n: usize, schedule: &TimestepSchedule) -> Result<(Vec<f64>, Vec<f64>)> {
        let big = self.num_train_timesteps as f64;
        let shift = match schedule.mu {
            Some(mu) => {
                check_shift(mu.exp())?;
                mu.exp()
            }
            None => self.shift,
        };
        let sh = |s: f64| shift * s / (1.0 + (shift - 1.0) * s);
        Ok(match schedule.flow_sigmas {
            FlowSigmas::FlowMatch => {
                // Training sigmas in f32 like torch; their extremes span the linspace.
                let train = |k: f64| {
                    let s = (k / big) as f32;
                    (shift as f32 * s) / (1.0 + (shift - 1.0) as f32 * s)
                };
                let (smax, smin) = (f64::from(train(big)), f64::from(train(1.0)));
                let s: Vec<f64> = linspace(smax * big, smin * big, n).into_iter().map(|t| f64::from(sh(t / big) as f32)).collect();
                let t = s.iter().map(|&s| f64::from(s as f32 * big as f32)).collect();
                (s, t)
            }
            FlowSigmas::DpmSolver => {
                let mut s: Vec<f64> = linspace(1.0, 1.0 / big, n + 1).into_iter().map(|a| sh(1.0 - a)).collect();
                s.reverse();
                s.truncate(n);
                let t = s.iter().map(|&s| (s * big).trunc()).collect();
                (s.into_iter().map(|s| f64::from(s as f32)).collect(), t)
            }
            FlowSigmas::UniPc => {
                let mut s: Vec<f64> = linspace(1.0, 1.0 / big, n + 1).into_iter().take(n).map(sh).collect();
                if (s[0] - 1.0).abs() < 1e-6 {
                    s[0] -= 1e-6;
                }
                let t = s.iter().map(|&s| (s * big).trunc()).collect();
                (s.into_iter().map(|s| f64::from(s as f32)).collect(), t)
            }
        })
    }
}

impl Process for RectifiedFlowProcess {
    fn plan(&self, num_steps: usize, schedule: &TimestepSchedule) -> Result<Plan> {
        ensure_config(num_steps > 0, || "the number of inference steps must be at least 1".into())?;
        if schedule.sigmas != SigmaSpacing::Timesteps || schedule.step_target != StepTarget::Next {
            return Err(Error::InvalidConfig("rectified flows support only timestep sigmas and next-level targets".into()));
        }
        let (sigmas, ts) = self.sigmas(num_steps, schedule)?;
        let levels: Vec<Level> = sigmas.iter().zip(&ts).map(|(&s, &t)| Level::new(1.0 - s, s, t)).collect();
        let last = match schedule.final_sigma {
            FinalSigma::Zero => Level::new(1.0, 0.0, 0.0),
            FinalSigma::SigmaMin => levels[levels.len() - 1],
        };
        let plan = Plan {
            targets: chain_targets(&levels, last),
            levels,
            init_noise_scale: 1.0,
            prediction: Prediction::FlowVelocity,
            frame: OdeFrame::Flow,
            variance: VarianceType::FixedSmall,
            clip: self.clip,
            continuous_time: Some(ContinuousTime::Flow { scale: self.num_train_timesteps as f64 }),
        };
        plan.validate()?;
        Ok(plan)
    }
}

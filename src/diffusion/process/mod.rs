//! Diffusion processes seen by samplers: every process (discrete variance-preserving DDPM,
//! continuous VP, rectified flow, EDM / variance-exploding) writes its noisy sample as
//!
//! ```text
//! x_t = alpha(t) x_0 + sigma(t) eps
//! ```
//!
//! and feeds the model `F(c_in(t) x_t, c_noise(t))`. A [`Process`] turns a number of steps
//! and a [`TimestepSchedule`] into a [`Plan`]:
//! the [`Level`]s (alpha, sigma, model time, input scale) at which the model is evaluated,
//! where each step lands, the initial noise scale and the model's [`Prediction`]. Every model
//! parametrisation is affine in the sample, so converting an output to `x_0` is
//! `x_0 = a x_t + b F` with per-level scalars `(a, b)` ([`Plan::x0_coefficients`]), computed
//! once per run:
//!
//! | prediction | `a` | `b` |
//! |---|---|---|
//! | epsilon | `1 / alpha` | `-sigma / alpha` |
//! | sample (`x_0`) | 0 | 1 |
//! | v (`v = alpha_n eps - sigma_n x_0`, VP-normalised) | `alpha_n / r` | `-sigma_n` |
//! | flow velocity (`v = eps - x_0`) | `1 / (alpha + sigma)` | `-sigma / (alpha + sigma)` |
//! | EDM preconditioned (`sigma_d`) | `c_skip / alpha` | `c_out / alpha` |
//!
//! with `r = sqrt(alpha^2 + sigma^2)`, `alpha_n = alpha / r`, `sigma_n = sigma / r`, and for EDM
//! `c_skip = sigma_d^2 / (s^2 + sigma_d^2)`, `c_out = s sigma_d / sqrt(s^2 + sigma_d^2)` in the
//! variance-exploding sigma `s = sigma / alpha`. The noise estimate is then
//! `eps = (x_t - alpha x_0) / sigma`.

mod continuous;
mod discrete;
mod edm;
mod flow;

pub use continuous::ContinuousVp;
pub use discrete::{Coordinates, DiscreteVp};
pub use edm::EdmProcess;
pub use flow::{FlowSigmas, RectifiedFlowProcess};

use crate::diffusion::gaussian::{ClipMode, VarianceType};
use crate::diffusion::schedule::linspace;
use crate::diffusion::timesteps::TimestepSchedule;
use crate::error::{Error, Result};

/// What a model outputs, for converting it to `x_0` (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Prediction {
    /// The noise `eps` (diffusers `epsilon`).
    Epsilon,
    /// The clean sample `x_0` (diffusers `sample`).
    Sample,
    /// The velocity `v = alpha eps - sigma x_0` of the variance-preserving normalisation
    /// (Salimans & Ho 2022; diffusers `v_prediction`).
    V,
    /// The rectified-flow velocity `v = eps - x_0` (diffusers `flow_prediction`).
    FlowVelocity,
    /// The raw network `F` of EDM's preconditioning with data standard deviation `sigma_data`.
    EdmPreconditioned {
        /// `sigma_data > 0`.
        sigma_data: f64,
    },
}

impl Prediction {
    /// diffusers' `prediction_type` names: `epsilon`, `sample`, `v_prediction`, `flow_prediction`.
    ///
    /// # Errors
    /// Any other name.
    pub fn from_diffusers(name: &str) -> Result<Self> {
        match name {
            "epsilon" => Ok(Self::Epsilon),
            "sample" => Ok(Self::Sample),
            "v_prediction" => Ok(Self::V),
            "flow_prediction" => Ok(Self::FlowVelocity),
            other => Err(Error::InvalidConfig(format!(
                "unknown prediction_type `{other}` (epsilon, sample, v_prediction, flow_prediction)"
            ))),
        }
    }
}

/// Which normalisation the sigma-ODE samplers (Euler, Heun, Euler ancestral, EDM) integrate
/// in: `y = x / n`, `s = sigma / n` with `n = alpha` (variance exploding, k-diffusion) or
/// `n = alpha + sigma` (rectified flow). In both, `dy/ds = (y - x_0) / s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OdeFrame {
    /// `n = alpha`: `y = x_0 + s eps`.
    VarianceExploding,
    /// `n = alpha + sigma`: `y = (1 - s) x_0 + s eps`.
    Flow,
}

/// One noise level of a [`Plan`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    /// Signal scale `alpha` of the sample's coordinates.
    pub alpha: f64,
    /// Noise scale `sigma` of the sample's coordinates (0 at the clean data).
    pub sigma: f64,
    /// The time the model sees (`c_noise`: a DDPM timestep, `1000 sigma` for flows, ...).
    pub timestep: f64,
    /// Scale applied to the sample before the model (`c_in`; 1 for most processes).
    pub input_scale: f64,
}

impl Level {
    /// A level with unit input scale.
    pub fn new(alpha: f64, sigma: f64, timestep: f64) -> Self {
        Self { alpha, sigma, timestep, input_scale: 1.0 }
    }

    /// `lambda = ln(alpha / sigma)` (infinite at `sigma = 0`).
    pub fn lambda(&self) -> f64 {
        self.alpha.ln() - self.sigma.ln()
    }

    /// The normaliser of `frame` (see [`OdeFrame`]).
    pub fn frame_scale(&self, frame: OdeFrame) -> f64 {
        match frame {
            OdeFrame::VarianceExploding => self.alpha,
            OdeFrame::Flow => self.alpha + self.sigma,
        }
    }

    /// The sigma of `frame`: `sigma / alpha` (variance exploding: EDM's and k-diffusion's
    /// sigma) or `sigma / (alpha + sigma)` (the rectified flow's `t`).
    pub fn frame_sigma(&self, frame: OdeFrame) -> f64 {
        self.sigma / self.frame_scale(frame)
    }

    /// `sqrt(alpha^2 + sigma^2)`: the variance-preserving normaliser.
    pub fn vp_scale(&self) -> f64 {
        self.alpha.hypot(self.sigma)
    }
}

/// The levels of one sampling run (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The `n` levels at which the model is evaluated, noisiest first.
    pub levels: Vec<Level>,
    /// Where step `i` lands (usually `levels[i + 1]`, then the final level).
    pub targets: Vec<Level>,
    /// The initial sample is `init_noise_scale * N(0, I)`.
    pub init_noise_scale: f64,
    /// What the model predicts.
    pub prediction: Prediction,
    /// The frame of the sigma-ODE samplers.
    pub frame: OdeFrame,
    /// The reverse-process variance of ancestral DDPM steps (discrete processes; the learned
    /// variants read the model's extra output channels).
    pub variance: VarianceType,
    /// Processing of every `x_0` prediction. Default: off.
    pub clip: ClipMode,
    /// How the model time follows from any noise level (for samplers that leave the plan's
    /// levels, e.g. EDM churn); `None` for tabulated processes.
    pub continuous_time: Option<ContinuousTime>,
}

/// How a continuous process maps a frame sigma to a [`Level`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ContinuousTime {
    /// EDM: `alpha = 1`, `c_noise = ln(sigma) / 4`, `c_in = 1 / sqrt(sigma^2 + sigma_data^2)`.
    Edm {
        /// `sigma_data`.
        sigma_data: f64,
    },
    /// Rectified flow: `alpha = 1 - sigma`, model time `scale * sigma`.
    Flow {
        /// Training timesteps `T`.
        scale: f64,
    },
}

impl ContinuousTime {
    /// The level of frame sigma `s`.
    pub fn level(&self, s: f64) -> Level {
        match *self {
            Self::Edm { sigma_data } => {
                Level { alpha: 1.0, sigma: s, timestep: s.ln() / 4.0, input_scale: 1.0 / (s * s + sigma_data * sigma_data).sqrt() }
            }
            Self::Flow { scale } => Level::new(1.0 - s, s, scale * s),
        }
    }
}

impl Plan {
    /// Checks the plan: at least one step, as many targets as levels, finite non-negative
    /// scales, positive evaluation sigmas.
    ///
    /// # Errors
    /// The first violated condition.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.levels.is_empty() {
            return bad("a sampling plan needs at least one step".into());
        }
        if self.targets.len() != self.levels.len() {
            return bad(format!("{} targets for {} levels", self.targets.len(), self.levels.len()));
        }
        for (i, l) in self.levels.iter().chain(&self.targets).enumerate() {
            let finite = [l.alpha, l.sigma, l.timestep, l.input_scale].iter().all(|v| v.is_finite());
            if !finite || l.alpha < 0.0 || l.sigma < 0.0 || (i < self.levels.len() && l.sigma <= 0.0) {
                return bad(format!("invalid noise level {l:?} in the sampling plan"));
            }
        }
        if !(self.init_noise_scale.is_finite() && self.init_noise_scale > 0.0) {
            return bad(format!("initial noise scale must be positive, got {}", self.init_noise_scale));
        }
        self.clip.validate()
    }

    /// Sets the processing of `x_0` predictions.
    pub fn with_clip(mut self, clip: ClipMode) -> Self {
        self.clip = clip;
        self
    }

    /// Number of steps `n`.
    pub fn num_steps(&self) -> usize {
        self.levels.len()
    }

    /// The model times `[lo, hi]` of the noise levels whose frame sigma
    /// ([`Level::frame_sigma`]) lies in `[sigma_lo, sigma_hi]`: mapped through the process's
    /// continuous time when it has one (then every level in between counts, e.g. EDM churn's),
    /// else the extreme model times of the plan's levels and targets in the range (model time
    /// grows with sigma in every process). An empty range is `(inf, -inf)`.
    pub fn model_time_range(&self, sigma_lo: f64, sigma_hi: f64) -> (f64, f64) {
        let empty = (f64::INFINITY, f64::NEG_INFINITY);
        if let Some(ct) = self.continuous_time {
            let at = |s: f64| if s > 0.0 { ct.level(s).timestep } else { f64::NEG_INFINITY };
            let hi = if sigma_hi.is_finite() { at(sigma_hi) } else { f64::INFINITY };
            return if sigma_lo <= sigma_hi { (at(sigma_lo), hi) } else { empty };
        }
        self.levels
            .iter()
            .chain(&self.targets)
            .filter(|l| (sigma_lo..=sigma_hi).contains(&l.frame_sigma(self.frame)))
            .fold(empty, |(lo, hi), l| (lo.min(l.timestep), hi.max(l.timestep)))
    }

    /// `(a, b)` with `x_0 = a x + b F` for the model output `F` at `level`.
    pub fn x0_coefficients(&self, level: &Level) -> (f64, f64) {
        let (al, si) = (level.alpha, level.sigma);
        match self.prediction {
            Prediction::Epsilon => (1.0 / al, -si / al),
            Prediction::Sample => (0.0, 1.0),
            Prediction::V => {
                let r = level.vp_scale();
                (al / (r * r), -si / r)
            }
            Prediction::FlowVelocity => (1.0 / (al + si), -si / (al + si)),
            Prediction::EdmPreconditioned { sigma_data } => {
                let s = si / al;
                let d2 = sigma_data * sigma_data;
                (d2 / (s * s + d2) / al, s * sigma_data / (s * s + d2).sqrt())
            }
        }
    }
}

/// A diffusion process: what samplers need to run it (see the [module docs](self)).
pub trait Process {
    /// The levels of an `num_steps`-step run under `schedule`.
    ///
    /// # Errors
    /// Zero steps or a schedule option the process does not support.
    fn plan(&self, num_steps: usize, schedule: &TimestepSchedule) -> Result<Plan>;
}

impl<P: Process + ?Sized> Process for &P {
    fn plan(&self, num_steps: usize, schedule: &TimestepSchedule) -> Result<Plan> {
        (**self).plan(num_steps, schedule)
    }
}

/// Chains `levels` into targets: `levels[i + 1]`, then `last`.
pub(crate) fn chain_targets(levels: &[Level], last: Level) -> Vec<Level> {
    levels.iter().skip(1).copied().chain(std::iter::once(last)).collect()
}

/// Karras et al. 2022 eq. 5: `n` sigmas from `sigma_max` to `sigma_min` with curvature `rho`.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, rho: f64, n: usize) -> Vec<f64> {
    let (a, b) = (sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho));
    linspace(0.0, 1.0, n).into_iter().map(|r| (a + r * (b - a)).powf(rho)).collect()
}

/// `n` sigmas evenly spaced in `ln sigma` from `sigma_max` to `sigma_min`.
pub fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    linspace(sigma_max.ln(), sigma_min.ln(), n).into_iter().map(f64::exp).collect()
}

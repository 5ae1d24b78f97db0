//! Timestep schedules by diffusers' option names: which noise levels a sampling run visits.
//!
//! - `timestep_spacing` ([`TimestepSpacing`]): `leading` (`(0..n) * (T / n)` reversed, plus
//!   `steps_offset`), `trailing` (`round(arange(T, 0, -T / n)) - 1`) or `linspace`
//!   (`round(linspace(0, T - 1, n))` reversed) over the `T` training timesteps;
//! - the sigmas between them ([`SigmaSpacing`]): interpolated at those timesteps, or Karras
//!   (`rho = 7`) or log-uniform between the process's extreme sigmas, the timesteps then
//!   mapped back by interpolating `ln sigma`;
//! - where the last step lands ([`FinalSigma`]): `zero` (the clean data) or `sigma_min` (the
//!   smallest training noise level);
//! - which level a step lands on ([`StepTarget`]): the next timestep, or DDPM / DDIM's
//!   `t - T / n`;
//! - for rectified flows, `shift` / `flow_shift` and the resolution-dependent dynamic shift
//!   (`mu`, [`resolution_shift`](crate::diffusion::resolution_shift)), applied by the process.
//!
//! Each diffusers scheduler has its own defaults; [`TimestepSchedule::diffusers`] gives them
//! by scheduler class name.

use burn::prelude::*;

use crate::error::{Error, Result};

/// How inference timesteps are spaced over the training timesteps.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// `(0..n) * (T / n)` reversed, plus `steps_offset` (multistep schedulers divide by `n + 1`).
    Leading,
    /// `round(arange(T, 0, -T / n)) - 1`: always starts at `T - 1`.
    Trailing,
    /// `round(linspace(0, T - 1, n))` reversed (multistep schedulers: `n + 1` points, the last
    /// dropped).
    Linspace,
}

impl TimestepSpacing {
    /// diffusers' names `leading`, `trailing`, `linspace`.
    ///
    /// # Errors
    /// Any other name.
    pub fn from_diffusers(name: &str) -> Result<Self> {
        match name {
            "leading" => Ok(Self::Leading),
            "trailing" => Ok(Self::Trailing),
            "linspace" => Ok(Self::Linspace),
            o => Err(Error::InvalidConfig(format!("unknown timestep_spacing `{o}` (leading, trailing, linspace)"))),
        }
    }
}

/// How the sigmas of a run are chosen.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum SigmaSpacing {
    /// The process's own sigmas at the spaced timesteps.
    Timesteps,
    /// Karras et al. 2022 (`use_karras_sigmas`, `rho = 7`).
    Karras,
    /// Log-uniform (`use_exponential_sigmas`).
    Exponential,
}

/// Where the last step lands.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum FinalSigma {
    /// `sigma = 0`: the clean data (`final_sigmas_type="zero"`, DDIM's `set_alpha_to_one`).
    Zero,
    /// The smallest training noise level (`final_sigmas_type="sigma_min"`; DDIM without
    /// `set_alpha_to_one`).
    SigmaMin,
}

/// Which level step `i` lands on.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum StepTarget {
    /// The next timestep of the run (multistep and Euler schedulers).
    Next,
    /// `t - T / n` (integer division; DDPM / DDIM `previous_timestep`), the final level when
    /// negative.
    Stride,
}

/// How a rectified flow spaces its `n` sigmas before shifting (each diffusers scheduler has
/// its own).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum FlowSigmas {
    /// `FlowMatchEulerDiscreteScheduler` / `FlowMatchHeunDiscreteScheduler`:
    /// `linspace(sigma_max, sigma_min)` of the shifted training sigmas, shifted again;
    /// float timesteps `T sigma`.
    FlowMatch,
    /// `DPMSolverMultistepScheduler(use_flow_sigmas=True)`: `1 - linspace(1, 1/T, n + 1)`
    /// reversed without its last 0, shifted; integer timesteps `floor(T sigma)`.
    DpmSolver,
    /// `UniPCMultistepScheduler(use_flow_sigmas=True)`: `linspace(1, 1/T, n + 1)` without its
    /// last point, shifted, the first lowered by `1e-6` when it is 1; integer timesteps.
    UniPc,
}

/// A timestep schedule (see the [module docs](self)).
#[derive(Config, Debug)]
pub struct TimestepSchedule {
    /// Spacing of the training timesteps. Default: linspace.
    #[config(default = "TimestepSpacing::Linspace")]
    pub timestep_spacing: TimestepSpacing,
    /// Offset added to leading timesteps. Default: 0.
    #[config(default = 0)]
    pub steps_offset: usize,
    /// Multistep spacing (`n + 1` points, the last dropped; DPM-Solver, UniPC) instead of `n`
    /// points (DDPM, DDIM, Euler). Default: false.
    #[config(default = false)]
    pub multistep_spacing: bool,
    /// `linspace` spacing keeps fractional (`f32`) timesteps instead of rounding them
    /// (Euler schedulers). Default: false.
    #[config(default = false)]
    pub fractional_linspace: bool,
    /// Sigma spacing. Default: the process's sigmas at the spaced timesteps.
    #[config(default = "SigmaSpacing::Timesteps")]
    pub sigmas: SigmaSpacing,
    /// Round timesteps mapped back from Karras / exponential sigmas to integers. Default: true.
    #[config(default = true)]
    pub round_sigma_timesteps: bool,
    /// Where the last step lands. Default: zero.
    #[config(default = "FinalSigma::Zero")]
    pub final_sigma: FinalSigma,
    /// Which level a step lands on. Default: the next timestep.
    #[config(default = "StepTarget::Next")]
    pub step_target: StepTarget,
    /// Rectified flows: the sigma spacing. Default: `FlowMatch`.
    #[config(default = "FlowSigmas::FlowMatch")]
    pub flow_sigmas: FlowSigmas,
    /// Rectified flows: the dynamic shift exponent `mu` (`shift = e^mu`), overriding the
    /// process's shift (SD3 / Flux `use_dynamic_shifting`). Default: none.
    #[config(default = "None")]
    pub mu: Option<f64>,
}

impl TimestepSchedule {
    /// The defaults of a diffusers scheduler class (`DDPMScheduler`, `DDIMScheduler`,
    /// `DPMSolverMultistepScheduler`, `UniPCMultistepScheduler`, `EulerDiscreteScheduler`,
    /// `EulerAncestralDiscreteScheduler`, `FlowMatchEulerDiscreteScheduler`,
    /// `FlowMatchHeunDiscreteScheduler`, `EDMEulerScheduler`, `EDMDPMSolverMultistepScheduler`).
    ///
    /// # Errors
    /// An unknown class.
    pub fn diffusers(class: &str) -> Result<Self> {
        let s = Self::new();
        Ok(match class {
            "DDPMScheduler" | "DDIMScheduler" => s
                .with_timestep_spacing(TimestepSpacing::Leading)
                .with_step_target(StepTarget::Stride),
            "DPMSolverMultistepScheduler" => s.with_multistep_spacing(true).with_flow_sigmas(FlowSigmas::DpmSolver),
            "UniPCMultistepScheduler" => s.with_multistep_spacing(true).with_flow_sigmas(FlowSigmas::UniPc),
            "EulerDiscreteScheduler" | "EulerAncestralDiscreteScheduler" => {
                s.with_fractional_linspace(true).with_round_sigma_timesteps(false)
            }
            "FlowMatchEulerDiscreteScheduler" | "FlowMatchHeunDiscreteScheduler" => s,
            "EDMEulerScheduler" | "EDMDPMSolverMultistepScheduler" => s.with_sigmas(SigmaSpacing::Karras),
            other => return Err(Error::InvalidConfig(format!("no timestep schedule for diffusers scheduler `{other}`"))),
        })
    }

    /// The `n` inference timesteps (descending, as floats) over `num_train` training steps.
    ///
    /// # Errors
    /// Zero steps, or more steps than the spacing can give distinct timesteps.
    pub fn spaced_timesteps(&self, n: usize, num_train: usize) -> Result<Vec<f64>> {
        if n == 0 || num_train == 0 {
            return Err(Error::InvalidConfig("a schedule needs at least one step and one training timestep".into()));
        }
        let big = num_train as f64;
        let ts: Vec<f64> = match (self.timestep_spacing, self.multistep_spacing) {
            (TimestepSpacing::Linspace, false) => {
                let mut v = crate::diffusion::schedule::linspace(0.0, big - 1.0, n);
                v.reverse();
                let round = |t: f64| if self.fractional_linspace { t as f32 as f64 } else { t.round_ties_even() };
                v.into_iter().map(round).collect()
            }
            (TimestepSpacing::Linspace, true) => {
                let mut v: Vec<f64> = crate::diffusion::schedule::linspace(0.0, big - 1.0, n + 1).into_iter().map(|t| t.round_ties_even()).collect();
                v.reverse();
                v.truncate(n);
                v
            }
            (TimestepSpacing::Leading, multi) => {
                let ratio = num_train / if multi { n + 1 } else { n };
                (0..n).rev().map(|k| (k * ratio + self.steps_offset) as f64).collect()
            }
            (TimestepSpacing::Trailing, _) => {
                let ratio = big / n as f64;
                (0..n).map(|k| (big - k as f64 * ratio).round_ties_even() - 1.0).collect()
            }
        };
        if ts.len() != n || ts.iter().any(|t| *t < 0.0 || *t > big - 1.0 + self.steps_offset as f64) {
            return Err(Error::InvalidConfig(format!("{n} steps do not fit {num_train} training timesteps with this spacing")));
        }
        Ok(ts)
    }
}

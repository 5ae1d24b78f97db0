//! Every sampler of the crate behind one enum, chosen by name at run time (command lines,
//! configs). Adding a sampler: write `src/sampling/<name>.rs` implementing [`Sampler`] (one
//! [`Sampler::step`] using [`Run`]'s operations), then register it
//! here: one variant, one arm in [`SamplerKind::from_name`] and in [`SamplerKind`]'s
//! `dispatch!`.

use burn::prelude::*;

use crate::diffusion::process::Plan;
use crate::error::{Error, Result};
use crate::sampling::heun::Churn;
use crate::sampling::run::Run;
use crate::contracts::Denoiser;
use crate::sampling::{Ddim, Ddpm, DpmSolverPp, Euler, EulerAncestral, Heun, Sampler, UniPc};

/// Any sampler of the crate.
#[derive(Debug, Clone, PartialEq)]
pub enum SamplerKind {
    /// Ancestral DDPM.
    Ddpm(Ddpm),
    /// DDIM.
    Ddim(Ddim),
    /// Euler.
    Euler(Euler),
    /// Euler ancestral.
    EulerAncestral(EulerAncestral),
    /// Heun, or EDM's stochastic sampler with churn.
    Heun(Heun),
    /// DPM-Solver++ (2M, 3M, SDE).
    DpmSolverPp(DpmSolverPp),
    /// UniPC.
    UniPc(UniPc),
}

/// The names [`SamplerKind::from_name`] accepts.
pub const SAMPLER_NAMES: [&str; 11] =
    ["ddpm", "ddim", "euler", "euler-a", "heun", "edm", "dpm++2m", "dpm++3m", "dpm++sde", "unipc", "unipc3"];

impl SamplerKind {
    /// A sampler by name (case-insensitive): `ddpm`, `ddim` (eta 0), `euler`, `euler-a`
    /// (ancestral), `heun`, `edm` (Heun with EDM's ImageNet churn: `S_churn = 40`,
    /// `S_tmin = 0.05`, `S_tmax = 50`, `S_noise = 1.003`), `dpm++2m` (alias `dpm`), `dpm++3m`,
    /// `dpm++sde` (2M SDE), `unipc` (order 2, bh2), `unipc3`.
    ///
    /// # Errors
    /// Any other name.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "ddpm" => Self::Ddpm(Ddpm),
            "ddim" => Self::Ddim(Ddim::new(0.0)?),
            "euler" => Self::Euler(Euler),
            "euler-a" | "euler_a" | "euler-ancestral" => Self::EulerAncestral(EulerAncestral),
            "heun" => Self::Heun(Heun::new()),
            "edm" => Self::Heun(Heun::edm(Churn { s_churn: 40.0, s_tmin: 0.05, s_tmax: 50.0, s_noise: 1.003 })?),
            "dpm" | "dpm++" | "dpm++2m" | "dpm-solver++" => Self::DpmSolverPp(DpmSolverPp::new(2)?),
            "dpm++3m" => Self::DpmSolverPp(DpmSolverPp::new(3)?),
            "dpm++sde" | "dpm++2m-sde" => Self::DpmSolverPp(DpmSolverPp::new(2)?.sde()),
            "unipc" => Self::UniPc(UniPc::new(2)?),
            "unipc3" => Self::UniPc(UniPc::new(3)?),
            other => {
                return Err(Error::InvalidArgument(format!("unknown sampler `{other}` (one of {})", SAMPLER_NAMES.join(", "))));
            }
        })
    }
}

impl SamplerKind {
    /// The usual number of steps: 250 for DDPM (the DiT paper), 50 for DDIM, Euler and Euler
    /// ancestral, 25 for Heun (two model calls per step), 20 for DPM-Solver++ and UniPC.
    pub fn default_steps(&self) -> usize {
        match self {
            Self::Ddpm(_) => 250,
            Self::Ddim(_) | Self::Euler(_) | Self::EulerAncestral(_) => 50,
            Self::Heun(_) => 25,
            Self::DpmSolverPp(_) | Self::UniPc(_) => 20,
        }
    }
}

macro_rules! dispatch {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            SamplerKind::Ddpm($s) => $e,
            SamplerKind::Ddim($s) => $e,
            SamplerKind::Euler($s) => $e,
            SamplerKind::EulerAncestral($s) => $e,
            SamplerKind::Heun($s) => $e,
            SamplerKind::DpmSolverPp($s) => $e,
            SamplerKind::UniPc($s) => $e,
        }
    };
}

impl Sampler for SamplerKind {
    fn model_calls(&self, plan: &Plan) -> usize {
        dispatch!(self, s => s.model_calls(plan))
    }

    fn check(&self, plan: &Plan) -> Result<()> {
        dispatch!(self, s => s.check(plan))
    }

    fn step<M: Denoiser + ?Sized>(&self, run: &mut Run<'_, M>, i: usize, x: Tensor<4>) -> Result<Tensor<4>> {
        dispatch!(self, s => s.step(run, i, x))
    }
}

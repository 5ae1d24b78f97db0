//! Heun's second-order sampler of the probability-flow ODE in the plan's frame, with EDM's
//! optional stochastic churn (Karras et al. 2022, Algorithm 2; diffusers
//! `FlowMatchHeunDiscreteScheduler`, `HeunDiscreteScheduler`; MicroDiT's `edm_sampler_loop`).
//! With `y = x / n`, `s = sigma / n`:
//!
//! ```text
//! s_hat = (1 + gamma) s,  y_hat = y + sqrt(s_hat^2 - s^2) S_noise z   (gamma > 0 only)
//! d     = (y_hat - x_0(y_hat, s_hat)) / s_hat
//! y_e   = y_hat + (s' - s_hat) d                                      (Euler predictor)
//! y'    = y_hat + (s' - s_hat) (d + (y_e - x_0(y_e, s')) / s') / 2    (trapezoid corrector)
//! ```
//!
//! with `gamma = min(S_churn / n, sqrt(2) - 1)` for `s` in `[S_tmin, S_tmax]`. A step into
//! `sigma = 0` stays Euler, so `n` steps cost `2n - 1` model calls; the predictor's sample is
//! reported as a step of its own (as diffusers' Heun schedulers count steps).

use burn::prelude::*;

use crate::diffusion::process::Plan;
use crate::error::{Error, Result, ensure_config};
use crate::sampling::run::{At, Run};
use crate::contracts::Denoiser;
use crate::sampling::Sampler;

/// EDM's stochastic churn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Churn {
    /// `S_churn >= 0`: the total added noise.
    pub s_churn: f64,
    /// Churn only for `sigma >= S_tmin`.
    pub s_tmin: f64,
    /// Churn only for `sigma <= S_tmax`.
    pub s_tmax: f64,
    /// Scale of the added noise `S_noise`.
    pub s_noise: f64,
}

impl Churn {
    /// Churn `s_churn` at every noise level with `S_noise = 1`.
    pub fn new(s_churn: f64) -> Self {
        Self { s_churn, s_tmin: 0.0, s_tmax: f64::INFINITY, s_noise: 1.0 }
    }
}

/// Heun's sampler (see the [module docs](self)); with [`Churn`] it is EDM's stochastic
/// sampler.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Heun {
    churn: Option<Churn>,
}

impl Heun {
    /// The deterministic Heun sampler.
    pub fn new() -> Self {
        Self { churn: None }
    }

    /// EDM's stochastic sampler (Algorithm 2).
    ///
    /// # Errors
    /// Negative or non-finite `S_churn` / `S_noise`.
    pub fn edm(churn: Churn) -> Result<Self> {
        ensure_config(churn.s_churn >= 0.0 && churn.s_churn.is_finite() && churn.s_noise >= 0.0 && churn.s_noise.is_finite(), || {
            format!("S_churn and S_noise must be finite and >= 0, got {} and {}", churn.s_churn, churn.s_noise)
        })?;
        Ok(Self { churn: Some(churn) })
    }
}

impl Sampler for Heun {
    fn model_calls(&self, plan: &Plan) -> usize {
        plan.targets.iter().map(|t| if t.sigma > 0.0 { 2 } else { 1 }).sum()
    }

    fn check(&self, plan: &Plan) -> Result<()> {
        match (self.churn, plan.continuous_time) {
            (Some(c), None) if c.s_churn > 0.0 => Err(Error::InvalidConfig(
                "churn evaluates the model between the plan's levels: it needs a continuous process (EDM, rectified flow)".into(),
            )),
            _ => Ok(()),
        }
    }

    fn step<M: Denoiser + ?Sized>(&self, run: &mut Run<'_, M>, i: usize, x: Tensor<4>) -> Result<Tensor<4>> {
        let plan = run.plan();
        let frame = plan.frame;
        let (from, to) = (run.level(At::Level(i)), run.level(At::Target(i)));
        let (n, n2) = (from.frame_scale(frame), to.frame_scale(frame));
        let (s, s2) = (from.sigma / n, to.sigma / n2);
        let mut y = x / n;
        let gamma = match self.churn {
            Some(c) if (c.s_tmin..=c.s_tmax).contains(&s) => (c.s_churn / plan.num_steps() as f64).min(std::f64::consts::SQRT_2 - 1.0),
            _ => 0.0,
        };
        let (s_hat, at) = if gamma > 0.0 {
            let s_hat = s * (1.0 + gamma);
            let time = plan.continuous_time.ok_or_else(|| Error::InvalidConfig("churn needs a continuous process".into()))?;
            let noise = self.churn.map_or(1.0, |c| c.s_noise) * (s_hat * s_hat - s * s).sqrt();
            y = y + run.noise()? * noise;
            (s_hat, At::Other(time.level(s_hat)))
        } else {
            (s, At::Level(i))
        };
        // The model sees y_hat in the plan's coordinates at the (raised) level.
        let n_hat = run.level(at).frame_scale(frame);
        let d = run.denoise(at, y.clone() * n_hat)?;
        let deriv = (y.clone() - d.x0) / s_hat;
        let euler = y.clone() + deriv.clone() * (s2 - s_hat);
        if to.sigma == 0.0 {
            let out = euler * n2;
            run.report(&out, at)?;
            return Ok(out);
        }
        let pred = euler.clone() * n2;
        run.report(&pred, at)?;
        let d2 = run.denoise(At::Target(i), pred)?;
        let deriv2 = (euler - d2.x0) / s2;
        let out = (y + (deriv + deriv2) * (0.5 * (s2 - s_hat))) * n2;
        run.report(&out, At::Target(i))?;
        Ok(out)
    }
}

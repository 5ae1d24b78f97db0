//! DDIM (Song et al. 2021, arXiv:2010.02502, eq. 12; official DiT `ddim_sample_loop`,
//! diffusers `DDIMScheduler`): from level `t` to level `s`, in variance-preserving terms,
//!
//! ```text
//! x_s = sqrt(abar_s) x_0 + sqrt(1 - abar_s - std^2) eps + std z,
//! std = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)
//! ```
//!
//! `eta = 0` is deterministic (and equals the first-order DPM-Solver and Euler steps);
//! `eta = 1` has DDPM's marginals.

use burn::prelude::*;

use crate::diffusion::gaussian::check_eta;
use crate::error::Result;
use crate::sampling::run::{At, Run};
use crate::contracts::Denoiser;
use crate::sampling::Sampler;

/// DDIM with stochasticity `eta` (see the [module docs](self)); one model call per step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ddim {
    eta: f64,
}

impl Ddim {
    /// DDIM with `eta >= 0`.
    ///
    /// # Errors
    /// A negative or non-finite `eta`.
    pub fn new(eta: f64) -> Result<Self> {
        check_eta(eta)?;
        Ok(Self { eta })
    }

    /// The stochasticity.
    pub fn eta(&self) -> f64 {
        self.eta
    }
}

impl Sampler for Ddim {
    fn step<M: Denoiser + ?Sized>(&self, run: &mut Run<'_, M>, i: usize, x: Tensor<4>) -> Result<Tensor<4>> {
        let (from, to) = (run.level(At::Level(i)), run.level(At::Target(i)));
        let d = run.denoise(At::Level(i), x)?;
        let (rt, rs) = (from.vp_scale(), to.vp_scale());
        let abar_t = (from.alpha / rt).powi(2);
        let abar_s = (to.alpha / rs).powi(2);
        let std = self.eta * ((1.0 - abar_s) / (1.0 - abar_t)).sqrt() * (1.0 - abar_t / abar_s).max(0.0).sqrt();
        let dir = (1.0 - abar_s - std * std).max(0.0).sqrt();
        let mut out = d.x0 * to.alpha + d.eps * (rs * dir);
        if std > 0.0 {
            out = out + run.noise()? * (rs * std);
        }
        run.report(&out, At::Level(i))?;
        Ok(out)
    }
}

//! Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2; official DiT `p_sample_loop`,
//! diffusers `DDPMScheduler`): from level `t` to level `s`, in variance-preserving terms
//! (`abar = alpha^2 / (alpha^2 + sigma^2)`, `beta = 1 - abar_t / abar_s`),
//!
//! ```text
//! x_s = c1 x_0 + c2 x_t + std z,  c1 = sqrt(abar_s) beta / (1 - abar_t),
//! c2 = sqrt(abar_t / abar_s) (1 - abar_s) / (1 - abar_t)
//! ```
//!
//! with the plan's variance: fixed small `(1 - abar_s) / (1 - abar_t) beta` (clamped at
//! `1e-20`), fixed large `beta`, or learned from the model's extra channels (DiT's learned
//! range interpolates the log variance between the two). No noise is added into `sigma = 0`.

use burn::prelude::*;

use crate::diffusion::gaussian::VarianceType;
use crate::error::{Error, Result};
use crate::sampling::run::{At, Run};
use crate::contracts::Denoiser;
use crate::sampling::Sampler;

/// Ancestral DDPM (see the [module docs](self)); one model call per step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ddpm;

impl Sampler for Ddpm {
    fn step<M: Denoiser + ?Sized>(&self, run: &mut Run<'_, M>, i: usize, x: Tensor<4>) -> Result<Tensor<4>> {
        let (from, to) = (run.level(At::Level(i)), run.level(At::Target(i)));
        let d = run.denoise(At::Level(i), x.clone())?;
        let (rt, rs) = (from.vp_scale(), to.vp_scale());
        let abar_t = (from.alpha / rt).powi(2);
        let abar_s = (to.alpha / rs).powi(2);
        let beta = 1.0 - abar_t / abar_s;
        let c1 = abar_s.sqrt() * beta / (1.0 - abar_t);
        let c2 = (abar_t / abar_s).sqrt() * (1.0 - abar_s) / (1.0 - abar_t);
        let mean = d.x0 * (rs * c1) + x * (rs * c2 / rt);
        let out = if to.sigma > 0.0 {
            let post = ((1.0 - abar_s) / (1.0 - abar_t) * beta).max(1e-20);
            let scaled = match (run.plan().variance, d.variance) {
                (VarianceType::FixedSmall, _) => run.noise()? * (rs * post.sqrt()),
                (VarianceType::FixedLarge, _) => run.noise()? * (rs * beta.sqrt()),
                (VarianceType::LearnedRange, Some(v)) => {
                    let frac = (v + 1.0) / 2.0;
                    let log_var = frac.clone() * beta.ln() + (frac.neg() + 1.0) * post.ln();
                    run.noise()? * (log_var * 0.5).exp() * rs
                }
                (VarianceType::Learned, Some(v)) => run.noise()? * (v * 0.5).exp() * rs,
                (_, None) => {
                    return Err(Error::Shape {
                        name: "model output".into(),
                        expected: "2C channels (a learned variance)".into(),
                        got: "C channels".into(),
                    });
                }
            };
            mean + scaled
        } else {
            mean
        };
        run.report(&out, At::Level(i))?;
        Ok(out)
    }
}

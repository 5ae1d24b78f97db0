//! Euler ancestral sampling (k-diffusion `sample_euler_ancestral`, diffusers
//! `EulerAncestralDiscreteScheduler`), in the variance-exploding frame `y = x / alpha`,
//! `s = sigma / alpha`: an Euler step down to `s_down`, then fresh noise up to `s'`,
//!
//! ```text
//! s_up = sqrt(s'^2 (s^2 - s'^2) / s^2),  s_down = sqrt(s'^2 - s_up^2)
//! y' = y + (s_down - s) (y - x_0) / s + s_up z
//! ```
//!
//! Noise is drawn at every step (as diffusers does, also into `sigma = 0`). From pure noise
//! (`alpha = 0`, the first level of a rectified flow's `FlowMatch` plan, `s = inf`) the step
//! is its limit `y' = x_0 + s' z`.

use burn::prelude::*;

use crate::error::Result;
use crate::sampling::run::{At, Run};
use crate::contracts::Denoiser;
use crate::sampling::Sampler;

/// The Euler ancestral sampler (see the [module docs](self)); one model call per step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EulerAncestral;

impl Sampler for EulerAncestral {
    fn step<M: Denoiser + ?Sized>(&self, run: &mut Run<'_, M>, i: usize, x: Tensor<4>) -> Result<Tensor<4>> {
        let (from, to) = (run.level(At::Level(i)), run.level(At::Target(i)));
        let d = run.denoise(At::Level(i), x.clone())?;
        let z = run.noise()?;
        let out = if from.alpha == 0.0 {
            // From pure noise (a flow plan's first level, s = inf): the limit s_up -> s',
            // s_down -> 0 of the step is y' = x_0 + s' z.
            d.x0 * to.alpha + z * to.sigma
        } else {
            let (s, s2) = (from.sigma / from.alpha, to.sigma / to.alpha);
            let up = (s2 * s2 * (s * s - s2 * s2) / (s * s)).max(0.0).sqrt();
            let down = (s2 * s2 - up * up).max(0.0).sqrt();
            let y = x / from.alpha;
            let deriv = (y.clone() - d.x0) / s;
            (y + deriv * (down - s) + z * up) * to.alpha
        };
        run.report(&out, At::Level(i))?;
        Ok(out)
    }
}

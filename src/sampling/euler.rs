//! Euler sampling of the probability-flow ODE in the plan's frame (diffusers
//! `EulerDiscreteScheduler`, `FlowMatchEulerDiscreteScheduler`; k-diffusion `sample_euler`):
//! with `y = x / n` and `s = sigma / n` (see [`OdeFrame`](crate::diffusion::process::OdeFrame)),
//!
//! ```text
//! d = (y - x_0) / s,   y' = y + (s' - s) d
//! ```
//!
//! (`d` is the noise in the variance-exploding frame and the velocity `eps - x_0` in the
//! flow frame).

use burn::prelude::*;

use crate::error::Result;
use crate::sampling::run::{At, Run};
use crate::contracts::Denoiser;
use crate::sampling::Sampler;

/// The Euler sampler (see the [module docs](self)); one model call per step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Euler;

impl Sampler for Euler {
    fn step<M: Denoiser + ?Sized>(&self, run: &mut Run<'_, M>, i: usize, x: Tensor<4>) -> Result<Tensor<4>> {
        let frame = run.plan().frame;
        let (from, to) = (run.level(At::Level(i)), run.level(At::Target(i)));
        let d = run.denoise(At::Level(i), x.clone())?;
        let (n, n2) = (from.frame_scale(frame), to.frame_scale(frame));
        let (s, s2) = (from.sigma / n, to.sigma / n2);
        let y = x / n;
        let deriv = (y.clone() - d.x0) / s;
        let out = (y + deriv * (s2 - s)) * n2;
        run.report(&out, At::Level(i))?;
        Ok(out)
    }
}

//! The one sampler interface: a [`Sampler`] takes one step of a [`Plan`] at a time inside a
//! [`Run`]; [`Sampler::sample`] is the loop, the same for every sampler and process.
//!
//! ```
//! use burn::prelude::*;
//! use rand::SeedableRng;
//! use diffusion_transformers::diffusion::process::{Process, RectifiedFlowProcess};
//! use diffusion_transformers::diffusion::timesteps::TimestepSchedule;
//! use diffusion_transformers::contracts::Denoiser;
//! use diffusion_transformers::sampling::{Sampler, SamplerKind};
//!
//! /// The velocity field whose flow carries every sample to 0: v = x / sigma.
//! struct ToZero;
//! impl Denoiser for ToZero {
//!     type Cond = ();
//!     fn denoise(&self, x: Tensor<4>, t: Tensor<1>, _: &()) -> diffusion_transformers::Result<Tensor<4>> {
//!         Ok(x / t.reshape([-1, 1, 1, 1]).div_scalar(1000.0))
//!     }
//! }
//!
//! # fn main() -> Result<(), diffusion_transformers::Error> {
//! let plan = RectifiedFlowProcess::new(1000, 3.0)?.plan(10, &TimestepSchedule::new())?;
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! let device = Device::flex();
//! for name in ["euler", "heun", "dpm++2m", "ddim"] {
//!     let sampler = SamplerKind::from_name(name)?;
//!     let x0 = sampler.sample(&plan, &ToZero, &(), [2, 4, 8, 8], &device, &mut rng, None)?;
//!     assert!(x0.abs().max().into_scalar::<f32>() < 1e-3, "{name}");
//! }
//! # Ok(()) }
//! ```

use burn::prelude::*;

use crate::diffusion::process::Plan;
use crate::error::Result;
use crate::contracts::NoiseSource;
use crate::sampling::run::Run;
use crate::contracts::Denoiser;
use crate::sampling::ProgressCallback;

/// A sampler of any [`Plan`] (any process), with any [`Denoiser`] (wrap it in a guidance for
/// guidance).
pub trait Sampler {
    /// Model evaluations (= reported steps) of a run over `plan`.
    fn model_calls(&self, plan: &Plan) -> usize {
        plan.num_steps()
    }

    /// Checks the sampler's settings against `plan`.
    ///
    /// # Errors
    /// Settings the plan does not allow.
    fn check(&self, plan: &Plan) -> Result<()> {
        let _ = plan;
        Ok(())
    }

    /// Step `i`: from `x` at `plan.levels[i]` to `plan.targets[i]`, reporting the sample of
    /// every model evaluation through [`Run::report`].
    ///
    /// # Errors
    /// The model's errors, non-finite values.
    fn step<M: Denoiser + ?Sized>(&self, run: &mut Run<'_, M>, i: usize, x: Tensor<4>) -> Result<Tensor<4>>;

    /// Runs the plan from the standard normal `noise` (scaled by the plan's initial noise
    /// scale) to the last target, step noise drawn from `noise_source`, each step reported
    /// to `progress`.
    ///
    /// # Shapes
    /// - `noise`: `[B, C, H, W]` -> `[B, C, H, W]`
    ///
    /// # Errors
    /// An empty batch, an invalid plan or settings, a model output of the wrong shape, the
    /// model's errors, or NaN / infinite values in the noise or a sample (naming the step).
    fn sample_from<M: Denoiser + ?Sized>(
        &self,
        plan: &Plan,
        model: &M,
        cond: &M::Cond,
        noise: Tensor<4>,
        noise_source: &mut dyn NoiseSource,
        progress: Option<&mut dyn ProgressCallback>,
    ) -> Result<Tensor<4>> {
        self.check(plan)?;
        let device = noise.device();
        let progress = progress.map(|p| p as &mut dyn ProgressCallback);
        let mut run = Run::new(plan, model, cond, noise_source, progress, noise.dims(), &device, self.model_calls(plan))?;
        crate::sampling::run::check_finite(&noise, || "the initial noise".into())?;
        let mut x = noise * plan.init_noise_scale;
        for i in 0..plan.num_steps() {
            x = self.step(&mut run, i, x)?;
        }
        Ok(x)
    }

    /// Draws the initial noise of `shape` from `noise_source`, then [`Sampler::sample_from`].
    ///
    /// # Errors
    /// As [`Sampler::sample_from`].
    #[allow(clippy::too_many_arguments)]
    fn sample<M: Denoiser + ?Sized>(
        &self,
        plan: &Plan,
        model: &M,
        cond: &M::Cond,
        shape: [usize; 4],
        device: &Device,
        noise_source: &mut dyn NoiseSource,
        progress: Option<&mut dyn ProgressCallback>,
    ) -> Result<Tensor<4>> {
        if shape.contains(&0) {
            return Err(crate::Error::Shape { name: "shape".into(), expected: "[B, C, H, W] with every dimension > 0".into(), got: format!("{shape:?}") });
        }
        let noise = noise_source.normal(shape, device)?;
        self.sample_from(plan, model, cond, noise, noise_source, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::process::{DiscreteVp, Prediction, Process, RectifiedFlowProcess};
    use crate::diffusion::schedule::BetaSchedule;
    use crate::diffusion::timesteps::TimestepSchedule;
    use crate::contracts::RecordedNoise;
    use crate::sampling::{ClassifierFreeGuidance, SAMPLER_NAMES, SamplerKind};
    use crate::Error;
    use rand::SeedableRng;

    /// Predicts `x + label`: guidance with a huge scale overflows to inf.
    struct Labels;
    impl Denoiser for Labels {
        type Cond = Option<Tensor<1, Int>>;
        fn denoise(&self, x: Tensor<4>, _t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
            let b = x.dims()[0];
            Ok(x + cond.clone().unwrap().float().reshape([b, 1, 1, 1]))
        }
    }

    fn plans() -> Vec<Plan> {
        let vp = DiscreteVp::diffusers(&BetaSchedule::LinearRange { start: 1e-4, end: 0.02 }, 1000, Prediction::Epsilon).unwrap();
        let flow = RectifiedFlowProcess::new(1000, 3.0).unwrap();
        vec![
            vp.plan(5, &TimestepSchedule::diffusers("DDIMScheduler").unwrap()).unwrap(),
            flow.plan(5, &TimestepSchedule::diffusers("UniPCMultistepScheduler").unwrap()).unwrap(),
        ]
    }

    #[test]
    fn every_sampler_runs_on_every_process_and_rejects_bad_input() {
        let device = Device::flex();
        let y = Some(Tensor::<1, Int>::from_ints([1, 2], &device));
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        for plan in plans() {
            for name in SAMPLER_NAMES {
                let s = SamplerKind::from_name(name).unwrap();
                if s.check(&plan).is_err() {
                    continue; // EDM churn needs a continuous process
                }
                let x = s.sample(&plan, &Labels, &y, [2, 2, 4, 4], &device, &mut rng, None).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(x.dims(), [2, 2, 4, 4]);
                // Batch 0 is a typed error, never reaching the backend.
                assert!(matches!(s.sample(&plan, &Labels, &y, [0, 2, 4, 4], &device, &mut rng, None), Err(Error::Shape { .. })));
                // NaN in the initial noise.
                let nan = Tensor::<4>::full([2, 2, 4, 4], f32::NAN, &device);
                let e = s.sample_from(&plan, &Labels, &y, nan.clone(), &mut rng, None).unwrap_err();
                assert!(matches!(&e, Error::Numerical(m) if m.contains("initial noise")), "{name}: {e}");
                // A guidance scale of 1e300 overflows: the error names the step.
                let huge = ClassifierFreeGuidance::new(&Labels, 9, 1e300).unwrap();
                let e = s.sample(&plan, &huge, &y, [2, 2, 4, 4], &device, &mut rng, None).unwrap_err();
                assert!(matches!(&e, Error::Numerical(m) if m.contains("step 1 of")), "{name}: {e}");
            }
        }
        assert!(ClassifierFreeGuidance::new(&Labels, 9, f64::INFINITY).is_err());
    }

    #[test]
    fn nan_step_noise_is_an_error_naming_the_noise() {
        let device = Device::flex();
        let y = Some(Tensor::<1, Int>::from_ints([1, 2], &device));
        let plan = &plans()[0];
        let bad = vec![Tensor::<4>::full([2, 2, 4, 4], f32::INFINITY, &device); 5];
        let noise = Tensor::<4>::zeros([2, 2, 4, 4], &device);
        let e = crate::sampling::Ddpm.sample_from(plan, &Labels, &y, noise, &mut RecordedNoise::new(bad), None).unwrap_err();
        assert!(matches!(&e, Error::Numerical(m) if m.contains("noise drawn at step 1")), "{e}");
    }
}

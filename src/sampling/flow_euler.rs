//! Flow-matching Euler sampling with the timestep/sigma schedule of diffusers'
//! `FlowMatchEulerDiscreteScheduler` (the SD3 scheduler).
//!
//! The model predicts the velocity `v = eps - x0` of rectified flow
//! ([`crate::diffusion::flow`]); sampling integrates `dz/dsigma = v` from `sigma = 1` (noise)
//! down to `sigma = 0` (data) over a shifted sigma schedule.
//!
//! Schedule, as diffusers computes it (`N` = `num_train_timesteps`, `n` inference steps):
//! 1. training sigmas `shift(k / N)`, `k = N..1`, in `f32`; `sigma_max` and `sigma_min` are
//!    the first and last;
//! 2. `n` timesteps `linspace(N sigma_max, N sigma_min, n)` (in `f64`), divided by `N` and
//!    **shifted again** with `shift(s) = shift s / (1 + (shift - 1) s)`, then rounded to
//!    `f32`: these are the sigmas; the model timesteps are `N sigma` (in `f32`);
//! 3. a final sigma 0 is appended.
//!
//! With `shift = 3` the last sigma is therefore `shift(shift(1/N))`, not `shift(1/N)`; this is
//! diffusers' behaviour and is reproduced exactly.

use burn::prelude::*;
use rand::Rng;

use crate::diffusion::timestep_sampling::check_shift;
use crate::error::{Error, Result, ensure_config};
use crate::contracts::randn;
use crate::contracts::Denoiser;
use crate::sampling::{Progress, ProgressCallback};

/// Configuration of a [`FlowMatchSchedule`] (diffusers' `FlowMatchEulerDiscreteScheduler`
/// constructor arguments).
#[derive(Config, Debug)]
pub struct FlowMatchScheduleConfig {
    /// Training timesteps `N`; the model's timestep is `N sigma`. Default: 1000.
    #[config(default = 1000)]
    pub num_train_timesteps: usize,
    /// Timestep shift, > 0 (SD3: 3.0). Default: 1.0.
    #[config(default = 1.0)]
    pub shift: f64,
}

impl FlowMatchScheduleConfig {
    /// The schedule for `num_inference_steps` steps (diffusers' `set_timesteps`).
    ///
    /// # Errors
    /// Zero steps, zero training timesteps or a shift that is not finite and positive.
    pub fn init(&self, num_inference_steps: usize) -> Result<FlowMatchSchedule> {
        ensure_config(num_inference_steps > 0, || "the number of inference steps must be at least 1".into())?;
        ensure_config(self.num_train_timesteps > 0, || "num_train_timesteps must be at least 1".into())?;
        check_shift(self.shift)?;
        let big_n = self.num_train_timesteps;
        let shift = self.shift;
        // Step 1, in f32 like torch: sigma_k = shift s / (1 + (shift - 1) s) for s = k / N.
        let train_sigma = |k: usize| {
            let s = k as f32 / big_n as f32;
            (shift as f32 * s) / (1.0 + (shift - 1.0) as f32 * s)
        };
        let (sigma_max, sigma_min) = (train_sigma(big_n) as f64, train_sigma(1) as f64);
        // Step 2, in f64 like numpy, then f32.
        let n_f = big_n as f64;
        let ts = linspace(sigma_max * n_f, sigma_min * n_f, num_inference_steps);
        let mut sigmas: Vec<f32> = ts
            .into_iter()
            .map(|t| {
                let s = t / n_f;
                (shift * s / (1.0 + (shift - 1.0) * s)) as f32
            })
            .collect();
        let timesteps = sigmas.iter().map(|&s| s * big_n as f32).collect();
        sigmas.push(0.0);
        Ok(FlowMatchSchedule { sigmas, timesteps, num_train_timesteps: big_n })
    }
}

/// `numpy.linspace(start, stop, num)` (endpoint included, computed as numpy does).
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// The sigmas and model timesteps of a flow-matching sampling run
/// (see the [module docs](self) for how they are computed).
///
/// ```
/// use diffusion_transformers::sampling::FlowMatchScheduleConfig;
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let schedule = FlowMatchScheduleConfig::new().with_shift(3.0).init(28)?;
/// assert_eq!(schedule.num_steps(), 28);
/// assert_eq!(schedule.sigmas()[0], 1.0);
/// assert_eq!(schedule.timesteps()[0], 1000.0);
/// assert_eq!(*schedule.sigmas().last().unwrap(), 0.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FlowMatchSchedule {
    sigmas: Vec<f32>,
    timesteps: Vec<f32>,
    num_train_timesteps: usize,
}

impl FlowMatchSchedule {
    /// Number of sampling steps `n`.
    pub fn num_steps(&self) -> usize {
        self.timesteps.len()
    }

    /// The `n + 1` sigmas, decreasing from about 1 to a final 0.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The `n` model timesteps `N sigma_i`.
    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    /// Training timesteps `N`.
    pub fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }

    /// One Euler step from `sigma_i` to `sigma_{i+1}` (diffusers' `step` at `step_index`):
    /// `sample + (sigma_{i+1} - sigma_i) * model_output`.
    ///
    /// # Shapes
    /// - `model_output`, `sample`: any shape `[B, ...]` (the same) -> same shape
    ///
    /// # Errors
    /// `step_index >= num_steps()` or mismatched shapes.
    pub fn step<const D: usize>(&self, model_output: Tensor<D>, step_index: usize, sample: Tensor<D>) -> Result<Tensor<D>> {
        self.check_step(step_index)?;
        check_output(&model_output, &sample)?;
        Ok(sample + model_output * self.dt(step_index))
    }

    /// `sigma_{i+1} - sigma_i`, computed in `f32` like diffusers.
    pub(crate) fn dt(&self, i: usize) -> f64 {
        (self.sigmas[i + 1] - self.sigmas[i]) as f64
    }

    pub(crate) fn check_step(&self, step_index: usize) -> Result<()> {
        if step_index < self.num_steps() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "step index {step_index} out of range for a schedule of {} steps",
                self.num_steps()
            )))
        }
    }

    /// The model's velocity at step `i`: timesteps `N sigma_i` (batched) -> `[B, C, H, W]`.
    pub(crate) fn velocity<M: Denoiser + ?Sized>(&self, model: &M, x: Tensor<4>, timestep: f32, cond: &M::Cond) -> Result<Tensor<4>> {
        let t = Tensor::<1>::full([x.dims()[0]], timestep, &x.device());
        let v = model.denoise(x.clone(), t, cond)?;
        check_output(&v, &x)?;
        Ok(v)
    }
}

/// A model output must have the sample's shape (flow models predict a velocity of the
/// sample's size; e.g. a DiT with `learn_sigma` does not fit).
pub(crate) fn check_output<const D: usize>(output: &Tensor<D>, sample: &Tensor<D>) -> Result<()> {
    if output.dims() == sample.dims() {
        Ok(())
    } else {
        Err(Error::Shape {
            name: "model output".into(),
            expected: format!("{:?} (the sample's shape: a velocity)", sample.dims()),
            got: format!("{:?}", output.dims()),
        })
    }
}

/// A sampler of the flow-matching ODE `dz/dsigma = v(z, N sigma)` from `sigma = 1` to `0`
/// over a [`FlowMatchSchedule`], with any [`Denoiser`] that predicts the velocity (wrap it in
/// [`ClassifierFreeGuidance`](crate::sampling::ClassifierFreeGuidance), usually with
/// [`GuidedChannels::All`](crate::contracts::GuidedChannels::All), for guidance).
/// Implemented by [`FlowEulerSampler`] and
/// [`FlowHeunSampler`](crate::sampling::FlowHeunSampler).
pub trait FlowSampler {
    /// The schedule.
    fn schedule(&self) -> &FlowMatchSchedule;

    /// Model evaluations of one run.
    fn num_model_calls(&self) -> usize;

    /// Integrates from the given noise `x_1` down to `sigma = 0`, reporting each of the `n`
    /// steps to `progress` (with `timestep` = `sigma_i`).
    ///
    /// # Shapes
    /// - `noise`: `[B, C, H, W]` -> `[B, C, H, W]`
    ///
    /// # Errors
    /// A model error, or a model output of another shape than the sample.
    fn sample_from<M: Denoiser + ?Sized>(
        &self,
        model: &M,
        cond: &M::Cond,
        noise: Tensor<4>,
        progress: &mut dyn ProgressCallback,
    ) -> Result<Tensor<4>>;

    /// Draws the initial noise `N(0, I)` of `shape` from the seeded `rng` on `device`, then
    /// [`sample_from`](Self::sample_from). The same seed gives the same samples.
    ///
    /// # Shapes
    /// - output: `shape` = `[B, C, H, W]`
    ///
    /// # Errors
    /// As [`sample_from`](Self::sample_from).
    fn sample<M: Denoiser + ?Sized, R: Rng + ?Sized>(
        &self,
        model: &M,
        cond: &M::Cond,
        shape: [usize; 4],
        device: &Device,
        rng: &mut R,
        progress: &mut dyn ProgressCallback,
    ) -> Result<Tensor<4>> {
        self.sample_from(model, cond, randn(shape, rng, device), progress)
    }
}

/// The flow-matching Euler sampler (diffusers' `FlowMatchEulerDiscreteScheduler` loop):
/// `x <- x + (sigma_{i+1} - sigma_i) v(x, N sigma_i)`, one model call per step.
///
/// ```
/// use burn::prelude::*;
/// use diffusion_transformers::contracts::Denoiser;
/// use diffusion_transformers::sampling::{FlowEulerSampler, FlowMatchScheduleConfig, FlowSampler, NoProgress};
/// use rand::SeedableRng;
///
/// /// The velocity field whose flow carries every sample to 0 at t = 0: v = z / t.
/// struct ToZero;
/// impl Denoiser for ToZero {
///     type Cond = ();
///     fn denoise(&self, x: Tensor<4>, t: Tensor<1>, _: &()) -> diffusion_transformers::Result<Tensor<4>> {
///         Ok(x / t.reshape([-1, 1, 1, 1]).div_scalar(1000.0))
///     }
/// }
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let sampler = FlowEulerSampler::new(FlowMatchScheduleConfig::new().with_shift(3.0).init(10)?);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let x0 = sampler.sample(&ToZero, &(), [2, 4, 8, 8], &Device::flex(), &mut rng, &mut NoProgress)?;
/// assert!(x0.abs().max().into_scalar::<f32>() < 1e-4);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FlowEulerSampler {
    schedule: FlowMatchSchedule,
}

impl FlowEulerSampler {
    /// A sampler over `schedule`.
    pub fn new(schedule: FlowMatchSchedule) -> Self {
        Self { schedule }
    }
}

impl FlowSampler for FlowEulerSampler {
    fn schedule(&self) -> &FlowMatchSchedule {
        &self.schedule
    }

    /// `n` for `n` steps.
    fn num_model_calls(&self) -> usize {
        self.schedule.num_steps()
    }

    fn sample_from<M: Denoiser + ?Sized>(
        &self,
        model: &M,
        cond: &M::Cond,
        noise: Tensor<4>,
        progress: &mut dyn ProgressCallback,
    ) -> Result<Tensor<4>> {
        let s = &self.schedule;
        let total_steps = s.num_steps();
        let mut x = noise;
        for i in 0..total_steps {
            let v = s.velocity(model, x.clone(), s.timesteps[i], cond)?;
            x = x + v * s.dt(i);
            progress.on_step(&Progress { step: i + 1, total_steps, timestep: s.sigmas[i] as f64 });
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_diffusers_construction() {
        // shift 1: linspace(1000, 1, n) / 1000.
        let s = FlowMatchScheduleConfig::new().init(4).unwrap();
        assert_eq!(s.timesteps(), &[1000.0, 667.0, 334.0, 1.0]);
        assert_eq!(s.sigmas(), &[1.0, 0.667, 0.334, 0.001, 0.0]);
        // shift 3: the last sigma is shifted twice.
        let s = FlowMatchScheduleConfig::new().with_shift(3.0).init(2).unwrap();
        let once = 3.0 * 0.001 / (1.0 + 2.0 * 0.001);
        let twice = 3.0 * once / (1.0 + 2.0 * once);
        assert!((s.sigmas()[1] as f64 - twice).abs() < 1e-7, "{:?}", s.sigmas());
        assert_eq!(s.sigmas()[0], 1.0);
        // One step: only the first sigma.
        let s = FlowMatchScheduleConfig::new().with_shift(2.0).init(1).unwrap();
        assert_eq!((s.sigmas(), s.timesteps()), (&[1.0f32, 0.0][..], &[1000.0f32][..]));
    }

    #[test]
    fn step_is_euler() {
        let d = Device::flex();
        let s = FlowMatchScheduleConfig::new().init(4).unwrap();
        let x = Tensor::<2>::ones([2, 3], &d);
        let v = Tensor::<2>::full([2, 3], 2.0, &d);
        let y = s.step(v, 1, x).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let want = 1.0 + (0.334f32 - 0.667f32) * 2.0;
        assert!(y.iter().all(|&a| (a - want).abs() < 1e-6));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let d = Device::flex();
        assert!(FlowMatchScheduleConfig::new().init(0).is_err());
        assert!(FlowMatchScheduleConfig::new().with_shift(0.0).init(5).is_err());
        assert!(FlowMatchScheduleConfig::new().with_shift(-3.0).init(5).is_err());
        assert!(FlowMatchScheduleConfig::new().with_num_train_timesteps(0).init(5).is_err());
        let s = FlowMatchScheduleConfig::new().init(3).unwrap();
        let x = Tensor::<2>::ones([2, 3], &d);
        assert!(s.step(x.clone(), 3, x.clone()).is_err());
        assert!(s.step(Tensor::<2>::ones([2, 4], &d), 0, x).is_err());
    }
}

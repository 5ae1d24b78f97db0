//! The one sampling loop: [`Run`] carries a [`Plan`], the model and its conditioning, the
//! noise source and the progress callback through a run, and gives samplers the operations
//! they share: the model's `x_0` / `eps` at a level (input scaling, the model time uploaded
//! once per run, the affine conversion of [`Plan::x0_coefficients`], clipping), step noise,
//! the multistep history, and the per-step report with its finiteness check.

use std::collections::VecDeque;

use burn::prelude::*;
use burn::tensor::DType;

use crate::diffusion::gaussian::ClipMode;
use crate::diffusion::process::{Level, Plan};
use crate::error::{Error, Result};
use crate::contracts::NoiseSource;
use crate::contracts::Denoiser;
use crate::sampling::{Progress, ProgressCallback};

/// A level of the plan: the `i`-th evaluation level or the `i`-th step's target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum At {
    /// `plan.levels[i]`.
    Level(usize),
    /// `plan.targets[i]`.
    Target(usize),
    /// A level outside the plan (e.g. EDM churn's raised noise level).
    Other(Level),
}

/// The model's prediction at a level, converted.
#[derive(Debug, Clone)]
pub struct Denoised {
    /// `x_0`, processed by the plan's clip mode.
    pub x0: Tensor<4>,
    /// `eps = (x - alpha x_0) / sigma`.
    pub eps: Tensor<4>,
    /// The model's extra (learned-variance) channels, when it outputs `2C`.
    pub variance: Option<Tensor<4>>,
}

/// Multistep state: the latest `x_0` predictions with their levels, newest last.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// `(x_0, level)` pairs, newest last.
    pub x0: VecDeque<(Tensor<4>, Level)>,
    /// Steps taken so far, capped by the sampler (diffusers' `lower_order_nums`).
    pub warm: usize,
    /// The sample before the last predictor step (UniPC's corrector).
    pub last_sample: Option<Tensor<4>>,
    /// The order of the last predictor step.
    pub last_order: usize,
}

impl History {
    /// Appends a prediction, keeping at most `keep`.
    pub fn push(&mut self, x0: Tensor<4>, level: Level, keep: usize) {
        self.x0.push_back((x0, level));
        while self.x0.len() > keep.max(1) {
            self.x0.pop_front();
        }
    }

    /// The `k`-th newest prediction (`0` = newest).
    pub fn get(&self, k: usize) -> Option<&(Tensor<4>, Level)> {
        self.x0.len().checked_sub(k + 1).and_then(|i| self.x0.get(i))
    }
}

/// One sampling run (see the [module docs](self)).
pub struct Run<'a, M: Denoiser + ?Sized> {
    plan: &'a Plan,
    model: &'a M,
    cond: &'a M::Cond,
    noise: &'a mut dyn NoiseSource,
    progress: Option<&'a mut dyn ProgressCallback>,
    times: Tensor<1>,
    shape: [usize; 4],
    device: Device,
    reported: usize,
    total: usize,
    /// Multistep state.
    pub history: History,
}

impl<'a, M: Denoiser + ?Sized> Run<'a, M> {
    /// Starts a run of `total` reported steps with initial noise of `shape`.
    ///
    /// # Errors
    /// An invalid plan or an empty batch.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plan: &'a Plan,
        model: &'a M,
        cond: &'a M::Cond,
        noise: &'a mut dyn NoiseSource,
        progress: Option<&'a mut dyn ProgressCallback>,
        shape: [usize; 4],
        device: &Device,
        total: usize,
    ) -> Result<Self> {
        plan.validate()?;
        if shape.contains(&0) {
            return Err(Error::Shape { name: "noise".into(), expected: "[B, C, H, W] with every dimension > 0".into(), got: format!("{shape:?}") });
        }
        let t: Vec<f32> = plan.levels.iter().chain(&plan.targets).map(|l| l.timestep as f32).collect();
        // f32 whatever the device's float dtype, as diffusers' schedulers hand the model its
        // timesteps (a bf16 500.5 would be 500, and guidance windows match on the value).
        let times = Tensor::from_data(TensorData::new(t, [2 * plan.num_steps()]), (device, DType::F32));
        Ok(Self { plan, model, cond, noise, progress, times, shape, device: device.clone(), reported: 0, total, history: History::default() })
    }

    /// The plan.
    pub fn plan(&self) -> &'a Plan {
        self.plan
    }

    /// The level `at`.
    pub fn level(&self, at: At) -> Level {
        match at {
            At::Level(i) => self.plan.levels[i],
            At::Target(i) => self.plan.targets[i],
            At::Other(l) => l,
        }
    }

    /// The model's prediction at `at` for the sample `x`.
    ///
    /// # Errors
    /// The model's errors, or an output that is neither `[B, C, H, W]` nor `[B, 2C, H, W]`.
    pub fn denoise(&mut self, at: At, x: Tensor<4>) -> Result<Denoised> {
        let level = self.level(at);
        let b = self.shape[0];
        let t = match at {
            At::Level(i) => self.times.clone().narrow(0, i, 1).expand([b]),
            At::Target(i) => self.times.clone().narrow(0, self.plan.num_steps() + i, 1).expand([b]),
            At::Other(l) => Tensor::full([b], l.timestep as f32, (&self.device, DType::F32)),
        };
        let input = if level.input_scale == 1.0 { x.clone() } else { x.clone() * level.input_scale };
        let out = self.model.denoise(input, t, self.cond)?;
        let [_, c, h, w] = self.shape;
        let od = out.dims();
        let (out, variance) = if od == self.shape {
            (out, None)
        } else if od == [b, 2 * c, h, w] {
            (out.clone().narrow(1, 0, c), Some(out.narrow(1, c, c)))
        } else {
            return Err(Error::Shape {
                name: "model output".into(),
                expected: format!("{:?} or {:?} (with learned variance)", self.shape, [b, 2 * c, h, w]),
                got: format!("{od:?}"),
            });
        };
        let (a, bb) = self.plan.x0_coefficients(&level);
        let raw = if a == 0.0 { out.clone() * bb } else { x.clone() * a + out.clone() * bb };
        let (al, si) = (level.alpha, level.sigma);
        let (x0, eps) = if self.plan.clip == ClipMode::Off {
            // eps = (x - alpha x0) / sigma, affine in x and the output too.
            let (ea, eb) = ((1.0 - al * a) / si, -al * bb / si);
            let eps = if ea.abs() < 1e-12 { out * eb } else { x * ea + out * eb };
            (raw, eps)
        } else {
            let x0 = self.plan.clip.apply(raw)?;
            let eps = (x - x0.clone() * al) / si;
            (x0, eps)
        };
        Ok(Denoised { x0, eps, variance })
    }

    /// Step noise of the sample's shape, checked finite.
    ///
    /// # Errors
    /// The source's errors, or non-finite noise.
    pub fn noise(&mut self) -> Result<Tensor<4>> {
        let z = self.noise.normal(self.shape, &self.device)?;
        if z.dims() != self.shape {
            return Err(Error::Shape { name: "step noise".into(), expected: format!("{:?}", self.shape), got: format!("{:?}", z.dims()) });
        }
        check_finite(&z, || format!("the noise drawn at step {} of {}", self.reported + 1, self.total))?;
        Ok(z)
    }

    /// Reports the sample produced by the model evaluation at `at` to the progress callback
    /// after checking it is finite.
    ///
    /// # Errors
    /// A sample with NaN or infinite values.
    pub fn report(&mut self, x: &Tensor<4>, at: At) -> Result<()> {
        self.reported += 1;
        check_finite(x, || format!("the sample after step {} of {}", self.reported, self.total))?;
        let timestep = self.level(at).timestep;
        if let Some(p) = self.progress.as_deref_mut() {
            p.on_sample(&Progress { step: self.reported, total_steps: self.total, timestep }, x);
        }
        Ok(())
    }
}

/// Errors unless every value of `x` is finite (one reduction: `sum(x - x)` is 0 exactly when
/// no value is NaN or infinite).
///
/// # Errors
/// [`Error::Numerical`] naming `what()`.
pub fn check_finite(x: &Tensor<4>, what: impl FnOnce() -> String) -> Result<()> {
    let s = (x.clone() - x.clone()).sum().into_scalar::<f32>();
    if s.is_finite() { Ok(()) } else { Err(Error::Numerical(format!("non-finite values (NaN or inf) in {}", what()))) }
}

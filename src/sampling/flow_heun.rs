//! Second-order (Heun) flow-matching sampler, equivalent to diffusers'
//! `FlowMatchHeunDiscreteScheduler` (without churn) and to k-diffusion's `sample_heun`.
//!
//! Over the same sigma schedule as the Euler sampler ([`FlowMatchSchedule`]), each step
//! from `sigma_i` to `sigma_{i+1}` predicts with Euler and corrects with the trapezoid rule:
//!
//! ```text
//! v1 = v(x, sigma_i)
//! x' = x + (sigma_{i+1} - sigma_i) v1
//! v2 = v(x', sigma_{i+1})
//! x  = x + (sigma_{i+1} - sigma_i) (v1 + v2) / 2
//! ```
//!
//! The last step (to `sigma = 0`) is a plain Euler step, so `n` steps cost `2n - 1` model
//! calls. Heun's global error is `O(h^2)` against Euler's `O(h)`, so it reaches a given
//! accuracy in far fewer steps.

use burn::prelude::*;

use crate::error::Result;
use crate::sampling::flow_euler::{FlowMatchSchedule, FlowSampler};
use crate::contracts::Denoiser;
use crate::sampling::{Progress, ProgressCallback};

/// The Heun (second-order) flow-matching sampler (see the [module docs](self)).
///
/// ```
/// use burn::prelude::*;
/// use diffusion_transformers::sampling::{FlowHeunSampler, FlowMatchScheduleConfig, FlowSampler};
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let sampler = FlowHeunSampler::new(FlowMatchScheduleConfig::new().with_shift(3.0).init(12)?);
/// assert_eq!(sampler.num_model_calls(), 23);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FlowHeunSampler {
    schedule: FlowMatchSchedule,
}

impl FlowHeunSampler {
    /// A sampler over `schedule`.
    pub fn new(schedule: FlowMatchSchedule) -> Self {
        Self { schedule }
    }
}

impl FlowSampler for FlowHeunSampler {
    fn schedule(&self) -> &FlowMatchSchedule {
        &self.schedule
    }

    /// `2n - 1` for `n` steps.
    fn num_model_calls(&self) -> usize {
        2 * self.schedule.num_steps() - 1
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
            let dt = s.dt(i);
            let v1 = s.velocity(model, x.clone(), s.timesteps()[i], cond)?;
            let euler = x.clone() + v1.clone() * dt;
            x = if i + 1 < total_steps {
                let v2 = s.velocity(model, euler, s.timesteps()[i + 1], cond)?;
                x + (v1 + v2) * (dt / 2.0)
            } else {
                euler
            };
            progress.on_step(&Progress { step: i + 1, total_steps, timestep: s.sigmas()[i] as f64 });
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::randn;
    use crate::sampling::flow_euler::FlowMatchScheduleConfig;
    use crate::contracts::{GuidedChannels, NullEmbedding};
    use crate::sampling::{ClassifierFreeGuidance, FlowEulerSampler, NoProgress};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Per-channel Gaussian targets `N(mean_c, std_c^2)`.
    const MEAN: [f64; 2] = [2.0, -1.0];
    const STD: [f64; 2] = [0.5, 1.5];

    /// Oracle velocities of rectified flow for Gaussian data, as functions of the model
    /// timestep `1000 t`. `straight`: the optimal-transport coupling `x0 = mean + std eps`,
    /// whose paths are straight lines; otherwise the marginal velocity of the independent
    /// coupling, `E[eps - x0 | z_t]`, whose paths curve.
    struct Oracle {
        straight: bool,
    }

    impl Oracle {
        fn velocity(&self, z: f64, t: f64, mean: f64, std: f64) -> f64 {
            let centred = z - (1.0 - t) * mean;
            if self.straight {
                (1.0 - std) * centred / ((1.0 - t) * std + t) - mean
            } else {
                let var = (1.0 - t).powi(2) * std * std + t * t;
                (t - (1.0 - t) * std * std) * centred / var - mean
            }
        }

        fn field(&self, x: Tensor<4>, t: Tensor<1>, means: &[f64; 2]) -> Tensor<4> {
            let [b, c, h, w] = x.dims();
            let t = t.into_data().try_to_vec::<f32>().unwrap();
            let z = x.clone().into_data().try_to_vec::<f32>().unwrap();
            let per = h * w;
            let v: Vec<f32> = z
                .iter()
                .enumerate()
                .map(|(i, &z)| {
                    let (bi, ci) = (i / (c * per), (i / per) % c);
                    self.velocity(z as f64, t[bi] as f64 / 1000.0, means[ci], STD[ci]) as f32
                })
                .collect();
            Tensor::from_data(TensorData::new(v, [b, c, h, w]), &x.device())
        }
    }

    impl Denoiser for Oracle {
        type Cond = ();
        fn denoise(&self, x: Tensor<4>, t: Tensor<1>, _: &()) -> Result<Tensor<4>> {
            Ok(self.field(x, t, &MEAN))
        }
    }

    /// The straight oracle towards `N(m, std^2)` with `m = cond * MEAN` (cond `[B, 1]`): it is
    /// affine in the mean, so guidance with scale `w` and a zero null moves the mean to `w m`.
    struct Conditional;
    impl Denoiser for Conditional {
        type Cond = Tensor<2>;
        fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Tensor<2>) -> Result<Tensor<4>> {
            let c = cond.clone().into_data().try_to_vec::<f32>().unwrap();
            let b = x.dims()[0];
            let outs = (0..b)
                .map(|i| {
                    let m = MEAN.map(|m| m * c[i] as f64);
                    Oracle { straight: true }.field(x.clone().narrow(0, i, 1), t.clone().narrow(0, i, 1), &m)
                })
                .collect();
            Ok(Tensor::cat(outs, 0))
        }
    }

    /// Per-channel (mean, variance) of `[B, 2, H, W]`.
    fn stats(x: Tensor<4>) -> [(f64, f64); 2] {
        let [b, c, h, w] = x.dims();
        let v = x.into_data().try_to_vec::<f32>().unwrap();
        [0, 1].map(|ch| {
            let vals: Vec<f64> =
                (0..b).flat_map(|bi| v[(bi * c + ch) * h * w..(bi * c + ch + 1) * h * w].iter().map(|&a| a as f64)).collect();
            let n = vals.len() as f64;
            let mean = vals.iter().sum::<f64>() / n;
            (mean, vals.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n)
        })
    }

    const SHAPE: [usize; 4] = [8, 2, 32, 32];

    /// Largest |mean error| and relative variance error over the channels.
    fn errors(x: Tensor<4>, means: [f64; 2]) -> (f64, f64) {
        let s = stats(x);
        let mean_err = (0..2).map(|c| (s[c].0 - means[c]).abs()).fold(0.0, f64::max);
        let var_err = (0..2).map(|c| (s[c].1 / (STD[c] * STD[c]) - 1.0).abs()).fold(0.0, f64::max);
        (mean_err, var_err)
    }

    #[test]
    fn ten_euler_steps_reach_the_gaussian_target_along_straight_paths() {
        let d = Device::flex();
        for shift in [1.0, 3.0] {
            let sampler = FlowEulerSampler::new(FlowMatchScheduleConfig::new().with_shift(shift).init(10).unwrap());
            let x = sampler.sample(&Oracle { straight: true }, &(), SHAPE, &d, &mut StdRng::seed_from_u64(0), &mut NoProgress).unwrap();
            let (m, v) = errors(x, MEAN);
            assert!(m < 0.03 && v < 0.05, "shift {shift}: mean err {m}, var err {v}");
        }
    }

    #[test]
    fn heun_corrects_the_curvature_euler_misses() {
        // The marginal (independent-coupling) oracle curves; 10 Euler steps leave a first-order
        // bias in the variance, 10 Heun steps reach the target.
        let d = Device::flex();
        let schedule = FlowMatchScheduleConfig::new().init(10).unwrap();
        let model = Oracle { straight: false };
        let noise = randn(SHAPE, &mut StdRng::seed_from_u64(1), &d);
        let euler = FlowEulerSampler::new(schedule.clone()).sample_from(&model, &(), noise.clone(), &mut NoProgress).unwrap();
        let heun = FlowHeunSampler::new(schedule).sample_from(&model, &(), noise, &mut NoProgress).unwrap();
        let (em, ev) = errors(euler, MEAN);
        let (hm, hv) = errors(heun, MEAN);
        assert!(em < 0.03 && hm < 0.03, "mean errors {em} {hm}");
        assert!(ev < 0.35, "euler var err {ev}");
        assert!(hv < 0.05 && hv < ev / 4.0, "heun var err {hv} vs euler {ev}");
    }

    #[test]
    fn guidance_goes_through_the_shared_wrapper() {
        let d = Device::flex();
        let sampler = FlowHeunSampler::new(FlowMatchScheduleConfig::new().with_shift(3.0).init(6).unwrap());
        let cond = Tensor::<2>::ones([SHAPE[0], 1], &d);
        let noise = randn(SHAPE, &mut StdRng::seed_from_u64(2), &d);
        let guided = ClassifierFreeGuidance::new(Conditional, NullEmbedding::Zeros, 2.0).unwrap().with_channels(GuidedChannels::All);
        let x = sampler.sample_from(&guided, &cond, noise.clone(), &mut NoProgress).unwrap();
        let (m, _) = errors(x, MEAN.map(|m| 2.0 * m));
        assert!(m < 0.03, "guided mean err {m}");
        let plain = sampler.sample_from(&Conditional, &cond, noise, &mut NoProgress).unwrap();
        let (m, v) = errors(plain, MEAN);
        assert!(m < 0.03 && v < 0.05, "{m} {v}");
    }

    #[test]
    fn progress_and_seeds() {
        let d = Device::flex();
        let schedule = FlowMatchScheduleConfig::new().with_shift(3.0).init(5).unwrap();
        let model = Oracle { straight: true };
        let shape = [1, 2, 4, 4];
        let mut seen = Vec::new();
        let heun = FlowHeunSampler::new(schedule.clone());
        let a = heun.sample(&model, &(), shape, &d, &mut StdRng::seed_from_u64(7), &mut |p: &Progress| seen.push(*p)).unwrap();
        assert_eq!(seen.len(), 5);
        for (i, p) in seen.iter().enumerate() {
            assert_eq!((p.step, p.total_steps, p.timestep), (i + 1, 5, schedule.sigmas()[i] as f64));
        }
        let b = heun.sample(&model, &(), shape, &d, &mut StdRng::seed_from_u64(7), &mut NoProgress).unwrap();
        assert_eq!(a.clone().into_data(), b.into_data());
        let c = heun.sample(&model, &(), shape, &d, &mut StdRng::seed_from_u64(8), &mut NoProgress).unwrap();
        assert_ne!(a.into_data(), c.into_data());
        let mut steps = 0;
        let euler = FlowEulerSampler::new(schedule);
        euler.sample(&model, &(), shape, &d, &mut StdRng::seed_from_u64(7), &mut |_: &Progress| steps += 1).unwrap();
        assert_eq!(steps, 5);
    }

    #[test]
    fn calls_per_run_and_wrong_model_outputs() {
        struct Counting(std::cell::Cell<usize>, usize);
        impl Denoiser for Counting {
            type Cond = ();
            fn denoise(&self, x: Tensor<4>, _t: Tensor<1>, _: &()) -> Result<Tensor<4>> {
                self.0.set(self.0.get() + 1);
                let [b, _, h, w] = x.dims();
                Ok(Tensor::zeros([b, self.1, h, w], &x.device()))
            }
        }
        let d = Device::flex();
        let heun = FlowHeunSampler::new(FlowMatchScheduleConfig::new().init(4).unwrap());
        let ok = Counting(Default::default(), 2);
        heun.sample_from(&ok, &(), Tensor::zeros([1, 2, 2, 2], &d), &mut NoProgress).unwrap();
        assert_eq!(ok.0.get(), heun.num_model_calls());
        let wrong = Counting(Default::default(), 4);
        assert!(heun.sample_from(&wrong, &(), Tensor::zeros([1, 2, 2, 2], &d), &mut NoProgress).is_err());
        let euler = FlowEulerSampler::new(heun.schedule().clone());
        assert!(euler.sample_from(&wrong, &(), Tensor::zeros([1, 2, 2, 2], &d), &mut NoProgress).is_err());
    }
}

//! Rectified flow (Liu et al. 2022, "Flow Straight and Fast", arXiv:2209.03003), as trained by
//! Stable Diffusion 3 (Esser et al. 2024, arXiv:2403.03206).
//!
//! Forward process and targets, with `t` the noise level in `[0, 1]`:
//!
//! - `z_t = (1 - t) x0 + t eps` ([`interpolate`])
//! - velocity `v = dz_t/dt = eps - x0` ([`velocity_target`]), the network's target
//! - the equivalent views: `x0 = z_t - t v`, `eps = z_t + (1 - t) v`
//!   ([`convert_prediction`] between [`FlowPrediction`]s)
//! - loss `E_t[w(t) ||v_theta(z_t, t) - (eps - x0)||^2]` ([`flow_matching_loss`]), `t` drawn
//!   from a [`TimestepSampler`] and `w` a [`LossWeighting`].
//!
//! [`RectifiedFlow`] puts these together for any [`Denoiser`] that predicts the velocity.
//! Sampling integrates `dz/dt = v` from `t = 1` to `0`: see
//! `FlowEulerSampler` and `FlowHeunSampler` of the sampling module.

use burn::prelude::*;
use rand::Rng;

use crate::diffusion::timestep_sampling::{LossWeighting, TimestepSampler, TimestepSamplerConfig};
use crate::error::{Error, Result, ensure_config, ensure_dims};
use crate::contracts::Denoiser;
use crate::contracts::randn;
use crate::contracts::{Objective, TrainRng};

/// What a network's output (or any tensor) stands for in rectified flow.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum FlowPrediction {
    /// The velocity `v = eps - x0` (SD3's target).
    Velocity,
    /// The noise `eps`.
    Noise,
    /// The clean sample `x0`.
    Sample,
}

/// `t` `[B]` as `[B, 1, ..., 1]` for broadcasting over a `[B, ...]` tensor.
fn per_sample<const D: usize>(t: Tensor<1>) -> Tensor<D> {
    let mut dims = [1usize; D];
    dims[0] = t.dims()[0];
    t.reshape(dims)
}

fn check_batch_times<const D: usize>(x: &Tensor<D>, t: &Tensor<1>) -> Result<()> {
    ensure_dims("t", t.dims(), [Some(x.dims()[0])])
}

fn check_same_shape<const D: usize>(name: &str, a: &Tensor<D>, b: &Tensor<D>) -> Result<()> {
    if a.dims() == b.dims() {
        Ok(())
    } else {
        Err(Error::Shape { name: name.into(), expected: format!("{:?}", a.dims()), got: format!("{:?}", b.dims()) })
    }
}

/// The forward process `z_t = (1 - t) x0 + t eps` (diffusers' `scale_noise`).
///
/// # Shapes
/// - `x0`, `noise`: `[B, ...]`; `t`: `[B]` in `[0, 1]`
/// - output: `[B, ...]`
///
/// # Errors
/// `noise` of another shape than `x0`, or `t` not `[B]`.
pub fn interpolate<const D: usize>(x0: Tensor<D>, noise: Tensor<D>, t: Tensor<1>) -> Result<Tensor<D>> {
    check_same_shape("noise", &x0, &noise)?;
    check_batch_times(&x0, &t)?;
    let t = per_sample::<D>(t);
    // diffusers' order of operations: sigma * noise + (1 - sigma) * sample.
    Ok(noise * t.clone() + x0 * (t.neg() + 1.0))
}

/// The velocity target `eps - x0`.
///
/// # Shapes
/// - `x0`, `noise`: `[B, ...]` -> `[B, ...]`
///
/// # Errors
/// Mismatched shapes.
pub fn velocity_target<const D: usize>(x0: Tensor<D>, noise: Tensor<D>) -> Result<Tensor<D>> {
    check_same_shape("noise", &x0, &noise)?;
    Ok(noise - x0)
}

/// Converts a prediction made at `(z_t, t)` from one view to another:
///
/// | from → velocity | velocity → to |
/// | --- | --- |
/// | `Noise`: `v = (eps - z_t) / (1 - t)` | `Noise`: `eps = z_t + (1 - t) v` |
/// | `Sample`: `v = (z_t - x0) / t` | `Sample`: `x0 = z_t - t v` |
///
/// Converting from `Noise` divides by `1 - t` (undefined at `t = 1`) and from `Sample` by `t`
/// (undefined at `t = 0`); those give non-finite values there. From `Velocity` every
/// conversion is exact for all `t`.
///
/// # Shapes
/// - `prediction`, `z_t`: `[B, ...]`; `t`: `[B]`
/// - output: `[B, ...]`
///
/// # Errors
/// Mismatched shapes.
pub fn convert_prediction<const D: usize>(
    prediction: Tensor<D>,
    from: FlowPrediction,
    to: FlowPrediction,
    z_t: Tensor<D>,
    t: Tensor<1>,
) -> Result<Tensor<D>> {
    check_same_shape("z_t", &prediction, &z_t)?;
    check_batch_times(&z_t, &t)?;
    if from == to {
        return Ok(prediction);
    }
    let t = per_sample::<D>(t);
    let v = match from {
        FlowPrediction::Velocity => prediction,
        FlowPrediction::Noise => (prediction - z_t.clone()) / (t.clone().neg() + 1.0),
        FlowPrediction::Sample => (z_t.clone() - prediction) / t.clone(),
    };
    Ok(match to {
        FlowPrediction::Velocity => v,
        FlowPrediction::Noise => z_t + v * (t.neg() + 1.0),
        FlowPrediction::Sample => z_t - v * t,
    })
}

/// The (weighted) mean squared error of SD3 training, as diffusers computes it:
/// `mean_b(w_b * mean((prediction_b - target_b)^2))`.
///
/// # Shapes
/// - `prediction`, `target`: `[B, ...]`; `weights`: `[B]` (none: all 1)
/// - output: `[1]`
///
/// # Errors
/// Mismatched shapes.
pub fn flow_matching_loss<const D: usize>(
    prediction: Tensor<D>,
    target: Tensor<D>,
    weights: Option<Tensor<1>>,
) -> Result<Tensor<1>> {
    Ok(per_sample_loss(prediction, target, weights)?.mean())
}

/// Per-sample weighted MSE `[B]`.
fn per_sample_loss<const D: usize>(prediction: Tensor<D>, target: Tensor<D>, weights: Option<Tensor<1>>) -> Result<Tensor<1>> {
    check_same_shape("target", &prediction, &target)?;
    let b = prediction.dims()[0];
    let mse = (prediction - target).square().reshape([b as i64, -1]).mean_dim(1).reshape([b]);
    match weights {
        None => Ok(mse),
        Some(w) => {
            ensure_dims("weights", w.dims(), [Some(b)])?;
            Ok(mse * w)
        }
    }
}

/// Configuration of a [`RectifiedFlow`] training objective. The defaults are SD3's:
/// logit-normal(0, 1) times, no shift, no loss weighting, model timesteps `1000 t`.
#[derive(Config, Debug)]
pub struct RectifiedFlowConfig {
    /// Training-time distribution of `t` (density and shift). Default: logit-normal(0, 1),
    /// shift 1.
    #[config(default = "TimestepSamplerConfig::new()")]
    pub timesteps: TimestepSamplerConfig,
    /// Per-sample loss weighting. Default: none.
    #[config(default = "LossWeighting::None")]
    pub weighting: LossWeighting,
    /// The model sees `t * timestep_scale` as its timestep (diffusers' SD3: 1000, the
    /// scheduler's `num_train_timesteps`). Default: 1000.
    #[config(default = 1000.0)]
    pub timestep_scale: f64,
}

impl RectifiedFlowConfig {
    /// Validates the configuration.
    ///
    /// # Errors
    /// Invalid density parameters, a non-positive shift or a non-positive timestep scale.
    pub fn init(&self) -> Result<RectifiedFlow> {
        ensure_config(self.timestep_scale.is_finite() && self.timestep_scale > 0.0, || {
            format!("timestep_scale must be finite and > 0, got {}", self.timestep_scale)
        })?;
        Ok(RectifiedFlow { sampler: self.timesteps.init()?, weighting: self.weighting, timestep_scale: self.timestep_scale })
    }
}

/// The rectified-flow training objective for a velocity-predicting [`Denoiser`].
///
/// ```
/// use burn::prelude::*;
/// use diffusion_transformers::diffusion::RectifiedFlowConfig;
/// use diffusion_transformers::models::DiTConfig;
/// use rand::SeedableRng;
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let device = Device::flex();
/// let model = DiTConfig::new().with_input_size(8).with_hidden_size(32).with_depth(1)
///     .with_num_heads(2).with_num_classes(10).with_learn_sigma(false).init(&device)?;
/// let flow = RectifiedFlowConfig::new().init()?;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let x0 = Tensor::<4>::zeros([2, 4, 8, 8], &device);
/// let labels = Some(Tensor::<1, Int>::from_ints([1, 2], &device));
/// let out = flow.training_loss(&model, x0, &labels, &mut rng)?;
/// let loss = out.loss; // [1]; call .backward() on an autodiff device
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RectifiedFlow {
    sampler: TimestepSampler,
    weighting: LossWeighting,
    timestep_scale: f64,
}

/// The result of one [`RectifiedFlow`] loss evaluation.
#[derive(Debug, Clone)]
pub struct FlowLoss {
    /// Batch mean of the weighted per-sample losses, `[1]`.
    pub loss: Tensor<1>,
    /// Weighted per-sample losses, `[B]`.
    pub per_sample: Tensor<1>,
    /// The times used, `[B]` in `(0, 1)`.
    pub t: Tensor<1>,
}

impl RectifiedFlow {
    /// The timestep sampler.
    pub fn sampler(&self) -> &TimestepSampler {
        &self.sampler
    }

    /// The loss weighting.
    pub fn weighting(&self) -> LossWeighting {
        self.weighting
    }

    /// The factor from `t` to the model's timestep.
    pub fn timestep_scale(&self) -> f64 {
        self.timestep_scale
    }

    /// `n` seeded training times (density, then shift).
    ///
    /// # Shapes
    /// - output: `[n]`
    pub fn sample_t<R: Rng + ?Sized>(&self, n: usize, rng: &mut R, device: &Device) -> Tensor<1> {
        self.sampler.sample_tensor(n, rng, device)
    }

    /// The loss at given times and noise: `z_t = (1 - t) x0 + t eps`, the model predicts the
    /// velocity from `(z_t, t * timestep_scale, cond)`, compared with `eps - x0` under the
    /// weighting.
    ///
    /// # Shapes
    /// - `x0`, `noise`: `[B, C, H, W]`; `t`: `[B]` in `[0, 1]`
    ///
    /// # Errors
    /// Mismatched shapes, a model output of another shape than `x0`, or a model error.
    pub fn loss_at<M: Denoiser>(
        &self,
        model: &M,
        x0: Tensor<4>,
        cond: &M::Cond,
        t: Tensor<1>,
        noise: Tensor<4>,
    ) -> Result<FlowLoss> {
        let z_t = interpolate(x0.clone(), noise.clone(), t.clone())?;
        let target = velocity_target(x0, noise)?;
        let prediction = model.denoise(z_t, t.clone() * self.timestep_scale, cond)?;
        if prediction.dims() != target.dims() {
            return Err(Error::Shape {
                name: "model output".into(),
                expected: format!("{:?} (the shape of x0)", target.dims()),
                got: format!("{:?}", prediction.dims()),
            });
        }
        let weights = match self.weighting {
            LossWeighting::None => None,
            w => Some(w.weights(t.clone())),
        };
        let per_sample = per_sample_loss(prediction, target, weights)?;
        Ok(FlowLoss { loss: per_sample.clone().mean(), per_sample, t })
    }

    /// The loss with times and noise drawn from `rng` (one draw of `t` per sample).
    ///
    /// # Shapes
    /// - `x0`: `[B, C, H, W]`
    ///
    /// # Errors
    /// As [`loss_at`](Self::loss_at).
    pub fn training_loss<M: Denoiser, R: Rng + ?Sized>(
        &self,
        model: &M,
        x0: Tensor<4>,
        cond: &M::Cond,
        rng: &mut R,
    ) -> Result<FlowLoss> {
        let device = x0.device();
        let t = self.sample_t(x0.dims()[0], rng, &device);
        let noise = randn(x0.dims(), rng, &device);
        self.loss_at(model, x0, cond, t, noise)
    }
}

/// The rectified-flow loss as a training [`Objective`]: times and
/// noise are drawn from the trainer's RNG ([`RectifiedFlow::training_loss`]).
impl<M: Denoiser> Objective<M> for RectifiedFlow {
    fn loss(&self, model: &M, x0: Tensor<4>, cond: &M::Cond, rng: &mut TrainRng) -> Result<Tensor<1>> {
        Ok(self.training_loss(model, x0, cond, rng)?.loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::TimestepDensity;
    use burn::tensor::Tolerance;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn device() -> Device {
        Device::flex()
    }

    fn vec4(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn interpolation_and_target() {
        let d = device();
        let mut rng = StdRng::seed_from_u64(0);
        let x0 = randn([2, 3, 2, 2], &mut rng, &d);
        let eps = randn([2, 3, 2, 2], &mut rng, &d);
        let t = Tensor::<1>::from_floats([0.0, 1.0], &d);
        let z = interpolate(x0.clone(), eps.clone(), t).unwrap();
        let (z, x, e) = (vec4(z), vec4(x0.clone()), vec4(eps.clone()));
        assert_eq!(&z[..12], &x[..12]); // t = 0: data
        assert_eq!(&z[12..], &e[12..]); // t = 1: noise
        let v = vec4(velocity_target(x0, eps).unwrap());
        for i in 0..24 {
            assert!((v[i] - (e[i] - x[i])).abs() < 1e-7);
        }
    }

    #[test]
    fn conversions_round_trip_and_match_ground_truth() {
        let d = device();
        let mut rng = StdRng::seed_from_u64(1);
        let x0 = randn([3, 2, 2, 2], &mut rng, &d);
        let eps = randn([3, 2, 2, 2], &mut rng, &d);
        let t = Tensor::<1>::from_floats([0.1, 0.5, 0.9], &d);
        let z = interpolate(x0.clone(), eps.clone(), t.clone()).unwrap();
        let v = velocity_target(x0.clone(), eps.clone()).unwrap();
        use FlowPrediction::*;
        let truth = |p: FlowPrediction| match p {
            Velocity => v.clone(),
            Noise => eps.clone(),
            Sample => x0.clone(),
        };
        for from in [Velocity, Noise, Sample] {
            for to in [Velocity, Noise, Sample] {
                let got = convert_prediction(truth(from), from, to, z.clone(), t.clone()).unwrap();
                got.into_data().assert_approx_eq::<f32>(&truth(to).into_data(), Tolerance::absolute(1e-5));
            }
        }
    }

    #[test]
    fn loss_matches_diffusers_reduction() {
        let d = device();
        let pred = Tensor::<4>::from_floats([[[[1.0, 2.0]]], [[[0.0, 0.0]]]], &d);
        let target = Tensor::<4>::from_floats([[[[0.0, 0.0]]], [[[3.0, 1.0]]]], &d);
        // per-sample MSE: 2.5 and 5.0
        let l = flow_matching_loss(pred.clone(), target.clone(), None).unwrap().into_scalar::<f32>();
        assert_eq!(l, 3.75);
        let w = Tensor::<1>::from_floats([2.0, 0.5], &d);
        let l = flow_matching_loss(pred, target, Some(w)).unwrap().into_scalar::<f32>();
        assert_eq!(l, 3.75); // (5 + 2.5) / 2
    }

    /// A velocity "model" that returns a fixed tensor and records the timesteps it saw.
    struct Fixed(Tensor<4>, std::cell::RefCell<Vec<f32>>);
    impl Denoiser for Fixed {
        type Cond = ();
        fn denoise(&self, _x: Tensor<4>, t: Tensor<1>, _c: &()) -> Result<Tensor<4>> {
            *self.1.borrow_mut() = t.into_data().try_to_vec::<f32>().unwrap();
            Ok(self.0.clone())
        }
    }

    #[test]
    fn objective_uses_scale_weighting_and_seed() {
        let d = device();
        let mut rng = StdRng::seed_from_u64(2);
        let x0 = randn([2, 1, 2, 2], &mut rng, &d);
        let eps = randn([2, 1, 2, 2], &mut rng, &d);
        let model = Fixed(Tensor::zeros([2, 1, 2, 2], &d), Default::default());
        let t = Tensor::<1>::from_floats([0.25, 0.5], &d);
        let flow = RectifiedFlowConfig::new().with_weighting(LossWeighting::SigmaSqrt).init().unwrap();
        let out = flow.loss_at(&model, x0.clone(), &(), t.clone(), eps.clone()).unwrap();
        assert_eq!(*model.1.borrow(), vec![250.0, 500.0]);
        let v = velocity_target(x0.clone(), eps.clone()).unwrap();
        let mse = v.square().reshape([2, 4]).mean_dim(1).reshape([2]).into_data().try_to_vec::<f32>().unwrap();
        let want = (16.0 * mse[0] + 4.0 * mse[1]) / 2.0;
        assert!((out.loss.into_scalar::<f32>() - want).abs() < 1e-4 * want);
        // Seeded draws repeat.
        let flow = RectifiedFlowConfig::new()
            .with_timesteps(TimestepSamplerConfig::new().with_density(TimestepDensity::CosMap).with_shift(3.0))
            .init()
            .unwrap();
        let a = flow.training_loss(&model, x0.clone(), &(), &mut StdRng::seed_from_u64(9)).unwrap();
        let b = flow.training_loss(&model, x0, &(), &mut StdRng::seed_from_u64(9)).unwrap();
        assert_eq!(a.t.into_data(), b.t.into_data());
        assert_eq!(a.loss.into_data(), b.loss.into_data());
    }

    #[test]
    fn trains_a_dit_through_the_objective_trait() {
        use crate::models::DiTConfig;
        use crate::training::{OptimizerConfig, Trainer, TrainerConfig};
        let d = Device::flex().autodiff();
        let model = DiTConfig::new()
            .with_input_size(4)
            .with_patch_size(2)
            .with_in_channels(2)
            .with_hidden_size(16)
            .with_depth(1)
            .with_num_heads(2)
            .with_num_classes(0)
            .with_learn_sigma(false)
            .init(&d)
            .unwrap();
        let config = TrainerConfig {
            optimizer: OptimizerConfig { lr: 3e-3, warmup_steps: 1, ..Default::default() },
            ema_decay: 0.9,
            seed: 3,
            ..Default::default()
        };
        let mut trainer = Trainer::new(model, config).unwrap();
        let flow = RectifiedFlowConfig::new().with_weighting(LossWeighting::CosMap).init().unwrap();
        // A constant image: the optimal velocity is easy to learn.
        let x0 = Tensor::<4>::full([8, 2, 4, 4], 0.5, &d);
        let losses: Vec<f32> = (0..30).map(|_| trainer.train_step(&flow, x0.clone(), &None).unwrap()).collect();
        let first = losses[..5].iter().sum::<f32>() / 5.0;
        let last = losses[25..].iter().sum::<f32>() / 5.0;
        assert!(last < 0.7 * first, "{first} -> {last}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let d = device();
        let x = Tensor::<4>::zeros([2, 1, 2, 2], &d);
        let t = Tensor::<1>::zeros([2], &d);
        assert!(interpolate(x.clone(), Tensor::zeros([2, 1, 2, 3], &d), t.clone()).is_err());
        assert!(interpolate(x.clone(), x.clone(), Tensor::zeros([3], &d)).is_err());
        assert!(velocity_target(x.clone(), Tensor::zeros([1, 1, 2, 2], &d)).is_err());
        assert!(convert_prediction(x.clone(), FlowPrediction::Noise, FlowPrediction::Sample, Tensor::zeros([2, 2, 2, 2], &d), t.clone()).is_err());
        assert!(flow_matching_loss(x.clone(), x.clone(), Some(Tensor::ones([3], &d))).is_err());
        assert!(RectifiedFlowConfig::new().with_timestep_scale(0.0).init().is_err());
        assert!(RectifiedFlowConfig::new().with_timesteps(TimestepSamplerConfig::new().with_shift(-2.0)).init().is_err());
        let flow = RectifiedFlowConfig::new().init().unwrap();
        let wrong = Fixed(Tensor::zeros([2, 3, 2, 2], &d), Default::default());
        let e = flow.loss_at(&wrong, x.clone(), &(), t.clone(), x.clone()).unwrap_err();
        assert!(e.to_string().contains("model output"), "{e}");
        assert!(flow.loss_at(&wrong, x.clone(), &(), Tensor::zeros([1], &d), x).is_err());
    }
}

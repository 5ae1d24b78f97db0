//! Discrete Gaussian diffusion (DDPM, Ho et al. 2020, arXiv:2006.11239) with the improvements
//! of Nichol & Dhariwal 2021 (arXiv:2102.09672: learned-range variance, hybrid loss, cosine
//! schedule, respacing), as the official DiT trains and samples it
//! (facebookresearch/DiT `diffusion/gaussian_diffusion.py`, `respace.py`, `create_diffusion`).
//!
//! [`GaussianDiffusion`] holds a (possibly respaced) [`NoiseSchedule`] and implements the
//! forward process, the posterior, the model's reverse distribution, the training losses and
//! single DDPM / DDIM steps. Timesteps are host-side indices `t: &[usize]` into the respaced
//! process (one per batch element); the model always sees the *original* timestep
//! ([`GaussianDiffusion::model_timesteps`]). Coefficients are computed in `f64` and gathered per
//! batch element as `[B, 1, ..., 1]` tensors in the data's dtype, as the reference's
//! `_extract_into_tensor` does. The full sampling loops live in the sampling module.
//!
//! Files: this one (types, configuration, timesteps and the model call), `forward.rs`: forward-process
//! and parameterisation conversions, `reverse.rs`: reverse-process steps, `losses.rs`: training losses.

use burn::prelude::*;
use rand::Rng;

mod forward;
mod losses;
mod reverse;

pub use reverse::check_eta;

use crate::diffusion::respace::{respace_betas, space_timesteps};
use crate::diffusion::schedule::{BetaSchedule, NoiseSchedule};
use crate::error::{Error, Result, ensure_config};
use crate::contracts::Denoiser;

/// What the model predicts.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum PredictionType {
    /// The noise `eps` (reference `EPSILON`, the DiT default).
    Epsilon,
    /// The clean sample `x_0` (reference `START_X`, `predict_xstart=True`).
    Sample,
    /// The velocity `v = sqrt(abar) eps - sqrt(1 - abar) x_0` (Salimans & Ho 2022,
    /// arXiv:2202.00512).
    VPrediction,
}

/// The variance of the reverse process `p(x_{t-1} | x_t)`.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum VarianceType {
    /// The posterior variance `beta~_t` (lower bound; reference `FIXED_SMALL`).
    FixedSmall,
    /// `beta_t` (upper bound; reference `FIXED_LARGE`, with the `t = 0` entry set to `beta~_1`).
    FixedLarge,
    /// The model outputs `v in [-1, 1]` per element on `C` extra channels and the log variance
    /// is `frac ln(beta_t) + (1 - frac) ln(beta~_t)` with `frac = (v + 1) / 2` (Nichol &
    /// Dhariwal 2021, eq. 15; DiT's `learn_sigma`).
    LearnedRange,
    /// The model outputs the log variance directly on `C` extra channels.
    Learned,
}

impl VarianceType {
    /// Whether the model outputs variance channels (twice the data's channels).
    pub fn is_learned(self) -> bool {
        matches!(self, Self::LearnedRange | Self::Learned)
    }
}

/// The training objective.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum LossType {
    /// MSE on the prediction target, plus the variational-bound term (in bits per dim, its
    /// mean detached) for learned variances: the hybrid loss `L_simple + L_vlb`
    /// (DiT's default, `rescale_learned_sigmas=False`).
    Mse,
    /// As [`LossType::Mse`] with the VB term scaled by `num_timesteps / 1000`
    /// (reference `RESCALED_MSE`; equals `Mse` for a 1000-step process).
    RescaledMse,
    /// The variational bound alone (reference `KL`).
    Kl,
    /// The variational bound times `num_timesteps`, an estimate of the full bound
    /// (reference `RESCALED_KL`, `use_kl=True`).
    RescaledKl,
}

/// How the predicted `x_0` is processed before it is used.
#[derive(Config, Debug, Copy, PartialEq)]
pub enum ClipMode {
    /// No processing (DiT's latent sampling, `clip_denoised=False`).
    Off,
    /// Clamp to `[-r, r]` (the reference's `clip_denoised=True` is `Clamp(1.0)`).
    Clamp(f64),
    /// Dynamic thresholding (Saharia et al. 2022, arXiv:2205.11487, as diffusers'
    /// `_threshold_sample`): per sample, `s` is the `ratio` quantile of `|x_0|`, clamped to
    /// `[1, max_value]`; then `x_0 = clamp(x_0, -s, s) / s`.
    DynamicThreshold {
        /// Quantile in `(0, 1]` (diffusers default 0.995).
        ratio: f64,
        /// Largest threshold, at least 1 (diffusers' `sample_max_value`, default 1.0).
        max_value: f64,
    },
}

impl From<bool> for ClipMode {
    /// `true` is the reference's `clip_denoised=True` (`Clamp(1.0)`), `false` is `Off`.
    fn from(clip: bool) -> Self {
        if clip { Self::Clamp(1.0) } else { Self::Off }
    }
}

impl ClipMode {
    /// Checks the parameters.
    ///
    /// # Errors
    /// A non-positive or non-finite clamp range, a ratio outside `(0, 1]` or a `max_value`
    /// below 1.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Off => Ok(()),
            Self::Clamp(r) if r > 0.0 && r.is_finite() => Ok(()),
            Self::Clamp(r) => Err(Error::InvalidArgument(format!("clip range must be positive, got {r}"))),
            Self::DynamicThreshold { ratio, max_value } => {
                if ratio > 0.0 && ratio <= 1.0 && max_value >= 1.0 && max_value.is_finite() {
                    Ok(())
                } else {
                    Err(Error::InvalidArgument(format!(
                        "dynamic thresholding needs ratio in (0, 1] and max_value >= 1, got {ratio}, {max_value}"
                    )))
                }
            }
        }
    }

    /// Applies the processing to a predicted `x_0`.
    ///
    /// # Shapes
    /// - `x`: `[B, ...]` -> same shape
    ///
    /// # Errors
    /// Invalid parameters (see [`ClipMode::validate`]).
    pub fn apply<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>> {
        self.validate()?;
        Ok(match *self {
            Self::Off => x,
            Self::Clamp(r) => x.clamp(-r, r),
            Self::DynamicThreshold { ratio, max_value } => {
                let dims = x.dims();
                let b = dims[0];
                let n = dims.iter().product::<usize>() / b.max(1);
                if n == 0 {
                    return Ok(x);
                }
                let flat = x.reshape([b, n]);
                let sorted = flat.clone().abs().sort(1);
                // torch.quantile, linear interpolation.
                let pos = ratio * (n - 1) as f64;
                let lo = pos.floor() as usize;
                let hi = (lo + 1).min(n - 1);
                let w = pos - lo as f64;
                let below = sorted.clone().narrow(1, lo, 1);
                let s = below.clone() + (sorted.narrow(1, hi, 1) - below) * w;
                let s = s.clamp(1.0, max_value).expand([b, n]);
                (flat.max_pair(s.clone().neg()).min_pair(s.clone()) / s).reshape(dims)
            }
        })
    }
}

/// Configuration of a [`GaussianDiffusion`]; the defaults are DiT's `create_diffusion`
/// (`learn_sigma=True`, linear schedule, 1000 steps, MSE + VB loss).
#[derive(Config, Debug)]
pub struct GaussianDiffusionConfig {
    /// Steps of the training process. Default: 1000.
    #[config(default = 1000)]
    pub diffusion_steps: usize,
    /// Beta schedule. Default: [`BetaSchedule::Linear`].
    #[config(default = "BetaSchedule::Linear")]
    pub noise_schedule: BetaSchedule,
    /// Timestep respacing (see [`space_timesteps`]): `""` (all steps), `"250"`, `"ddim50"`,
    /// `"10,15,20"`. Default: `""`.
    #[config(default = "String::new()")]
    pub timestep_respacing: String,
    /// What the model predicts. Default: epsilon.
    #[config(default = "PredictionType::Epsilon")]
    pub prediction_type: PredictionType,
    /// Reverse-process variance. Default: learned range (DiT's `learn_sigma=True`).
    #[config(default = "VarianceType::LearnedRange")]
    pub variance_type: VarianceType,
    /// Training objective. Default: MSE (+ VB for learned variances).
    #[config(default = "LossType::Mse")]
    pub loss_type: LossType,
}

impl GaussianDiffusionConfig {
    /// DiT's `create_diffusion(timestep_respacing)` with the reference defaults.
    pub fn dit(timestep_respacing: &str) -> Self {
        Self::new().with_timestep_respacing(timestep_respacing.to_string())
    }

    /// Builds the (respaced) diffusion.
    ///
    /// # Errors
    /// Zero steps, an invalid schedule or respacing.
    pub fn init(&self) -> Result<GaussianDiffusion> {
        let betas = self.noise_schedule.betas(self.diffusion_steps)?;
        let base = NoiseSchedule::from_betas(betas)?;
        let keep = space_timesteps(self.diffusion_steps, &self.timestep_respacing)?;
        let (betas, map) = respace_betas(base.alphas_cumprod(), &keep)?;
        GaussianDiffusion::new(betas, map, self.diffusion_steps, self.prediction_type, self.variance_type, self.loss_type)
    }
}

/// Mean, variance and log variance of a diagonal Gaussian.
#[derive(Debug, Clone)]
pub struct GaussianStats<const D: usize> {
    /// Mean, `[B, ...]`.
    pub mean: Tensor<D>,
    /// Variance, `[B, ...]` (broadcast to the data's shape).
    pub variance: Tensor<D>,
    /// Log variance, `[B, ...]`.
    pub log_variance: Tensor<D>,
}

/// The model's reverse distribution `p(x_{t-1} | x_t)` and its `x_0` prediction.
#[derive(Debug, Clone)]
pub struct PMeanVariance<const D: usize> {
    /// Mean of `p(x_{t-1} | x_t)`, `[B, C, ...]`.
    pub mean: Tensor<D>,
    /// Its variance, `[B, C, ...]`.
    pub variance: Tensor<D>,
    /// Its log variance, `[B, C, ...]`.
    pub log_variance: Tensor<D>,
    /// The (processed) `x_0` prediction, `[B, C, ...]`.
    pub pred_xstart: Tensor<D>,
}

/// One reverse step's result.
#[derive(Debug, Clone)]
pub struct SampleStep<const D: usize> {
    /// `x_{t-1}`, `[B, C, ...]`.
    pub sample: Tensor<D>,
    /// The `x_0` prediction used, `[B, C, ...]`.
    pub pred_xstart: Tensor<D>,
}

/// Per-sample training losses, each `[B]`.
#[derive(Debug, Clone)]
pub struct TrainingLosses {
    /// The total loss to minimise (average it over the batch).
    pub loss: Tensor<1>,
    /// The MSE term (MSE loss types).
    pub mse: Option<Tensor<1>>,
    /// The variational-bound term in bits per dim, as added to the loss (learned variances
    /// and KL loss types).
    pub vb: Option<Tensor<1>>,
}

/// A discrete Gaussian diffusion process (respaced or not), with the reference's operations.
///
/// ```
/// use burn::prelude::*;
/// use diffusion_transformers::diffusion::gaussian::GaussianDiffusionConfig;
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let device = Device::flex();
/// let diffusion = GaussianDiffusionConfig::dit("250").init()?;
/// assert_eq!(diffusion.num_timesteps(), 250);
/// let x0 = Tensor::<4>::ones([2, 4, 8, 8], &device);
/// let noise = Tensor::<4>::zeros([2, 4, 8, 8], &device);
/// let x_t = diffusion.q_sample(x0, &[0, 249], noise)?; // sqrt(abar_t) * x0
/// let t_model = diffusion.model_timesteps(&[0, 249], &device)?; // [0.0, 999.0]
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct GaussianDiffusion {
    schedule: NoiseSchedule,
    timestep_map: Vec<usize>,
    original_num_steps: usize,
    fixed_large: Vec<f64>,
    prediction_type: PredictionType,
    variance_type: VarianceType,
    loss_type: LossType,
}

const LN_2: f64 = std::f64::consts::LN_2;

impl GaussianDiffusion {
    /// A diffusion over `betas` whose index `i` is original timestep `timestep_map[i]` of an
    /// `original_num_steps`-step process (use [`GaussianDiffusionConfig`] for the usual cases).
    ///
    /// # Errors
    /// Invalid betas, a map of another length, not strictly increasing or beyond
    /// `original_num_steps`.
    pub fn new(
        betas: Vec<f64>,
        timestep_map: Vec<usize>,
        original_num_steps: usize,
        prediction_type: PredictionType,
        variance_type: VarianceType,
        loss_type: LossType,
    ) -> Result<Self> {
        let schedule = NoiseSchedule::from_betas(betas)?;
        ensure_config(timestep_map.len() == schedule.len(), || {
            format!("timestep map has {} entries for {} betas", timestep_map.len(), schedule.len())
        })?;
        ensure_config(timestep_map.windows(2).all(|w| w[0] < w[1]), || {
            "timestep map must be strictly increasing".into()
        })?;
        ensure_config(timestep_map.last().is_some_and(|l| *l < original_num_steps), || {
            format!("timestep map exceeds the {original_num_steps}-step process")
        })?;
        Ok(Self {
            fixed_large: schedule.fixed_large_variance(),
            schedule,
            timestep_map,
            original_num_steps,
            prediction_type,
            variance_type,
            loss_type,
        })
    }

    /// Number of (respaced) timesteps.
    pub fn num_timesteps(&self) -> usize {
        self.schedule.len()
    }

    /// Number of timesteps of the original process.
    pub fn original_num_steps(&self) -> usize {
        self.original_num_steps
    }

    /// Respaced index -> original timestep.
    pub fn timestep_map(&self) -> &[usize] {
        &self.timestep_map
    }

    /// The (respaced) schedule arrays.
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// What the model predicts.
    pub fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }

    /// The reverse-process variance.
    pub fn variance_type(&self) -> VarianceType {
        self.variance_type
    }

    /// The training objective.
    pub fn loss_type(&self) -> LossType {
        self.loss_type
    }

    /// Uniform timestep sampling (reference `UniformSampler`): `batch` indices drawn
    /// independently and uniformly from `0..num_timesteps`.
    pub fn sample_timesteps<R: Rng + ?Sized>(&self, batch: usize, rng: &mut R) -> Vec<usize> {
        (0..batch).map(|_| rng.random_range(0..self.num_timesteps())).collect()
    }

    /// The original timesteps the model sees for respaced indices `t`, as floats.
    ///
    /// # Shapes
    /// - output: `[t.len()]`
    ///
    /// # Errors
    /// An index out of range.
    pub fn model_timesteps(&self, t: &[usize], device: &Device) -> Result<Tensor<1>> {
        self.check_t(t, t.len())?;
        let v: Vec<f32> = t.iter().map(|&i| self.timestep_map[i] as f32).collect();
        Ok(Tensor::from_data(TensorData::new(v, [t.len()]), device))
    }

    /// Runs `model` on `x_t` at respaced indices `t` (the model sees original timesteps).
    ///
    /// # Shapes
    /// - `x_t`: `[B, C, H, W]` -> the model's output `[B, C_out, H, W]`
    ///
    /// # Errors
    /// Bad timesteps or the model's own errors.
    pub fn denoise<M: Denoiser + ?Sized>(&self, model: &M, x_t: Tensor<4>, t: &[usize], cond: &M::Cond) -> Result<Tensor<4>> {
        self.check_t(t, x_t.dims()[0])?;
        let tt = self.model_timesteps(t, &x_t.device())?;
        model.denoise(x_t, tt, cond)
    }

    fn check_t(&self, t: &[usize], batch: usize) -> Result<()> {
        if t.len() != batch {
            return Err(Error::Shape {
                name: "t".into(),
                expected: format!("{batch} timesteps (one per batch element)"),
                got: format!("{}", t.len()),
            });
        }
        match t.iter().find(|&&i| i >= self.num_timesteps()) {
            Some(i) => Err(Error::InvalidArgument(format!(
                "timestep {i} is out of range for a {}-step diffusion",
                self.num_timesteps()
            ))),
            None => Ok(()),
        }
    }

    /// `[B, 1, ..., 1]` coefficients `f(t_b)` in `like`'s dtype and device.
    fn coef<const D: usize>(&self, like: &Tensor<D>, t: &[usize], f: impl Fn(usize) -> f64) -> Tensor<D> {
        let mut shape = [1usize; D];
        shape[0] = t.len();
        let v: Vec<f32> = t.iter().map(|&i| f(i) as f32).collect();
        Tensor::from_data(TensorData::new(v, shape), (&like.device(), like.dtype()))
    }

    fn check_data<const D: usize>(&self, name: &str, x: &Tensor<D>, t: &[usize]) -> Result<()> {
        if D < 2 {
            return Err(Error::Shape { name: name.into(), expected: "[B, C, ...]".into(), got: format!("{:?}", x.dims()) });
        }
        self.check_t(t, x.dims()[0])
    }

    fn same_shape<const D: usize>(name: &str, a: &Tensor<D>, b: &Tensor<D>) -> Result<()> {
        if a.dims() == b.dims() {
            Ok(())
        } else {
            Err(Error::Shape { name: name.into(), expected: format!("{:?}", a.dims()), got: format!("{:?}", b.dims()) })
        }
    }
}

/// Mean over every dimension but the batch: `[B, ...]` -> `[B]`.
pub fn mean_flat<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    let dims = x.dims();
    let b = dims[0];
    let n = dims.iter().product::<usize>() / b.max(1);
    x.reshape([b, n]).mean_dim(1).reshape([b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::DType;
    use crate::contracts::randn;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn data(shape: [usize; 4], seed: u64) -> Tensor<4> {
        randn(shape, &mut StdRng::seed_from_u64(seed), &Device::flex())
    }

    fn to_f64_vec<const D: usize>(x: Tensor<D>) -> Vec<f64> {
        x.into_data().convert_dtype(DType::F64).try_into_vec::<f64>().unwrap()
    }

    fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f64 {
        to_f64_vec(a).iter().zip(to_f64_vec(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn q_sample_without_noise_scales_x0() {
        let d = GaussianDiffusionConfig::dit("").init().unwrap();
        let x0 = data([3, 2, 4, 4], 0);
        let t = [0, 500, 999];
        let xt = d.q_sample(x0.clone(), &t, x0.zeros_like()).unwrap();
        let ac = d.schedule().alphas_cumprod();
        for (b, &ti) in t.iter().enumerate() {
            let got = xt.clone().narrow(0, b, 1);
            let expected = x0.clone().narrow(0, b, 1) * ac[ti].sqrt();
            assert!(max_abs_diff(got, expected) < 1e-6);
        }
    }

    #[test]
    fn predictions_round_trip_between_parameterisations() {
        let d = GaussianDiffusionConfig::dit("50").init().unwrap();
        let (x0, noise) = (data([2, 3, 4, 4], 1), data([2, 3, 4, 4], 2));
        let t = [3, 41];
        let xt = d.q_sample(x0.clone(), &t, noise.clone()).unwrap();
        let from_eps = d.predict_xstart_from_eps(xt.clone(), &t, noise.clone()).unwrap();
        assert!(max_abs_diff(from_eps, x0.clone()) < 1e-4);
        let v = d.v_target(x0.clone(), &t, noise.clone()).unwrap();
        assert!(max_abs_diff(d.predict_xstart_from_v(xt.clone(), &t, v).unwrap(), x0.clone()) < 1e-5);
        assert!(max_abs_diff(d.predict_eps_from_xstart(xt, &t, x0).unwrap(), noise) < 1e-4);
    }

    #[test]
    fn exact_prediction_gives_the_true_posterior_and_zero_kl() {
        // With the true x0 (x0-prediction) and fixed-small variance, p = q and the KL is 0.
        let d = GaussianDiffusionConfig::new()
            .with_diffusion_steps(100)
            .with_prediction_type(PredictionType::Sample)
            .with_variance_type(VarianceType::FixedSmall)
            .with_loss_type(LossType::Kl)
            .init()
            .unwrap();
        let (x0, noise) = (data([2, 2, 4, 4], 3).clamp(-1.0, 1.0), data([2, 2, 4, 4], 4));
        let t = [5, 77];
        let xt = d.q_sample(x0.clone(), &t, noise.clone()).unwrap();
        let l = d.training_losses_from_output(x0.clone(), x0, xt, &t, noise).unwrap();
        assert!(to_f64_vec(l.loss).iter().all(|v| v.abs() < 1e-4));
    }

    #[test]
    fn learned_range_interpolates_between_bounds() {
        let d = GaussianDiffusionConfig::dit("").init().unwrap();
        let xt = data([1, 2, 2, 2], 5);
        let t = [10];
        for (v, expected) in [(-1.0, d.schedule().posterior_log_variance_clipped()[10]), (1.0, d.schedule().betas()[10].ln())] {
            let out = Tensor::cat(vec![xt.zeros_like(), xt.zeros_like().add_scalar(v)], 1);
            let pmv = d.p_mean_variance(out, xt.clone(), &t, ClipMode::Off).unwrap();
            assert!(to_f64_vec(pmv.log_variance).iter().all(|l| (l - expected).abs() < 1e-5));
        }
    }

    #[test]
    fn hybrid_loss_stops_gradient_through_the_mean() {
        let device = Device::flex().autodiff();
        let d = GaussianDiffusionConfig::dit("").init().unwrap();
        let x0 = Tensor::<4>::from_data(data([2, 2, 2, 2], 6).into_data(), &device);
        let noise = Tensor::<4>::from_data(data([2, 2, 2, 2], 7).into_data(), &device);
        let t = [0, 500];
        let xt = d.q_sample(x0.clone(), &t, noise.clone()).unwrap();
        let eps = Tensor::<4>::from_data(data([2, 2, 2, 2], 8).into_data(), &device).require_grad();
        let var = Tensor::<4>::from_data(data([2, 2, 2, 2], 9).clamp(-1.0, 1.0).into_data(), &device).require_grad();
        let out = Tensor::cat(vec![eps.clone(), var.clone()], 1);
        let l = d.training_losses_from_output(out, x0, xt, &t, noise.clone()).unwrap();
        // d(vb)/d(eps) must be 0: the eps gradient comes from the MSE alone.
        let grads = l.vb.unwrap().sum().backward();
        assert!(eps.grad(&grads).is_none_or(|g| to_f64_vec(g).iter().all(|v| *v == 0.0)));
        assert!(var.grad(&grads).is_some_and(|g| to_f64_vec(g).iter().any(|v| *v != 0.0)));
    }

    #[test]
    fn dynamic_threshold_matches_definition() {
        let device = Device::flex();
        // One sample: |x| quantile 0.5 of [0.5, 2, 3, 4] = 2.5 -> clamp to [-2.5, 2.5] / 2.5.
        let x = Tensor::<2>::from_floats([[0.5, -2.0, 3.0, -4.0]], &device);
        let y = ClipMode::DynamicThreshold { ratio: 0.5, max_value: 10.0 }.apply(x).unwrap();
        let y = to_f64_vec(y);
        let expected = [0.2, -0.8, 1.0, -1.0];
        assert!(y.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{y:?}");
        assert!(ClipMode::Clamp(-1.0).validate().is_err());
        assert!(ClipMode::DynamicThreshold { ratio: 1.5, max_value: 1.0 }.validate().is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let d = GaussianDiffusionConfig::dit("25").init().unwrap();
        let x = data([2, 2, 4, 4], 10);
        assert!(d.q_sample(x.clone(), &[0, 25], x.clone()).is_err());
        assert!(d.q_sample(x.clone(), &[0], x.clone()).is_err());
        assert!(d.q_sample(x.clone(), &[0, 1], data([2, 3, 4, 4], 0)).is_err());
        // learned sigma needs 2C output channels
        assert!(d.p_mean_variance(x.clone(), x.clone(), &[1, 2], ClipMode::Off).is_err());
        let out = Tensor::cat(vec![x.clone(), x.clone()], 1);
        assert!(d.ddim_sample(out.clone(), x.clone(), &[1, 2], ClipMode::Off, -0.1, None).is_err());
        assert!(d.ddim_sample(out.clone(), x.clone(), &[1, 2], ClipMode::Off, 1.0, None).is_err());
        assert!(d.p_sample(out.clone(), x.clone(), &[1, 2], ClipMode::Off, None).is_err());
        assert!(d.p_sample(out, x.clone(), &[0, 0], ClipMode::Off, None).is_ok());
        assert!(d.model_timesteps(&[30], &Device::flex()).is_err());
        assert!(GaussianDiffusionConfig::dit("abc").init().is_err());
        assert!(GaussianDiffusionConfig::new().with_diffusion_steps(0).init().is_err());
        assert!(GaussianDiffusion::new(vec![0.1, 0.2], vec![0], 10, PredictionType::Epsilon, VarianceType::FixedSmall, LossType::Mse).is_err());
        let mut rng = StdRng::seed_from_u64(0);
        assert!(d.sample_timesteps(1000, &mut rng).iter().all(|t| *t < 25));
    }
}

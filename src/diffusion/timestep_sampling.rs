//! Timestep densities, loss weightings and the resolution-dependent timestep shift of
//! rectified-flow training (Esser et al. 2024, "Scaling Rectified Flow Transformers for
//! High-Resolution Image Synthesis" (SD3), arXiv:2403.03206, §3.1 and §5.3.2).
//!
//! The time `t` is the noise level of `z_t = (1 - t) x0 + t eps`: `t = 0` is data, `t = 1`
//! pure noise. Every [`TimestepDensity`] is a seeded sampler over the open interval `(0, 1)`
//! with its density ([`TimestepDensity::pdf`]) and distribution function
//! ([`TimestepDensity::cdf`]); [`TimestepSampler`] adds the resolution [`time_shift`] on top.
//! [`LossWeighting`] is diffusers' `compute_loss_weighting_for_sd3`.

use std::f64::consts::PI;

use burn::prelude::*;
use rand::Rng;
use rand::distr::Open01;

use crate::error::{Error, Result, ensure_config};
use crate::contracts::normal_vec;

/// Largest mode-sampling scale for which the mode map stays monotone: `2 / (pi - 2)`.
pub const MODE_SCALE_MAX: f64 = 2.0 / (PI - 2.0);
/// Smallest mode-sampling scale for which the mode map stays monotone: `-1`.
pub const MODE_SCALE_MIN: f64 = -1.0;

/// The random variable a [`TimestepDensity`] transforms into a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseDraw {
    /// `u ~ U(0, 1)` (open interval).
    Uniform,
    /// `n ~ N(0, 1)`.
    Normal,
}

/// A distribution of training times `t` over `(0, 1)` (SD3 §3.1).
///
/// | variant | draw | `t` |
/// | --- | --- | --- |
/// | `Uniform` | `u ~ U(0,1)` | `u` |
/// | `LogitNormal { location: m, scale: s }` | `n ~ N(0,1)` | `sigmoid(m + s n)` |
/// | `Mode { scale: s }` | `u ~ U(0,1)` | `1 - u - s (cos^2(pi u / 2) - 1 + u)` |
/// | `CosMap` | `u ~ U(0,1)` | `1 - 1 / (tan(pi u / 2) + 1)` |
///
/// The SD3 paper's best setting is `LogitNormal { location: 0.0, scale: 1.0 }`; `Mode` is valid
/// for `s` in `[-1, 2 / (pi - 2)]` and is uniform at `s = 0`.
///
/// ```
/// use diffusion_transformers::diffusion::TimestepDensity;
/// use rand::SeedableRng;
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let density = TimestepDensity::logit_normal(0.0, 1.0)?;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let t = density.sample(4, &mut rng)?;
/// assert!(t.iter().all(|&t| t > 0.0 && t < 1.0));
/// assert!((density.pdf(0.5)? - 1.5957691).abs() < 1e-6); // 4 / sqrt(2 pi)
/// # Ok(()) }
/// ```
#[derive(Config, Debug, Copy, PartialEq)]
pub enum TimestepDensity {
    /// Uniform on `(0, 1)`.
    Uniform,
    /// Logit-normal: `t = sigmoid(location + scale * n)`, `n ~ N(0, 1)` (SD3's `lognorm(m, s)`).
    LogitNormal {
        /// Location `m` (the median of `t` is `sigmoid(m)`).
        location: f64,
        /// Scale `s > 0`.
        scale: f64,
    },
    /// Mode sampling with heavy tails: `t = 1 - u - scale (cos^2(pi u / 2) - 1 + u)`.
    Mode {
        /// Scale `s` in `[-1, 2 / (pi - 2)]`; `0` is uniform, larger values concentrate on
        /// the middle, negative values on the ends.
        scale: f64,
    },
    /// CosMap: `t = 1 - 1 / (tan(pi u / 2) + 1)`, the density of the cosine schedule's
    /// log-SNR mapped to rectified flow.
    CosMap,
}

impl TimestepDensity {
    /// A validated logit-normal density.
    ///
    /// # Errors
    /// A non-finite location or a scale that is not finite and positive.
    pub fn logit_normal(location: f64, scale: f64) -> Result<Self> {
        let d = Self::LogitNormal { location, scale };
        d.validate()?;
        Ok(d)
    }

    /// A validated mode-sampling density.
    ///
    /// # Errors
    /// A scale outside `[-1, 2 / (pi - 2)]` (the map would not be monotone).
    pub fn mode(scale: f64) -> Result<Self> {
        let d = Self::Mode { scale };
        d.validate()?;
        Ok(d)
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a logit-normal with a non-finite location or a
    /// non-positive scale, or a mode scale outside `[-1, 2 / (pi - 2)]`.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Uniform | Self::CosMap => Ok(()),
            Self::LogitNormal { location, scale } => ensure_config(
                location.is_finite() && scale.is_finite() && scale > 0.0,
                || format!("logit-normal needs a finite location and a finite scale > 0, got m = {location}, s = {scale}"),
            ),
            Self::Mode { scale } => ensure_config((MODE_SCALE_MIN..=MODE_SCALE_MAX).contains(&scale), || {
                format!("mode sampling scale must be in [-1, 2/(pi-2) = {MODE_SCALE_MAX:.6}], got {scale}")
            }),
        }
    }

    /// Which random variable [`transform`](Self::transform) expects.
    pub fn base_draw(&self) -> BaseDraw {
        match self {
            Self::LogitNormal { .. } => BaseDraw::Normal,
            _ => BaseDraw::Uniform,
        }
    }

    /// Maps one draw of [`base_draw`](Self::base_draw) (a uniform `u` in `(0, 1)` or a
    /// standard normal `n`) to a time, by the formula in the table above. The parameters are
    /// used as they are (see [`validate`](Self::validate)).
    pub fn transform(&self, draw: f64) -> f64 {
        match *self {
            Self::Uniform => draw,
            Self::LogitNormal { location, scale } => sigmoid(location + scale * draw),
            Self::Mode { scale } => mode_map(draw, scale),
            Self::CosMap => 1.0 - 1.0 / ((PI * draw / 2.0).tan() + 1.0),
        }
    }

    /// `n` seeded draws of `t`, each in the open interval `(0, 1)`.
    ///
    /// # Errors
    /// Invalid parameters (see [`validate`](Self::validate)).
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Result<Vec<f64>> {
        self.validate()?;
        Ok(self.draw(n, rng))
    }

    /// [`sample`](Self::sample) without the parameter check.
    fn draw<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<f64> {
        let draws: Vec<f64> = match self.base_draw() {
            BaseDraw::Uniform => (0..n).map(|_| rng.sample(Open01)).collect(),
            BaseDraw::Normal => normal_vec(n, rng).into_iter().map(f64::from).collect(),
        };
        // Keep the open interval even where the map rounds to an end point.
        draws.into_iter().map(|d| self.transform(d).clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON / 2.0)).collect()
    }

    /// The probability density of `t` (0 outside `(0, 1)`). The mode density is infinite
    /// where its map is flat (`s = 2/(pi-2)` at `t = 1/2`, `s = -1` at the ends).
    ///
    /// # Errors
    /// Invalid parameters.
    pub fn pdf(&self, t: f64) -> Result<f64> {
        self.validate()?;
        Ok(self.pdf_unchecked(t))
    }

    fn pdf_unchecked(&self, t: f64) -> f64 {
        if !(t > 0.0 && t < 1.0) {
            return 0.0;
        }
        match *self {
            Self::Uniform => 1.0,
            Self::LogitNormal { location, scale } => {
                let z = (logit(t) - location) / scale;
                (-0.5 * z * z).exp() / (scale * (2.0 * PI).sqrt() * t * (1.0 - t))
            }
            Self::Mode { scale } => {
                let u = mode_inverse(t, scale);
                // |dt/du| = 1 + s - (pi s / 2) sin(pi u)
                1.0 / (1.0 + scale - PI * scale / 2.0 * (PI * u).sin())
            }
            Self::CosMap => 2.0 / (PI * (1.0 - 2.0 * t + 2.0 * t * t)),
        }
    }

    /// The distribution function `P(T <= t)`.
    ///
    /// # Errors
    /// Invalid parameters.
    pub fn cdf(&self, t: f64) -> Result<f64> {
        self.validate()?;
        Ok(self.cdf_unchecked(t))
    }

    fn cdf_unchecked(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        if t >= 1.0 {
            return 1.0;
        }
        match *self {
            Self::Uniform => t,
            Self::LogitNormal { location, scale } => normal_cdf((logit(t) - location) / scale),
            // The map is decreasing in u: T <= t  <=>  U >= u(t).
            Self::Mode { scale } => 1.0 - mode_inverse(t, scale),
            Self::CosMap => 2.0 / PI * (t / (1.0 - t)).atan(),
        }
    }
}

/// Mode map `1 - u - s (cos^2(pi u / 2) - 1 + u)`, decreasing from 1 (u = 0) to 0 (u = 1).
fn mode_map(u: f64, s: f64) -> f64 {
    let c = (PI * u / 2.0).cos();
    1.0 - u - s * (c * c - 1.0 + u)
}

/// The `u` in `[0, 1]` with `mode_map(u, s) == t` (bisection; the map is monotone for valid `s`).
fn mode_inverse(t: f64, s: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..64 {
        let mid = 0.5 * (lo + hi);
        if mode_map(mid, s) > t { lo = mid } else { hi = mid }
    }
    0.5 * (lo + hi)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn logit(t: f64) -> f64 {
    (t / (1.0 - t)).ln()
}

/// Standard normal distribution function `(1 + erf(z / sqrt 2)) / 2`.
fn normal_cdf(z: f64) -> f64 {
    0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
}

/// The error function to double precision (absolute error ~1e-16): the series
/// `erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1 3 5 ... (2n+1))`, whose terms are
/// all of one sign (no cancellation); `|erf(x)|` rounds to 1 beyond `|x| = 6`.
fn erf(x: f64) -> f64 {
    if x.abs() > 6.0 {
        return x.signum();
    }
    let x2 = x * x;
    let (mut term, mut sum) = (x, x);
    for n in 1..1000 {
        term *= 2.0 * x2 / (2 * n + 1) as f64;
        sum += term;
        if term.abs() <= 1e-17 * sum.abs() {
            break;
        }
    }
    2.0 / PI.sqrt() * (-x2).exp() * sum
}

/// The resolution-dependent timestep shift (SD3 §5.3.2):
/// `t' = shift t / (1 + (shift - 1) t)`. `shift > 1` moves times towards noise (SD3 uses 3.0
/// at 1024²); `shift = 1` is the identity. diffusers' `FlowMatchEulerDiscreteScheduler`
/// applies the same map to its sigmas, and Flux's dynamic shifting is this map with
/// `shift = exp(mu)`.
///
/// # Errors
/// A shift that is not finite and positive.
pub fn time_shift(t: f64, shift: f64) -> Result<f64> {
    check_shift(shift)?;
    Ok(shift_unchecked(t, shift))
}

/// The inverse of [`time_shift`]: `t = t' / (shift - (shift - 1) t')`.
///
/// # Errors
/// A shift that is not finite and positive.
pub fn inverse_time_shift(t_shifted: f64, shift: f64) -> Result<f64> {
    check_shift(shift)?;
    Ok(t_shifted / (shift - (shift - 1.0) * t_shifted))
}

/// [`time_shift`] applied elementwise to a tensor of times.
///
/// # Shapes
/// - `t`: any shape, returned with the same shape
///
/// # Errors
/// A shift that is not finite and positive.
pub fn time_shift_tensor<const D: usize>(t: Tensor<D>, shift: f64) -> Result<Tensor<D>> {
    check_shift(shift)?;
    Ok(t.clone() * shift / ((t * (shift - 1.0)) + 1.0))
}

/// The shift SD3 derives for moving from a resolution of `base_pixels` to `target_pixels`
/// (pixel or latent-token counts, `m / n` in the paper): `sqrt(target_pixels / base_pixels)`.
///
/// # Errors
/// A zero count.
pub fn resolution_shift(base_pixels: usize, target_pixels: usize) -> Result<f64> {
    ensure_config(base_pixels > 0 && target_pixels > 0, || {
        format!("resolution shift needs positive sizes, got {base_pixels} and {target_pixels}")
    })?;
    Ok((target_pixels as f64 / base_pixels as f64).sqrt())
}

pub(crate) fn check_shift(shift: f64) -> Result<()> {
    ensure_config(shift.is_finite() && shift > 0.0, || format!("timestep shift must be finite and > 0, got {shift}"))
}

fn shift_unchecked(t: f64, shift: f64) -> f64 {
    shift * t / (1.0 + (shift - 1.0) * t)
}

/// A [`TimestepDensity`] followed by the resolution [`time_shift`]: the training-time sampler of
/// rectified flow. `shift = 1` leaves the density unchanged.
#[derive(Config, Debug)]
pub struct TimestepSamplerConfig {
    /// The density before the shift. Default: logit-normal(0, 1), SD3's choice.
    #[config(default = "TimestepDensity::LogitNormal { location: 0.0, scale: 1.0 }")]
    pub density: TimestepDensity,
    /// Resolution shift, > 0. Default: 1.0 (no shift).
    #[config(default = 1.0)]
    pub shift: f64,
}

impl TimestepSamplerConfig {
    /// Validates the configuration.
    ///
    /// # Errors
    /// Invalid density parameters or a non-positive shift.
    pub fn init(&self) -> Result<TimestepSampler> {
        self.density.validate()?;
        check_shift(self.shift)?;
        Ok(TimestepSampler { density: self.density, shift: self.shift })
    }
}

/// A validated [`TimestepSamplerConfig`]: draws shifted times and gives their density.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimestepSampler {
    density: TimestepDensity,
    shift: f64,
}

impl TimestepSampler {
    /// The density before the shift.
    pub fn density(&self) -> TimestepDensity {
        self.density
    }

    /// The shift.
    pub fn shift(&self) -> f64 {
        self.shift
    }

    /// `n` seeded draws of the shifted time, each in `(0, 1)`.
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<f64> {
        self.density
            .draw(n, rng)
            .into_iter()
            .map(|t| shift_unchecked(t, self.shift).clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON / 2.0))
            .collect()
    }

    /// `n` seeded draws as a float tensor, each in `(0, 1)` also after rounding to `f32`.
    ///
    /// # Shapes
    /// - output: `[n]`
    pub fn sample_tensor<R: Rng + ?Sized>(&self, n: usize, rng: &mut R, device: &Device) -> Tensor<1> {
        let below_one = 1.0 - f32::EPSILON / 2.0;
        let t: Vec<f32> = self.sample(n, rng).into_iter().map(|t| (t as f32).clamp(f32::MIN_POSITIVE, below_one)).collect();
        Tensor::from_data(TensorData::new(t, [n]), device)
    }

    /// Density of the shifted time: `pdf(inverse_time_shift(t')) / shift'(inverse_time_shift(t'))`.
    pub fn pdf(&self, t: f64) -> f64 {
        if !(t > 0.0 && t < 1.0) {
            return 0.0;
        }
        let s = self.shift;
        let t0 = t / (s - (s - 1.0) * t);
        let jacobian = s / (1.0 + (s - 1.0) * t0).powi(2);
        self.density.pdf_unchecked(t0) / jacobian
    }

    /// Distribution function of the shifted time: `cdf(inverse_time_shift(t'))` (the shift is increasing).
    pub fn cdf(&self, t: f64) -> f64 {
        let s = self.shift;
        let t0 = if t > 0.0 && t < 1.0 { t / (s - (s - 1.0) * t) } else { t };
        self.density.cdf_unchecked(t0)
    }
}

/// Per-sample loss weightings of SD3 training, as diffusers' `compute_loss_weighting_for_sd3`.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum LossWeighting {
    /// Weight 1 (diffusers: any other scheme name).
    None,
    /// `sigma^-2` (diffusers' `"sigma_sqrt"`).
    SigmaSqrt,
    /// `2 / (pi (1 - 2 sigma + 2 sigma^2))`, the CosMap density (diffusers' `"cosmap"`).
    CosMap,
}

impl LossWeighting {
    /// The weight for noise level `sigma` (= `t`).
    pub fn weight(&self, sigma: f64) -> f64 {
        match self {
            Self::None => 1.0,
            Self::SigmaSqrt => sigma.powi(-2),
            Self::CosMap => 2.0 / (PI * (1.0 - 2.0 * sigma + 2.0 * sigma * sigma)),
        }
    }

    /// [`weight`](Self::weight) elementwise.
    ///
    /// # Shapes
    /// - `sigmas`: any shape, returned with the same shape
    pub fn weights<const D: usize>(&self, sigmas: Tensor<D>) -> Tensor<D> {
        match self {
            Self::None => sigmas.ones_like(),
            Self::SigmaSqrt => sigmas.square().recip(),
            Self::CosMap => ((sigmas.clone() * sigmas.clone() * 2.0 - sigmas * 2.0 + 1.0) * PI).recip() * 2.0,
        }
    }

    /// Parses diffusers' scheme names (`"sigma_sqrt"`, `"cosmap"`, `"none"`).
    ///
    /// # Errors
    /// Any other name (diffusers silently maps unknown names to no weighting; this crate does
    /// not).
    pub fn from_diffusers_name(name: &str) -> Result<Self> {
        match name {
            "none" => Ok(Self::None),
            "sigma_sqrt" => Ok(Self::SigmaSqrt),
            "cosmap" => Ok(Self::CosMap),
            other => Err(Error::InvalidConfig(format!(
                "unknown loss weighting `{other}` (expected none, sigma_sqrt or cosmap)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const DENSITIES: [TimestepDensity; 6] = [
        TimestepDensity::Uniform,
        TimestepDensity::LogitNormal { location: 0.0, scale: 1.0 },
        TimestepDensity::LogitNormal { location: 0.7, scale: 0.6 },
        TimestepDensity::Mode { scale: 1.29 },
        TimestepDensity::Mode { scale: -0.5 },
        TimestepDensity::CosMap,
    ];

    /// Trapezoid integral of `f` over `[a, b]` with `n` panels.
    fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> f64 {
        let h = (b - a) / n as f64;
        (0..=n).map(|i| f(a + i as f64 * h) * if i == 0 || i == n { 0.5 } else { 1.0 }).sum::<f64>() * h
    }

    #[test]
    fn pdf_is_the_derivative_of_cdf_and_integrates_to_one() {
        for d in DENSITIES {
            let total = integrate(|t| d.pdf(t).unwrap(), 1e-9, 1.0 - 1e-9, 200_000);
            assert!((total - 1.0).abs() < 2e-3, "{d:?}: integral {total}");
            for t in [0.05, 0.2, 0.5, 0.77, 0.93] {
                let h = 1e-5;
                let num = (d.cdf(t + h).unwrap() - d.cdf(t - h).unwrap()) / (2.0 * h);
                let pdf = d.pdf(t).unwrap();
                assert!((num - pdf).abs() < 1e-4 * pdf.max(1.0), "{d:?} at {t}: {num} vs {pdf}");
            }
            assert_eq!(d.cdf(0.0).unwrap(), 0.0);
            assert_eq!(d.cdf(1.0).unwrap(), 1.0);
            assert_eq!(d.pdf(1.5).unwrap(), 0.0);
        }
    }

    #[test]
    fn transforms_match_the_formulas() {
        let u = 0.3f64;
        let c = (PI * u / 2.0).cos();
        assert!((TimestepDensity::Mode { scale: 1.29 }.transform(u) - (1.0 - u - 1.29 * (c * c - 1.0 + u))).abs() < 1e-15);
        assert!((TimestepDensity::CosMap.transform(u) - (1.0 - 1.0 / ((PI * u / 2.0).tan() + 1.0))).abs() < 1e-15);
        let ln = TimestepDensity::LogitNormal { location: 0.5, scale: 2.0 };
        assert!((ln.transform(-0.25) - 0.5).abs() < 1e-15);
        assert_eq!(TimestepDensity::Mode { scale: 0.0 }.transform(u), 1.0 - u);
        // CDF at the transform of a uniform draw is the draw (or 1 - draw for the decreasing mode map).
        assert!((TimestepDensity::CosMap.cdf(TimestepDensity::CosMap.transform(u)).unwrap() - u).abs() < 1e-12);
        let m = TimestepDensity::Mode { scale: 0.8 };
        assert!((m.cdf(m.transform(u)).unwrap() - (1.0 - u)).abs() < 1e-12);
    }

    #[test]
    fn samples_are_seeded_and_in_the_open_interval() {
        for d in DENSITIES {
            let a = d.sample(1000, &mut StdRng::seed_from_u64(5)).unwrap();
            let b = d.sample(1000, &mut StdRng::seed_from_u64(5)).unwrap();
            assert_eq!(a, b);
            assert!(a.iter().all(|&t| t > 0.0 && t < 1.0), "{d:?}");
            assert_ne!(a, d.sample(1000, &mut StdRng::seed_from_u64(6)).unwrap());
        }
        // Extreme logit-normal draws still land inside (0, 1), also as f32.
        let s = TimestepSamplerConfig::new()
            .with_density(TimestepDensity::LogitNormal { location: 0.0, scale: 40.0 })
            .init()
            .unwrap();
        let t = s.sample_tensor(4000, &mut StdRng::seed_from_u64(1), &Device::flex()).into_data().try_to_vec::<f32>().unwrap();
        assert!(t.iter().all(|&t| t > 0.0 && t < 1.0));
    }

    #[test]
    fn shift_maps_and_inverts() {
        assert_eq!(time_shift(0.5, 3.0).unwrap(), 0.75);
        assert_eq!(time_shift(0.3, 1.0).unwrap(), 0.3);
        assert!((inverse_time_shift(time_shift(0.123, 6.0).unwrap(), 6.0).unwrap() - 0.123).abs() < 1e-15);
        let t = Tensor::<1>::from_floats([0.0, 0.25, 0.5, 1.0], &Device::flex());
        let v = time_shift_tensor(t, 3.0).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(v, vec![0.0, 0.5, 0.75, 1.0]);
        assert_eq!(resolution_shift(256 * 256, 1024 * 1024).unwrap(), 4.0);
        // The shifted sampler's pdf and cdf agree.
        let s = TimestepSamplerConfig::new().with_shift(3.0).init().unwrap();
        let total = integrate(|t| s.pdf(t), 1e-9, 1.0 - 1e-9, 200_000);
        assert!((total - 1.0).abs() < 2e-3, "{total}");
        let num = (s.cdf(0.6 + 1e-5) - s.cdf(0.6 - 1e-5)) / 2e-5;
        assert!((num - s.pdf(0.6)).abs() < 1e-4);
    }

    #[test]
    fn weightings_match_diffusers_formulas() {
        let sig = [0.01, 0.3, 0.5, 0.99];
        let t = Tensor::<1>::from_floats(sig.map(|s| s as f32), &Device::flex());
        for w in [LossWeighting::None, LossWeighting::SigmaSqrt, LossWeighting::CosMap] {
            let got = w.weights(t.clone()).into_data().try_to_vec::<f32>().unwrap();
            for (g, s) in got.iter().zip(sig) {
                let want = w.weight(s);
                assert!(((*g as f64) - want).abs() <= 1e-5 * want.abs().max(1.0), "{w:?} {s}: {g} vs {want}");
            }
        }
        assert_eq!(LossWeighting::SigmaSqrt.weight(0.5), 4.0);
        assert!((LossWeighting::CosMap.weight(0.5) - 4.0 / PI).abs() < 1e-15);
        assert_eq!(LossWeighting::from_diffusers_name("cosmap").unwrap(), LossWeighting::CosMap);
        assert!(LossWeighting::from_diffusers_name("logit_normal").is_err());
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(TimestepDensity::mode(MODE_SCALE_MAX).is_ok());
        assert!(TimestepDensity::mode(-1.0).is_ok());
        assert!(TimestepDensity::mode(MODE_SCALE_MAX + 1e-9).is_err());
        assert!(TimestepDensity::mode(-1.0001).is_err());
        assert!(TimestepDensity::mode(f64::NAN).is_err());
        assert!(TimestepDensity::logit_normal(0.0, 0.0).is_err());
        assert!(TimestepDensity::logit_normal(f64::INFINITY, 1.0).is_err());
        let bad = TimestepDensity::Mode { scale: 3.0 };
        assert!(bad.sample(3, &mut StdRng::seed_from_u64(0)).is_err());
        assert!(bad.pdf(0.5).is_err() && bad.cdf(0.5).is_err());
        assert!(TimestepSamplerConfig::new().with_density(bad).init().is_err());
        for s in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(time_shift(0.5, s).is_err());
            assert!(inverse_time_shift(0.5, s).is_err());
            assert!(TimestepSamplerConfig::new().with_shift(s).init().is_err());
        }
        assert!(time_shift_tensor(Tensor::<1>::zeros([2], &Device::flex()), 0.0).is_err());
        assert!(resolution_shift(0, 4).is_err());
    }

    #[test]
    fn normal_cdf_is_accurate() {
        // Reference values of Phi.
        for (z, p) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_542_9),
            (-2.0, 0.022_750_131_948_179_2),
            (3.5, 0.999_767_370_920_964),
            (-8.0, 6.220_960_574_271_8e-16),
            (12.0, 1.0),
        ] {
            assert!((normal_cdf(z) - p).abs() < 1e-14, "{z}: {}", normal_cdf(z));
        }
    }
}

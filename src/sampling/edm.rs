//! The EDM sampler (Karras et al. 2022, Algorithm 2), as MicroDiT samples
//! (SonyResearch/micro_diffusion `model.py`, `edm_sampler_loop`): a deterministic (or
//! stochastic, with churn) Heun or Euler solver of the probability-flow ODE
//! `dx/dsigma = (x - D(x, sigma)) / sigma` over the noise levels
//!
//! ```text
//! sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,  i < n
//! sigma_n = 0
//! ```
//!
//! Each step optionally raises the noise level to `sigma_hat = (1 + gamma) sigma_i` by adding
//! fresh noise (`gamma = min(S_churn / n, sqrt(2) - 1)` for `sigma_i` in `[S_min, S_max]`),
//! takes an Euler step to `sigma_{i+1}` and, with [`EdmSolver::Heun`], corrects it with the
//! trapezoid rule unless `sigma_{i+1} = 0`. `D` is the [`Edm`]-preconditioned model; wrap the
//! model in [`ClassifierFreeGuidance`](crate::sampling::ClassifierFreeGuidance) for guidance
//! (guiding `F` or `D` is the same, `D` being affine in `F`).

use burn::prelude::*;
use rand::Rng;

use crate::diffusion::edm::Edm;
use crate::error::{Result, ensure_config};
use crate::contracts::randn;
use crate::contracts::Denoiser;
use crate::sampling::{Progress, ProgressCallback};

/// The ODE solver of an [`EdmSampler`].
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum EdmSolver {
    /// Second order: Euler step plus trapezoid correction (the reference; `2n - 1` model calls).
    Heun,
    /// First order: Euler steps only (`n` model calls).
    Euler,
}

/// Configuration of an [`EdmSampler`]; defaults are the reference's `edm_config`.
#[derive(Config, Debug)]
pub struct EdmSamplerConfig {
    /// Number of steps `n` (at least 2). Default: 18.
    #[config(default = 18)]
    pub num_steps: usize,
    /// Smallest non-zero noise level. Default: 0.002.
    #[config(default = 0.002)]
    pub sigma_min: f64,
    /// Largest noise level (the initial sample is `sigma_max * N(0, I)`). Default: 80.
    #[config(default = 80.0)]
    pub sigma_max: f64,
    /// Schedule curvature `rho`. Default: 7.
    #[config(default = 7.0)]
    pub rho: f64,
    /// Stochasticity `S_churn` (0: deterministic). Default: 0.
    #[config(default = 0.0)]
    pub s_churn: f64,
    /// Churn only for `sigma >= S_min`. Default: 0.
    #[config(default = 0.0)]
    pub s_min: f64,
    /// Churn only for `sigma <= S_max`; `None` is infinity. Default: None.
    #[config(default = "None")]
    pub s_max: Option<f64>,
    /// Scale of the churn noise `S_noise`. Default: 1.
    #[config(default = 1.0)]
    pub s_noise: f64,
    /// Solver. Default: Heun.
    #[config(default = "EdmSolver::Heun")]
    pub solver: EdmSolver,
}

impl EdmSamplerConfig {
    /// Checks the values and computes the noise levels.
    pub fn init(&self) -> Result<EdmSampler> {
        ensure_config(self.num_steps >= 2, || format!("the EDM sampler needs at least 2 steps, got {}", self.num_steps))?;
        ensure_config(self.sigma_min > 0.0 && self.sigma_max > self.sigma_min && self.sigma_max.is_finite(), || {
            format!("need 0 < sigma_min < sigma_max < inf, got {} and {}", self.sigma_min, self.sigma_max)
        })?;
        ensure_config(self.rho > 0.0 && self.rho.is_finite(), || format!("rho must be positive, got {}", self.rho))?;
        ensure_config(self.s_churn >= 0.0 && self.s_noise >= 0.0 && self.s_churn.is_finite(), || {
            format!("S_churn and S_noise must be >= 0, got {} and {}", self.s_churn, self.s_noise)
        })?;
        let n = self.num_steps;
        let (a, b) = (self.sigma_max.powf(1.0 / self.rho), self.sigma_min.powf(1.0 / self.rho));
        let mut sigmas: Vec<f64> = (0..n).map(|i| (a + i as f64 / (n - 1) as f64 * (b - a)).powf(self.rho)).collect();
        sigmas.push(0.0);
        Ok(EdmSampler { config: self.clone(), sigmas })
    }
}

/// The EDM Heun/Euler sampler.
///
/// ```
/// use diffusion_transformers::sampling::edm::{EdmSamplerConfig, EdmSolver};
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let heun = EdmSamplerConfig::new().with_num_steps(30).init()?;
/// assert_eq!(heun.num_model_calls(), 59);
/// assert_eq!(heun.sigmas()[0], 80.0);
/// let euler = EdmSamplerConfig::new().with_solver(EdmSolver::Euler).init()?;
/// assert_eq!(euler.num_model_calls(), 18);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EdmSampler {
    config: EdmSamplerConfig,
    sigmas: Vec<f64>,
}

impl EdmSampler {
    /// The configuration.
    pub fn config(&self) -> &EdmSamplerConfig {
        &self.config
    }

    /// The `n + 1` noise levels, from `sigma_max` down to `sigma_min`, then 0.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// Model evaluations of one run.
    pub fn num_model_calls(&self) -> usize {
        match self.config.solver {
            EdmSolver::Heun => 2 * self.config.num_steps - 1,
            EdmSolver::Euler => self.config.num_steps,
        }
    }

    fn denoise_at<M: Denoiser + ?Sized>(&self, edm: &Edm, model: &M, x: Tensor<4>, sigma: f64, cond: &M::Cond) -> Result<Tensor<4>> {
        let b = x.dims()[0];
        let s = Tensor::<1>::full([b], sigma as f32, &x.device());
        edm.denoise(model, x, s, cond)
    }

    /// Integrates from standard normal `noise` (scaled by `sigma_max` here) down to
    /// `sigma = 0`; churn noise comes from `rng`. Reports each step to `progress` (with
    /// `timestep` = the step's starting `sigma`).
    ///
    /// # Shapes
    /// - `noise`: `[B, C, H, W]` -> `[B, C, H, W]`
    ///
    /// # Errors
    /// A model error, or a model output of another shape than the sample.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_from<M: Denoiser + ?Sized, R: Rng + ?Sized, P: ProgressCallback + ?Sized>(
        &self,
        edm: &Edm,
        model: &M,
        noise: Tensor<4>,
        cond: &M::Cond,
        rng: &mut R,
        progress: &mut P,
    ) -> Result<Tensor<4>> {
        let c = &self.config;
        let n = c.num_steps;
        let s_max = c.s_max.unwrap_or(f64::INFINITY);
        let mut x = noise * self.sigmas[0];
        for i in 0..n {
            let (t_cur, t_next) = (self.sigmas[i], self.sigmas[i + 1]);
            let gamma =
                if (c.s_min..=s_max).contains(&t_cur) { (c.s_churn / n as f64).min(std::f64::consts::SQRT_2 - 1.0) } else { 0.0 };
            let t_hat = t_cur + gamma * t_cur;
            let x_hat = if gamma > 0.0 {
                let eps = randn(x.dims(), rng, &x.device());
                x.clone() + eps * ((t_hat * t_hat - t_cur * t_cur).sqrt() * c.s_noise)
            } else {
                x
            };
            let denoised = self.denoise_at(edm, model, x_hat.clone(), t_hat, cond)?;
            let d_cur = (x_hat.clone() - denoised) / t_hat;
            let euler = x_hat.clone() + d_cur.clone() * (t_next - t_hat);
            x = if c.solver == EdmSolver::Heun && i + 1 < n {
                let denoised = self.denoise_at(edm, model, euler.clone(), t_next, cond)?;
                let d_prime = (euler - denoised) / t_next;
                x_hat + (d_cur + d_prime) * (0.5 * (t_next - t_hat))
            } else {
                euler
            };
            progress.on_step(&Progress { step: i + 1, total_steps: n, timestep: t_cur });
        }
        Ok(x)
    }

    /// Draws the initial noise `N(0, I)` of `shape` from the seeded `rng`, then
    /// [`sample_from`](Self::sample_from).
    ///
    /// # Shapes
    /// - output: `shape` = `[B, C, H, W]`
    ///
    /// # Errors
    /// As [`sample_from`](Self::sample_from).
    #[allow(clippy::too_many_arguments)]
    pub fn sample<M: Denoiser + ?Sized, R: Rng + ?Sized, P: ProgressCallback + ?Sized>(
        &self,
        edm: &Edm,
        model: &M,
        shape: [usize; 4],
        cond: &M::Cond,
        rng: &mut R,
        device: &Device,
        progress: &mut P,
    ) -> Result<Tensor<4>> {
        let noise = randn(shape, rng, device);
        self.sample_from(edm, model, noise, cond, rng, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::edm::EdmConfig;
    use crate::sampling::NoProgress;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// `F = 0`: then `D(x, sigma) = sigma_data^2 / (sigma^2 + sigma_data^2) x`, the exact
    /// posterior mean for data `N(0, sigma_data^2 I)`.
    struct Zero;

    impl Denoiser for Zero {
        type Cond = ();
        fn denoise(&self, x: Tensor<4>, _t: Tensor<1>, _c: &()) -> Result<Tensor<4>> {
            Ok(x.zeros_like())
        }
    }

    #[test]
    fn noise_levels() {
        let s = EdmSamplerConfig::new().init().unwrap();
        let sig = s.sigmas();
        assert_eq!(sig.len(), 19);
        assert!((sig[0] - 80.0).abs() < 1e-9 && (sig[17] - 0.002).abs() < 1e-12 && sig[18] == 0.0);
        assert!(sig.windows(2).all(|w| w[0] > w[1]));
        // midpoint of the rho-spaced grid
        let s3 = EdmSamplerConfig::new().with_num_steps(3).init().unwrap();
        let mid = ((80f64.powf(1.0 / 7.0) + 0.002f64.powf(1.0 / 7.0)) / 2.0).powi(7);
        assert!((s3.sigmas()[1] - mid).abs() < 1e-12);
        assert!(EdmSamplerConfig::new().with_num_steps(1).init().is_err());
        assert!(EdmSamplerConfig::new().with_sigma_min(100.0).init().is_err());
        assert!(EdmSamplerConfig::new().with_s_churn(-1.0).init().is_err());
    }

    #[test]
    fn solves_the_gaussian_ode_with_the_expected_order() {
        // exact solution for Gaussian data: x(0) = x_T * sigma_data / sqrt(sigma_max^2 + sigma_data^2)
        let d = Device::flex();
        let edm = EdmConfig::new().init().unwrap();
        let noise = randn([1, 1, 2, 2], &mut StdRng::seed_from_u64(0), &d);
        let exact = 0.9 / (80f64 * 80.0 + 0.81).sqrt() * 80.0;
        let mut calls = 0;
        let mut error = |solver, steps| {
            let s = EdmSamplerConfig::new().with_solver(solver).with_num_steps(steps).init().unwrap();
            let mut count = |_: &Progress| calls += 1;
            let out = s.sample_from(&edm, &Zero, noise.clone(), &(), &mut StdRng::seed_from_u64(1), &mut count).unwrap();
            (out / noise.clone()).mean().into_scalar::<f32>() as f64 / exact - 1.0
        };
        let (h18, h36) = (error(EdmSolver::Heun, 18), error(EdmSolver::Heun, 36));
        let (e18, e36) = (error(EdmSolver::Euler, 18), error(EdmSolver::Euler, 36));
        // the reference algorithm's discretisation errors (f64 transcription of edm_sampler_loop)
        assert!((h18 - 0.046260).abs() < 2e-4 && (h36 - 0.010278).abs() < 2e-4, "{h18} {h36}");
        assert!((e18 + 0.142450).abs() < 2e-4 && (e36 + 0.071935).abs() < 2e-4, "{e18} {e36}");
        // second order: halving the step divides Heun's error by about 4, Euler's by 2
        assert!(h18 / h36 > 3.5 && (e18 / e36 - 2.0).abs() < 0.1);
        assert_eq!(calls, 18 + 36 + 18 + 36);
    }

    #[test]
    fn churn_is_seeded() {
        let d = Device::flex();
        let edm = EdmConfig::new().init().unwrap();
        let s = EdmSamplerConfig::new().with_num_steps(4).with_s_churn(2.0).init().unwrap();
        let run = |seed| {
            s.sample(&edm, &Zero, [1, 1, 2, 2], &(), &mut StdRng::seed_from_u64(seed), &d, &mut NoProgress)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}

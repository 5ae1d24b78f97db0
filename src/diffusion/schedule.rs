//! Beta schedules and the precomputed arrays of a discrete Gaussian diffusion.
//!
//! Everything is computed in `f64`, as the reference (`gaussian_diffusion.py` of
//! facebookresearch/DiT, itself from OpenAI's improved-diffusion) does with NumPy, and converted
//! to the tensors' dtype only when a coefficient is gathered for a batch.

use burn::prelude::*;

use crate::error::{Error, Result, ensure_config};

/// Maximum beta of the cosine schedule (`betas_for_alpha_bar(max_beta=0.999)`).
pub const COSINE_MAX_BETA: f64 = 0.999;

/// A beta schedule `beta_1 .. beta_T`.
#[derive(Config, Debug, PartialEq)]
pub enum BetaSchedule {
    /// The DiT/ADM `"linear"` schedule (Ho et al. 2020, extended to any `T`):
    /// `linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T)`.
    Linear,
    /// A plain `linspace(start, end, T)` (diffusers' `"linear"` with its `beta_start/beta_end`).
    LinearRange {
        /// First beta.
        start: f64,
        /// Last beta.
        end: f64,
    },
    /// `linspace(sqrt(start), sqrt(end), T)^2` (diffusers' `"scaled_linear"`, latent diffusion).
    ScaledLinear {
        /// First beta.
        start: f64,
        /// Last beta.
        end: f64,
    },
    /// The cosine schedule of Nichol & Dhariwal 2021 (`"squaredcos_cap_v2"`):
    /// `beta_i = min(1 - abar((i+1)/T) / abar(i/T), 0.999)` with
    /// `abar(s) = cos((s + 0.008) / 1.008 * pi / 2)^2`.
    SquaredCosCapV2,
    /// User-given betas (their count must equal the number of timesteps).
    Custom {
        /// The betas, each in `(0, 1]`.
        betas: Vec<f64>,
    },
}

impl BetaSchedule {
    /// Parses the reference names `"linear"` (DiT scaling) and `"squaredcos_cap_v2"`
    /// (alias `"cosine"`).
    ///
    /// # Errors
    /// Any other name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "linear" => Ok(Self::Linear),
            "squaredcos_cap_v2" | "cosine" => Ok(Self::SquaredCosCapV2),
            other => Err(Error::InvalidConfig(format!(
                "unknown beta schedule `{other}` (expected `linear` or `squaredcos_cap_v2`)"
            ))),
        }
    }

    /// The `num_timesteps` betas in `f64`.
    ///
    /// # Errors
    /// Zero timesteps, a custom schedule of another length, or betas outside `(0, 1]`.
    pub fn betas(&self, num_timesteps: usize) -> Result<Vec<f64>> {
        ensure_config(num_timesteps > 0, || "a beta schedule needs at least one timestep".into())?;
        let t = num_timesteps;
        let betas = match self {
            Self::Linear => {
                let scale = 1000.0 / t as f64;
                linspace(scale * 0.0001, scale * 0.02, t)
            }
            Self::LinearRange { start, end } => linspace(*start, *end, t),
            Self::ScaledLinear { start, end } => {
                linspace(start.sqrt(), end.sqrt(), t).into_iter().map(|b| b * b).collect()
            }
            Self::SquaredCosCapV2 => betas_for_alpha_bar(t, cosine_alpha_bar, COSINE_MAX_BETA),
            Self::Custom { betas } => {
                ensure_config(betas.len() == t, || {
                    format!("custom schedule has {} betas, expected {t}", betas.len())
                })?;
                betas.clone()
            }
        };
        check_betas(&betas)?;
        Ok(betas)
    }
}

/// `abar(s) = cos((s + 0.008) / 1.008 * pi / 2)^2`, the cosine schedule's cumulative alpha.
pub fn cosine_alpha_bar(s: f64) -> f64 {
    ((s + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2)
}

/// Discretises a cumulative-alpha function `alpha_bar: [0, 1] -> (0, 1]` into
/// `min(1 - alpha_bar((i+1)/T) / alpha_bar(i/T), max_beta)` (reference `betas_for_alpha_bar`).
pub fn betas_for_alpha_bar(num_timesteps: usize, alpha_bar: impl Fn(f64) -> f64, max_beta: f64) -> Vec<f64> {
    let n = num_timesteps as f64;
    (0..num_timesteps)
        .map(|i| (1.0 - alpha_bar((i + 1) as f64 / n) / alpha_bar(i as f64 / n)).min(max_beta))
        .collect()
}

/// NumPy's `linspace(start, end, n)`: `start + i * step`, the last point exactly `end`.
pub(crate) fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    v[n - 1] = end;
    v
}

fn check_betas(betas: &[f64]) -> Result<()> {
    ensure_config(!betas.is_empty(), || "empty beta schedule".into())?;
    match betas.iter().position(|b| !(*b > 0.0 && *b <= 1.0)) {
        Some(i) => Err(Error::InvalidConfig(format!("beta[{i}] = {} is outside (0, 1]", betas[i]))),
        None => Ok(()),
    }
}

/// The arrays of a discrete Gaussian diffusion with betas `beta_0 .. beta_{T-1}` (index `t`
/// is the reference's "t", 0 being one step of noise), all in `f64`:
///
/// - `alphas_cumprod[t] = prod_{s<=t} (1 - beta_s)`, `alphas_cumprod_prev[t]` (1 at `t = 0`),
///   `alphas_cumprod_next[t]` (0 at `t = T-1`);
/// - the posterior `q(x_{t-1} | x_t, x_0)`: `posterior_variance = beta (1 - abar_prev) / (1 - abar)`,
///   its log clipped at `t = 0` to the value at `t = 1`, and the mean coefficients
///   `coef1 = beta sqrt(abar_prev) / (1 - abar)`, `coef2 = (1 - abar_prev) sqrt(alpha) / (1 - abar)`.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    alphas_cumprod_prev: Vec<f64>,
    alphas_cumprod_next: Vec<f64>,
    posterior_variance: Vec<f64>,
    posterior_log_variance_clipped: Vec<f64>,
    posterior_mean_coef1: Vec<f64>,
    posterior_mean_coef2: Vec<f64>,
}

impl NoiseSchedule {
    /// Precomputes every array from `betas`.
    ///
    /// With a single timestep the reference leaves the clipped log posterior variance empty;
    /// here it is `ln(beta_0)` so that every variance choice stays defined.
    ///
    /// # Errors
    /// An empty schedule or betas outside `(0, 1]`.
    pub fn from_betas(betas: Vec<f64>) -> Result<Self> {
        check_betas(&betas)?;
        let n = betas.len();
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut acc = 1.0;
        for b in &betas {
            acc *= 1.0 - b;
            alphas_cumprod.push(acc);
        }
        let alphas_cumprod_prev: Vec<f64> =
            std::iter::once(1.0).chain(alphas_cumprod[..n - 1].iter().copied()).collect();
        let alphas_cumprod_next: Vec<f64> =
            alphas_cumprod[1..].iter().copied().chain(std::iter::once(0.0)).collect();
        let mut posterior_variance = Vec::with_capacity(n);
        let mut coef1 = Vec::with_capacity(n);
        let mut coef2 = Vec::with_capacity(n);
        for i in 0..n {
            let (b, ac, acp) = (betas[i], alphas_cumprod[i], alphas_cumprod_prev[i]);
            posterior_variance.push(b * (1.0 - acp) / (1.0 - ac));
            coef1.push(b * acp.sqrt() / (1.0 - ac));
            coef2.push((1.0 - acp) * (1.0 - b).sqrt() / (1.0 - ac));
        }
        let posterior_log_variance_clipped = if n > 1 {
            std::iter::once(posterior_variance[1])
                .chain(posterior_variance[1..].iter().copied())
                .map(f64::ln)
                .collect()
        } else {
            vec![betas[0].ln()]
        };
        Ok(Self {
            betas,
            alphas_cumprod,
            alphas_cumprod_prev,
            alphas_cumprod_next,
            posterior_variance,
            posterior_log_variance_clipped,
            posterior_mean_coef1: coef1,
            posterior_mean_coef2: coef2,
        })
    }

    /// Number of timesteps `T`.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false (a schedule has at least one step); for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// `beta_t`.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// `abar_t = prod_{s<=t} (1 - beta_s)`.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// `abar_{t-1}`, 1 at `t = 0`.
    pub fn alphas_cumprod_prev(&self) -> &[f64] {
        &self.alphas_cumprod_prev
    }

    /// `abar_{t+1}`, 0 at `t = T-1`.
    pub fn alphas_cumprod_next(&self) -> &[f64] {
        &self.alphas_cumprod_next
    }

    /// Posterior variance `beta_t (1 - abar_{t-1}) / (1 - abar_t)` (0 at `t = 0`).
    pub fn posterior_variance(&self) -> &[f64] {
        &self.posterior_variance
    }

    /// `ln` of the posterior variance, the `t = 0` entry replaced by the `t = 1` one.
    pub fn posterior_log_variance_clipped(&self) -> &[f64] {
        &self.posterior_log_variance_clipped
    }

    /// Posterior mean coefficient of `x_0`: `beta_t sqrt(abar_{t-1}) / (1 - abar_t)`.
    pub fn posterior_mean_coef1(&self) -> &[f64] {
        &self.posterior_mean_coef1
    }

    /// Posterior mean coefficient of `x_t`: `(1 - abar_{t-1}) sqrt(1 - beta_t) / (1 - abar_t)`.
    pub fn posterior_mean_coef2(&self) -> &[f64] {
        &self.posterior_mean_coef2
    }

    /// The "fixed large" variance `[posterior_variance_1, beta_1, .., beta_{T-1}]` (reference
    /// `FIXED_LARGE`; with a single timestep `[beta_0]`).
    pub fn fixed_large_variance(&self) -> Vec<f64> {
        if self.len() == 1 {
            return self.betas.clone();
        }
        std::iter::once(self.posterior_variance[1]).chain(self.betas[1..].iter().copied()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_ho_et_al_and_scales_with_t() {
        let b = BetaSchedule::Linear.betas(1000).unwrap();
        assert_eq!((b[0], b[999]), (1e-4, 0.02));
        let b = BetaSchedule::Linear.betas(250).unwrap();
        assert!((b[0] - 4e-4).abs() < 1e-15 && (b[249] - 0.08).abs() < 1e-15);
        let s = BetaSchedule::ScaledLinear { start: 0.00085, end: 0.012 }.betas(1000).unwrap();
        assert!((s[0] - 0.00085).abs() < 1e-15 && (s[999] - 0.012).abs() < 1e-15);
    }

    #[test]
    fn cosine_is_capped_and_alphas_cumprod_decrease_in_unit_interval() {
        // The DiT linear schedule is only valid from T = 20 (beta_end = 0.02 * 1000 / T <= 1; abar_T = 0 at T = 20).
        for (sched, ts) in [(BetaSchedule::Linear, [25, 50, 1000, 4000]), (BetaSchedule::SquaredCosCapV2, [1, 2, 10, 1000])] {
            for t in ts {
                let s = NoiseSchedule::from_betas(sched.betas(t).unwrap()).unwrap();
                let ac = s.alphas_cumprod();
                assert!(ac.iter().all(|a| *a > 0.0 && *a < 1.0), "{sched:?} {t}");
                assert!(ac.windows(2).all(|w| w[1] < w[0]), "{sched:?} {t}");
                assert!(s.posterior_log_variance_clipped().iter().all(|v| v.is_finite()));
            }
        }
        let b = BetaSchedule::SquaredCosCapV2.betas(1000).unwrap();
        assert_eq!(b[999], COSINE_MAX_BETA);
    }

    #[test]
    fn posterior_matches_definitions() {
        let s = NoiseSchedule::from_betas(BetaSchedule::Linear.betas(100).unwrap()).unwrap();
        let t = 37;
        let (ac, acp, b) = (s.alphas_cumprod()[t], s.alphas_cumprod_prev()[t], s.betas()[t]);
        assert!((acp - s.alphas_cumprod()[t - 1]).abs() < 1e-15);
        assert!((ac - acp * (1.0 - b)).abs() < 1e-15);
        assert!((s.posterior_variance()[t] - b * (1.0 - acp) / (1.0 - ac)).abs() < 1e-15);
        assert_eq!(s.posterior_variance()[0], 0.0);
        assert_eq!(s.posterior_log_variance_clipped()[0], s.posterior_variance()[1].ln());
        assert_eq!(s.alphas_cumprod_next()[99], 0.0);
        assert_eq!(s.fixed_large_variance()[5], s.betas()[5]);
    }

    #[test]
    fn bad_schedules_are_errors() {
        assert!(BetaSchedule::Linear.betas(0).is_err());
        assert!(BetaSchedule::Linear.betas(10).is_err());
        assert!(BetaSchedule::Custom { betas: vec![0.1, 0.2] }.betas(3).is_err());
        assert!(BetaSchedule::Custom { betas: vec![0.1, 0.0] }.betas(2).is_err());
        assert!(BetaSchedule::Custom { betas: vec![0.1, 1.5] }.betas(2).is_err());
        assert!(BetaSchedule::Custom { betas: vec![f64::NAN] }.betas(1).is_err());
        assert!(NoiseSchedule::from_betas(vec![]).is_err());
        assert!(BetaSchedule::from_name("quadratic").is_err());
        assert_eq!(BetaSchedule::from_name("cosine").unwrap(), BetaSchedule::SquaredCosCapV2);
    }
}

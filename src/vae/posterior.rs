//! The encoder's posterior: a diagonal Gaussian over the latents (diffusers
//! `DiagonalGaussianDistribution`).

use burn::prelude::*;
use rand::Rng;

use crate::error::{Error, Result};
use crate::contracts::randn_like;

/// Bounds the log-variance is clamped to, as diffusers does.
pub const LOGVAR_RANGE: (f64, f64) = (-30.0, 20.0);

/// A diagonal Gaussian `N(mean, exp(logvar))` over latents, built from the encoder's moments
/// (`[mean; logvar]` on the channel axis) with the log-variance clamped to `[-30, 20]`.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    /// Mean `[B, C, h, w]`.
    pub mean: Tensor<4>,
    /// Clamped log-variance `[B, C, h, w]`.
    pub logvar: Tensor<4>,
}

impl DiagonalGaussian {
    /// Split moments `[B, 2C, h, w]` into mean and (clamped) log-variance.
    pub fn from_moments(moments: Tensor<4>) -> Result<Self> {
        let [b, c2, h, w] = moments.dims();
        if c2 == 0 || c2 % 2 != 0 {
            return Err(Error::Shape {
                name: "moments".into(),
                expected: "[B, 2C, h, w] (mean and log-variance on the channel axis)".into(),
                got: format!("{:?}", moments.dims()),
            });
        }
        let c = c2 / 2;
        let mean = moments.clone().slice([0..b, 0..c, 0..h, 0..w]);
        let logvar = moments.slice([0..b, c..c2, 0..h, 0..w]).clamp(LOGVAR_RANGE.0, LOGVAR_RANGE.1);
        Ok(Self { mean, logvar })
    }

    /// Standard deviation `exp(logvar / 2)`.
    pub fn std(&self) -> Tensor<4> {
        (self.logvar.clone() * 0.5).exp()
    }

    /// Variance `exp(logvar)`.
    pub fn var(&self) -> Tensor<4> {
        self.logvar.clone().exp()
    }

    /// The mode (= the mean), what deterministic encoding uses.
    pub fn mode(&self) -> Tensor<4> {
        self.mean.clone()
    }

    /// A draw `mean + std * eps` with `eps` from `rng` (reproducible for a seeded RNG).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Tensor<4> {
        let eps = randn_like(&self.mean, rng);
        self.mean.clone() + self.std() * eps
    }

    /// KL divergence to the standard normal, summed over `[C, h, w]`:
    /// `0.5 * sum(mean^2 + var - 1 - logvar)`, `[B]`.
    pub fn kl(&self) -> Tensor<1> {
        let t = self.mean.clone().square() + self.var() - 1.0 - self.logvar.clone();
        t.flatten::<2>(1, 3).sum_dim(1).squeeze_dim::<1>(1) * 0.5
    }

    /// Negative log-likelihood of `sample`, summed over `[C, h, w]`:
    /// `0.5 * sum(ln(2 pi) + logvar + (sample - mean)^2 / var)`, `[B]`.
    pub fn nll(&self, sample: Tensor<4>) -> Result<Tensor<1>> {
        if sample.dims() != self.mean.dims() {
            return Err(Error::Shape {
                name: "sample".into(),
                expected: format!("{:?}", self.mean.dims()),
                got: format!("{:?}", sample.dims()),
            });
        }
        let t = (sample - self.mean.clone()).square() / self.var() + self.logvar.clone() + (2.0 * std::f64::consts::PI).ln();
        Ok(t.flatten::<2>(1, 3).sum_dim(1).squeeze_dim::<1>(1) * 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;
    use rand::SeedableRng;

    #[test]
    fn clamps_and_samples_reproducibly() {
        let device = Device::flex();
        let mean = Tensor::<4>::full([2, 3, 2, 2], 0.5, &device);
        let logvar = Tensor::<4>::full([2, 3, 2, 2], 40.0, &device);
        let p = DiagonalGaussian::from_moments(Tensor::cat(vec![mean.clone(), logvar], 1)).unwrap();
        assert!(p.logvar.clone().equal_elem(20.0).all().into_scalar::<bool>());
        let p = DiagonalGaussian::from_moments(Tensor::cat(vec![mean.clone(), Tensor::full([2, 3, 2, 2], -2.0, &device)], 1)).unwrap();
        let a = p.sample(&mut rand::rngs::StdRng::seed_from_u64(1));
        let b = p.sample(&mut rand::rngs::StdRng::seed_from_u64(1));
        assert_eq!(a.clone().into_data(), b.into_data());
        // a = mean + e^-1 * eps with eps from the same RNG
        let eps = randn_like(&mean, &mut rand::rngs::StdRng::seed_from_u64(1));
        a.into_data()
            .assert_approx_eq::<f32>(&(mean + eps * (-1f64).exp()).into_data(), Tolerance::absolute(1e-6));
        assert!(DiagonalGaussian::from_moments(Tensor::zeros([1, 3, 2, 2], &device)).is_err());
    }

    #[test]
    fn kl_and_nll() {
        let device = Device::flex();
        let std_normal = DiagonalGaussian::from_moments(Tensor::zeros([1, 4, 2, 3], &device)).unwrap();
        assert!(std_normal.kl().into_scalar::<f32>().abs() < 1e-6);
        let mean = Tensor::<4>::full([1, 1, 1, 2], 1.0, &device);
        let logvar = Tensor::<4>::full([1, 1, 1, 2], 2f64.ln(), &device);
        let p = DiagonalGaussian::from_moments(Tensor::cat(vec![mean, logvar], 1)).unwrap();
        // 0.5 * 2 * (1 + 2 - 1 - ln 2)
        let kl = p.kl().into_scalar::<f32>();
        assert!((kl - (2.0 - 2f32.ln())).abs() < 1e-5, "{kl}");
        let nll = p.nll(Tensor::full([1, 1, 1, 2], 3.0, &device)).unwrap().into_scalar::<f32>();
        let want = (2.0 * std::f32::consts::PI).ln() + 2f32.ln() + 4.0 / 2.0; // 0.5 * 2 * (...)
        assert!((nll - want).abs() < 1e-5, "{nll} {want}");
        assert!(p.nll(Tensor::zeros([1, 1, 2, 2], &device)).is_err());
    }
}

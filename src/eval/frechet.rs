//! Gaussian statistics of features and the Frechet distance between two of them, in float64:
//!
//! ```text
//! d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))
//! ```
//!
//! FID uses the 2048-d pool features, sFID the 2023-d spatial ones
//! ([`InceptionFeatures`](super::inception::InceptionFeatures)). pytorch-fid (and the ADM
//! evaluator) take `scipy.linalg.sqrtm(S_1 S_2)` and keep the real part of its trace. For
//! covariances (symmetric positive semi-definite) the eigenvalues of `S_1 S_2` are those of
//! the symmetric `S_1^(1/2) S_2 S_1^(1/2)`, real and non-negative, so
//! `tr((S_1 S_2)^(1/2)) = sum_i sqrt(lambda_i)`; this module computes that sum from two
//! symmetric eigendecompositions (faer). Eigenvalues that rounding leaves slightly negative
//! count as 0, which is what the real part of their complex square root is in scipy's result;
//! rank-deficient covariances therefore need no `eps` offset (pytorch-fid adds one only when
//! `sqrtm` returns non-finite values, which this route never does for finite input).

use std::path::Path;

use faer::{Mat, Side};

use super::npz::NpzReader;
use crate::error::{Error, Result};

/// Mean and covariance of `dim`-dimensional features (float64, covariance row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianStats {
    /// `[dim]` mean.
    pub mu: Vec<f64>,
    /// `[dim * dim]` covariance, row-major.
    pub sigma: Vec<f64>,
}

fn sym_mat(sigma: &[f64], dim: usize) -> Mat<f64> {
    Mat::from_fn(dim, dim, |i, j| 0.5 * (sigma[i * dim + j] + sigma[j * dim + i]))
}

impl GaussianStats {
    /// Statistics from a mean and a covariance.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `sigma.len() == mu.len()^2 > 0`.
    pub fn new(mu: Vec<f64>, sigma: Vec<f64>) -> Result<Self> {
        if mu.is_empty() || sigma.len() != mu.len() * mu.len() {
            return Err(Error::InvalidArgument(format!(
                "a {}-d mean needs a {0}x{0} covariance, got {} values",
                mu.len(),
                sigma.len()
            )));
        }
        Ok(Self { mu, sigma })
    }

    /// Dimension of the features.
    pub fn dim(&self) -> usize {
        self.mu.len()
    }

    /// Mean and unbiased covariance (`np.cov(x, rowvar=False)`) of `n` feature rows of `dim`
    /// values each (`features` row-major).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for fewer than 2 rows or a length that is not `n * dim`.
    pub fn from_features(features: &[f32], dim: usize) -> Result<Self> {
        if dim == 0 || features.len() % dim != 0 || features.len() / dim < 2 {
            return Err(Error::InvalidArgument(format!(
                "statistics need at least 2 rows of {dim} features, got {} values",
                features.len()
            )));
        }
        let n = features.len() / dim;
        let mut mu = vec![0f64; dim];
        for row in features.chunks_exact(dim) {
            for (m, &x) in mu.iter_mut().zip(row) {
                *m += x as f64;
            }
        }
        mu.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = Mat::<f64>::zeros(dim, dim);
        const BLOCK: usize = 2048;
        for block in features.chunks(BLOCK * dim) {
            let rows = block.len() / dim;
            let centered = Mat::from_fn(rows, dim, |i, j| block[i * dim + j] as f64 - mu[j]);
            cov += centered.transpose() * &centered;
        }
        let scale = 1.0 / (n as f64 - 1.0);
        let sigma = (0..dim * dim).map(|k| cov[(k / dim, k % dim)] * scale).collect();
        Ok(Self { mu, sigma })
    }

    /// Read `mu_key` and `sigma_key` from a `.npz` file (pytorch-fid: `mu`, `sigma`; ADM
    /// reference batches also `mu_s`, `sigma_s` for sFID).
    ///
    /// # Errors
    /// [`Error::Io`] for a missing file or array, [`Error::InvalidArgument`] for mismatched
    /// shapes.
    pub fn read_npz(path: impl AsRef<Path>, mu_key: &str, sigma_key: &str) -> Result<Self> {
        let mut npz = NpzReader::open(path)?;
        let (mu, _) = npz.read_f64(mu_key)?;
        let (sigma, _) = npz.read_f64(sigma_key)?;
        Self::new(mu, sigma)
    }

    /// The Frechet distance to `other` (see the [module docs](self)).
    ///
    /// # Errors
    /// As [`frechet_distance`].
    pub fn frechet_distance(&self, other: &Self) -> Result<f64> {
        frechet_distance(&self.mu, &self.sigma, &other.mu, &other.sigma)
    }
}

/// `|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))` for `d`-dim means and
/// row-major `d x d` covariances, as pytorch-fid's `calculate_frechet_distance`.
///
/// # Errors
/// [`Error::InvalidArgument`] for mismatched sizes, [`Error::Numerical`] for non-finite
/// input or a failed eigendecomposition.
pub fn frechet_distance(mu1: &[f64], sigma1: &[f64], mu2: &[f64], sigma2: &[f64]) -> Result<f64> {
    let d = mu1.len();
    if d == 0 || mu2.len() != d || sigma1.len() != d * d || sigma2.len() != d * d {
        return Err(Error::InvalidArgument(format!(
            "Frechet distance of mismatched statistics: means of {d} and {}, covariances of {} and {} values",
            mu2.len(),
            sigma1.len(),
            sigma2.len()
        )));
    }
    if [mu1, mu2, sigma1, sigma2].iter().any(|v| v.iter().any(|x| !x.is_finite())) {
        return Err(Error::Numerical("Frechet distance of non-finite statistics".into()));
    }
    let eig_err = |e| Error::Numerical(format!("eigendecomposition failed: {e:?}"));
    let (s1, s2) = (sym_mat(sigma1, d), sym_mat(sigma2, d));
    let evd = s1.self_adjoint_eigen(Side::Lower).map_err(eig_err)?;
    let (u, w) = (evd.U(), evd.S().column_vector());
    let root = Mat::from_fn(d, d, |i, j| u[(i, j)] * w[j].max(0.0).sqrt());
    let root = &root * u.transpose(); // S1^(1/2) = U sqrt(W) U^T
    let m = &root * &s2 * &root;
    let m = Mat::from_fn(d, d, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
    let lambdas = m.self_adjoint_eigenvalues(Side::Lower).map_err(eig_err)?;
    let tr_covmean: f64 = lambdas.iter().map(|l| l.max(0.0).sqrt()).sum();
    let diff: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum();
    let trace = |s: &[f64]| (0..d).map(|i| s[i * d + i]).sum::<f64>();
    Ok(diff + trace(sigma1) + trace(sigma2) - 2.0 * tr_covmean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_covariances_have_closed_form() {
        // d^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2 for diagonal covariances
        let (a, b) = ([4.0, 1.0, 0.0], [1.0, 9.0, 2.0]);
        let diag = |v: [f64; 3]| (0..9).map(|k| if k % 4 == 0 { v[k / 4] } else { 0.0 }).collect::<Vec<_>>();
        let d = frechet_distance(&[0.0, 1.0, 2.0], &diag(a), &[1.0, 1.0, 0.0], &diag(b)).unwrap();
        let want = 5.0 + (2.0f64 - 1.0).powi(2) + (1.0f64 - 3.0).powi(2) + 2.0;
        assert!((d - want).abs() < 1e-12, "{d} vs {want}");
    }

    #[test]
    fn stats_match_numpy_cov_and_reject_bad_input() {
        let x = [1.0f32, 2.0, 3.0, 5.0, 2.0, 2.0];
        let s = GaussianStats::from_features(&x, 2).unwrap();
        assert_eq!(s.mu, vec![2.0, 3.0]);
        // np.cov([[1,2],[3,5],[2,2]], rowvar=False) = [[1, 1.5], [1.5, 3]]
        assert_eq!(s.sigma, vec![1.0, 1.5, 1.5, 3.0]);
        assert!(s.frechet_distance(&s).unwrap().abs() < 1e-12);
        assert!(GaussianStats::from_features(&x[..2], 2).is_err());
        assert!(GaussianStats::new(vec![0.0; 2], vec![0.0; 3]).is_err());
        assert!(frechet_distance(&[f64::NAN], &[1.0], &[0.0], &[1.0]).is_err());
    }
}

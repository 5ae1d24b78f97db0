//! The noise source: reproducible Gaussian noise from a caller-owned generator.
//!
//! Burn's `Tensor::random` draws from a process-wide seed, which parallel code (and tests)
//! interleave; the crate instead draws from a [`NoiseSource`] the caller passes: any `rand`
//! generator (e.g. `StdRng::seed_from_u64(seed)`), so a seed fixes a run exactly on every
//! backend, or a [`RecordedNoise`] sequence (e.g. the noise a reference implementation drew).
//! Generator values come from the Box-Muller transform in `f64`, stored as `f32` and converted
//! to the requested dtype.

use burn::prelude::*;
use burn::tensor::DType;
use rand::Rng;

use crate::error::{Error, Result};

/// Where a sampler's noise comes from: the initial sample's and every step's (ancestral,
/// DDIM with `eta > 0`, SDE solvers, EDM churn). Every seeded `rand::Rng` is one (Box-Muller
/// draws, see [`randn`]); [`RecordedNoise`] replays given tensors (conformance tests).
pub trait NoiseSource {
    /// Standard normal noise of `shape` on `device`.
    ///
    /// # Errors
    /// A source that cannot give noise of that shape (e.g. a recording that ran out).
    fn normal(&mut self, shape: [usize; 4], device: &Device) -> Result<Tensor<4>>;
}

impl<R: Rng + ?Sized> NoiseSource for R {
    fn normal(&mut self, shape: [usize; 4], device: &Device) -> Result<Tensor<4>> {
        Ok(randn(shape, self, device))
    }
}

/// Noise replayed from a recording, in order (e.g. the draws a reference sampler made).
///
/// ```
/// use burn::prelude::*;
/// use diffusion_transformers::contracts::{NoiseSource, RecordedNoise};
///
/// let device = Device::flex();
/// let mut src = RecordedNoise::new(vec![Tensor::<4>::ones([1, 2, 2, 2], &device)]);
/// assert!(src.normal([1, 2, 2, 2], &device).is_ok());
/// assert!(src.normal([1, 2, 2, 2], &device).is_err()); // exhausted
/// ```
#[derive(Debug, Clone)]
pub struct RecordedNoise {
    draws: std::collections::VecDeque<Tensor<4>>,
    used: usize,
}

impl RecordedNoise {
    /// Replays `draws` in order.
    pub fn new(draws: Vec<Tensor<4>>) -> Self {
        Self { draws: draws.into(), used: 0 }
    }

    /// Draws replayed so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Draws left.
    pub fn remaining(&self) -> usize {
        self.draws.len()
    }
}

impl NoiseSource for RecordedNoise {
    fn normal(&mut self, shape: [usize; 4], _device: &Device) -> Result<Tensor<4>> {
        let next = self.draws.pop_front().ok_or_else(|| {
            Error::InvalidArgument(format!("recorded noise exhausted after {} draws", self.used))
        })?;
        if next.dims() != shape {
            return Err(Error::Shape { name: format!("recorded noise draw {}", self.used), expected: format!("{shape:?}"), got: format!("{:?}", next.dims()) });
        }
        self.used += 1;
        Ok(next)
    }
}

/// Standard normal samples as a `Vec<f32>`.
pub fn normal_vec<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // u1 in (0, 1] keeps ln finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        out.push((r * c) as f32);
        out.push((r * s) as f32);
    }
    out.truncate(n);
    out
}

/// A `[shape]` tensor of standard normal noise (f32) on `device`.
///
/// ```
/// use burn::prelude::*;
/// use rand::SeedableRng;
/// use diffusion_transformers::contracts::randn;
///
/// let device = Device::flex();
/// let a = randn([2, 4, 8, 8], &mut rand::rngs::StdRng::seed_from_u64(0), &device);
/// let b = randn([2, 4, 8, 8], &mut rand::rngs::StdRng::seed_from_u64(0), &device);
/// assert_eq!(a.into_data(), b.into_data());
/// ```
pub fn randn<const D: usize, R: Rng + ?Sized>(shape: [usize; D], rng: &mut R, device: &Device) -> Tensor<D> {
    randn_with_dtype(shape, rng, device, DType::F32)
}

/// Noise with the shape, device and dtype of `like`.
pub fn randn_like<const D: usize, R: Rng + ?Sized>(like: &Tensor<D>, rng: &mut R) -> Tensor<D> {
    randn_with_dtype(like.dims(), rng, &like.device(), like.dtype())
}

fn randn_with_dtype<const D: usize, R: Rng + ?Sized>(shape: [usize; D], rng: &mut R, device: &Device, dtype: DType) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(normal_vec(n, rng), shape), (device, dtype))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn moments_are_standard_normal_and_seeded() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let v = normal_vec(100_001, &mut rng);
        assert_eq!(v.len(), 100_001);
        let n = v.len() as f64;
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
        let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.02, "{mean} {var}");
        let again = normal_vec(100_001, &mut rand::rngs::StdRng::seed_from_u64(3));
        assert_eq!(v, again);
        let t = randn_like(&Tensor::<2>::zeros([3, 5], &Device::flex()), &mut rng);
        assert_eq!(t.dims(), [3, 5]);
    }
}

//! The noise source: reproducible Gaussian noise from a caller-owned generator.
//!
//! Burn's `Tensor::random` draws from a process-wide seed, which parallel code (and tests)
//! interleave; the crate instead draws from a [`NoiseSource`] the caller passes: any `rand`
//! generator (e.g. `StdRng::seed_from_u64(seed)`), so a seed fixes a run exactly on every
//! backend, or a [`RecordedNoise`] sequence (e.g. the noise a reference implementation drew).
//! Generator values come from the Box-Muller transform in `f64`, stored as `f32` and converted
//! to the requested dtype.

use std::collections::VecDeque;

use burn::prelude::*;
use burn::tensor::DType;
use rand::{Rng, RngCore};

use crate::error::{Error, Result};

/// Where standard-normal noise comes from.
pub trait NoiseSource {
    /// The next `N(0, 1)` draw of `shape` (row-major values).
    ///
    /// # Errors
    /// When the source cannot give a draw of that shape (e.g. a recorded sequence is exhausted
    /// or its next draw has another shape).
    fn normal(&mut self, shape: &[usize]) -> Result<Vec<f32>>;
}

/// Every `rand` generator is a noise source (Box-Muller in `f64`).
impl<R: RngCore + ?Sized> NoiseSource for R {
    fn normal(&mut self, shape: &[usize]) -> Result<Vec<f32>> {
        Ok(normal_vec(shape.iter().product(), self))
    }
}

/// A recorded sequence of draws, given back in order, each checked against the requested shape.
#[derive(Debug, Clone, Default)]
pub struct RecordedNoise {
    draws: VecDeque<TensorData>,
}

impl RecordedNoise {
    /// The draws, in the order they will be given.
    pub fn new(draws: impl IntoIterator<Item = TensorData>) -> Self {
        Self { draws: draws.into_iter().collect() }
    }

    /// Draws not yet given.
    pub fn remaining(&self) -> usize {
        self.draws.len()
    }
}

impl NoiseSource for RecordedNoise {
    fn normal(&mut self, shape: &[usize]) -> Result<Vec<f32>> {
        let next = self
            .draws
            .pop_front()
            .ok_or_else(|| Error::InvalidArgument(format!("recorded noise is exhausted (a draw of {shape:?} was asked for)")))?;
        if next.shape().as_slice() != shape {
            return Err(Error::Shape { name: "recorded noise".into(), expected: format!("{shape:?}"), got: format!("{:?}", next.shape()) });
        }
        next.convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::InvalidArgument(format!("recorded noise is not numeric: {e:?}")))
    }
}

/// A `[shape]` tensor of standard normal noise from `noise`, on `device` in `dtype`.
///
/// # Errors
/// The noise source's error.
pub fn draw_noise<const D: usize, N: NoiseSource + ?Sized>(shape: [usize; D], noise: &mut N, device: &Device, dtype: DType) -> Result<Tensor<D>> {
    let values = noise.normal(&shape)?;
    Ok(Tensor::from_data(TensorData::new(values, shape), (device, dtype)))
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

    #[test]
    fn recorded_noise_replays_in_order_and_checks_shapes() {
        let device = Device::flex();
        let mut rec = RecordedNoise::new([TensorData::new(vec![1.0f32, 2.0], [1, 2]), TensorData::new(vec![3.0f32], [1, 1])]);
        let a = draw_noise([1, 2], &mut rec, &device, DType::F32).unwrap();
        assert_eq!(a.into_data().try_to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
        assert_eq!(rec.remaining(), 1);
        assert!(draw_noise([1, 2], &mut rec, &device, DType::F32).is_err(), "shape mismatch");
        assert!(draw_noise([1, 1], &mut rec, &device, DType::F32).is_err(), "exhausted");
        // a generator is a noise source too, and gives the same values as `randn`
        let mut g = rand::rngs::StdRng::seed_from_u64(5);
        let from_source = draw_noise([2, 3], &mut g, &device, DType::F32).unwrap();
        let direct = randn([2, 3], &mut rand::rngs::StdRng::seed_from_u64(5), &device);
        assert_eq!(from_source.into_data(), direct.into_data());
    }
}

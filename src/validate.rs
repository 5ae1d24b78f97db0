//! Input checks shared by every model's forward (DiT, U-DiT, MicroDiT, MM-DiT, VAE).
//!
//! Every public forward passes its tensors through these before any computation, so bad input
//! is a typed [`Error`] instead of a crash or silent garbage:
//!
//! - **Empty batch.** A batch of 0 samples is [`Error::Shape`]: Burn 0.22.1's flex backend
//!   crashes the process (SIGSEGV) in a batched matmul of batch 0 (see `docs/known-issues.md`).
//! - **Dtype.** A float input of another dtype than the model's parameters (e.g. `f64` data into
//!   an `f32` model) is cast to the model's dtype; Burn would otherwise panic with
//!   `storage: dtype mismatch` inside the first layer.
//! - **Non-finite values.** NaN or infinity anywhere in `x`, `t` or a float conditioning tensor is
//!   [`Error::Numerical`] naming the tensor (one small read-back per tensor: `sum(0 * x)` is NaN
//!   exactly when some element is not finite).
//! - **Timesteps.** Every model of the crate takes *continuous* time: respaced and flow samplers
//!   call DiT-style models at fractional `t` in `[0, 1000]`, and EDM preconditioning passes
//!   `c_noise = ln(sigma) / 4`, which is negative for `sigma < 1`. So any finite `t` with
//!   `|t| <= `[`MAX_ABS_TIMESTEP`] is accepted, and larger magnitudes are rejected: there the
//!   sinusoidal embedding's phase `t * 1` in `f32` has an error above 0.01 rad (ulp(1e5) = 0.0078),
//!   so the embedding no longer identifies `t`. Values like `t = -1e6` or `1e9` are errors.
//! - **Labels.** Class labels are checked against the label table by the label embedder;
//!   a label the crate turns into a tensor (null labels,
//!   pipeline labels) is checked by [`label_value`] first, since Burn's integer tensors may be
//!   32-bit and a value `>= 2^31` would panic in the conversion.

use burn::prelude::*;
use burn::tensor::DType;

use crate::error::{Error, Result};

/// Largest timestep magnitude a model accepts; see the [module docs](self).
pub const MAX_ABS_TIMESTEP: f64 = 1e5;

/// A non-empty batch: errors when the first dimension of `dims` (named `name`) is 0.
pub fn non_empty_batch(name: &str, dims: &[usize]) -> Result<()> {
    if dims.first().is_some_and(|&b| b > 0) {
        return Ok(());
    }
    Err(Error::Shape {
        name: name.to_string(),
        expected: "a batch of at least one sample".into(),
        got: format!("{dims:?}"),
    })
}

/// Errors unless every element of `x` is finite, naming `name`. One scalar read-back.
pub fn ensure_finite<const D: usize>(name: &str, x: &Tensor<D>) -> Result<()> {
    if x.dims().contains(&0) {
        return Ok(());
    }
    let probe = x.clone().detach().mul_scalar(0.0).sum().into_scalar::<f32>();
    if probe.is_finite() {
        Ok(())
    } else {
        Err(Error::Numerical(format!("input `{name}` contains NaN or infinite values")))
    }
}

/// A model's float input: a non-empty batch (first axis), cast to the model's `dtype`, every
/// element finite.
///
/// # Errors
/// [`Error::Shape`] for an empty batch, [`Error::Numerical`] for NaN/inf.
pub fn float_input<const D: usize>(name: &str, x: Tensor<D>, dtype: DType) -> Result<Tensor<D>> {
    non_empty_batch(name, &x.dims())?;
    let x = cast(x, dtype);
    ensure_finite(name, &x)?;
    Ok(x)
}

/// A model's timesteps `[B]`: cast to `dtype` (to f32 for an f16/bf16 model: the timestep
/// embedding is computed in f32, and bf16 would round 999 to 1000), finite and within
/// [`MAX_ABS_TIMESTEP`].
///
/// # Errors
/// [`Error::Numerical`] for NaN/inf, [`Error::InvalidArgument`] for `|t| > MAX_ABS_TIMESTEP`.
pub fn timesteps(t: Tensor<1>, dtype: DType) -> Result<Tensor<1>> {
    let t = cast(t, if matches!(dtype, DType::F16 | DType::BF16) { DType::F32 } else { dtype });
    let values = t.clone().detach().into_data().try_into_vec_as::<f64>().unwrap_or_default();
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::Numerical(format!("input `t` contains the non-finite timestep {bad}")));
    }
    if let Some(bad) = values.iter().find(|v| v.abs() > MAX_ABS_TIMESTEP) {
        return Err(Error::InvalidArgument(format!(
            "timestep {bad} is outside [-{MAX_ABS_TIMESTEP:e}, {MAX_ABS_TIMESTEP:e}]: the f32 sinusoidal \
             embedding cannot resolve it (see `diffusion_transformers::validate`)"
        )));
    }
    Ok(t)
}

/// The `(x, t)` pair every denoiser takes, checked as [`float_input`] and [`timesteps`].
///
/// # Errors
/// As [`float_input`] and [`timesteps`].
pub fn model_inputs<const D: usize>(x: Tensor<D>, t: Tensor<1>, dtype: DType) -> Result<(Tensor<D>, Tensor<1>)> {
    Ok((float_input("x", x, dtype)?, timesteps(t, dtype)?))
}

/// A label the crate is about to put into an integer tensor: it must fit the smallest integer
/// tensor type of Burn's backends (`i32`).
///
/// # Errors
/// [`Error::InvalidArgument`] naming `name` for a value `>= 2^31`.
pub fn label_value(name: &str, value: usize) -> Result<i64> {
    i32::try_from(value).map(i64::from).map_err(|_| {
        Error::InvalidArgument(format!("{name} {value} does not fit a 32-bit integer tensor (largest {})", i32::MAX))
    })
}

/// `x` in `dtype` (a no-op when it already is).
fn cast<const D: usize>(x: Tensor<D>, dtype: DType) -> Tensor<D> {
    if x.dtype() == dtype { x } else { x.cast(dtype) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::FloatDType;

    #[test]
    fn empty_batch_non_finite_and_dtype() {
        let device = Device::flex();
        let empty = Tensor::<4>::zeros([0, 4, 8, 8], &device);
        assert!(matches!(float_input("x", empty, DType::F32), Err(Error::Shape { .. })));
        let nan = Tensor::<2>::from_floats([[1.0, f32::NAN]], &device);
        let e = float_input("x", nan, DType::F32).unwrap_err();
        assert!(matches!(e, Error::Numerical(_)) && e.to_string().contains("`x`"), "{e}");
        let inf = Tensor::<2>::from_floats([[f32::INFINITY, 1.0]], &device);
        assert!(matches!(float_input("c", inf, DType::F32), Err(Error::Numerical(_))));
        let f64x = Tensor::<2>::from_floats([[1.0, 2.0]], &device).cast(FloatDType::F64);
        assert_eq!(float_input("x", f64x, DType::F32).unwrap().dtype(), DType::F32);
    }

    #[test]
    fn timestep_policy() {
        let device = Device::flex();
        let ok = Tensor::<1>::from_floats([-2.5, 0.0, 999.5, 1e5], &device);
        assert!(timesteps(ok, DType::F32).is_ok());
        for bad in [-1e6, 1e9, f32::NAN, f32::INFINITY] {
            let t = Tensor::<1>::from_floats([0.0, bad], &device);
            assert!(timesteps(t, DType::F32).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_fit_i32() {
        assert_eq!(label_value("label", 7).unwrap(), 7);
        assert!(label_value("label", 1 << 31).is_err());
    }
}

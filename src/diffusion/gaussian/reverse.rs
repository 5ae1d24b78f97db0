//! The reverse process: the model's `p(x_{t-1} | x_t)` (`p_mean_variance`) and single
//! ancestral (`p_sample`) and DDIM steps.

use burn::prelude::*;

use crate::diffusion::gaussian::*;
use crate::error::{Error, Result};

impl GaussianDiffusion {
    /// Splits a model output into its prediction and (for learned variances) variance values.
    pub(super) fn split_output<const D: usize>(&self, model_output: Tensor<D>, x_t: &Tensor<D>) -> Result<(Tensor<D>, Option<Tensor<D>>)> {
        let c = x_t.dims()[1];
        let learned = self.variance_type.is_learned();
        let expected_c = if learned { 2 * c } else { c };
        let mut expected = x_t.dims();
        expected[1] = expected_c;
        if model_output.dims() != expected {
            return Err(Error::Shape {
                name: "model_output".into(),
                expected: format!("{expected:?} ({} variance)", if learned { "with learned" } else { "without learned" }),
                got: format!("{:?}", model_output.dims()),
            });
        }
        Ok(if learned { (model_output.clone().narrow(1, 0, c), Some(model_output.narrow(1, c, c))) } else { (model_output, None) })
    }

    /// The model's reverse distribution from its raw output (reference `p_mean_variance`):
    /// the variance from [`VarianceType`], `x_0` from [`PredictionType`] processed by `clip`,
    /// and the mean as the posterior mean given that `x_0`.
    ///
    /// # Shapes
    /// - `model_output`: `[B, C, ...]`, or `[B, 2C, ...]` for learned variances
    /// - `x_t`: `[B, C, ...]`; `t`: `B` indices -> every field `[B, C, ...]`
    ///
    /// # Errors
    /// Bad timesteps, mismatched shapes or invalid clip parameters.
    pub fn p_mean_variance<const D: usize>(
        &self,
        model_output: Tensor<D>,
        x_t: Tensor<D>,
        t: &[usize],
        clip: ClipMode,
    ) -> Result<PMeanVariance<D>> {
        self.check_data("x_t", &x_t, t)?;
        let (out, var_values) = self.split_output(model_output, &x_t)?;
        let s = &self.schedule;
        let shape = x_t.shape();
        let (variance, log_variance) = match (self.variance_type, var_values) {
            (VarianceType::LearnedRange, Some(v)) => {
                let min_log = self.coef(&x_t, t, |i| s.posterior_log_variance_clipped()[i]);
                let max_log = self.coef(&x_t, t, |i| s.betas()[i].ln());
                let frac = (v + 1.0) / 2.0;
                let log_variance = frac.clone() * max_log + (frac.neg() + 1.0) * min_log;
                (log_variance.clone().exp(), log_variance)
            }
            (VarianceType::Learned, Some(v)) => (v.clone().exp(), v),
            (VarianceType::FixedLarge, _) => (
                self.coef(&x_t, t, |i| self.fixed_large[i]).expand(shape.clone()),
                self.coef(&x_t, t, |i| self.fixed_large[i].ln()).expand(shape),
            ),
            (VarianceType::FixedSmall, _) => (
                self.coef(&x_t, t, |i| s.posterior_variance()[i]).expand(shape.clone()),
                self.coef(&x_t, t, |i| s.posterior_log_variance_clipped()[i]).expand(shape),
            ),
            (_, None) => unreachable!("split_output returns variance values for learned variances"),
        };
        let pred_xstart = match self.prediction_type {
            PredictionType::Epsilon => self.predict_xstart_from_eps(x_t.clone(), t, out)?,
            PredictionType::Sample => out,
            PredictionType::VPrediction => self.predict_xstart_from_v(x_t.clone(), t, out)?,
        };
        let pred_xstart = clip.apply(pred_xstart)?;
        let mean = self.q_posterior_mean_variance(pred_xstart.clone(), x_t, t)?.mean;
        Ok(PMeanVariance { mean, variance, log_variance, pred_xstart })
    }

    /// `[B]` mask, true where `t == 0`.
    pub(super) fn first_step_mask(t: &[usize], device: &Device) -> Tensor<1, Bool> {
        let v: Vec<bool> = t.iter().map(|&i| i == 0).collect();
        Tensor::from_data(TensorData::new(v, [t.len()]), device)
    }

    pub(super) fn nonzero_coef<const D: usize>(&self, like: &Tensor<D>, t: &[usize]) -> Tensor<D> {
        self.coef(like, t, |i| if i == 0 { 0.0 } else { 1.0 })
    }

    pub(super) fn require_noise<const D: usize>(noise: Option<Tensor<D>>, x_t: &Tensor<D>, t: &[usize]) -> Result<Option<Tensor<D>>> {
        match noise {
            Some(n) => {
                Self::same_shape("noise", x_t, &n)?;
                Ok(Some(n))
            }
            None if t.iter().all(|&i| i == 0) => Ok(None),
            None => Err(Error::InvalidArgument("this step needs noise (t > 0)".into())),
        }
    }

    /// One ancestral DDPM step (reference `p_sample`):
    /// `x_{t-1} = mean + [t > 0] exp(0.5 log_variance) noise`.
    ///
    /// # Shapes
    /// - `model_output`: as [`GaussianDiffusion::p_mean_variance`]; `x_t`, `noise`: `[B, C, ...]`
    ///
    /// # Errors
    /// Bad timesteps, mismatched shapes, or no noise for a step with `t > 0`.
    pub fn p_sample<const D: usize>(
        &self,
        model_output: Tensor<D>,
        x_t: Tensor<D>,
        t: &[usize],
        clip: ClipMode,
        noise: Option<Tensor<D>>,
    ) -> Result<SampleStep<D>> {
        self.check_data("x_t", &x_t, t)?;
        let noise = Self::require_noise(noise, &x_t, t)?;
        let mask = self.nonzero_coef(&x_t, t);
        let out = self.p_mean_variance(model_output, x_t, t, clip)?;
        let sample = match noise {
            Some(noise) => out.mean + mask * (out.log_variance * 0.5).exp() * noise,
            None => out.mean,
        };
        Ok(SampleStep { sample, pred_xstart: out.pred_xstart })
    }

    /// One DDIM step (Song et al. 2021, arXiv:2010.02502, eq. 12; reference `ddim_sample`):
    /// `x_{t-1} = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + [t > 0] sigma noise`
    /// with `sigma = eta sqrt((1 - abar_prev) / (1 - abar)) sqrt(1 - abar / abar_prev)` and `eps`
    /// re-derived from the processed `x_0`. `eta = 0` is deterministic (no noise needed).
    ///
    /// # Shapes
    /// - `model_output`: as [`GaussianDiffusion::p_mean_variance`]; `x_t`, `noise`: `[B, C, ...]`
    ///
    /// # Errors
    /// Bad timesteps, mismatched shapes, a negative or non-finite `eta`, or no noise for a
    /// stochastic step.
    pub fn ddim_sample<const D: usize>(
        &self,
        model_output: Tensor<D>,
        x_t: Tensor<D>,
        t: &[usize],
        clip: ClipMode,
        eta: f64,
        noise: Option<Tensor<D>>,
    ) -> Result<SampleStep<D>> {
        check_eta(eta)?;
        self.check_data("x_t", &x_t, t)?;
        let noise = if eta > 0.0 { Self::require_noise(noise, &x_t, t)? } else { None };
        let out = self.p_mean_variance(model_output, x_t.clone(), t, clip)?;
        let eps = self.predict_eps_from_xstart(x_t.clone(), t, out.pred_xstart.clone())?;
        // The reference gathers abar and abar_prev as f32 and computes these coefficients in
        // f32; `1 - abar_prev` near t = 0 is dominated by that rounding, so it is reproduced.
        let s = &self.schedule;
        let abars = |i: usize| (s.alphas_cumprod()[i] as f32, s.alphas_cumprod_prev()[i] as f32);
        let sigma = |i: usize| {
            let (ab, abp) = abars(i);
            eta as f32 * ((1.0 - abp) / (1.0 - ab)).sqrt() * (1.0 - ab / abp).sqrt()
        };
        let mean_pred = out.pred_xstart.clone() * self.coef(&x_t, t, |i| f64::from(abars(i).1.sqrt()))
            + self.coef(&x_t, t, |i| f64::from((1.0 - abars(i).1 - sigma(i) * sigma(i)).max(0.0).sqrt())) * eps;
        let sample = match noise {
            Some(noise) => mean_pred + self.coef(&x_t, t, |i| if i == 0 { 0.0 } else { f64::from(sigma(i)) }) * noise,
            None => mean_pred,
        };
        Ok(SampleStep { sample, pred_xstart: out.pred_xstart })
    }

    /// One deterministic reverse-DDIM step `x_t -> x_{t+1}` (DDIM inversion; reference
    /// `ddim_reverse_sample`): `sqrt(abar_next) x0 + sqrt(1 - abar_next) eps`.
    ///
    /// # Shapes
    /// - `model_output`: as [`GaussianDiffusion::p_mean_variance`]; `x_t`: `[B, C, ...]`
    ///
    /// # Errors
    /// Bad timesteps or mismatched shapes.
    pub fn ddim_reverse_sample<const D: usize>(
        &self,
        model_output: Tensor<D>,
        x_t: Tensor<D>,
        t: &[usize],
        clip: ClipMode,
    ) -> Result<SampleStep<D>> {
        let out = self.p_mean_variance(model_output, x_t.clone(), t, clip)?;
        let eps = self.predict_eps_from_xstart(x_t.clone(), t, out.pred_xstart.clone())?;
        let next = self.schedule.alphas_cumprod_next();
        let sample = out.pred_xstart.clone() * self.coef(&x_t, t, |i| next[i].sqrt()) + self.coef(&x_t, t, |i| (1.0 - next[i]).sqrt()) * eps;
        Ok(SampleStep { sample, pred_xstart: out.pred_xstart })
    }
}

/// Checks a DDIM `eta` (non-negative and finite).
///
/// # Errors
/// A negative or non-finite `eta`.
pub fn check_eta(eta: f64) -> Result<()> {
    if eta >= 0.0 && eta.is_finite() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("eta must be a non-negative finite number, got {eta}")))
    }
}

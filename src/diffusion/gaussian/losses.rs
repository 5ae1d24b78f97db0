//! Training losses: the VB term (bits per dimension) and the MSE / KL / hybrid losses, and
//! DDPM training as an [`Objective`].

use burn::prelude::*;

use crate::contracts::{Denoiser, Objective, TrainRng};
use crate::diffusion::gaussian::*;
use crate::diffusion::likelihood::{discretized_gaussian_log_likelihood, normal_kl};
use crate::error::Result;

impl GaussianDiffusion {
    /// The variational-bound term in bits per dimension (reference `_vb_terms_bpd`):
    /// `KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))` for `t > 0` and the discretised decoder
    /// NLL `-log p(x_0 | x_1)` at `t = 0`, averaged over non-batch dims, divided by `ln 2`.
    ///
    /// # Shapes
    /// - `model_output`: as [`GaussianDiffusion::p_mean_variance`]; `x0`, `x_t`: `[B, C, ...]`
    /// - output: `[B]`
    ///
    /// # Errors
    /// Bad timesteps or mismatched shapes.
    pub fn vb_terms_bpd<const D: usize>(
        &self,
        model_output: Tensor<D>,
        x0: Tensor<D>,
        x_t: Tensor<D>,
        t: &[usize],
        clip: ClipMode,
    ) -> Result<Tensor<1>> {
        let true_post = self.q_posterior_mean_variance(x0.clone(), x_t.clone(), t)?;
        let out = self.p_mean_variance(model_output, x_t, t, clip)?;
        let kl = mean_flat(normal_kl(true_post.mean, true_post.log_variance, out.mean.clone(), out.log_variance.clone())) / LN_2;
        let nll = mean_flat(discretized_gaussian_log_likelihood(x0, out.mean, out.log_variance * 0.5).neg()) / LN_2;
        Ok(kl.mask_where(Self::first_step_mask(t, &nll.device()), nll))
    }

    /// Training losses from a model output already computed at `x_t = q_sample(x0, t, noise)`
    /// (reference `training_losses` with a fixed model output). For learned variances under
    /// the MSE loss types, the VB term sees the prediction channels detached (stop-gradient),
    /// so it trains only the variance; [`LossType::RescaledMse`] scales it by `T / 1000`.
    ///
    /// # Shapes
    /// - `model_output`: `[B, C, ...]` or `[B, 2C, ...]`; `x0`, `x_t`, `noise`: `[B, C, ...]`
    ///
    /// # Errors
    /// Bad timesteps or mismatched shapes.
    pub fn training_losses_from_output<const D: usize>(
        &self,
        model_output: Tensor<D>,
        x0: Tensor<D>,
        x_t: Tensor<D>,
        t: &[usize],
        noise: Tensor<D>,
    ) -> Result<TrainingLosses> {
        self.check_data("x_t", &x_t, t)?;
        Self::same_shape("x0", &x_t, &x0)?;
        Self::same_shape("noise", &x_t, &noise)?;
        let n = self.num_timesteps() as f64;
        match self.loss_type {
            LossType::Kl | LossType::RescaledKl => {
                let mut vb = self.vb_terms_bpd(model_output, x0, x_t, t, ClipMode::Off)?;
                if self.loss_type == LossType::RescaledKl {
                    vb = vb * n;
                }
                Ok(TrainingLosses { loss: vb.clone(), mse: None, vb: Some(vb) })
            }
            LossType::Mse | LossType::RescaledMse => {
                let (out, var_values) = self.split_output(model_output, &x_t)?;
                let vb = match var_values {
                    Some(v) => {
                        let frozen = Tensor::cat(vec![out.clone().detach(), v], 1);
                        let vb = self.vb_terms_bpd(frozen, x0.clone(), x_t.clone(), t, ClipMode::Off)?;
                        Some(if self.loss_type == LossType::RescaledMse { vb * (n / 1000.0) } else { vb })
                    }
                    None => None,
                };
                let target = match self.prediction_type {
                    PredictionType::Epsilon => noise,
                    PredictionType::Sample => x0,
                    PredictionType::VPrediction => self.v_target(x0, t, noise)?,
                };
                let diff = target - out;
                let mse = mean_flat(diff.clone() * diff);
                let loss = match &vb {
                    Some(vb) => mse.clone() + vb.clone(),
                    None => mse.clone(),
                };
                Ok(TrainingLosses { loss, mse: Some(mse), vb })
            }
        }
    }

    /// Training losses of `model` on clean data `x0` at respaced indices `t` with the given
    /// noise: `x_t = q_sample(x0, t, noise)`, the model runs at the original timesteps, then
    /// [`GaussianDiffusion::training_losses_from_output`].
    ///
    /// # Shapes
    /// - `x0`, `noise`: `[B, C, H, W]`; `t`: `B` indices -> losses `[B]`
    ///
    /// # Errors
    /// Bad timesteps, mismatched shapes or the model's errors.
    pub fn training_losses<M: Denoiser + ?Sized>(
        &self,
        model: &M,
        x0: Tensor<4>,
        t: &[usize],
        cond: &M::Cond,
        noise: Tensor<4>,
    ) -> Result<TrainingLosses> {
        let x_t = self.q_sample(x0.clone(), t, noise.clone())?;
        let out = self.denoise(model, x_t.clone(), t, cond)?;
        self.training_losses_from_output(out, x0, x_t, t, noise)
    }
}

/// DDPM training as an [`Objective`]: uniform timesteps and Gaussian noise
/// drawn from the trainer's RNG, then the batch mean of [`GaussianDiffusion::training_losses`]
/// (MSE plus the VB term for learned variances, the hybrid loss DiT trains with).
impl<M: Denoiser> Objective<M> for GaussianDiffusion {
    fn loss(&self, model: &M, x0: Tensor<4>, cond: &M::Cond, rng: &mut TrainRng) -> Result<Tensor<1>> {
        let t = self.sample_timesteps(x0.dims()[0], rng);
        let noise = crate::contracts::randn(x0.dims(), rng, &x0.device());
        Ok(self.training_losses(model, x0, &t, cond, noise)?.loss.mean())
    }
}

//! The forward process and the parameterisations: `q(x_t | x_0)`, `q_sample`, the posterior
//! `q(x_{t-1} | x_t, x_0)`, and conversions between `x_0`, `eps` and `v`.

use burn::prelude::*;

use crate::diffusion::gaussian::{GaussianDiffusion, GaussianStats};
use crate::error::Result;

impl GaussianDiffusion {
    /// `q(x_t | x_0)`: mean `sqrt(abar_t) x_0`, variance `1 - abar_t`.
    ///
    /// # Shapes
    /// - `x0`: `[B, ...]`; `t`: `B` indices -> stats `[B, ...]`
    ///
    /// # Errors
    /// Bad timesteps.
    pub fn q_mean_variance<const D: usize>(&self, x0: Tensor<D>, t: &[usize]) -> Result<GaussianStats<D>> {
        self.check_data("x0", &x0, t)?;
        let ac = self.schedule.alphas_cumprod();
        let shape = x0.shape();
        let mean = self.coef(&x0, t, |i| ac[i].sqrt()) * x0.clone();
        let variance = self.coef(&x0, t, |i| 1.0 - ac[i]).expand(shape.clone());
        let log_variance = self.coef(&x0, t, |i| (1.0 - ac[i]).ln()).expand(shape);
        Ok(GaussianStats { mean, variance, log_variance })
    }

    /// Samples `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise`.
    ///
    /// # Shapes
    /// - `x0`, `noise`: `[B, ...]`; `t`: `B` indices -> `[B, ...]`
    ///
    /// # Errors
    /// Bad timesteps or mismatched shapes.
    pub fn q_sample<const D: usize>(&self, x0: Tensor<D>, t: &[usize], noise: Tensor<D>) -> Result<Tensor<D>> {
        self.check_data("x0", &x0, t)?;
        Self::same_shape("noise", &x0, &noise)?;
        let ac = self.schedule.alphas_cumprod();
        Ok(self.coef(&x0, t, |i| ac[i].sqrt()) * x0.clone() + self.coef(&x0, t, |i| (1.0 - ac[i]).sqrt()) * noise)
    }

    /// The posterior `q(x_{t-1} | x_t, x_0)` (Ho et al. eq. 6-7): mean
    /// `coef1_t x_0 + coef2_t x_t`, variance `beta~_t`, log variance clipped at `t = 0`.
    ///
    /// # Shapes
    /// - `x0`, `x_t`: `[B, ...]` -> stats `[B, ...]`
    ///
    /// # Errors
    /// Bad timesteps or mismatched shapes.
    pub fn q_posterior_mean_variance<const D: usize>(&self, x0: Tensor<D>, x_t: Tensor<D>, t: &[usize]) -> Result<GaussianStats<D>> {
        self.check_data("x_t", &x_t, t)?;
        Self::same_shape("x0", &x_t, &x0)?;
        let s = &self.schedule;
        let shape = x_t.shape();
        let mean = self.coef(&x_t, t, |i| s.posterior_mean_coef1()[i]) * x0
            + self.coef(&x_t, t, |i| s.posterior_mean_coef2()[i]) * x_t.clone();
        let variance = self.coef(&x_t, t, |i| s.posterior_variance()[i]).expand(shape.clone());
        let log_variance = self.coef(&x_t, t, |i| s.posterior_log_variance_clipped()[i]).expand(shape);
        Ok(GaussianStats { mean, variance, log_variance })
    }

    /// `x_0 = sqrt(1 / abar_t) x_t - sqrt(1 / abar_t - 1) eps`.
    ///
    /// # Errors
    /// Bad timesteps or mismatched shapes.
    pub fn predict_xstart_from_eps<const D: usize>(&self, x_t: Tensor<D>, t: &[usize], eps: Tensor<D>) -> Result<Tensor<D>> {
        self.check_data("x_t", &x_t, t)?;
        Self::same_shape("eps", &x_t, &eps)?;
        let ac = self.schedule.alphas_cumprod();
        Ok(self.coef(&x_t, t, |i| (1.0 / ac[i]).sqrt()) * x_t.clone() - self.coef(&x_t, t, |i| (1.0 / ac[i] - 1.0).sqrt()) * eps)
    }

    /// `eps = (sqrt(1 / abar_t) x_t - x_0) / sqrt(1 / abar_t - 1)`.
    ///
    /// # Errors
    /// Bad timesteps or mismatched shapes.
    pub fn predict_eps_from_xstart<const D: usize>(&self, x_t: Tensor<D>, t: &[usize], x0: Tensor<D>) -> Result<Tensor<D>> {
        self.check_data("x_t", &x_t, t)?;
        Self::same_shape("x0", &x_t, &x0)?;
        let ac = self.schedule.alphas_cumprod();
        Ok((self.coef(&x_t, t, |i| (1.0 / ac[i]).sqrt()) * x_t.clone() - x0) / self.coef(&x_t, t, |i| (1.0 / ac[i] - 1.0).sqrt()))
    }

    /// `x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v`.
    ///
    /// # Errors
    /// Bad timesteps or mismatched shapes.
    pub fn predict_xstart_from_v<const D: usize>(&self, x_t: Tensor<D>, t: &[usize], v: Tensor<D>) -> Result<Tensor<D>> {
        self.check_data("x_t", &x_t, t)?;
        Self::same_shape("v", &x_t, &v)?;
        let ac = self.schedule.alphas_cumprod();
        Ok(self.coef(&x_t, t, |i| ac[i].sqrt()) * x_t.clone() - self.coef(&x_t, t, |i| (1.0 - ac[i]).sqrt()) * v)
    }

    /// The velocity target `v = sqrt(abar_t) noise - sqrt(1 - abar_t) x_0`.
    ///
    /// # Errors
    /// Bad timesteps or mismatched shapes.
    pub fn v_target<const D: usize>(&self, x0: Tensor<D>, t: &[usize], noise: Tensor<D>) -> Result<Tensor<D>> {
        self.check_data("x0", &x0, t)?;
        Self::same_shape("noise", &x0, &noise)?;
        let ac = self.schedule.alphas_cumprod();
        Ok(self.coef(&x0, t, |i| ac[i].sqrt()) * noise - self.coef(&x0, t, |i| (1.0 - ac[i]).sqrt()) * x0.clone())
    }
}

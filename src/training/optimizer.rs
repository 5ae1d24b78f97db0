//! AdamW set up as the DiT paper trains (lr 1e-4, no weight decay, constant schedule), with
//! optional linear warm-up, cosine decay and gradient clipping.
//!
//! The optimiser is [`FusedAdamW`]: Burn's `AdamW` update (same equations, same rounding, same
//! state type, so optimiser records of either load into the other), computed per parameter
//! tensor in one in-place pass on flex ([`crate::cpu::adamw_update`]) instead of a dozen
//! element-wise ops that each write a fresh tensor.

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cpu::{AdamWScalars, adamw_update};
use crate::error::{Result, ensure_config};

/// Learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum LrSchedule {
    /// Constant learning rate (DiT).
    Constant,
    /// Cosine decay from the base rate to `min_lr` at `total_steps`.
    Cosine {
        /// Step at which the rate reaches `min_lr`.
        total_steps: u64,
        /// Final rate.
        min_lr: f64,
    },
}

/// AdamW hyper-parameters. Defaults are DiT's: lr 1e-4, betas (0.9, 0.999), eps 1e-8,
/// weight decay 0, constant schedule, no warm-up, no clipping. (Burn's own AdamW defaults
/// differ from PyTorch's; these are PyTorch's.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// Base learning rate.
    pub lr: f64,
    /// Adam beta 1.
    pub beta_1: f32,
    /// Adam beta 2.
    pub beta_2: f32,
    /// Adam epsilon.
    pub epsilon: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Linear warm-up steps from 0 to `lr`.
    pub warmup_steps: u64,
    /// Schedule after warm-up.
    pub schedule: LrSchedule,
    /// Clip each parameter's gradient to this L2 norm (Burn clips per parameter tensor).
    pub grad_clip_norm: Option<f32>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 0,
            schedule: LrSchedule::Constant,
            grad_clip_norm: None,
        }
    }
}

impl OptimizerConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        ensure_config(self.lr > 0.0 && self.lr.is_finite(), || format!("learning rate must be positive, got {}", self.lr))?;
        ensure_config((0.0..1.0).contains(&self.beta_1) && (0.0..1.0).contains(&self.beta_2), || {
            format!("betas must lie in [0, 1), got ({}, {})", self.beta_1, self.beta_2)
        })?;
        ensure_config(self.epsilon > 0.0 && self.weight_decay >= 0.0, || "epsilon must be positive and weight decay non-negative".into())?;
        if let Some(c) = self.grad_clip_norm {
            ensure_config(c > 0.0, || format!("gradient clip norm must be positive, got {c}"))?;
        }
        if let LrSchedule::Cosine { total_steps, min_lr } = self.schedule {
            ensure_config(total_steps > self.warmup_steps && min_lr >= 0.0 && min_lr <= self.lr, || {
                format!("cosine schedule needs total_steps > warmup_steps and 0 <= min_lr <= lr: {:?}", self.schedule)
            })?;
        }
        Ok(())
    }

    /// The Burn optimizer: [`FusedAdamW`] with these values, clipping each parameter's
    /// gradient first where `grad_clip_norm` is set.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] for the values [`Self::validate`] refuses.
    pub fn init(&self) -> Result<ModuleOptimizer> {
        self.validate()?;
        let optim = ModuleOptimizer::from(FusedAdamW {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
        });
        Ok(match self.grad_clip_norm {
            Some(norm) => optim.with_grad_clipping(GradientClippingConfig::Norm(norm).init()),
            None => optim,
        })
    }

    /// Learning rate at optimisation step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine { total_steps, min_lr } => {
                let span = (total_steps - self.warmup_steps) as f64;
                let p = ((step - self.warmup_steps) as f64 / span).min(1.0);
                min_lr + 0.5 * (self.lr - min_lr) * (1.0 + (std::f64::consts::PI * p).cos())
            }
        }
    }
}

/// Burn's `AdamW` (decoupled weight decay; no AMSGrad, no cautious decay) with each
/// parameter tensor's update in one in-place pass on flex (see the [module docs](self)). Its
/// state is Burn's [`AdamWState`], so records saved with Burn's `AdamW` resume here and the
/// other way round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdamW {
    /// Decay of the first moment.
    pub beta_1: f32,
    /// Decay of the second moment.
    pub beta_2: f32,
    /// Added to the square root of the corrected second moment.
    pub epsilon: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let (m, v, time) = match state {
            Some(AdamWState { momentum }) => (momentum.moment_1, momentum.moment_2, momentum.time),
            None => (grad.zeros_like(), grad.zeros_like(), 0),
        };
        let time = time + 1;
        let scalars = AdamWScalars {
            lr,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            time: time as i32,
        };
        let (tensor, m, v) = adamw_update(tensor, grad, m, v, scalars);
        (tensor, Some(AdamWState::new(AdaptiveMomentumState::new(time, m, v))))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let c = OptimizerConfig { warmup_steps: 4, ..Default::default() };
        assert_eq!(c.lr_at(0), 0.25e-4);
        assert_eq!(c.lr_at(3), 1e-4);
        assert_eq!(c.lr_at(100), 1e-4);
        let cos = OptimizerConfig { schedule: LrSchedule::Cosine { total_steps: 104, min_lr: 0.0 }, ..c };
        assert!((cos.lr_at(54) - 0.5e-4).abs() < 1e-12);
        assert!(cos.lr_at(104).abs() < 1e-12);
        assert!(cos.lr_at(1000).abs() < 1e-12);
    }

    #[test]
    fn invalid_values() {
        assert!(OptimizerConfig { lr: 0.0, ..Default::default() }.init().is_err());
        assert!(OptimizerConfig { grad_clip_norm: Some(-1.0), ..Default::default() }.init().is_err());
        let bad = OptimizerConfig { schedule: LrSchedule::Cosine { total_steps: 0, min_lr: 0.0 }, ..Default::default() };
        assert!(bad.validate().is_err());
    }

    /// Ten steps of the crate's optimiser and of Burn's `AdamW` (same values, clipping and
    /// weight decay) on the same model and losses end at the same weights.
    #[test]
    fn matches_burns_adamw_over_steps() {
        use burn::nn::{Linear, LinearConfig};
        use burn::optim::{AdamWConfig, GradientsParams};
        let device = Device::flex().autodiff();
        device.seed(11);
        let config = OptimizerConfig { weight_decay: 0.01, grad_clip_norm: Some(0.5), ..Default::default() };
        let mut ours = config.init().unwrap();
        let mut burns = AdamWConfig::new()
            .with_beta_1(config.beta_1)
            .with_beta_2(config.beta_2)
            .with_epsilon(config.epsilon)
            .with_weight_decay(config.weight_decay)
            .with_grad_clipping(Some(GradientClippingConfig::Norm(0.5)))
            .init();
        let x = Tensor::<2>::random([16, 40], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let (mut a, mut b): (Linear, Linear) = {
            let l = LinearConfig::new(40, 24).init(&device);
            (l.clone(), l)
        };
        for step in 0..10 {
            let lr = 1e-2 / (step + 1) as f64;
            let grads = GradientsParams::from_grads(a.forward(x.clone()).powi_scalar(2).mean().backward(), &a);
            a = ours.step(lr, a, grads);
            let grads = GradientsParams::from_grads(b.forward(x.clone()).powi_scalar(2).mean().backward(), &b);
            b = burns.step(lr, b, grads);
        }
        let tolerance = burn::tensor::Tolerance::rel_abs(1e-5, 1e-6);
        a.weight.val().into_data().assert_approx_eq::<f32>(&b.weight.val().into_data(), tolerance);
        let (ba, bb) = (a.bias.clone().unwrap().val(), b.bias.clone().unwrap().val());
        ba.into_data().assert_approx_eq::<f32>(&bb.into_data(), tolerance);
        // Burn's AdamW state resumes in ours (same state type): one more step of each agrees
        let mut resumed = config.init().unwrap().load_record(burns.to_record());
        let grads = |m: &Linear| GradientsParams::from_grads(m.forward(x.clone()).powi_scalar(2).mean().backward(), m);
        let (gb, gc) = (grads(&b), grads(&b));
        let c = resumed.step(1e-3, b.clone(), gc);
        let b = burns.step(1e-3, b, gb);
        c.weight.val().into_data().assert_approx_eq::<f32>(&b.weight.val().into_data(), tolerance);
        let fresh = config.init().unwrap().step(1e-3, a.clone(), grads(&a));
        assert!(fresh.weight.val().sub(c.weight.val()).abs().max().into_scalar::<f32>() > 1e-6, "the moments were resumed, not restarted");
    }
}

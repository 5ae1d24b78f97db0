//! AdamW set up as the DiT paper trains (lr 1e-4, no weight decay, constant schedule), with
//! optional linear warm-up, cosine decay and gradient clipping.

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use serde::{Deserialize, Serialize};

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

    /// The Burn optimizer.
    pub fn init(&self) -> Result<ModuleOptimizer> {
        self.validate()?;
        Ok(AdamWConfig::new()
            .with_beta_1(self.beta_1)
            .with_beta_2(self.beta_2)
            .with_epsilon(self.epsilon)
            .with_weight_decay(self.weight_decay)
            .with_grad_clipping(self.grad_clip_norm.map(GradientClippingConfig::Norm))
            .init())
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
}

//! Two-layer feed-forward network (timm `Mlp`: keys `fc1`, `fc2`).

use burn::nn::Linear;
use burn::prelude::*;

use crate::cpu;
use crate::error::{Result, ensure_config};
use crate::layers::activation::Activation;
use crate::layers::init::{WeightInit, linear};

/// Configuration of an [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Input width.
    pub d_model: usize,
    /// Hidden width.
    pub d_hidden: usize,
    /// Output width; `None` means `d_model`. Default: None.
    #[config(default = "None")]
    pub d_output: Option<usize>,
    /// Hidden activation. Default: tanh-GELU (DiT).
    #[config(default = "Activation::GeluTanh")]
    pub activation: Activation,
    /// Biases on both linears. Default: true.
    #[config(default = true)]
    pub bias: bool,
}

impl MlpConfig {
    /// Initialise an [`Mlp`] with Xavier-uniform weights and zero biases.
    pub fn init(&self, device: &Device) -> Result<Mlp> {
        let out = self.d_output.unwrap_or(self.d_model);
        ensure_config(self.d_model > 0 && self.d_hidden > 0 && out > 0, || {
            format!("MLP sizes must be positive: {self:?}")
        })?;
        Ok(Mlp {
            fc1: linear(self.d_model, self.d_hidden, self.bias, WeightInit::XavierUniform, device),
            fc2: linear(self.d_hidden, out, self.bias, WeightInit::XavierUniform, device),
            activation: self.activation,
        })
    }
}

/// `fc2(act(fc1(x)))`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `[C, hidden]`.
    pub fc1: Linear,
    /// `[hidden, C_out]`.
    pub fc2: Linear,
    /// Hidden activation.
    #[module(skip)]
    pub activation: Activation,
}

impl Mlp {
    /// # Shapes
    /// - `x`: `[..., C]` -> `[..., C_out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        cpu::linear(&self.fc2, self.activation.forward(cpu::linear(&self.fc1, x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_config_errors() {
        let device = Device::flex();
        let m = MlpConfig::new(8, 32).init(&device).unwrap();
        assert_eq!(m.forward(Tensor::<3>::zeros([2, 3, 8], &device)).dims(), [2, 3, 8]);
        let m = MlpConfig::new(8, 32).with_d_output(Some(5)).init(&device).unwrap();
        assert_eq!(m.forward(Tensor::<2>::zeros([2, 8], &device)).dims(), [2, 5]);
        assert!(MlpConfig::new(0, 32).init(&device).is_err());
    }
}

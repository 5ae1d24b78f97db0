//! Activations used by the models, selectable by config.

use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid, silu};

use crate::cpu::gelu;

/// A pointwise activation.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Activation {
    /// GELU with the tanh approximation (PyTorch `GELU(approximate="tanh")`).
    GeluTanh,
    /// Exact (erf) GELU.
    Gelu,
    /// SiLU / swish.
    Silu,
    /// QuickGELU `x * sigmoid(1.702 x)` (OpenAI CLIP, transformers `quick_gelu`).
    QuickGelu,
    /// ReLU (the original T5 feed-forward).
    Relu,
}

impl Activation {
    /// Apply the activation elementwise.
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::GeluTanh => gelu_tanh(x),
            Activation::Gelu => gelu(x),
            Activation::Silu => silu(x),
            Activation::QuickGelu => x.clone() * sigmoid(x * 1.702),
            Activation::Relu => relu(x),
        }
    }

    /// The activation transformers names `name` in its `ACT2FN` table (`hidden_act`,
    /// `dense_act_fn`): `gelu` (exact), `gelu_new` / `gelu_pytorch_tanh` (tanh form),
    /// `quick_gelu`, `relu`, `silu` / `swish`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for any other name.
    pub fn from_transformers(name: &str) -> crate::Result<Self> {
        match name {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "quick_gelu" => Ok(Activation::QuickGelu),
            "relu" => Ok(Activation::Relu),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(crate::Error::InvalidConfig(format!("unsupported activation `{other}`"))),
        }
    }
}

pub use crate::cpu::gelu_tanh;

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;
    use burn::tensor::activation::gelu_approximate;

    #[test]
    fn gelu_tanh_matches_reference() {
        let device = Device::flex();
        let x = Tensor::<1>::from_floats([-6.0, -2.0, -0.5, 0.0, 0.3, 1.0, 4.0], &device);
        gelu_tanh(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&gelu_approximate(x).into_data(), Tolerance::absolute(1e-6));
    }
}

//! Activations used by the models, selectable by config.

use burn::prelude::*;
use burn::tensor::activation::silu;

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
}

impl Activation {
    /// Apply the activation elementwise.
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::GeluTanh => gelu_tanh(x),
            Activation::Gelu => gelu(x),
            Activation::Silu => silu(x),
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

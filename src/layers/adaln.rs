//! adaLN modulation: `act -> Linear` regressing `n` per-channel vectors from a conditioning
//! vector (official key `adaLN_modulation.1`), the one modulation module of every block and
//! final layer of the crate.
//!
//! ```text
//! [v_1, ..., v_n] = chunk_n(W act(c) + b)          act: SiLU (DiT, U-DiT, MM-DiT) or tanh-GELU (MicroDiT)
//! ```
//!
//! With the adaLN-Zero init (`W = 0`, `b = 0`) every regressed vector starts at zero, so a
//! gated residual `x + gate * f(x)` starts as the identity.

use burn::nn::Linear;
use burn::prelude::*;

use crate::cpu;
use crate::layers::activation::Activation;
use crate::layers::init::{WeightInit, linear};

/// Regresses `n_chunks` vectors of width `C` from the conditioning vector.
#[derive(Module, Debug)]
pub struct AdaLnModulation {
    /// `[C_cond, n_chunks * C]`.
    pub linear: Linear,
    /// Activation applied to the conditioning first (SiLU unless changed).
    #[module(skip)]
    pub activation: Activation,
    /// Number of regressed vectors.
    pub n_chunks: usize,
}

impl AdaLnModulation {
    /// `d_cond -> n_chunks * d_model` after a SiLU; `zero` gives the adaLN-Zero init (weight
    /// and bias 0), otherwise Xavier-uniform with zero bias.
    pub fn new(d_cond: usize, d_model: usize, n_chunks: usize, zero: bool, device: &Device) -> Self {
        let init = if zero { WeightInit::Zeros } else { WeightInit::XavierUniform };
        Self { linear: linear(d_cond, n_chunks * d_model, true, init, device), activation: Activation::Silu, n_chunks }
    }

    /// The same modulation with another activation in front of the linear (MicroDiT:
    /// tanh-GELU).
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// # Shapes
    /// - `c`: `[B, C_cond]` -> `n_chunks` tensors `[B, C]`, in the reference's chunk order
    pub fn forward(&self, c: Tensor<2>) -> Vec<Tensor<2>> {
        cpu::linear(&self.linear, self.activation.forward(c)).chunk(self.n_chunks, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    #[test]
    fn zero_init_gives_zero_chunks() {
        let device = Device::flex();
        let m = AdaLnModulation::new(4, 8, 6, true, &device);
        let out = m.forward(Tensor::ones([2, 4], &device));
        assert_eq!(out.len(), 6);
        for t in out {
            assert_eq!(t.dims(), [2, 8]);
            assert!(t.equal_elem(0.0).all().into_scalar::<bool>());
        }
    }

    #[test]
    fn activation_is_applied_before_the_linear() {
        let device = Device::flex();
        let m = AdaLnModulation::new(4, 2, 2, false, &device).with_activation(Activation::GeluTanh);
        let c = crate::test_util::randn([3, 4], 7, &device);
        let expected = m.linear.forward(Activation::GeluTanh.forward(c.clone()));
        let got = Tensor::cat(m.forward(c), 1);
        got.into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-6));
    }
}

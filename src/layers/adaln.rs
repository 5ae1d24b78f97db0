//! adaLN modulation: `SiLU -> Linear` regressing `n` per-channel vectors from a conditioning
//! vector (official key `adaLN_modulation.1`).

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::silu;

use crate::layers::init::{WeightInit, linear};

/// Regresses `n_chunks` vectors of width `C` from the conditioning vector.
#[derive(Module, Debug)]
pub struct AdaLnModulation {
    /// `[C_cond, n_chunks * C]`.
    pub linear: Linear,
    /// Number of regressed vectors.
    pub n_chunks: usize,
}

impl AdaLnModulation {
    /// `d_cond -> n_chunks * d_model`; `zero` gives the adaLN-Zero init (weight and bias 0),
    /// otherwise Xavier-uniform with zero bias.
    pub fn new(d_cond: usize, d_model: usize, n_chunks: usize, zero: bool, device: &Device) -> Self {
        let init = if zero { WeightInit::Zeros } else { WeightInit::XavierUniform };
        Self { linear: linear(d_cond, n_chunks * d_model, true, init, device), n_chunks }
    }

    /// # Shapes
    /// - `c`: `[B, C_cond]` -> `n_chunks` tensors `[B, C]`, in the reference's chunk order
    pub fn forward(&self, c: Tensor<2>) -> Vec<Tensor<2>> {
        self.linear.forward(silu(c)).chunk(self.n_chunks, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

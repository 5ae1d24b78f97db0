//! DiT's final layer: adaLN-modulated LayerNorm then a linear map to patch pixels.

use burn::nn::Linear;
use burn::prelude::*;

use crate::blocks::dit_block::DIT_NORM_EPS;
use crate::layers::adaln::AdaLnModulation;
use crate::layers::init::{WeightInit, linear};
use crate::layers::norm::{layer_norm, modulate};

/// Final layer (official keys `final_layer.linear`, `final_layer.adaLN_modulation.1`;
/// chunk order shift, scale). Both linears are zero-initialised.
#[derive(Module, Debug)]
pub struct FinalLayer {
    /// `[D, p*p*C_out]`, zero-initialised.
    pub linear: Linear,
    /// Regresses (shift, scale), zero-initialised.
    pub ada_ln_modulation: AdaLnModulation,
}

impl FinalLayer {
    /// A final layer `D -> patch_size^2 * out_channels`.
    pub fn new(d_model: usize, patch_size: usize, out_channels: usize, device: &Device) -> Self {
        Self {
            linear: linear(d_model, patch_size * patch_size * out_channels, true, WeightInit::Zeros, device),
            ada_ln_modulation: AdaLnModulation::new(d_model, d_model, 2, true, device),
        }
    }

    /// # Shapes
    /// - `x`: `[B, N, D]`, `c`: `[B, D]` -> `[B, N, p*p*C_out]`
    pub fn forward(&self, x: Tensor<3>, c: Tensor<2>) -> Tensor<3> {
        let [shift, scale]: [Tensor<2>; 2] =
            self.ada_ln_modulation.forward(c).try_into().expect("2 chunks");
        self.linear.forward(modulate(layer_norm(x, DIT_NORM_EPS), shift, scale))
    }
}

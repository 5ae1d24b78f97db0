//! The stem of the [`ComposedDiT`](crate::models::ComposedDiT) (how the latent becomes
//! tokens) and the token / map reshapes the shell uses.

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::DType;

use crate::error::Result;
use crate::layers::PatchEmbed;

/// The stem module (see [`StemKind`](crate::models::StemKind)).
#[derive(Module, Debug)]
pub enum Stem {
    /// Patchify (`x_embedder.proj`).
    Patch(PatchEmbed),
    /// 3x3 conv, stride 1 (`x_embedder`).
    Conv(Conv2d),
}

impl Stem {
    /// # Shapes
    /// - `x`: `[B, C, H, W]` -> `[B, N, D]`
    pub(crate) fn forward(&self, x: Tensor<4>) -> Result<Tensor<3>> {
        match self {
            Stem::Patch(p) => p.forward(x),
            Stem::Conv(c) => Ok(to_tokens(c.forward(x))),
        }
    }

    pub(crate) fn dtype(&self) -> DType {
        match self {
            Stem::Patch(p) => p.proj.weight.dtype(),
            Stem::Conv(c) => c.weight.dtype(),
        }
    }
}

pub(crate) fn to_map(x: Tensor<3>, g: usize) -> Tensor<4> {
    let [b, _, c] = x.dims();
    x.reshape([b, g, g, c]).permute([0, 3, 1, 2])
}

pub(crate) fn to_tokens(x: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = x.dims();
    x.permute([0, 2, 3, 1]).reshape([b, h * w, c])
}


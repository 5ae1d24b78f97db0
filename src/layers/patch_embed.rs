//! Patch embedding (`[B, C, H, W] -> [B, N, D]` by a strided conv) and its inverse, unpatchify.

use burn::nn::conv::Conv2d;
use burn::prelude::*;

use crate::error::{Result, ensure_config, ensure_dims};
use crate::layers::init::{WeightInit, conv2d};

/// Configuration of a [`PatchEmbed`].
#[derive(Config, Debug)]
pub struct PatchEmbedConfig {
    /// Input channels `C`.
    pub in_channels: usize,
    /// Embedding width `D`.
    pub d_model: usize,
    /// Patch size `p` (kernel = stride = p).
    pub patch_size: usize,
    /// Whether the projection has a bias. Default: true.
    #[config(default = true)]
    pub bias: bool,
}

impl PatchEmbedConfig {
    /// Initialise a [`PatchEmbed`]; the conv weight is Xavier-uniform over its flattened view
    /// (as DiT's `x_embedder`), the bias zero.
    pub fn init(&self, device: &Device) -> Result<PatchEmbed> {
        ensure_config(self.in_channels > 0 && self.d_model > 0 && self.patch_size > 0, || {
            format!("patch embedding sizes must be positive: {self:?}")
        })?;
        let p = self.patch_size;
        Ok(PatchEmbed {
            proj: conv2d(
                [self.in_channels, self.d_model],
                [p, p],
                [p, p],
                [0, 0],
                1,
                self.bias,
                WeightInit::XavierUniform,
                device,
            ),
            patch_size: p,
        })
    }
}

/// Non-overlapping patch embedding (timm `PatchEmbed`, key `proj`).
#[derive(Module, Debug)]
pub struct PatchEmbed {
    /// Conv `[D, C, p, p]`, stride `p`.
    pub proj: Conv2d,
    /// Patch size `p`.
    pub patch_size: usize,
}

impl PatchEmbed {
    /// Embed patches, row-major over the patch grid.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]` with `H`, `W` divisible by `p`
    /// - output: `[B, (H/p)*(W/p), D]`
    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<3>> {
        let [_, c, h, w] = x.dims();
        let p = self.patch_size;
        ensure_dims("x", [c], [Some(self.proj.weight.dims()[1])])?;
        if h % p != 0 || w % p != 0 || h == 0 || w == 0 {
            return Err(crate::Error::Shape {
                name: "x".into(),
                expected: format!("H and W positive multiples of the patch size {p}"),
                got: format!("{:?}", x.dims()),
            });
        }
        Ok(self.proj.forward(x).flatten::<3>(2, 3).swap_dims(1, 2))
    }
}

/// Inverse of patchify for DiT's final layer (einsum `nhwpqc -> nchpwq`).
///
/// # Shapes
/// - `x`: `[B, gh*gw, p*p*C]`, channels ordered `(p, q, c)`
/// - output: `[B, C, gh*p, gw*p]`
pub fn unpatchify(x: Tensor<3>, patch_size: usize, channels: usize, grid: [usize; 2]) -> Tensor<4> {
    let [b, _, _] = x.dims();
    let p = patch_size;
    let [gh, gw] = grid;
    x.reshape([b, gh, gw, p, p, channels])
        .permute([0, 5, 1, 3, 2, 4])
        .reshape([b, channels, gh * p, gw * p])
}

/// Patchify in unpatchify's channel order `(p, q, c)`: the exact inverse of [`unpatchify`]
/// (used for per-patch losses and masking).
///
/// # Shapes
/// - `x`: `[B, C, H, W]` -> `[B, (H/p)*(W/p), p*p*C]`
pub fn patchify(x: Tensor<4>, patch_size: usize) -> Tensor<3> {
    let [b, c, h, w] = x.dims();
    let p = patch_size;
    x.reshape([b, c, h / p, p, w / p, p])
        .permute([0, 2, 4, 3, 5, 1])
        .reshape([b, (h / p) * (w / p), p * p * c])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_roundtrip() {
        let device = Device::flex();
        let pe = PatchEmbedConfig::new(3, 16, 2).init(&device).unwrap();
        let x = crate::test_util::uniform([2, 3, 8, 6], 101, &device);
        assert_eq!(pe.forward(x.clone()).unwrap().dims(), [2, 12, 16]);
        let back = unpatchify(patchify(x.clone(), 2), 2, 3, [4, 3]);
        assert!(back.equal(x).all().into_scalar::<bool>());
    }

    #[test]
    fn rejects_bad_shapes() {
        let device = Device::flex();
        let pe = PatchEmbedConfig::new(3, 16, 2).init(&device).unwrap();
        assert!(pe.forward(Tensor::zeros([1, 3, 7, 8], &device)).is_err());
        assert!(pe.forward(Tensor::zeros([1, 4, 8, 8], &device)).is_err());
        assert!(PatchEmbedConfig::new(3, 16, 0).init(&device).is_err());
    }

    #[test]
    fn patch_equals_conv_on_one_patch() {
        // A 2x2 input with patch 2 is a single token equal to W . x + b.
        let device = Device::flex();
        let pe = PatchEmbedConfig::new(1, 1, 2).init(&device).unwrap();
        let x = Tensor::<4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], &device);
        let w = pe.proj.weight.val().reshape([4]);
        let expected = (w * Tensor::<1>::from_floats([1.0, 2.0, 3.0, 4.0], &device)).sum();
        let got = pe.forward(x).unwrap().reshape([1]);
        assert!((got - expected).abs().into_scalar::<f32>() < 1e-6);
    }
}

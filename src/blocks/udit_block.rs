//! U-DiT's resampling between the levels of the U (official `Downsample`, `Upsample`): a
//! bias-free 3x3 conv then pixel-(un)shuffle. U-DiT's block (`U_DiTBlock`) is two
//! [`Block`](crate::blocks::Block)s of downsampled-token attention, depthwise-conv FFN and
//! adaLN-Zero in the model shell (`models::UDiTConfig::shell`),
//! its final layer [`crate::blocks::FinalLayer`] with a 3x3 conv.

use burn::nn::conv::Conv2d;
use burn::prelude::*;

use crate::layers::dwconv_ffn::same_conv2d;

/// 2x resampling between U-DiT levels: a bias-free 3x3 conv then pixel-unshuffle (down:
/// `C -> C/2` channels, then `2C` at half the grid) or pixel-shuffle (up: `C -> 2C`
/// channels, then `C/2` at twice the grid). Official key `body.0`.
#[derive(Module, Debug)]
pub struct UDiTResample {
    /// The 3x3 conv.
    pub conv: Conv2d,
    /// Upsampling (pixel-shuffle) rather than downsampling (pixel-unshuffle).
    pub up: bool,
}

impl UDiTResample {
    /// Downsampling from `channels` (must be even) to `2 * channels` at half the grid.
    pub fn down(channels: usize, device: &Device) -> Self {
        Self { conv: same_conv2d([channels, channels / 2], 3, 1, false, false, device), up: false }
    }

    /// Upsampling from `channels` (must be even) to `channels / 2` at twice the grid.
    pub fn up(channels: usize, device: &Device) -> Self {
        Self { conv: same_conv2d([channels, 2 * channels], 3, 1, false, false, device), up: true }
    }

    /// # Shapes
    /// - down: `[B, C, H, W]` (even `H`, `W`) -> `[B, 2C, H/2, W/2]`
    /// - up: `[B, C, H, W]` -> `[B, C/2, 2H, 2W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.conv.forward(x);
        if self.up {
            burn::nn::PixelShuffleConfig::new(2).init().forward(y)
        } else {
            burn::nn::PixelUnshuffleConfig::new(2).init().forward(y)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::dwconv_ffn::test_support::uniform;

    #[test]
    fn resampling_shapes() {
        let device = Device::flex();
        let x = uniform([1, 8, 4, 6], 4, &device);
        let down = UDiTResample::down(8, &device).forward(x.clone());
        assert_eq!(down.dims(), [1, 16, 2, 3]);
        assert_eq!(UDiTResample::up(16, &device).forward(down).dims(), [1, 8, 4, 6]);
    }
}

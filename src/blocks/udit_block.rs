//! U-DiT building blocks on NCHW feature maps: the transformer block (two adaLN-Zero
//! [`Block`](crate::blocks::Block)s of downsampled-token attention and depthwise-conv FFN) and the pixel-(un)shuffle
//! resampling between levels (official `U_DiTBlock`, `Downsample`, `Upsample`; the final layer
//! is [`crate::blocks::FinalLayer`] with a 3x3 conv).

use burn::nn::conv::Conv2d;
use burn::prelude::*;

use crate::error::{Result, ensure_config, ensure_dims};
use crate::blocks::Block;
use crate::blocks::parts::{AttentionPart, BlockCondition, ConditioningPart, FeedForwardPart};
use crate::layers::adaln::AdaLnModulation;
use crate::layers::downsampled_attention::DownsampledAttentionConfig;
use crate::layers::dwconv_ffn::{DwConvFfnConfig, FfnForm, same_conv2d};

/// Configuration of a [`UDiTBlock`].
#[derive(Config, Debug)]
pub struct UDiTBlockConfig {
    /// Both attention layers (width, heads, down factor, scores, RoPE, downsampler).
    pub attention: DownsampledAttentionConfig,
    /// FFN hidden width is `int(C * mlp_ratio)`. Default: 4.0 (the presets use 2).
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// FFN structure. Default: the re-parametrised training form.
    #[config(default = "FfnForm::Reparam")]
    pub ffn: FfnForm,
}

impl UDiTBlockConfig {
    /// FFN hidden width, `int(C * mlp_ratio)` as the official code.
    pub fn mlp_hidden(&self) -> usize {
        (self.attention.d_model as f64 * self.mlp_ratio) as usize
    }

    /// Initialise a [`UDiTBlock`]: two [`Block`]s of downsampled-token attention, depthwise-conv
    /// FFN and adaLN-Zero (official init: zero modulations).
    pub fn init(&self, device: &Device) -> Result<UDiTBlock> {
        let d = self.attention.d_model;
        ensure_config(self.mlp_ratio > 0.0 && self.mlp_hidden() > 0, || {
            format!("mlp_ratio must give a positive hidden width, got {}", self.mlp_ratio)
        })?;
        let ffn = DwConvFfnConfig::new(d, self.mlp_hidden()).with_form(self.ffn);
        let block = || -> Result<Block> {
            Ok(Block {
                attn: AttentionPart::Downsampled(self.attention.init(device)?),
                mlp: FeedForwardPart::DwConv(ffn.init(device)?),
                conditioning: ConditioningPart::AdaLnZero(AdaLnModulation::new(d, d, 6, true, device)),
            })
        };
        Ok(UDiTBlock { sub: vec![block()?, block()?] })
    }
}

/// A U-DiT block: two adaLN-Zero [`Block`]s `x + g * attn(mod(LN(x)))`,
/// `x + g * ffn(mod(LN(x)))` of downsampled-token attention and depthwise-conv FFN, each with
/// its own modulation (official keys `adaLN_modulation{1,2}.1`, `attn{1,2}`, `mlp{1,2}` =
/// `sub.{0,1}.{conditioning.linear, attn, mlp}`; chunk order shift_msa, scale_msa, gate_msa,
/// shift_mlp, scale_mlp, gate_mlp).
#[derive(Module, Debug)]
pub struct UDiTBlock {
    /// The two sub-blocks.
    pub sub: Vec<Block>,
}

impl UDiTBlock {
    /// Width `C`.
    pub fn d_model(&self) -> usize {
        match self.sub.first().map(|b| &b.attn) {
            Some(AttentionPart::Downsampled(a)) => a.d_model(),
            _ => 0,
        }
    }

    /// # Shapes
    /// - `x`: `[B, C, H, W]` (`H`, `W` multiples of the down factor), `c`: `[B, C]`
    /// - output: `[B, C, H, W]`
    ///
    /// # Errors
    /// Mismatched widths or a grid the attention cannot split.
    pub fn forward(&self, x: Tensor<4>, c: Tensor<2>) -> Result<Tensor<4>> {
        let [b, ch, h, w] = x.dims();
        ensure_dims("x", x.dims(), [None, Some(self.d_model()), None, None])?;
        ensure_dims("c", c.dims(), [Some(b), Some(self.d_model())])?;
        let cond = BlockCondition { c, shared: None, context: None };
        let mut tokens = x.permute([0, 2, 3, 1]).reshape([b, h * w, ch]);
        for block in &self.sub {
            tokens = block.forward(tokens, Some([h, w]), &cond)?;
        }
        Ok(tokens.reshape([b, h, w, ch]).permute([0, 3, 1, 2]))
    }

    /// The block with both FFNs in inference form (see [`DwConvFfn::reparameterize`](crate::layers::DwConvFfn::reparameterize)).
    pub fn reparameterize(&self) -> Self {
        let mut out = self.clone();
        for block in &mut out.sub {
            if let FeedForwardPart::DwConv(m) = &block.mlp {
                block.mlp = FeedForwardPart::DwConv(m.reparameterize());
            }
        }
        out
    }
}

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
    use crate::layers::dwconv_ffn::test_support::{Randomize, uniform};
    use burn::tensor::Tolerance;

    fn config(ffn: FfnForm) -> UDiTBlockConfig {
        UDiTBlockConfig::new(DownsampledAttentionConfig::new(16, 2)).with_mlp_ratio(2.0).with_ffn(ffn)
    }

    #[test]
    fn zero_init_block_is_identity_and_reparameterize_keeps_outputs() {
        let device = Device::flex();
        let block = config(FfnForm::Reparam).init(&device).unwrap();
        let x = uniform([2, 16, 8, 8], 2, &device);
        let c = uniform([2, 16], 3, &device);
        let out = block.forward(x.clone(), c.clone()).unwrap();
        out.into_data().assert_approx_eq::<f32>(&x.clone().into_data(), Tolerance::absolute(0.0));
        let block = block.map(&mut Randomize::seeded(5));
        let train = block.forward(x.clone(), c.clone()).unwrap();
        let fused = block.reparameterize();
        assert!(matches!(&fused.sub[0].mlp, FeedForwardPart::DwConv(m) if m.form == FfnForm::Fused));
        let eval = fused.forward(x, c).unwrap();
        eval.into_data().assert_approx_eq::<f32>(&train.into_data(), Tolerance::absolute(1e-4));
    }

    #[test]
    fn resampling_shapes() {
        let device = Device::flex();
        let x = uniform([1, 8, 4, 6], 4, &device);
        let down = UDiTResample::down(8, &device).forward(x.clone());
        assert_eq!(down.dims(), [1, 16, 2, 3]);
        assert_eq!(UDiTResample::up(16, &device).forward(down).dims(), [1, 8, 4, 6]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let device = Device::flex();
        let block = config(FfnForm::Plain).init(&device).unwrap();
        let c = Tensor::<2>::zeros([1, 16], &device);
        assert!(block.forward(Tensor::zeros([1, 16, 7, 8], &device), c.clone()).is_err());
        assert!(block.forward(Tensor::zeros([1, 16, 8, 8], &device), Tensor::zeros([1, 8], &device)).is_err());
        assert!(block.forward(Tensor::zeros([2, 16, 8, 8], &device), c).is_err());
        assert!(config(FfnForm::Reparam).with_mlp_ratio(0.0).init(&device).is_err());
    }
}

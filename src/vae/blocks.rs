//! The building blocks of the autoencoder, each matching its diffusers class (and parameter
//! names): [`ResnetBlock2d`] (`ResnetBlock2D` without time embedding), [`AttentionBlock`]
//! (the GroupNorm single-head `Attention` of `UNetMidBlock2D`), [`Downsample2d`],
//! [`Upsample2d`], [`DownEncoderBlock2d`], [`UpDecoderBlock2d`] and [`MidBlock2d`].
//!
//! Every GroupNorm and ResNet block uses `eps = 1e-6`, as diffusers' `Encoder`/`Decoder` do.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::silu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use crate::error::{Result, ensure_config};
use crate::layers::attention::sdpa;

/// Epsilon of every GroupNorm of the autoencoder.
pub const VAE_NORM_EPS: f64 = 1e-6;

/// A GroupNorm with `groups` groups over `channels` channels (eps 1e-6); `channels` must be a
/// multiple of `groups` (checked by the callers' configs).
pub(crate) fn group_norm(groups: usize, channels: usize, device: &Device) -> GroupNorm {
    GroupNormConfig::new(groups, channels).with_epsilon(VAE_NORM_EPS).init(device)
}

/// A biased `k x k` convolution with symmetric padding `k / 2` and PyTorch's default init.
pub(crate) fn conv(c_in: usize, c_out: usize, k: usize, device: &Device) -> Conv2d {
    let p = k / 2;
    Conv2dConfig::new([c_in, c_out], [k, k]).with_padding(PaddingConfig2d::Explicit(p, p, p, p)).init(device)
}

fn ensure_groups(groups: usize, widths: &[usize]) -> Result<()> {
    ensure_config(groups > 0 && widths.iter().all(|w| *w > 0 && w % groups == 0), || {
        format!("GroupNorm widths {widths:?} must be positive multiples of the {groups} groups")
    })
}

/// Pre-norm residual block without time embedding (diffusers `ResnetBlock2D` with
/// `temb_channels=None`): `x' = shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))`, the
/// shortcut a 1x1 convolution when the width changes.
#[derive(Module, Debug)]
pub struct ResnetBlock2d {
    /// GroupNorm over the input channels.
    pub norm1: GroupNorm,
    /// 3x3 convolution `C_in -> C_out`.
    pub conv1: Conv2d,
    /// GroupNorm over the output channels.
    pub norm2: GroupNorm,
    /// 3x3 convolution `C_out -> C_out`.
    pub conv2: Conv2d,
    /// 1x1 convolution `C_in -> C_out` when `C_in != C_out`.
    pub conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2d {
    /// A block `c_in -> c_out` with `groups`-group norms.
    pub fn new(c_in: usize, c_out: usize, groups: usize, device: &Device) -> Result<Self> {
        ensure_groups(groups, &[c_in, c_out])?;
        Ok(Self {
            norm1: group_norm(groups, c_in, device),
            conv1: conv(c_in, c_out, 3, device),
            norm2: group_norm(groups, c_out, device),
            conv2: conv(c_out, c_out, 3, device),
            conv_shortcut: (c_in != c_out).then(|| conv(c_in, c_out, 1, device)),
        })
    }

    /// # Shapes
    /// - `x`: `[B, C_in, H, W]` -> `[B, C_out, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        let h = self.conv2.forward(silu(self.norm2.forward(h)));
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(x),
            None => x,
        };
        shortcut + h
    }
}

/// Single-head self-attention over the spatial positions with a GroupNorm in front and a
/// residual connection (diffusers `Attention(query_dim=C, heads=1, dim_head=C,
/// norm_num_groups=G, residual_connection=True)`, keys `group_norm`, `to_q`, `to_k`, `to_v`,
/// `to_out.0`).
#[derive(Module, Debug)]
pub struct AttentionBlock {
    /// GroupNorm over the channels.
    pub group_norm: GroupNorm,
    /// Query projection `[C, C]`.
    pub to_q: Linear,
    /// Key projection `[C, C]`.
    pub to_k: Linear,
    /// Value projection `[C, C]`.
    pub to_v: Linear,
    /// Output projection `[C, C]` (diffusers `to_out.0`).
    pub to_out: Linear,
}

impl AttentionBlock {
    /// An attention block over `channels` channels with `groups`-group normalisation.
    pub fn new(channels: usize, groups: usize, device: &Device) -> Result<Self> {
        ensure_groups(groups, &[channels])?;
        let lin = || LinearConfig::new(channels, channels).init(device);
        Ok(Self { group_norm: group_norm(groups, channels, device), to_q: lin(), to_k: lin(), to_v: lin(), to_out: lin() })
    }

    /// `x + to_out(softmax(q k^T / sqrt(C)) v)` over the `H * W` positions.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]` -> `[B, C, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let tokens = self.group_norm.forward(x.clone()).reshape([b, c, h * w]).swap_dims(1, 2); // [B, N, C]
        let head = |l: &Linear| l.forward(tokens.clone()).unsqueeze_dim::<4>(1); // [B, 1, N, C]
        let out = sdpa(head(&self.to_q), head(&self.to_k), head(&self.to_v)).squeeze_dim::<3>(1);
        let out = self.to_out.forward(out).swap_dims(1, 2).reshape([b, c, h, w]);
        out + x
    }
}

/// Stride-2 3x3 convolution after padding one zero row and column at the bottom and right
/// (diffusers `Downsample2D(use_conv=True, padding=0)`: `F.pad(x, (0, 1, 0, 1))`).
#[derive(Module, Debug)]
pub struct Downsample2d {
    /// The convolution (stride 2, asymmetric padding `(0, 1, 0, 1)`).
    pub conv: Conv2d,
}

impl Downsample2d {
    /// A downsampler keeping `channels` channels.
    pub fn new(channels: usize, device: &Device) -> Self {
        let conv = Conv2dConfig::new([channels, channels], [3, 3])
            .with_stride([2, 2])
            // (top, left, bottom, right)
            .with_padding(PaddingConfig2d::Explicit(0, 0, 1, 1))
            .init(device);
        Self { conv }
    }

    /// # Shapes
    /// - `x`: `[B, C, H, W]` -> `[B, C, floor(H / 2), floor(W / 2)]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(x)
    }
}

/// Nearest-neighbour 2x upsampling followed by a 3x3 convolution (diffusers
/// `Upsample2D(use_conv=True)`).
#[derive(Module, Debug)]
pub struct Upsample2d {
    /// The 3x3 convolution (padding 1).
    pub conv: Conv2d,
}

impl Upsample2d {
    /// An upsampler keeping `channels` channels.
    pub fn new(channels: usize, device: &Device) -> Self {
        Self { conv: conv(channels, channels, 3, device) }
    }

    /// # Shapes
    /// - `x`: `[B, C, H, W]` -> `[B, C, 2H, 2W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let up = interpolate(x, InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]));
        self.conv.forward(up)
    }
}

/// An encoder level (diffusers `DownEncoderBlock2D`): ResNet blocks, then an optional
/// [`Downsample2d`] (key `downsamplers.0`).
#[derive(Module, Debug)]
pub struct DownEncoderBlock2d {
    /// ResNet blocks; the first changes the width.
    pub resnets: Vec<ResnetBlock2d>,
    /// Downsampler (all levels but the last).
    pub downsamplers: Option<Downsample2d>,
}

impl DownEncoderBlock2d {
    /// `layers` ResNet blocks `c_in -> c_out`, then a downsampler if `downsample`.
    pub fn new(c_in: usize, c_out: usize, layers: usize, groups: usize, downsample: bool, device: &Device) -> Result<Self> {
        Ok(Self {
            resnets: (0..layers)
                .map(|i| ResnetBlock2d::new(if i == 0 { c_in } else { c_out }, c_out, groups, device))
                .collect::<Result<_>>()?,
            downsamplers: downsample.then(|| Downsample2d::new(c_out, device)),
        })
    }

    /// # Shapes
    /// - `x`: `[B, C_in, H, W]` -> `[B, C_out, H', W']` (`H' = floor(H / 2)` with a downsampler)
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.resnets.iter().fold(x, |x, r| r.forward(x));
        match &self.downsamplers {
            Some(d) => d.forward(x),
            None => x,
        }
    }
}

/// A decoder level (diffusers `UpDecoderBlock2D`): ResNet blocks, then an optional
/// [`Upsample2d`] (key `upsamplers.0`).
#[derive(Module, Debug)]
pub struct UpDecoderBlock2d {
    /// ResNet blocks; the first changes the width.
    pub resnets: Vec<ResnetBlock2d>,
    /// Upsampler (all levels but the last).
    pub upsamplers: Option<Upsample2d>,
}

impl UpDecoderBlock2d {
    /// `layers` ResNet blocks `c_in -> c_out`, then an upsampler if `upsample`.
    pub fn new(c_in: usize, c_out: usize, layers: usize, groups: usize, upsample: bool, device: &Device) -> Result<Self> {
        Ok(Self {
            resnets: (0..layers)
                .map(|i| ResnetBlock2d::new(if i == 0 { c_in } else { c_out }, c_out, groups, device))
                .collect::<Result<_>>()?,
            upsamplers: upsample.then(|| Upsample2d::new(c_out, device)),
        })
    }

    /// # Shapes
    /// - `x`: `[B, C_in, H, W]` -> `[B, C_out, H', W']` (`H' = 2H` with an upsampler)
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.resnets.iter().fold(x, |x, r| r.forward(x));
        match &self.upsamplers {
            Some(u) => u.forward(x),
            None => x,
        }
    }
}

/// The mid block (diffusers `UNetMidBlock2D` with one layer): ResNet, optional attention,
/// ResNet, all at the same width.
#[derive(Module, Debug)]
pub struct MidBlock2d {
    /// The two ResNet blocks.
    pub resnets: Vec<ResnetBlock2d>,
    /// The attention block between them (empty without `mid_block_add_attention`).
    pub attentions: Vec<AttentionBlock>,
}

impl MidBlock2d {
    /// A mid block of width `channels`, with attention if `attention`.
    pub fn new(channels: usize, groups: usize, attention: bool, device: &Device) -> Result<Self> {
        Ok(Self {
            resnets: vec![
                ResnetBlock2d::new(channels, channels, groups, device)?,
                ResnetBlock2d::new(channels, channels, groups, device)?,
            ],
            attentions: if attention { vec![AttentionBlock::new(channels, groups, device)?] } else { Vec::new() },
        })
    }

    /// # Shapes
    /// - `x`: `[B, C, H, W]` -> `[B, C, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.resnets[0].forward(x);
        for a in &self.attentions {
            x = a.forward(x);
        }
        self.resnets[1..].iter().fold(x, |x, r| r.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::softmax;
    use burn::tensor::Tolerance;

    #[test]
    fn downsample_pads_bottom_right_only() {
        let device = Device::flex();
        let mut d = Downsample2d::new(1, &device);
        // A kernel reading only the bottom-right tap: output (i, j) = x[2i + 2, 2j + 2] (0 outside).
        let mut k = vec![0.0f32; 9];
        k[8] = 1.0;
        d.conv.weight = d.conv.weight.map(|w| Tensor::from_data(TensorData::new(k.clone(), [1, 1, 3, 3]), &w.device()));
        d.conv.bias = d.conv.bias.map(|b| b.map(|b| b.zeros_like()));
        let x = Tensor::<1, Int>::arange(0..16, &device).float().reshape([1, 1, 4, 4]);
        let y = d.forward(x);
        assert_eq!(y.dims(), [1, 1, 2, 2]);
        // rows/cols 2 and 4 (4 is the zero pad)
        y.into_data().assert_eq(&TensorData::from([[[[10.0f32, 0.0], [0.0, 0.0]]]]), true);
    }

    #[test]
    fn upsample_is_nearest() {
        let device = Device::flex();
        let mut u = Upsample2d::new(1, &device);
        let mut k = vec![0.0f32; 9];
        k[4] = 1.0; // identity kernel
        u.conv.weight = u.conv.weight.map(|w| Tensor::from_data(TensorData::new(k.clone(), [1, 1, 3, 3]), &w.device()));
        u.conv.bias = u.conv.bias.map(|b| b.map(|b| b.zeros_like()));
        let x = Tensor::<4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], &device);
        let expected = TensorData::from([[[
            [1.0f32, 1.0, 2.0, 2.0],
            [1.0, 1.0, 2.0, 2.0],
            [3.0, 3.0, 4.0, 4.0],
            [3.0, 3.0, 4.0, 4.0],
        ]]]);
        u.forward(x).into_data().assert_eq(&expected, true);
    }

    #[test]
    fn attention_matches_definition() {
        let device = Device::flex();
        let a = AttentionBlock::new(8, 2, &device).unwrap();
        let x = crate::test_util::randn([2, 8, 3, 5], 101, &device);
        let t = a.group_norm.forward(x.clone()).reshape([2, 8, 15]).swap_dims(1, 2);
        let (q, k, v) = (a.to_q.forward(t.clone()), a.to_k.forward(t.clone()), a.to_v.forward(t));
        let p = softmax(q.matmul(k.swap_dims(1, 2)) / 8f64.sqrt(), 2);
        let naive = a.to_out.forward(p.matmul(v)).swap_dims(1, 2).reshape([2, 8, 3, 5]) + x.clone();
        a.forward(x).into_data().assert_approx_eq::<f32>(&naive.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn resnet_shortcut_only_when_width_changes() {
        let device = Device::flex();
        assert!(ResnetBlock2d::new(8, 8, 4, &device).unwrap().conv_shortcut.is_none());
        let r = ResnetBlock2d::new(8, 16, 4, &device).unwrap();
        assert!(r.conv_shortcut.is_some());
        assert_eq!(r.forward(Tensor::zeros([1, 8, 4, 4], &device)).dims(), [1, 16, 4, 4]);
        assert!(ResnetBlock2d::new(8, 12, 8, &device).is_err());
        assert!(AttentionBlock::new(6, 4, &device).is_err());
    }
}

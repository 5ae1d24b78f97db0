//! Self-attention on downsampled tokens (U-DiT, official `DownSample_Attn`).
//!
//! A feature map `[B, C, H, W]` goes through a depthwise conv (kernel `k`, "same" padding)
//! plus an identity shortcut, and is then split into `f^2` interleaved sub-grids
//! (`f = down_factor`): sub-grid `(i, j)` holds the pixels `(f*r + i, f*c + j)`, i.e. it is
//! the map downsampled by `f` at offset `(i, j)`. Self-attention runs on every sub-grid
//! separately (the same `to_qkv` weights, a batch of `B * f^2` sequences of `H*W/f^2`
//! tokens), the results are put back at their offsets, and a 1x1 conv mixes the channels.
//! Token count and width are unchanged; the `N^2` part of the cost falls by `f^2` (a quarter
//! for `f = 2`).
//!
//! Scores are either scaled dot products or cosine similarities with a learned per-head
//! temperature ([`cosine_attention`]), with an optional 2-D RoPE ([`Rope2d`]) computed on the
//! sub-grid. [`DownsampledAttention::forward_tokens`] runs the layer on token sequences
//! `[B, N, C]` so that any transformer block of the crate can use it; it works channels-last
//! throughout (depthwise conv on the tokens, the split and the merge one copy of whole pixels
//! each, the 1x1 output conv applied per token before the merge).

use burn::module::Param;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

use crate::error::{Error, Result, ensure_config, ensure_dims};
use crate::layers::attention::{merge_heads, sdpa};
use crate::layers::cosine_attention::{LOGIT_SCALE_INIT, cosine_attention};
use crate::layers::dwconv_ffn::{pointwise_tokens, same_conv2d};
use crate::layers::init::{WeightInit, linear};
use crate::layers::rope2d::Rope2d;

/// How attention scores are computed.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum AttentionScore {
    /// `q k^T / sqrt(Dh)` (official `attn_type=None`).
    DotProduct,
    /// Cosine similarity times a learned per-head temperature (official `attn_type='v2'`,
    /// parameter `logit_scale` `[H, 1, 1]`).
    Cosine,
}

/// Configuration of a [`DownsampledAttention`].
#[derive(Config, Debug)]
pub struct DownsampledAttentionConfig {
    /// Width `C`.
    pub d_model: usize,
    /// Attention heads `H` (`C` must be divisible by `H`).
    pub n_heads: usize,
    /// Downsampling factor `f` per axis (`f^2` sub-grids; 1 gives full attention).
    /// Default: 2.
    #[config(default = 2)]
    pub down_factor: usize,
    /// Odd kernel of the depthwise downsampler conv (official `downsampler='dwconv{k}'`).
    /// Default: 5.
    #[config(default = 5)]
    pub downsampler_kernel: usize,
    /// Identity shortcut around the downsampler conv (official `down_shortcut`).
    /// Default: true.
    #[config(default = true)]
    pub down_shortcut: bool,
    /// Score function. Default: cosine similarity with learned temperature.
    #[config(default = "AttentionScore::Cosine")]
    pub score: AttentionScore,
    /// 2-D RoPE on queries and keys over the sub-grid (official `posemb_type='rope2d'`;
    /// needs `C / H` divisible by 4). Default: true.
    #[config(default = true)]
    pub rope: bool,
    /// RoPE base. Default: 10000 ([`ROPE_THETA`](crate::layers::rope2d::ROPE_THETA)).
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    /// Bias on the qkv projection. Default: true (U-DiT).
    #[config(default = true)]
    pub qkv_bias: bool,
}

impl DownsampledAttentionConfig {
    /// Checks every size constraint; called by [`init`](Self::init).
    pub fn validate(&self) -> Result<()> {
        let (c, h) = (self.d_model, self.n_heads);
        ensure_config(c > 0 && h > 0 && c % h == 0, || {
            format!("attention width {c} must be a positive multiple of the number of heads {h}")
        })?;
        ensure_config(self.down_factor > 0, || "down_factor must be positive".to_string())?;
        ensure_config(self.downsampler_kernel % 2 == 1, || {
            format!("downsampler kernel must be odd (same padding), got {}", self.downsampler_kernel)
        })?;
        ensure_config(!self.rope || (c / h) % 4 == 0, || {
            format!("2-D RoPE needs a head width divisible by 4, got {c} / {h} = {}", c / h)
        })?;
        ensure_config(!self.rope || self.rope_theta > 0.0, || {
            format!("rope_theta must be positive, got {}", self.rope_theta)
        })
    }

    /// Initialise a [`DownsampledAttention`] (official init: Xavier-uniform linear and convs,
    /// zero biases, `logit_scale = ln 10`).
    pub fn init(&self, device: &Device) -> Result<DownsampledAttention> {
        self.validate()?;
        let c = self.d_model;
        Ok(DownsampledAttention {
            downsampler: TokenDownsampler {
                layer: same_conv2d([c, c], self.downsampler_kernel, c, true, false, device),
                down_factor: self.down_factor,
                shortcut: self.down_shortcut,
            },
            to_qkv: linear(c, 3 * c, self.qkv_bias, WeightInit::XavierUniform, device),
            to_out: same_conv2d([c, c], 1, 1, true, false, device),
            logit_scale: (self.score == AttentionScore::Cosine)
                .then(|| Param::from_tensor(Tensor::full([self.n_heads, 1, 1], LOGIT_SCALE_INIT, device))),
            n_heads: self.n_heads,
            rope: self.rope,
            rope_theta: self.rope_theta,
        })
    }
}

/// Depthwise conv plus shortcut, then the split into `f^2` interleaved sub-grids
/// (official `DownSampler`, key `layer`).
#[derive(Module, Debug)]
pub struct TokenDownsampler {
    /// Depthwise conv `[C, 1, k, k]` with bias.
    pub layer: Conv2d,
    /// Downsampling factor `f`.
    pub down_factor: usize,
    /// Identity shortcut around the conv.
    pub shortcut: bool,
}

impl TokenDownsampler {
    /// `conv(x) + x`, split into sub-grids; sequence `p = i*f + j` holds the pixels
    /// `(f*r + i, f*c + j)` in row-major `(r, c)` order.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]` with `H`, `W` divisible by `f` -> `[B * f^2, (H/f) * (W/f), C]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        self.forward_channels_last(x.permute([0, 2, 3, 1]))
    }

    /// [`forward`](Self::forward) on the channels-last map (tokens as they are): the depthwise
    /// conv runs channels-last and the split is one copy of whole pixels.
    ///
    /// # Shapes
    /// - `x`: `[B, H, W, C]` with `H`, `W` divisible by `f` -> `[B * f^2, (H/f) * (W/f), C]`
    pub fn forward_channels_last(&self, x: Tensor<4>) -> Tensor<3> {
        let [b, h, w, c] = x.dims();
        let f = self.down_factor;
        let weight = self.layer.weight.val();
        let bias = self.layer.bias.as_ref().map_or_else(|| Tensor::zeros([c], &weight.device()), |b| b.val());
        let y = crate::cpu::depthwise_conv2d_nhwc(x.clone(), weight, bias);
        let y = if self.shortcut { y + x } else { y };
        let (gh, gw) = (h / f, w / f);
        y.reshape([b, gh, f, gw, f, c]).permute([0, 2, 4, 1, 3, 5]).reshape([b * f * f, gh * gw, c])
    }
}

/// Inverse of the sub-grid split: puts sequence `p = i*f + j` back at offset `(i, j)`.
///
/// # Shapes
/// - `x`: `[B * f^2, gh * gw, C]` -> `[B, C, gh * f, gw * f]`
pub fn merge_subgrids(x: Tensor<3>, grid: [usize; 2], f: usize) -> Tensor<4> {
    let [bp, _, c] = x.dims();
    let b = bp / (f * f);
    let [gh, gw] = grid;
    x.reshape([b, f, f, gh, gw, c]).permute([0, 5, 3, 1, 4, 2]).reshape([b, c, gh * f, gw * f])
}

/// Multiply-accumulates of one [`DownsampledAttention`] forward on an `[H, W]` map of width
/// `d` (per sample): downsampler conv `HW d k^2`, qkv `3 HW d^2`, scores and weighted sum
/// `2 (HW)^2 d / f^2`, output conv `HW d^2`. Elementwise work (norms, RoPE, softmax) is not
/// counted, as in the papers' FLOPs.
pub fn downsampled_attention_macs(d: usize, grid: [usize; 2], down_factor: usize, kernel: usize) -> f64 {
    let (d, n, f, k) = (d as f64, (grid[0] * grid[1]) as f64, down_factor as f64, kernel as f64);
    n * d * k * k + 4.0 * n * d * d + 2.0 * n * n * d / (f * f)
}

/// Self-attention on `f^2` downsampled sub-grids (official keys `downsampler.layer`,
/// `to_qkv`, `to_out`, `logit_scale`).
#[derive(Module, Debug)]
pub struct DownsampledAttention {
    /// Depthwise downsampler and sub-grid split.
    pub downsampler: TokenDownsampler,
    /// `[C, 3C]`, output ordered `(q, k, v)` then heads.
    pub to_qkv: Linear,
    /// 1x1 conv `[C, C, 1, 1]` applied after merging the sub-grids.
    pub to_out: Conv2d,
    /// Learned log-temperatures `[H, 1, 1]` (cosine scores only).
    pub logit_scale: Option<Param<Tensor<3>>>,
    /// Number of heads.
    pub n_heads: usize,
    /// Whether 2-D RoPE is applied to queries and keys.
    pub rope: bool,
    /// RoPE base.
    pub rope_theta: f64,
}

impl DownsampledAttention {
    /// Width `C`.
    pub fn d_model(&self) -> usize {
        self.to_qkv.weight.dims()[0]
    }

    /// Downsampling factor `f`.
    pub fn down_factor(&self) -> usize {
        self.downsampler.down_factor
    }

    /// Attention on a feature map.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]` with `H` and `W` positive multiples of `f` -> `[B, C, H, W]`
    ///
    /// # Errors
    /// Wrong channel count, or a grid that the factor does not divide.
    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<4>> {
        let [b, c, h, w] = x.dims();
        ensure_dims("x", x.dims(), [None, Some(self.d_model()), None, None])?;
        self.check_grid([h, w], "[B, C, H, W]", x.dims())?;
        let tokens = x.permute([0, 2, 3, 1]).reshape([b, h * w, c]);
        Ok(self.forward_tokens(tokens, [h, w])?.reshape([b, h, w, c]).permute([0, 3, 1, 2]))
    }

    /// A grid error unless `H` and `W` are positive multiples of the down factor.
    fn check_grid<const D: usize>(&self, [h, w]: [usize; 2], layout: &str, dims: [usize; D]) -> Result<()> {
        let f = self.down_factor();
        if f == 0 || h == 0 || w == 0 || h % f != 0 || w % f != 0 {
            return Err(Error::Shape {
                name: "x".into(),
                expected: format!("{layout} with H and W positive multiples of the down factor {f}"),
                got: format!("{dims:?}"),
            });
        }
        Ok(())
    }

    /// Attention on token sequences laid out row-major on a `[H, W]` grid, for use in
    /// token-based blocks (DiT, MM-DiT, ...).
    ///
    /// # Shapes
    /// - `x`: `[B, H*W, C]` -> `[B, H*W, C]`
    ///
    /// # Errors
    /// As [`forward`](Self::forward), or `N != H*W`.
    pub fn forward_tokens(&self, x: Tensor<3>, grid: [usize; 2]) -> Result<Tensor<3>> {
        let [b, n, c] = x.dims();
        ensure_dims("x", x.dims(), [None, Some(grid[0] * grid[1]), Some(self.d_model())])?;
        self.check_grid(grid, "a [B, H*W, C] grid", x.dims())?;
        let f = self.down_factor();
        let (gh, gw) = (grid[0] / f, grid[1] / f);
        let tokens = self.downsampler.forward_channels_last(x.reshape([b, grid[0], grid[1], c]));
        // the 1x1 output conv acts on each token: apply it before putting the tokens back
        let out = pointwise_tokens(self.attend(tokens, [gh, gw])?, (self.to_out.weight.val(), self.to_out.bias.as_ref().map(|b| b.val())));
        Ok(out.reshape([b, f, f, gh, gw, c]).permute([0, 3, 1, 4, 2, 5]).reshape([b, n, c]))
    }

    /// Multi-head attention within each sub-grid sequence.
    ///
    /// # Shapes
    /// - `tokens`: `[S, gh*gw, C]` (S sequences) -> `[S, gh*gw, C]`
    fn attend(&self, tokens: Tensor<3>, grid: [usize; 2]) -> Result<Tensor<3>> {
        let [s, n, c] = tokens.dims();
        let h = self.n_heads;
        let dh = c / h;
        let qkv = crate::cpu::linear(&self.to_qkv, tokens).reshape([s, n, 3, h, dh]).permute([2, 0, 3, 1, 4]);
        let mut it = qkv.chunk(3, 0).into_iter().map(|t| t.squeeze_dim::<4>(0));
        let (mut q, mut k, v) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        if self.rope {
            let rope = Rope2d::new(dh, grid, self.rope_theta, &q.device())?;
            q = rope.apply(q)?;
            k = rope.apply(k)?;
        }
        let out = match &self.logit_scale {
            Some(tau) => cosine_attention(q, k, v, tau.val().reshape([h])),
            None => sdpa(q, k, v),
        };
        Ok(merge_heads(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::attention::Attention;
    use crate::layers::dwconv_ffn::test_support::{Randomize, uniform};
    use crate::layers::norm::{gated_residual, layer_norm, modulate};
    use crate::layers::{AdaLnModulation, Mlp, MlpConfig};
    use burn::tensor::Tolerance;

    fn randomized(cfg: DownsampledAttentionConfig, seed: u64, device: &Device) -> DownsampledAttention {
        cfg.init(device).unwrap().map(&mut Randomize::seeded(seed))
    }

    /// The downsampler reduced to its shortcut: zero conv weight and bias.
    fn shortcut_only(mut a: DownsampledAttention) -> DownsampledAttention {
        a.downsampler.layer.weight = Param::from_tensor(a.downsampler.layer.weight.val().zeros_like());
        a.downsampler.layer.bias = a.downsampler.layer.bias.map(|b| Param::from_tensor(b.val().zeros_like()));
        a
    }

    #[test]
    fn shortcut_only_equals_full_attention_on_each_subgrid() {
        let device = Device::flex();
        for (score, rope) in [(AttentionScore::Cosine, true), (AttentionScore::DotProduct, false)] {
            let cfg = DownsampledAttentionConfig::new(16, 2).with_score(score).with_rope(rope);
            let down = shortcut_only(randomized(cfg, 7, &device));
            // the same weights with f = 1: full attention over whatever map it is given
            let mut full = down.clone();
            full.downsampler.down_factor = 1;
            let x = uniform([2, 16, 8, 6], 11, &device);
            let out = down.forward(x.clone()).unwrap();
            for i in 0..2 {
                for j in 0..2 {
                    let sub = x.clone().slice(s![.., .., i..;2, j..;2]);
                    let expect = full.forward(sub).unwrap();
                    let got = out.clone().slice(s![.., .., i..;2, j..;2]);
                    got.into_data().assert_approx_eq::<f32>(&expect.into_data(), Tolerance::absolute(1e-5));
                }
            }
        }
    }

    #[test]
    fn full_factor_without_rope_equals_the_shared_attention() {
        let device = Device::flex();
        let cfg = DownsampledAttentionConfig::new(12, 3)
            .with_down_factor(1)
            .with_score(AttentionScore::DotProduct)
            .with_rope(false);
        let a = shortcut_only(randomized(cfg, 3, &device));
        let w = a.to_out.weight.val().reshape([12, 12]).transpose();
        let proj = Linear { weight: Param::from_tensor(w), bias: a.to_out.bias.clone() };
        let reference = Attention { qkv: a.to_qkv.clone(), proj, q_norm: None, k_norm: None, full_qk_norm_eps: None, n_heads: 3 };
        let x = uniform([2, 20, 12], 5, &device);
        let got = a.forward_tokens(x.clone(), [4, 5]).unwrap();
        got.into_data().assert_approx_eq::<f32>(&reference.forward(x).into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn downsampler_layout_is_the_reference_rearrange() {
        let device = Device::flex();
        let a = shortcut_only(DownsampledAttentionConfig::new(4, 1).init(&device).unwrap());
        // x[b, c, h, w] = 1000 c + 10 h + w
        let v: Vec<f32> = (0..4 * 4 * 6).map(|i| (1000 * (i / 24) + 10 * ((i / 6) % 4) + i % 6) as f32).collect();
        let x = Tensor::<4>::from_data(TensorData::new(v, [1, 4, 4, 6]), &device);
        let tokens = a.downsampler.forward(x.clone());
        assert_eq!(tokens.dims(), [4, 6, 4]);
        // sequence p = 1*2 + 0 (offset (1, 0)), token 4 = (r 1, c 1) -> pixel (3, 2), channel 3
        let v = tokens.clone().slice([2..3, 4..5, 3..4]).into_scalar::<f32>();
        assert_eq!(v, 3032.0);
        let back = merge_subgrids(tokens, [2, 3], 2);
        assert!(back.equal(x).all().into_scalar::<bool>());
    }

    #[test]
    fn costs_a_quarter_of_the_quadratic_term() {
        let full = downsampled_attention_macs(64, [32, 32], 1, 5);
        let down = downsampled_attention_macs(64, [32, 32], 2, 5);
        let linear_part = downsampled_attention_macs(64, [32, 32], 1, 5) - 2.0 * 1024.0 * 1024.0 * 64.0;
        assert!(((down - linear_part) / (full - linear_part) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn bad_inputs_and_configs_are_errors() {
        let device = Device::flex();
        let a = DownsampledAttentionConfig::new(16, 2).init(&device).unwrap();
        // odd grid sizes cannot be split into 2x2 sub-grids
        let e = a.forward(Tensor::zeros([1, 16, 7, 8], &device)).unwrap_err().to_string();
        assert!(e.contains("multiples of the down factor 2"), "{e}");
        assert!(a.forward(Tensor::zeros([1, 16, 8, 5], &device)).is_err());
        assert!(a.forward(Tensor::zeros([1, 12, 8, 8], &device)).is_err());
        assert!(a.forward_tokens(Tensor::zeros([1, 15, 16], &device), [4, 4]).is_err());
        // widths not divisible by the heads, RoPE head widths not divisible by 4, even kernels
        let e = DownsampledAttentionConfig::new(18, 4).init(&device).unwrap_err().to_string();
        assert!(e.contains("multiple of the number of heads"), "{e}");
        assert!(DownsampledAttentionConfig::new(12, 2).init(&device).is_err());
        assert!(DownsampledAttentionConfig::new(12, 2).with_rope(false).init(&device).is_ok());
        assert!(DownsampledAttentionConfig::new(16, 2).with_downsampler_kernel(4).init(&device).is_err());
        assert!(DownsampledAttentionConfig::new(16, 2).with_down_factor(0).init(&device).is_err());
    }

    /// A DiT-style adaLN-Zero block (shared LayerNorm, modulation, MLP) whose self-attention
    /// is downsampled-token attention over the token grid.
    #[derive(Module, Debug)]
    struct DownsampledDiTBlock {
        attn: DownsampledAttention,
        mlp: Mlp,
        ada_ln_modulation: AdaLnModulation,
    }

    impl DownsampledDiTBlock {
        fn new(d: usize, heads: usize, device: &Device) -> Self {
            Self {
                attn: DownsampledAttentionConfig::new(d, heads).init(device).unwrap(),
                mlp: MlpConfig::new(d, 4 * d).init(device).unwrap(),
                ada_ln_modulation: AdaLnModulation::new(d, d, 6, true, device),
            }
        }

        fn forward(&self, x: Tensor<3>, c: Tensor<2>, grid: [usize; 2]) -> Result<Tensor<3>> {
            let ln = |t: Tensor<3>| layer_norm(t, 1e-6);
            let [s1, sc1, g1, s2, sc2, g2] = self.ada_ln_modulation.forward(c).try_into().unwrap();
            let x = gated_residual(x.clone(), g1, self.attn.forward_tokens(modulate(ln(x), s1, sc1), grid)?);
            Ok(gated_residual(x.clone(), g2, self.mlp.forward(modulate(ln(x), s2, sc2))))
        }
    }

    #[test]
    fn composes_into_a_dit_style_block() {
        let device = Device::flex().autodiff();
        let (d, grid) = (16, [4, 6]);
        let block = DownsampledDiTBlock::new(d, 2, &device);
        let x = uniform([2, 24, d], 1, &device);
        let c = uniform([2, d], 2, &device);
        // adaLN-Zero: the fresh block is the identity
        let out = block.forward(x.clone(), c.clone(), grid).unwrap();
        out.into_data().assert_approx_eq::<f32>(&x.clone().into_data(), Tolerance::absolute(0.0));
        // with trained (random) weights the attention branch is the layer's token forward,
        // and gradients reach the downsampler, the temperatures and the qkv projection
        let block = block.map(&mut Randomize::seeded(4));
        let out = block.forward(x.clone(), c.clone(), grid).unwrap();
        assert_eq!(out.dims(), [2, 24, d]);
        let grads = out.square().sum().backward();
        for g in [
            block.attn.downsampler.layer.weight.grad(&grads).map(|g| g.abs().sum().into_scalar::<f32>()),
            block.attn.logit_scale.as_ref().unwrap().grad(&grads).map(|g| g.abs().sum().into_scalar::<f32>()),
            block.attn.to_qkv.weight.grad(&grads).map(|g| g.abs().sum().into_scalar::<f32>()),
        ] {
            assert!(g.is_some_and(|g| g > 0.0), "{g:?}");
        }
    }
}

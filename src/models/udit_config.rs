//! The configuration of a [`UDiT`](crate::models::UDiT): every option of the official
//! `U_DiT_custom`, the presets U-DiT-S/B/L, and the analytic parameter and FLOP counts.

use burn::prelude::*;

use crate::blocks::UDiTBlockConfig;
use crate::error::{Error, Result, ensure_config, ensure_positive};
use crate::layers::downsampled_attention::{AttentionScore, DownsampledAttentionConfig, downsampled_attention_macs};
use crate::layers::dwconv_ffn::{DW_KERNEL, FfnForm, REP_DW_KERNELS};

/// Width of the sinusoidal timestep embedding (official `frequency_embedding_size`).
pub(crate) const FREQ_EMBED: usize = 256;

/// The three U-DiT sizes of the paper (official `U_DiT_S/B/L`; all with depth
/// `[2, 5, 8, 5, 2]`, MLP ratio 2, down factor 2, cosine attention, RoPE, 5x5 depthwise
/// downsampler with shortcut, re-parametrised FFN, input size 32).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum UDiTSize {
    /// U-DiT-S: width 96, 4 heads.
    S,
    /// U-DiT-B: width 192, 8 heads.
    B,
    /// U-DiT-L: width 384, 16 heads.
    L,
}

impl UDiTSize {
    /// `(hidden_size, num_heads)`.
    pub fn dims(self) -> (usize, usize) {
        match self {
            UDiTSize::S => (96, 4),
            UDiTSize::B => (192, 8),
            UDiTSize::L => (384, 16),
        }
    }
}

/// Configuration of a [`UDiT`]; field names follow the official constructor (`U_DiT` and
/// the keyword arguments it forwards to the attention).
#[derive(Config, Debug)]
pub struct UDiTConfig {
    /// Latent height = width `H`; a multiple of 4. Default: 32.
    #[config(default = 32)]
    pub input_size: usize,
    /// Latent channels. Default: 4.
    #[config(default = 4)]
    pub in_channels: usize,
    /// Width `C` of the first level (the others use `2C` and `4C`); even. Default: 1152.
    #[config(default = 1152)]
    pub hidden_size: usize,
    /// Blocks per level: encoder 1, encoder 2, latent, decoder 2, decoder 1.
    /// Default: `[2, 5, 8, 5, 2]`.
    #[config(default = "vec![2, 5, 8, 5, 2]")]
    pub depth: Vec<usize>,
    /// Attention heads at every level. Default: 16.
    #[config(default = 16)]
    pub num_heads: usize,
    /// FFN hidden width is `int(width * mlp_ratio)`. Default: 4.0 (the presets use 2).
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Train-time label dropout for classifier-free guidance. Default: 0.1.
    #[config(default = 0.1)]
    pub class_dropout_prob: f64,
    /// Number of classes; 0 builds an unconditional model. Default: 1000.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Predict the variance too (doubles the output channels). Default: true.
    #[config(default = true)]
    pub learn_sigma: bool,
    /// Attention down factor per level (same order as `depth`; the official `down_factor`
    /// int is the same value five times). Default: `[2, 2, 2, 2, 2]`.
    #[config(default = "vec![2, 2, 2, 2, 2]")]
    pub down_factor: Vec<usize>,
    /// Odd kernel of the depthwise downsampler (official `downsampler='dwconv{k}'`). Default: 5.
    #[config(default = 5)]
    pub downsampler_kernel: usize,
    /// Identity shortcut around the downsampler (official `down_shortcut`). Default: true.
    #[config(default = true)]
    pub down_shortcut: bool,
    /// Attention scores (official `attn_type`: `None` dot product, `'v2'` cosine).
    /// Default: cosine.
    #[config(default = "AttentionScore::Cosine")]
    pub attention_score: AttentionScore,
    /// 2-D RoPE in attention (official `posemb_type='rope2d'`). Default: true.
    #[config(default = true)]
    pub rope: bool,
    /// FFN structure (official `ffn_type='rep'` with `rep=1`: [`FfnForm::Reparam`], `rep=0`:
    /// [`FfnForm::Plain`]; `ffn_type='basic'`: [`FfnForm::Pointwise`]; [`FfnForm::Fused`]
    /// builds the inference form directly, e.g. to load fused weights).
    /// Default: re-parametrised.
    #[config(default = "FfnForm::Reparam")]
    pub ffn: FfnForm,
}

/// Number of U-DiT levels in `depth` / `down_factor` order.
pub const UDIT_LEVELS: usize = 5;

impl UDiTConfig {
    /// The names [`from_name`](Self::from_name) accepts.
    pub const PRESETS: &'static [&'static str] = &["U-DiT-S", "U-DiT-B", "U-DiT-L"];

    /// The paper's preset `U-DiT-{size}`, other fields as the official preset constructors.
    pub fn preset(size: UDiTSize) -> Self {
        let (hidden, heads) = size.dims();
        Self::new().with_hidden_size(hidden).with_num_heads(heads).with_mlp_ratio(2.0)
    }

    /// Parse a preset name: `"U-DiT-S"`, `"U-DiT-B"` or `"U-DiT-L"`.
    pub fn from_name(name: &str) -> Result<Self> {
        let size = match name {
            "U-DiT-S" => UDiTSize::S,
            "U-DiT-B" => UDiTSize::B,
            "U-DiT-L" => UDiTSize::L,
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "unknown U-DiT preset `{name}` (expected U-DiT-S, -B or -L)"
                )));
            }
        };
        Ok(Self::preset(size))
    }

    /// Output channels (`2 * in_channels` with `learn_sigma`).
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma { 2 * self.in_channels } else { self.in_channels }
    }

    /// Width of each level (`C, 2C, 4C, 2C, 2C`).
    pub fn level_widths(&self) -> [usize; UDIT_LEVELS] {
        let c = self.hidden_size;
        [c, 2 * c, 4 * c, 2 * c, 2 * c]
    }

    /// Grid side of each level (`H, H/2, H/4, H/2, H`).
    pub fn level_sizes(&self) -> [usize; UDIT_LEVELS] {
        let s = self.input_size;
        [s, s / 2, s / 4, s / 2, s]
    }

    /// The block configuration of level `level` (0..5).
    pub fn block_config(&self, level: usize) -> UDiTBlockConfig {
        let attention = DownsampledAttentionConfig::new(self.level_widths()[level], self.num_heads)
            .with_down_factor(self.down_factor.get(level).copied().unwrap_or(0))
            .with_downsampler_kernel(self.downsampler_kernel)
            .with_down_shortcut(self.down_shortcut)
            .with_score(self.attention_score)
            .with_rope(self.rope);
        UDiTBlockConfig::new(attention).with_mlp_ratio(self.mlp_ratio).with_ffn(self.ffn)
    }

    /// Checks every size constraint; called by [`init`](Self::init).
    pub fn validate(&self) -> Result<()> {
        ensure_positive(&[
            ("input_size", self.input_size),
            ("in_channels", self.in_channels),
            ("hidden_size", self.hidden_size),
            ("num_heads", self.num_heads),
        ])?;
        ensure_config(self.depth.len() == UDIT_LEVELS, || {
            format!("depth needs {UDIT_LEVELS} entries (enc1, enc2, latent, dec2, dec1), got {:?}", self.depth)
        })?;
        ensure_config(self.down_factor.len() == UDIT_LEVELS, || {
            format!("down_factor needs {UDIT_LEVELS} entries, got {:?}", self.down_factor)
        })?;
        ensure_config(self.hidden_size.is_multiple_of(2), || {
            format!("hidden_size {} must be even (the 2x downsampling conv halves it)", self.hidden_size)
        })?;
        ensure_config(self.input_size.is_multiple_of(4), || {
            format!("input_size {} must be a multiple of 4 (two 2x downsamplings)", self.input_size)
        })?;
        for (level, (&size, &f)) in self.level_sizes().iter().zip(&self.down_factor).enumerate() {
            ensure_config(f > 0 && size % f == 0, || {
                format!("level {level}: grid {size}x{size} is not divisible by the attention down factor {f}")
            })?;
        }
        for level in 0..UDIT_LEVELS {
            let block = self.block_config(level);
            block.attention.validate()?;
            let hidden = block.mlp_hidden();
            ensure_config(hidden > usize::from(self.ffn == FfnForm::Reparam), || {
                format!("mlp_ratio {} gives an FFN hidden width of {hidden} at level {level}", self.mlp_ratio)
            })?;
        }
        ensure_config((0.0..1.0).contains(&self.class_dropout_prob), || {
            format!("class_dropout_prob must lie in [0, 1), got {}", self.class_dropout_prob)
        })
    }
    /// Exact parameter count of the model in its configured FFN form (for
    /// [`FfnForm::Reparam`], the official state dict's `sum(p.numel())`), computed without
    /// building the model. Meaningful for configs that pass [`validate`](Self::validate).
    pub fn num_params(&self) -> usize {
        let conv = |i: usize, o: usize, k: usize, groups: usize, bias: bool| {
            o * (i / groups) * k * k + if bias { o } else { 0 }
        };
        let lin = |i: usize, o: usize| i * o + o;
        let c = self.hidden_size;
        let mut n = conv(self.in_channels, c, 3, 1, true);
        for d in [c, 2 * c, 4 * c] {
            n += lin(FREQ_EMBED, d) + lin(d, d);
            if self.num_classes > 0 {
                n += (self.num_classes + usize::from(self.class_dropout_prob > 0.0)) * d;
            }
        }
        for (level, &depth) in self.depth.iter().take(UDIT_LEVELS).enumerate() {
            let d = self.level_widths()[level];
            let h = self.block_config(level).mlp_hidden();
            let m = h / 2;
            let mut attn = conv(d, d, self.downsampler_kernel, d, true) + lin(d, 3 * d) + conv(d, d, 1, 1, true);
            if self.attention_score == AttentionScore::Cosine {
                attn += self.num_heads;
            }
            let ffn = match self.ffn {
                FfnForm::Reparam => {
                    conv(d, m, 1, 1, true)
                        + conv(m, h, 1, 1, true)
                        + REP_DW_KERNELS.iter().map(|&k| conv(h, h, k, h, true)).sum::<usize>()
                        + conv(h, m, 1, 1, true)
                        + conv(m, d, 1, 1, true)
                }
                FfnForm::Plain | FfnForm::Fused => {
                    conv(d, h, 1, 1, true) + conv(h, h, DW_KERNEL, h, true) + conv(h, d, 1, 1, true)
                }
                FfnForm::Pointwise => conv(d, h, 1, 1, true) + conv(h, d, 1, 1, true),
            };
            n += depth * 2 * (attn + ffn + lin(d, 6 * d));
        }
        n += conv(c, c / 2, 3, 1, false) + conv(2 * c, c, 3, 1, false); // down1_2, down2_3
        n += conv(4 * c, 8 * c, 3, 1, false) + conv(2 * c, 4 * c, 3, 1, false); // up3_2, up2_1
        n += conv(4 * c, 2 * c, 1, 1, true) + conv(2 * c, 2 * c, 1, 1, true); // reduce_chan
        n += conv(2 * c, 2 * c, 3, 1, true); // output
        n + lin(2 * c, 4 * c) + conv(2 * c, self.out_channels(), 3, 1, true)
    }

    /// Parameter count of the inference form (re-parametrised FFNs folded, as after
    /// [`UDiT::reparameterize`]): the paper's parameter column (U-DiT-B 204.42M,
    /// U-DiT-L 810.19M). Equals [`num_params`](Self::num_params) for the other FFN forms.
    pub fn num_params_inference(&self) -> usize {
        let form = if self.ffn == FfnForm::Reparam { FfnForm::Fused } else { self.ffn };
        self.clone().with_ffn(form).num_params()
    }

    /// Analytic inference cost per sample in multiply-accumulates (matmuls and convs), the
    /// convention of the paper's FLOPs column (`torchprofile.profile_macs` on the model in
    /// eval mode, so the re-parametrised FFN is counted in its fused form). Meaningful for
    /// configs that pass [`validate`](Self::validate).
    pub fn flops(&self) -> f64 {
        let c = self.hidden_size as f64;
        let sizes = self.level_sizes();
        let tokens = |level: usize| (sizes[level] * sizes[level]) as f64;
        let (n1, n2, n3) = (tokens(0), tokens(1), tokens(2));
        let mut f = n1 * self.in_channels as f64 * c * 9.0;
        for d in [c, 2.0 * c, 4.0 * c] {
            f += FREQ_EMBED as f64 * d + d * d;
        }
        for (level, &depth) in self.depth.iter().take(UDIT_LEVELS).enumerate() {
            let d = self.level_widths()[level];
            let (df, n) = (d as f64, tokens(level));
            let h = self.block_config(level).mlp_hidden() as f64;
            let factor = self.down_factor.get(level).copied().unwrap_or(1).max(1);
            let attn = downsampled_attention_macs(d, [sizes[level]; 2], factor, self.downsampler_kernel);
            let ffn = match self.ffn {
                FfnForm::Pointwise => 2.0 * n * df * h,
                _ => n * (2.0 * df * h + (DW_KERNEL * DW_KERNEL) as f64 * h),
            };
            f += depth as f64 * 2.0 * (attn + ffn + 6.0 * df * df);
        }
        f += n1 * c * (c / 2.0) * 9.0 + n2 * 2.0 * c * c * 9.0; // down1_2, down2_3
        f += n3 * 4.0 * c * 8.0 * c * 9.0 + n2 * 2.0 * c * 4.0 * c * 9.0; // up3_2, up2_1
        f += n2 * 4.0 * c * 2.0 * c + n1 * 2.0 * c * 2.0 * c; // reduce_chan
        f += n1 * 2.0 * c * 2.0 * c * 9.0; // output
        f + 2.0 * c * 4.0 * c + n1 * 2.0 * c * self.out_channels() as f64 * 9.0
    }
}

//! The configuration of a [`UDiT`]: every option of the official
//! `U_DiT_custom`, the presets U-DiT-S/B/L, the model shell they build, and the analytic
//! parameter and FLOP counts (the shell's).

use burn::prelude::*;

use crate::blocks::ConditionKind;
use crate::blocks::parts::{AttentionKind, ConditioningKind, FeedForwardKind};
use crate::error::{Error, Result, ensure_config, ensure_positive};
use crate::layers::downsampled_attention::AttentionScore;
use crate::layers::dwconv_ffn::FfnForm;
use crate::models::composed::{ComposedDiTConfig, HeadKind, StageLayout, StemKind};
use crate::models::udit::UDiT;

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

    /// The attention of level `level` (0..5): downsampled-token attention with the level's
    /// down factor.
    pub fn attention(&self, level: usize) -> AttentionKind {
        AttentionKind::Downsampled {
            down_factor: self.down_factor.get(level).copied().unwrap_or(0),
            kernel: self.downsampler_kernel,
            cosine: self.attention_score == AttentionScore::Cosine,
            rope: self.rope,
        }
    }

    /// The model shell this preset builds: the 3x3-conv stem, the U of [`Block`](crate::blocks::Block)s
    /// (each official `U_DiTBlock` is two: `attn1/mlp1` and `attn2/mlp2`, so every level has
    /// `2 * depth` blocks) of downsampled-token attention, depthwise-conv FFN and adaLN-Zero
    /// with `num_heads` heads at every level, a timestep and label embedder per level width,
    /// and the 3x3-conv head.
    pub fn shell(&self) -> ComposedDiTConfig {
        let depth = |i: usize| 2 * self.depth.get(i).copied().unwrap_or(0);
        ComposedDiTConfig::new()
            .with_stem(StemKind::Conv3x3)
            .with_head(HeadKind::Conv3x3)
            .with_input_size(self.input_size)
            .with_patch_size(1)
            .with_in_channels(self.in_channels)
            .with_learn_sigma(self.learn_sigma)
            .with_hidden_size(self.hidden_size)
            .with_num_heads(Some(self.num_heads))
            .with_stages(StageLayout::UShaped { depths: [depth(0), depth(1), depth(2), depth(3), depth(4)] })
            .with_attention(self.attention(0))
            .with_stage_attention(Some((0..UDIT_LEVELS).map(|i| self.attention(i)).collect()))
            .with_down_shortcut(self.down_shortcut)
            .with_feed_forward(FeedForwardKind::DwConv { form: self.ffn })
            .with_conditioning(ConditioningKind::AdaLnZero)
            .with_mlp_ratio(self.mlp_ratio)
            .with_condition(ConditionKind::labels(self.num_classes, self.class_dropout_prob))
    }

    /// Checks every size constraint; called by [`init`](Self::init).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the problem.
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
        ensure_config(self.input_size.is_multiple_of(4), || {
            format!("input_size {} must be a multiple of 4 (two 2x downsamplings)", self.input_size)
        })?;
        ensure_config(self.downsampler_kernel % 2 == 1, || {
            format!("downsampler kernel must be odd (same padding), got {}", self.downsampler_kernel)
        })?;
        ensure_config(!self.rope || self.hidden_size.is_multiple_of(4 * self.num_heads), || {
            format!("2-D RoPE needs a head width divisible by 4, got {} / {}", self.hidden_size, self.num_heads)
        })?;
        let hidden = (self.hidden_size as f64 * self.mlp_ratio) as usize;
        ensure_config(self.mlp_ratio > 0.0 && hidden > usize::from(self.ffn == FfnForm::Reparam), || {
            format!("mlp_ratio {} gives an FFN hidden width of {hidden}", self.mlp_ratio)
        })?;
        ensure_config((0.0..1.0).contains(&self.class_dropout_prob), || {
            format!("class_dropout_prob must lie in [0, 1), got {}", self.class_dropout_prob)
        })?;
        self.shell().validate()
    }

    /// Build the model (the [`shell`](Self::shell)) with the official initialisation
    /// (Xavier-uniform linears and convs, zero adaLN-Zero modulations and final layer).
    ///
    /// # Errors
    /// As [`validate`](Self::validate).
    pub fn init(&self, device: &Device) -> Result<UDiT> {
        self.validate()?;
        self.shell().init(device)
    }

    /// Exact parameter count of the model in its configured FFN form (for
    /// [`FfnForm::Reparam`], the official state dict's `sum(p.numel())`), computed without
    /// building the model. Meaningful for configs that pass [`validate`](Self::validate).
    pub fn num_params(&self) -> usize {
        self.shell().num_params()
    }

    /// Parameter count of the inference form (re-parametrised FFNs folded, as after
    /// [`UDiT::reparameterize`](crate::models::ComposedDiT::reparameterize)): the paper's
    /// parameter column (U-DiT-B 204.42M, U-DiT-L 810.19M). Equals
    /// [`num_params`](Self::num_params) for the other FFN forms.
    pub fn num_params_inference(&self) -> usize {
        self.inference_form().num_params()
    }

    fn inference_form(&self) -> Self {
        let form = if self.ffn == FfnForm::Reparam { FfnForm::Fused } else { self.ffn };
        self.clone().with_ffn(form)
    }

    /// Analytic inference cost per sample in multiply-accumulates (matmuls and convs), the
    /// convention of the paper's FLOPs column (`torchprofile.profile_macs` on the model in
    /// eval mode, so the re-parametrised FFN is counted in its fused form). Meaningful for
    /// configs that pass [`validate`](Self::validate).
    pub fn flops(&self) -> f64 {
        // only a mask ratio or an expert-choice MoE can fail the count; U-DiT has neither
        self.inference_form().shell().flops(0.0).unwrap_or(f64::NAN)
    }
}

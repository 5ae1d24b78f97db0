//! The configuration of a [`MicroDiT`](crate::models::MicroDiT): the reference constructor's
//! options, the presets `MicroDiT_Tiny_2` / `MicroDiT_XL_2`, per-block widths under layer-wise
//! scaling, and the analytic parameter and FLOP counts.

use burn::prelude::*;

use crate::blocks::microdit_block::{BlockStyle, MicroDiTBlockConfig};
use crate::error::{Error, Result, ensure_config, ensure_divisible, ensure_positive};
use crate::blocks::ConditionKind;
use crate::layers::moe::tokens_per_expert;
use crate::models::composed_config::{ComposedDiTConfig, MaskingConfig, StageLayout};
use crate::layers::swiglu::swiglu_hidden;
use crate::contracts::num_keep;

/// Which backbone and conditioning a [`MicroDiT`](crate::models::MicroDiT) uses.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MicroDiTBackbone {
    /// The reference text-to-image MicroDiT: caption embeddings, MicroDiT blocks
    /// ([`BlockStyle::MicroDiT`]), 512-frequency tanh-GELU timestep embedder.
    MicroDiT,
    /// A class-conditional DiT: label embedder, DiT adaLN-Zero blocks ([`BlockStyle::DiT`]),
    /// DiT's 256-frequency SiLU timestep embedder and final layer.
    DiT,
}

impl MicroDiTBackbone {
    /// The block design of this backbone.
    pub fn block_style(self) -> BlockStyle {
        match self {
            MicroDiTBackbone::MicroDiT => BlockStyle::MicroDiT,
            MicroDiTBackbone::DiT => BlockStyle::DiT,
        }
    }

    pub(crate) fn frequency_size(self) -> usize {
        match self {
            MicroDiTBackbone::MicroDiT => 512,
            MicroDiTBackbone::DiT => 256,
        }
    }
}

/// Where tokens are dropped when a mask is applied.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MaskingMode {
    /// After the patch-mixer (MicroDiT's deferred masking).
    Deferred,
    /// Right after the patch embedding, before the patch-mixer (the paper's naive baseline).
    Naive,
}

/// The named presets of the reference (`MicroDiT_Tiny_2`, `MicroDiT_XL_2`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MicroDiTSize {
    /// `MicroDiT_Tiny_2`: width 512, depth 16, head width 32, 4 mixer blocks of width 512.
    Tiny,
    /// `MicroDiT_XL_2`: width 1024, depth 28, head width 64, 6 mixer blocks of width 768
    /// (the paper's 1.16B-parameter sparse model).
    XL,
}

/// `numpy.linspace(start, end, num)`: `start + i * (end - start) / (num - 1)`, the last value
/// exactly `end`.
pub fn linspace(start: f64, end: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (end - start) / (num - 1) as f64;
    (0..num).map(|i| if i + 1 == num { end } else { start + i as f64 * step }).collect()
}

/// Configuration of a [`MicroDiT`](crate::models::MicroDiT); field names and defaults follow the reference `DiT`
/// constructor.
#[derive(Config, Debug)]
pub struct MicroDiTConfig {
    /// Latent height = width. Default: 32.
    #[config(default = 32)]
    pub input_size: usize,
    /// Patch size `p`. Default: 2.
    #[config(default = 2)]
    pub patch_size: usize,
    /// Latent channels (output channels too). Default: 4.
    #[config(default = 4)]
    pub in_channels: usize,
    /// Backbone width `D`. Default: 1152.
    #[config(default = 1152)]
    pub dim: usize,
    /// Number of backbone blocks. Default: 28.
    #[config(default = 28)]
    pub depth: usize,
    /// Width of one attention head. Default: 64.
    #[config(default = 64)]
    pub head_dim: usize,
    /// Feed-forward hidden widths are rounded up to a multiple of this. Default: 256.
    #[config(default = 256)]
    pub multiple_of: usize,
    /// Width of the caption embeddings (MicroDiT backbone). Default: 1024.
    #[config(default = 1024)]
    pub caption_channels: usize,
    /// Position-table interpolation: positions are divided by it (1.0 at 256px, 2.0 at 512px
    /// in the reference). Default: 1.0.
    #[config(default = 1.0)]
    pub pos_interp_scale: f64,
    /// LayerNorm epsilon (the DiT backbone's parameter-free LayerNorms: 1e-6 only).
    /// Default: 1e-6.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// Output-projection init std `0.02 / sqrt(2 (i + 1))` for block `i` (else
    /// `0.02 / sqrt(2 depth)`). Default: true.
    #[config(default = true)]
    pub depth_init: bool,
    /// Attention-width multipliers: one per block, or fewer that divide `depth` (each repeated
    /// over an equal run of blocks). Default: `[1.0]`.
    #[config(default = "vec![1.0]")]
    pub qkv_multipliers: Vec<f64>,
    /// Feed-forward-width multipliers, same length as `qkv_multipliers`. Default: `[4.0]`.
    #[config(default = "vec![4.0]")]
    pub ffn_multipliers: Vec<f64>,
    /// Run a patch-mixer before masking. Default: true.
    #[config(default = true)]
    pub use_patch_mixer: bool,
    /// Patch-mixer blocks. Default: 4.
    #[config(default = 4)]
    pub patch_mixer_depth: usize,
    /// Patch-mixer width (in/out maps are added when it differs from `dim`). Default: 512.
    #[config(default = 512)]
    pub patch_mixer_dim: usize,
    /// Patch-mixer attention-width multiplier. Default: 1.0.
    #[config(default = 1.0)]
    pub patch_mixer_qkv_ratio: f64,
    /// Patch-mixer feed-forward-width multiplier. Default: 1.0.
    #[config(default = 1.0)]
    pub patch_mixer_mlp_ratio: f64,
    /// Biases in attention, SwiGLU and patch-mixer maps (MicroDiT backbone). Default: true.
    #[config(default = true)]
    pub use_bias: bool,
    /// Experts per MoE feed-forward. Default: 8.
    #[config(default = 8)]
    pub num_experts: usize,
    /// Expert capacity factor. Default: 1.0.
    #[config(default = 1.0)]
    pub expert_capacity: f64,
    /// Every `n`-th block (`(i + 1) % n == 0`) has an MoE feed-forward; the last backbone block
    /// and the first mixer block never do; 0 disables MoE. Default: 2.
    #[config(default = 2)]
    pub experts_every_n: usize,
    /// Backbone and conditioning. Default: MicroDiT (captions).
    #[config(default = "MicroDiTBackbone::MicroDiT")]
    pub backbone: MicroDiTBackbone,
    /// Number of classes (DiT backbone). Default: 1000.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Train-time condition dropout of [`MicroDiT::forward_train`](crate::models::MicroDiT::forward_train): labels become the null
    /// class (DiT backbone; a positive value adds the null row), captions become zero
    /// embeddings (the reference's `cap_drop_prob`). Default: 0.1.
    #[config(default = 0.1)]
    pub cond_dropout_prob: f64,
    /// Predict the variance too (doubles the output channels, DiT backbone). Default: false.
    #[config(default = false)]
    pub learn_sigma: bool,
    /// Where masks are applied. Default: deferred (after the patch-mixer).
    #[config(default = "MaskingMode::Deferred")]
    pub masking: MaskingMode,
    /// Mask ratio of [`MicroDiT::forward_train`](crate::models::MicroDiT::forward_train); 0 trains unmasked (the final fine-tuning
    /// phase). Default: 0.0.
    #[config(default = 0.0)]
    pub train_mask_ratio: f64,
}

impl MicroDiTConfig {
    /// The names [`from_name`](Self::from_name) accepts (the reference's).
    pub const PRESETS: &'static [&'static str] = &["MicroDiT_Tiny_2", "MicroDiT_XL_2"];

    /// The reference preset `MicroDiT_{Tiny,XL}_2` with its defaults: captions of width 1024,
    /// linearly spaced multipliers qkv 0.5 -> 1.0 and FFN 0.5 -> 4.0, 8 experts of capacity 2
    /// in every second block, no biases.
    pub fn preset(size: MicroDiTSize) -> Self {
        let (dim, depth, head_dim, mixer_depth, mixer_dim) = match size {
            MicroDiTSize::Tiny => (512, 16, 32, 4, 512),
            MicroDiTSize::XL => (1024, 28, 64, 6, 768),
        };
        Self::new()
            .with_dim(dim)
            .with_depth(depth)
            .with_head_dim(head_dim)
            .with_multiple_of(256)
            .with_caption_channels(1024)
            .with_patch_mixer_depth(mixer_depth)
            .with_patch_mixer_dim(mixer_dim)
            .with_patch_mixer_qkv_ratio(1.0)
            .with_patch_mixer_mlp_ratio(4.0)
            .with_use_bias(false)
            .with_num_experts(8)
            .with_expert_capacity(2.0)
            .with_experts_every_n(2)
            .with_layerwise_scaling([0.5, 1.0], [0.5, 4.0])
    }

    /// Parse a preset name: `"MicroDiT_Tiny_2"` or `"MicroDiT_XL_2"`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "MicroDiT_Tiny_2" => Ok(Self::preset(MicroDiTSize::Tiny)),
            "MicroDiT_XL_2" => Ok(Self::preset(MicroDiTSize::XL)),
            _ => Err(Error::InvalidConfig(format!(
                "unknown MicroDiT preset `{name}` (expected MicroDiT_Tiny_2 or MicroDiT_XL_2)"
            ))),
        }
    }

    /// Layer-wise scaling as the presets build it: per-block multipliers
    /// `linspace(qkv[0], qkv[1], depth)` and `linspace(ffn[0], ffn[1], depth)`. Call it after
    /// setting `depth`.
    pub fn with_layerwise_scaling(self, qkv: [f64; 2], ffn: [f64; 2]) -> Self {
        let d = self.depth.max(1);
        self.with_qkv_multipliers(linspace(qkv[0], qkv[1], d)).with_ffn_multipliers(linspace(ffn[0], ffn[1], d))
    }

    /// Output channels (`2 * in_channels` with `learn_sigma`).
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma { 2 * self.in_channels } else { self.in_channels }
    }

    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.input_size / self.patch_size.max(1)
    }

    /// Number of image tokens `N`.
    pub fn num_tokens(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Per-block `(qkv, ffn)` multipliers, expanded to `depth` entries as the reference does.
    pub fn block_ratios(&self) -> Result<Vec<(f64, f64)>> {
        let (q, f) = (&self.qkv_multipliers, &self.ffn_multipliers);
        ensure_config(!q.is_empty() && q.len() == f.len(), || {
            format!("qkv_multipliers ({}) and ffn_multipliers ({}) must be non-empty and of equal length", q.len(), f.len())
        })?;
        ensure_config(self.depth.is_multiple_of(q.len()), || {
            format!("depth {} is not divisible by the {} width multipliers", self.depth, q.len())
        })?;
        let run = self.depth / q.len();
        Ok(q.iter().zip(f).flat_map(|(&a, &b)| std::iter::repeat_n((a, b), run)).collect())
    }

    /// Which backbone blocks have an MoE feed-forward: `(i + 1) % experts_every_n == 0`, never
    /// the last block.
    pub fn backbone_moe_blocks(&self) -> Vec<bool> {
        let n = self.experts_every_n;
        (0..self.depth).map(|i| n > 0 && i + 1 < self.depth && (i + 1) % n == 0).collect()
    }

    /// Which patch-mixer blocks have an MoE feed-forward: `(i + 1) % experts_every_n == 0`,
    /// never the first block.
    pub fn mixer_moe_blocks(&self) -> Vec<bool> {
        let n = self.experts_every_n;
        let depth = if self.use_patch_mixer { self.patch_mixer_depth } else { 0 };
        (0..depth).map(|i| n > 0 && i >= 1 && (i + 1) % n == 0).collect()
    }

    /// Configuration of backbone block `i` (layer-wise scaled widths).
    pub fn block_config(&self, i: usize) -> Result<MicroDiTBlockConfig> {
        let ratios = self.block_ratios()?;
        let (q, f) = *ratios.get(i).ok_or_else(|| Error::InvalidArgument(format!("no block {i}")))?;
        let std = if self.depth_init {
            0.02 / (2.0 * (i + 1) as f64).sqrt()
        } else {
            0.02 / (2.0 * self.depth as f64).sqrt()
        };
        Ok(self.common_block(self.dim, q, f, self.backbone_moe_blocks()[i], std))
    }

    /// Configuration of patch-mixer block `i`.
    pub fn mixer_block_config(&self, i: usize) -> MicroDiTBlockConfig {
        let moe = self.mixer_moe_blocks().get(i).copied().unwrap_or(false);
        let std = 0.02 / (2.0 * self.depth as f64).sqrt();
        self.common_block(self.patch_mixer_dim, self.patch_mixer_qkv_ratio, self.patch_mixer_mlp_ratio, moe, std)
    }

    pub(crate) fn common_block(&self, d: usize, qkv: f64, ffn: f64, moe: bool, std: f64) -> MicroDiTBlockConfig {
        MicroDiTBlockConfig::new(d, self.dim, self.head_dim)
            .with_qkv_ratio(qkv)
            .with_mlp_ratio(ffn)
            .with_multiple_of(self.multiple_of)
            .with_style(self.backbone.block_style())
            .with_bias(self.use_bias)
            .with_norm_eps(self.norm_eps)
            .with_moe(moe)
            .with_num_experts(self.num_experts)
            .with_expert_capacity(self.expert_capacity)
            .with_init_std(std)
    }

    pub(crate) fn has_mixer_maps(&self) -> bool {
        self.use_patch_mixer && self.patch_mixer_dim != self.dim
    }

    /// Tokens seen by the patch-mixer and by the backbone at mask ratio `ratio`.
    pub(crate) fn token_counts(&self, ratio: f64) -> Result<(usize, usize)> {
        let n = self.num_tokens();
        let k = num_keep(n, ratio)?;
        let mixer = if self.masking == MaskingMode::Naive { k } else { n };
        Ok((mixer, k))
    }

    /// Checks every size constraint; called by [`init`](Self::init).
    pub fn validate(&self) -> Result<()> {
        ensure_positive(&[
            ("input_size", self.input_size),
            ("patch_size", self.patch_size),
            ("in_channels", self.in_channels),
            ("dim", self.dim),
            ("depth", self.depth),
            ("head_dim", self.head_dim),
            ("multiple_of", self.multiple_of),
        ])?;
        ensure_divisible("input_size", self.input_size, "patch_size", self.patch_size)?;
        ensure_divisible("dim", self.dim, "head_dim", self.head_dim)?;
        ensure_config(self.pos_interp_scale > 0.0, || "pos_interp_scale must be positive".into())?;
        ensure_config((0.0..1.0).contains(&self.train_mask_ratio), || {
            format!("train_mask_ratio must lie in [0, 1), got {}", self.train_mask_ratio)
        })?;
        ensure_config((0.0..1.0).contains(&self.cond_dropout_prob), || {
            format!("cond_dropout_prob must lie in [0, 1), got {}", self.cond_dropout_prob)
        })?;
        match self.backbone {
            MicroDiTBackbone::MicroDiT => {
                ensure_config(self.caption_channels > 0, || "caption_channels must be positive".into())?;
                ensure_config(!self.learn_sigma, || "learn_sigma is only available with the DiT backbone".into())?;
            }
            MicroDiTBackbone::DiT => ensure_config(self.num_classes > 0, || "num_classes must be positive".into())?,
        }
        if self.use_patch_mixer {
            ensure_config(self.patch_mixer_depth > 0 && self.patch_mixer_dim > 0, || {
                "the patch-mixer needs a positive depth and width".into()
            })?;
            ensure_divisible("patch_mixer_dim", self.patch_mixer_dim, "head_dim", self.head_dim)?;
        }
        for i in 0..self.depth {
            self.block_config(i)?.validate()?;
        }
        for i in 0..self.mixer_moe_blocks().len() {
            self.mixer_block_config(i).validate()?;
        }
        let any_moe = self.backbone_moe_blocks().iter().chain(&self.mixer_moe_blocks()).any(|m| *m);
        if any_moe {
            ensure_config(self.num_experts > 0, || "MoE blocks need num_experts > 0".into())?;
            ensure_config(self.expert_capacity > 0.0 && self.expert_capacity <= self.num_experts as f64, || {
                format!("expert_capacity must lie in (0, num_experts], got {}", self.expert_capacity)
            })?;
        }
        // every expert must take at least one token, unmasked and at the training mask ratio
        for ratio in [0.0, self.train_mask_ratio] {
            let (mixer, backbone) = self.token_counts(ratio)?;
            if self.mixer_moe_blocks().iter().any(|m| *m) {
                tokens_per_expert(self.expert_capacity, self.num_experts, mixer)?;
            }
            if self.backbone_moe_blocks().iter().any(|m| *m) {
                tokens_per_expert(self.expert_capacity, self.num_experts, backbone)?;
            }
        }
        Ok(())
    }

    /// Number of parameters as the reference's `model.parameters()` counts them (the fixed
    /// `pos_embed` and `mask_token` buffers excluded; see [`num_buffer_elements`](Self::num_buffer_elements)).
    pub fn num_params(&self) -> usize {
        self.count_params().0
    }

    /// Parameters used per token: as [`num_params`](Self::num_params), with every MoE layer
    /// counted as `expert_capacity` experts (the expected number of experts processing a token
    /// under expert-choice routing) instead of all `num_experts`.
    pub fn num_active_params(&self) -> usize {
        self.count_params().1.round() as usize
    }

    /// Elements of the persisted but untrained buffers (`pos_embed`, `mask_token`), which a
    /// [`MicroDiT`](crate::models::MicroDiT) module stores as frozen parameters.
    pub fn num_buffer_elements(&self) -> usize {
        self.num_tokens() * self.dim + self.patch_size * self.patch_size * self.out_channels()
    }

    pub(crate) fn count_params(&self) -> (usize, f64) {
        // the shell counts the buffers as (frozen) parameters; the reference does not
        let total = self.shell().map_or(0, |s| s.num_params()).saturating_sub(self.num_buffer_elements());
        let mut blocks: Vec<MicroDiTBlockConfig> = (0..self.mixer_moe_blocks().len()).map(|i| self.mixer_block_config(i)).collect();
        blocks.extend((0..self.depth).filter_map(|i| self.block_config(i).ok()));
        // expert-choice routing: a token meets `expert_capacity` of the `num_experts` experts
        let idle: f64 = blocks
            .iter()
            .filter(|b| b.moe)
            .map(|b| (b.num_experts as f64 - b.expert_capacity) * (2 * b.d_model * b.ffn_hidden()) as f64)
            .sum();
        (total, total as f64 - idle)
    }

    /// The model shell this preset builds: patch stem with the (interpolated) sin-cos table,
    /// one flat stage of the explicit MicroDiT blocks ([`block_config`](Self::block_config)),
    /// masking (deferred or naive) behind the patch-mixer and its maps, the caption path (or
    /// DiT's label table) with a 512-frequency tanh-GELU (DiT: 256, SiLU) timestep embedder,
    /// and the final layer (weighted LayerNorm, tanh-GELU adaLN for the MicroDiT backbone).
    ///
    /// # Errors
    /// Width multipliers that do not fit `depth`.
    pub fn shell(&self) -> Result<ComposedDiTConfig> {
        let micro = self.backbone == MicroDiTBackbone::MicroDiT;
        let condition = match micro {
            true => ConditionKind::Caption {
                caption_channels: self.caption_channels,
                head_dim: self.head_dim,
                multiple_of: self.multiple_of,
                bias: self.use_bias,
                norm_eps: self.norm_eps,
            },
            false => ConditionKind::Labels { num_classes: self.num_classes, dropout_prob: self.cond_dropout_prob },
        };
        let mixer_depth = self.mixer_moe_blocks().len();
        let masking = MaskingConfig::new()
            .with_mixer_depth(mixer_depth)
            .with_train_mask_ratio(self.train_mask_ratio)
            .with_mixer_width(self.use_patch_mixer.then_some(self.patch_mixer_dim))
            .with_map_bias(self.use_bias)
            .with_naive(self.masking == MaskingMode::Naive);
        let blocks = (0..self.depth).map(|i| Ok(self.block_config(i)?.block_config())).collect::<Result<Vec<_>>>()?;
        Ok(ComposedDiTConfig::new()
            .with_input_size(self.input_size)
            .with_patch_size(self.patch_size)
            .with_in_channels(self.in_channels)
            .with_learn_sigma(self.learn_sigma)
            .with_hidden_size(self.dim)
            .with_head_dim(self.head_dim)
            .with_stages(StageLayout::Flat { depth: self.depth })
            .with_condition(condition)
            .with_masking(Some(masking))
            .with_blocks(Some(blocks))
            .with_mixer_blocks(Some((0..mixer_depth).map(|i| self.mixer_block_config(i).block_config()).collect()))
            .with_pos_interp_scale(self.pos_interp_scale)
            .with_timestep_frequency_size(self.backbone.frequency_size())
            .with_activation(self.backbone.block_style().modulation_activation())
            .with_final_norm_weight(micro)
            .with_norm_eps(self.norm_eps))
    }

    /// Forward cost per image, in multiply-accumulates (one fused multiply-add counts one, as
    /// the DiT paper's "Gflops" and [`DiTConfig::flops`](crate::models::DiTConfig::flops)), at
    /// mask ratio `mask_ratio` with `caption_tokens` caption tokens (ignored by the DiT
    /// backbone). Matrix products and attention are counted; norms, activations and
    /// element-wise ops are not. MoE layers count the router and the `E * k` token-expert
    /// evaluations.
    pub fn flops(&self, mask_ratio: f64, caption_tokens: usize) -> Result<f64> {
        let (mixer_tokens, kept) = self.token_counts(mask_ratio)?;
        let (d, p) = (self.dim as f64, self.patch_size as f64);
        let micro = self.backbone == MicroDiTBackbone::MicroDiT;
        let n = self.num_tokens() as f64;
        let lt = if micro { caption_tokens } else { 0 };
        let l = lt as f64;
        let mut total = n * self.in_channels as f64 * p * p * d; // patch embedding
        total += self.backbone.frequency_size() as f64 * d + d * d; // timestep embedder
        if micro {
            let h = swiglu_hidden(4 * self.dim, self.multiple_of) as f64;
            total += l * (self.caption_channels as f64 * d + d * d); // caption projection
            total += l * 4.0 * d * d + 2.0 * l * l * d + 3.0 * l * d * h; // prompt block
            total += 2.0 * d * d; // pooled caption MLP
        }
        if self.use_patch_mixer {
            let m = self.patch_mixer_dim as f64;
            if self.has_mixer_maps() {
                total += mixer_tokens as f64 * d * m + kept as f64 * m * d + l * d * m;
            }
            for i in 0..self.patch_mixer_depth {
                total += self.mixer_block_config(i).block_config().macs(mixer_tokens, [0, 0], lt)?;
            }
        }
        for i in 0..self.depth {
            total += self.block_config(i)?.block_config().macs(kept, [0, 0], lt)?;
        }
        total += 2.0 * d * d + kept as f64 * d * p * p * self.out_channels() as f64; // final layer
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_numpy() {
        // numpy: start + i * step, step = (end - start) / (num - 1)
        assert_eq!(linspace(0.5, 4.0, 4), vec![0.5, 1.6666666666666667, 2.8333333333333335, 4.0]);
        assert_eq!(linspace(0.5, 1.0, 1), vec![0.5]);
        assert_eq!(linspace(0.5, 1.0, 3), vec![0.5, 0.75, 1.0]);
    }

    #[test]
    fn preset_sizes() {
        // the paper's 1.16B-parameter sparse model
        let xl = MicroDiTConfig::from_name("MicroDiT_XL_2").unwrap();
        assert_eq!(xl.num_params(), 1_165_442_320);
        assert_eq!(xl.num_active_params(), 712_457_488);
        let tiny = MicroDiTConfig::from_name("MicroDiT_Tiny_2").unwrap();
        assert_eq!(tiny.num_params(), 200_692_752);
        assert!(MicroDiTConfig::from_name("MicroDiT_M_2").is_err());
        xl.validate().unwrap();
        tiny.validate().unwrap();
    }
}

//! Configuration of the [`ComposedDiT`](crate::models::ComposedDiT), the one model shell:
//! patch size, widths, the stage layout (flat or U-shaped), the block parts, layer-wise
//! scaling, the condition and deferred masking.

use burn::prelude::*;

use crate::blocks::parts::{AttentionKind, ConditioningKind, FeedForwardKind, LayerwiseScaling};
use crate::blocks::{BlockConfig, ConditionEmbedderConfig, ConditionKind};
use crate::error::{Result, ensure_config, ensure_divisible, ensure_positive};
use crate::layers::attention::QkNorm;
use crate::layers::timestep_embed::TimestepEmbedderConfig;

/// How the blocks are arranged.
#[derive(Config, Debug, PartialEq, Eq)]
pub enum StageLayout {
    /// One stage of `depth` blocks at width `D` on the full grid (DiT).
    Flat {
        /// Number of blocks.
        depth: usize,
    },
    /// U-DiT's U: encoder stages at `D`, `2D`, `4D` on grids `g`, `g/2`, `g/4` (3x3 conv +
    /// pixel-unshuffle between them), decoder stages at `2D` on `g/2` and `g` (conv +
    /// pixel-shuffle, skip concatenation fused by a 1x1 conv); `depths` of the five stages.
    UShaped {
        /// Blocks of encoder 1, encoder 2, latent, decoder 2, decoder 1.
        depths: [usize; 5],
    },
}

impl StageLayout {
    /// `(width multiplier, grid divisor)` of each stage.
    pub fn stages(&self) -> Vec<(usize, usize, usize)> {
        match self {
            StageLayout::Flat { depth } => vec![(1, 1, *depth)],
            StageLayout::UShaped { depths } => {
                [(1, 1), (2, 2), (4, 4), (2, 2), (2, 1)].iter().zip(depths).map(|(&(w, g), &n)| (w, g, n)).collect()
            }
        }
    }

    /// Number of blocks.
    pub fn depth(&self) -> usize {
        self.stages().iter().map(|s| s.2).sum()
    }
}

/// Deferred masking (MicroDiT): a patch-mixer of `mixer_depth` blocks runs on every token,
/// then only the kept tokens go through the backbone.
#[derive(Config, Debug, PartialEq)]
pub struct MaskingConfig {
    /// Patch-mixer blocks (same parts as the backbone, unscaled). Default: 2.
    #[config(default = 2)]
    pub mixer_depth: usize,
    /// Mask ratio of training forwards (`MaskedDenoiser::draw_train_mask`). Default: 0.5.
    #[config(default = 0.5)]
    pub train_mask_ratio: f64,
}

/// Configuration of a [`ComposedDiT`](crate::models::ComposedDiT). The defaults are
/// DiT-S/2 (class-conditional, fixed variance).
#[derive(Config, Debug)]
pub struct ComposedDiTConfig {
    /// Latent height = width. Default: 32.
    #[config(default = 32)]
    pub input_size: usize,
    /// Patch size. Default: 2.
    #[config(default = 2)]
    pub patch_size: usize,
    /// Latent channels. Default: 4.
    #[config(default = 4)]
    pub in_channels: usize,
    /// Predict the variance too (doubles the output channels). Default: false.
    #[config(default = false)]
    pub learn_sigma: bool,
    /// Width `D` (of the first stage). Default: 384.
    #[config(default = 384)]
    pub hidden_size: usize,
    /// Head width; every stage has `width / head_dim` heads. Default: 64.
    #[config(default = 64)]
    pub head_dim: usize,
    /// Stage layout. Default: 12 blocks, flat.
    #[config(default = "StageLayout::Flat { depth: 12 }")]
    pub stages: StageLayout,
    /// Attention part of every block. Default: multi-head.
    #[config(default = "AttentionKind::MultiHead")]
    pub attention: AttentionKind,
    /// Feed-forward part. Default: GELU MLP.
    #[config(default = "FeedForwardKind::Mlp")]
    pub feed_forward: FeedForwardKind,
    /// Conditioning part. Default: adaLN-Zero.
    #[config(default = "ConditioningKind::AdaLnZero")]
    pub conditioning: ConditioningKind,
    /// Per-head QK norm. Default: none.
    #[config(default = "QkNorm::None")]
    pub qk_norm: QkNorm,
    /// FFN ratio (without layer-wise scaling). Default: 4.0.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Layer-wise scaling of the widths over all backbone blocks. Default: none.
    #[config(default = "None")]
    pub scaling: Option<LayerwiseScaling>,
    /// What conditions the model besides the timestep. Default: 1000 classes, dropout 0.1.
    #[config(default = "ConditionKind::Labels { num_classes: 1000, dropout_prob: 0.1 }")]
    pub condition: ConditionKind,
    /// Deferred masking with a patch-mixer. Default: none.
    #[config(default = "None")]
    pub masking: Option<MaskingConfig>,
}

impl ComposedDiTConfig {
    /// Output channels (`2 * in_channels` with `learn_sigma`).
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma { 2 * self.in_channels } else { self.in_channels }
    }

    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.input_size / self.patch_size.max(1)
    }

    /// Width of the final layer (`D` flat, `2D` U-shaped).
    pub fn final_width(&self) -> usize {
        self.stages.stages().last().map_or(1, |s| s.0) * self.hidden_size
    }

    /// Widths of the condition embedders: one per distinct stage width (`D`; `D, 2D, 4D`).
    pub fn cond_widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.stages.stages().iter().map(|s| s.0 * self.hidden_size).collect();
        w.sort_unstable();
        w.dedup();
        w
    }

    /// The condition embedder of width `d` (DiT's timestep embedder: 256 frequencies, SiLU).
    pub fn condition_embedder(&self, d: usize) -> ConditionEmbedderConfig {
        ConditionEmbedderConfig::new(TimestepEmbedderConfig::new(d)).with_condition(self.condition.clone())
    }

    /// The block config of backbone block `index` (of all stages, in order) at width `d`;
    /// `scaled`: apply layer-wise scaling (not for patch-mixer blocks).
    pub fn block_config(&self, index: usize, d: usize, scaled: bool) -> BlockConfig {
        let hd = self.head_dim.max(1);
        let (hidden, heads, ratio) = match (&self.scaling, scaled) {
            (Some(s), true) => s.block(index, self.stages.depth(), d, hd),
            _ => (d, d / hd, self.mlp_ratio),
        };
        BlockConfig::new(d, heads.max(1))
            .with_attention(self.attention.clone())
            .with_feed_forward(self.feed_forward.clone())
            .with_conditioning(self.conditioning)
            .with_qk_norm(self.qk_norm)
            .with_mlp_ratio(ratio)
            .with_attn_hidden(Some(hidden))
    }

    /// Checks every size and that the parts fit the layout; called by `init`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] naming the problem: zero sizes, widths not divisible
    /// by the head width, a grid the layout or the parts cannot split, masking with parts
    /// that need the full grid, in-context tokens with grid parts, a mask ratio outside
    /// `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        ensure_positive(&[
            ("input_size", self.input_size),
            ("patch_size", self.patch_size),
            ("in_channels", self.in_channels),
            ("hidden_size", self.hidden_size),
            ("head_dim", self.head_dim),
        ])?;
        ensure_divisible("input_size", self.input_size, "patch_size", self.patch_size)?;
        ensure_config(self.hidden_size.is_multiple_of(self.head_dim) && self.hidden_size.is_multiple_of(4), || {
            format!("hidden_size {} must be a multiple of head_dim {} and of 4", self.hidden_size, self.head_dim)
        })?;
        ensure_config(self.stages.depth() > 0, || "the model needs at least one block".to_string())?;
        let g = self.grid_size();
        let u_shaped = matches!(self.stages, StageLayout::UShaped { .. });
        ensure_config(!u_shaped || g.is_multiple_of(4), || format!("a U-shaped layout needs a grid divisible by 4, got {g}"))?;
        if let AttentionKind::Downsampled { down_factor, .. } = self.attention {
            let smallest = if u_shaped { g / 4 } else { g };
            ensure_config(down_factor > 0 && smallest.is_multiple_of(down_factor), || {
                format!("downsampled attention with factor {down_factor} needs every stage grid divisible by it (smallest {smallest})")
            })?;
        }
        let grid_parts = self.block_config(0, self.hidden_size, false).needs_grid();
        ensure_config(!(grid_parts && self.conditioning == ConditioningKind::InContext), || {
            "in-context condition tokens cannot join parts that need the token grid".to_string()
        })?;
        if let Some(m) = &self.masking {
            ensure_config(!u_shaped && !grid_parts, || {
                "deferred masking needs a flat layout of parts that do not need the full token grid (no downsampled \
                 attention or depthwise-conv FFN)"
                    .to_string()
            })?;
            ensure_config((0.0..1.0).contains(&m.train_mask_ratio), || {
                format!("train_mask_ratio must lie in [0, 1), got {}", m.train_mask_ratio)
            })?;
        }
        if let Some(s) = &self.scaling {
            s.validate()?;
        }
        Ok(())
    }
}

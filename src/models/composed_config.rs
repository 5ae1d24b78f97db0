//! Configuration of the [`ComposedDiT`](crate::models::ComposedDiT), the one model shell:
//! the stem and head, patch size, widths, the stage layout (flat or U-shaped), the block
//! parts, layer-wise scaling, the condition (and diffusers' per-block embedders) and deferred
//! masking. DiT ([`DiTConfig`](crate::models::DiTConfig)), U-DiT
//! ([`UDiTConfig`](crate::models::UDiTConfig)), MicroDiT
//! ([`MicroDiTConfig`](crate::models::MicroDiTConfig)) and MM-DiT
//! ([`MMDiTConfig`](crate::models::MMDiTConfig)) are presets that build one of these.

use burn::prelude::*;

use crate::blocks::parts::{AttentionKind, ConditioningKind, FeedForwardKind, LayerwiseScaling};
use crate::blocks::{BlockConfig, ConditionEmbedderConfig, ConditionKind};
use crate::error::{Result, ensure_config, ensure_divisible, ensure_positive};
use crate::layers::activation::Activation;
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

/// How the latent becomes tokens.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum StemKind {
    /// Patchify (a conv with kernel = stride = `p`, key `x_embedder.proj`) plus the fixed 2-D
    /// sin-cos position table `pos_embed` (DiT).
    Patch,
    /// A 3x3 "same" conv with stride 1 and no position table (U-DiT's `x_embedder`; positions
    /// come from the attention's RoPE); needs `patch_size` 1.
    Conv3x3,
}

/// How the last stage's tokens become the output.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// The final layer with a linear projection per token, then unpatchify (DiT).
    Linear,
    /// A 3x3 conv `output` on the token map, then the final layer with a 3x3-conv projection
    /// (U-DiT); needs the full grid (no masking).
    Conv3x3,
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
    /// Patch-mixer width; when it differs from `D`, `LayerNorm + Linear` maps lead into the
    /// mixer (`patch_mixer_map_xin`), out of it after masking (`patch_mixer_map_xout`) and,
    /// for caption conditioning, map the caption tokens (`patch_mixer_map_y`). Default: `D`.
    #[config(default = "None")]
    pub mixer_width: Option<usize>,
    /// Biases on the mixer maps' linears. Default: true.
    #[config(default = true)]
    pub map_bias: bool,
    /// Mask before the patch-mixer instead of after it (MicroDiT's naive baseline).
    /// Default: false.
    #[config(default = false)]
    pub naive: bool,
}

/// Configuration of a [`ComposedDiT`](crate::models::ComposedDiT). The defaults are
/// DiT-S/2 (class-conditional, fixed variance).
#[derive(Config, Debug)]
pub struct ComposedDiTConfig {
    /// Stem. Default: patchify with the sin-cos table.
    #[config(default = "StemKind::Patch")]
    pub stem: StemKind,
    /// Head. Default: linear final layer.
    #[config(default = "HeadKind::Linear")]
    pub head: HeadKind,
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
    /// The same number of heads at every stage (U-DiT), instead of `width / head_dim`.
    /// Default: None.
    #[config(default = "None")]
    pub num_heads: Option<usize>,
    /// Stage layout. Default: 12 blocks, flat.
    #[config(default = "StageLayout::Flat { depth: 12 }")]
    pub stages: StageLayout,
    /// Attention part of every block. Default: multi-head.
    #[config(default = "AttentionKind::MultiHead")]
    pub attention: AttentionKind,
    /// Attention part of each stage (e.g. U-DiT's per-level down factors), overriding
    /// `attention`; one entry per stage. Default: None.
    #[config(default = "None")]
    pub stage_attention: Option<Vec<AttentionKind>>,
    /// Identity shortcut around the depthwise conv of downsampled-token attention (U-DiT's
    /// `down_shortcut`). Default: true.
    #[config(default = true)]
    pub down_shortcut: bool,
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
    /// Timestep frequency shift (0 official DiT, 1 diffusers' DiT). Default: 0.
    #[config(default = 0.0)]
    pub timestep_freq_shift: f64,
    /// Give every block after the first its own condition embedder (diffusers'
    /// `DiTTransformer2DModel`); block 0 and the final layer use the stage's. Flat layout
    /// only. Default: false.
    #[config(default = false)]
    pub per_block_embedders: bool,
    /// Deferred masking with a patch-mixer. Default: none.
    #[config(default = "None")]
    pub masking: Option<MaskingConfig>,
    /// Explicit backbone blocks, one per block (flat layout), overriding the part options,
    /// `mlp_ratio` and `scaling` (MicroDiT's per-block widths, MoE placement and init).
    /// Default: none.
    #[config(default = "None")]
    pub blocks: Option<Vec<BlockConfig>>,
    /// Explicit patch-mixer blocks, one per mixer block, of the mixer width. Default: none.
    #[config(default = "None")]
    pub mixer_blocks: Option<Vec<BlockConfig>>,
    /// Positions of the sin-cos table are divided by this (MicroDiT's `pos_interp_scale`).
    /// Default: 1.0.
    #[config(default = 1.0)]
    pub pos_interp_scale: f64,
    /// Frequencies of the timestep embedding (DiT 256, MicroDiT 512). Default: 256.
    #[config(default = 256)]
    pub timestep_frequency_size: usize,
    /// Activation of the timestep MLP and in front of the final layer's adaLN linear (DiT
    /// SiLU, MicroDiT tanh-GELU). Default: SiLU.
    #[config(default = "Activation::Silu")]
    pub activation: Activation,
    /// A weight on the final layer's LayerNorm (MicroDiT). Default: false.
    #[config(default = false)]
    pub final_norm_weight: bool,
    /// Epsilon of the final layer's and the mixer maps' LayerNorms. Default: 1e-6.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// An `M x M` sin-cos table centre-cropped to each input's patch grid (SD3's
    /// `pos_embed_max_size`; positions `sd3_grid_coords(M, input_size / p, pos_interp_scale)`):
    /// inputs of any size up to `M p` on each side. Flat layout without masking only.
    /// Default: none (a fixed grid of `input_size / p`).
    #[config(default = "None")]
    pub pos_embed_max_size: Option<usize>,
    /// Width of per-token context (text) embeddings, projected to `D` by a
    /// `context_embedder` and carried through the blocks (MM-DiT's joint blocks update it).
    /// Default: none.
    #[config(default = "None")]
    pub context_dim: Option<usize>,
    /// Output channels other than `in_channels` (or twice it with `learn_sigma`).
    /// Default: none.
    #[config(default = "None")]
    pub output_channels: Option<usize>,
}

impl ComposedDiTConfig {
    /// Output channels (`2 * in_channels` with `learn_sigma`).
    pub fn out_channels(&self) -> usize {
        match (self.output_channels, self.learn_sigma) {
            (Some(c), _) => c,
            (None, true) => 2 * self.in_channels,
            (None, false) => self.in_channels,
        }
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
        let timestep = TimestepEmbedderConfig::new(d)
            .with_downscale_freq_shift(self.timestep_freq_shift)
            .with_frequency_embedding_size(self.timestep_frequency_size)
            .with_activation(self.activation);
        ConditionEmbedderConfig::new(timestep).with_condition(self.condition.clone())
    }

    /// Number of per-block condition embedders (blocks 1.. with `per_block_embedders`).
    pub fn num_block_embedders(&self) -> usize {
        if self.per_block_embedders { self.stages.depth().saturating_sub(1) } else { 0 }
    }

    /// The attention part of stage `stage`.
    pub fn attention_of(&self, stage: usize) -> &AttentionKind {
        self.stage_attention.as_ref().and_then(|a| a.get(stage)).unwrap_or(&self.attention)
    }

    /// Width of the patch-mixer (`D` unless `MaskingConfig::mixer_width` says otherwise).
    pub fn mixer_width(&self) -> usize {
        self.masking.as_ref().and_then(|m| m.mixer_width).unwrap_or(self.hidden_size)
    }

    /// Whether the mixer maps exist (a mixer narrower or wider than `D`).
    pub fn has_mixer_maps(&self) -> bool {
        self.masking.as_ref().is_some_and(|m| m.mixer_depth > 0) && self.mixer_width() != self.hidden_size
    }

    /// The block config of patch-mixer block `i` (the explicit one, or the parts unscaled
    /// at the mixer width).
    pub fn mixer_block_config(&self, i: usize) -> BlockConfig {
        match self.mixer_blocks.as_ref().and_then(|b| b.get(i)) {
            Some(b) => b.clone(),
            None => self.block_config(0, 0, self.mixer_width(), false).with_d_cond(Some(self.hidden_size)),
        }
    }

    /// The block config of backbone block `index` (of all stages, in order) in stage `stage`
    /// at width `d` (the explicit one if `blocks` is set); `scaled`: apply layer-wise scaling
    /// (not for patch-mixer blocks).
    pub fn block_config(&self, index: usize, stage: usize, d: usize, scaled: bool) -> BlockConfig {
        if let (Some(b), true) = (self.blocks.as_ref().and_then(|b| b.get(index)), scaled) {
            return b.clone();
        }
        let hd = self.head_dim.max(1);
        let (hidden, heads, ratio) = match (&self.scaling, scaled) {
            (Some(s), true) => s.block(index, self.stages.depth(), d, hd),
            _ => (d, self.num_heads.unwrap_or(d / hd), self.mlp_ratio),
        };
        BlockConfig::new(d, heads.max(1))
            .with_attention(self.attention_of(stage).clone())
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
    /// by the head width (or head count), a grid the layout or the parts cannot split, masking
    /// with parts that need the full grid, in-context tokens with grid parts, a stem or head
    /// the options exclude, a mask ratio outside `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        ensure_positive(&[
            ("input_size", self.input_size),
            ("patch_size", self.patch_size),
            ("in_channels", self.in_channels),
            ("hidden_size", self.hidden_size),
            ("head_dim", self.head_dim),
        ])?;
        if self.pos_embed_max_size.is_none() {
            // with a cropped table, `input_size / p` is only the table's base size
            ensure_divisible("input_size", self.input_size, "patch_size", self.patch_size)?;
        }
        ensure_config(self.num_heads != Some(0), || "num_heads must be positive".to_string())?;
        match self.num_heads {
            Some(h) => ensure_divisible("hidden_size", self.hidden_size, "num_heads", h)?,
            None => ensure_divisible("hidden_size", self.hidden_size, "head_dim", self.head_dim)?,
        }
        let patch_stem = self.stem == StemKind::Patch;
        ensure_config(!patch_stem || self.hidden_size.is_multiple_of(4), || {
            format!("hidden_size {} must be a multiple of 4 for the 2-D sin-cos table", self.hidden_size)
        })?;
        ensure_config(patch_stem || self.patch_size == 1, || {
            format!("the 3x3-conv stem does not patchify: patch_size must be 1, got {}", self.patch_size)
        })?;
        ensure_config(self.stages.depth() > 0, || "the model needs at least one block".to_string())?;
        let g = self.grid_size();
        let stages = self.stages.stages();
        let u_shaped = matches!(self.stages, StageLayout::UShaped { .. });
        ensure_config(!u_shaped || g.is_multiple_of(4), || format!("a U-shaped layout needs a grid divisible by 4, got {g}"))?;
        ensure_config(!u_shaped || self.hidden_size.is_multiple_of(2), || {
            format!("a U-shaped layout halves hidden_size {} when downsampling: it must be even", self.hidden_size)
        })?;
        ensure_config(!self.per_block_embedders || !u_shaped, || "per-block embedders need the flat layout".to_string())?;
        if let Some(a) = &self.stage_attention {
            ensure_config(a.len() == stages.len(), || {
                format!("stage_attention needs one entry per stage ({}), got {}", stages.len(), a.len())
            })?;
        }
        let mut grid_parts = false;
        for (s, &(w, div, _)) in stages.iter().enumerate() {
            if let AttentionKind::Downsampled { down_factor, .. } = *self.attention_of(s) {
                let side = g / div;
                ensure_config(down_factor > 0 && side.is_multiple_of(down_factor), || {
                    format!("downsampled attention with factor {down_factor} needs stage {s}'s grid {side} divisible by it")
                })?;
            }
            grid_parts |= self.block_config(0, s, w * self.hidden_size, false).needs_grid();
        }
        ensure_config(self.blocks.is_none() || !u_shaped, || "explicit `blocks` need the flat layout".to_string())?;
        let mixer_depth = self.masking.as_ref().map_or(0, |m| m.mixer_depth);
        let explicit = [
            ("blocks", &self.blocks, self.stages.depth(), self.hidden_size),
            ("mixer_blocks", &self.mixer_blocks, mixer_depth, self.mixer_width()),
        ];
        for (name, list, n, d) in explicit {
            let Some(list) = list else { continue };
            ensure_config(list.len() == n, || format!("`{name}` needs {n} entries, got {}", list.len()))?;
            for b in list {
                ensure_config(b.d_model == d, || format!("`{name}` blocks must be {d} wide, got {}", b.d_model))?;
                grid_parts |= b.needs_grid();
            }
        }
        ensure_config(self.pos_embed_max_size.is_none() || (!u_shaped && self.masking.is_none() && patch_stem), || {
            "a cropped position table needs the patch stem, the flat layout and no masking".to_string()
        })?;
        ensure_config(self.pos_embed_max_size != Some(0) && self.context_dim != Some(0) && self.output_channels != Some(0), || {
            "pos_embed_max_size, context_dim and output_channels must be positive".to_string()
        })?;
        ensure_config(self.pos_interp_scale > 0.0 && self.timestep_frequency_size > 0 && self.mixer_width() > 0, || {
            "pos_interp_scale, timestep_frequency_size and the mixer width must be positive".to_string()
        })?;
        ensure_config(!(grid_parts && self.conditioning == ConditioningKind::InContext), || {
            "in-context condition tokens cannot join parts that need the token grid".to_string()
        })?;
        if let Some(m) = &self.masking {
            ensure_config(!u_shaped && !grid_parts && self.head == HeadKind::Linear, || {
                "deferred masking needs a flat layout, a linear head and parts that do not need the full token grid \
                 (no downsampled attention or depthwise-conv FFN)"
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

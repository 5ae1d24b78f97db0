//! The one model shell: a diffusion transformer composed from parts. DiT, U-DiT, MicroDiT and
//! MM-DiT are presets of it ([`DiTConfig`](crate::models::DiTConfig), [`UDiTConfig`](crate::models::UDiTConfig),
//! [`MicroDiTConfig`](crate::models::MicroDiTConfig), [`MMDiTConfig`](crate::models::MMDiTConfig)).
//!
//! ```text
//! x [B, C, H, W] ─► stem: patchify + sin-cos positions (DiT) | 3x3 conv (U-DiT) ─► tokens [B, N, D]
//! (t, condition) ─► ConditionEmbedder (one per stage width; per block with diffusers' layout)
//!                   ─► c, context tokens; adaLN-single: c ─► t_block (SiLU, Linear(D, 6D))
//! masking:  [keep (naive)] ─► [map_xin] ─► patch-mixer blocks ─► keep the unmasked tokens ─► [map_xout]
//! stages:   flat: Block x depth
//!           U-shaped: enc1 (D, g) ─► down ─► enc2 (2D, g/2) ─► down ─► latent (4D, g/4)
//!                     ─► up ⊕ enc2 ─► 1x1 ─► dec2 (2D, g/2) ─► up ⊕ enc1 ─► 1x1 ─► dec1 (2D, g)
//! head:     FinalLayer (linear) | 3x3 conv `output` + FinalLayer (3x3 conv) on the map
//!           ─► masking: restore (removed tokens = mask_token) ─► unpatchify [B, C_out, H, W]
//! ```
//!
//! Every block is a [`Block`] of the configured parts; the shell implements
//! [`Denoiser`](crate::contracts::Denoiser) (class labels or nothing, see
//! `composed_denoiser.rs`) and, with masking, [`MaskedDenoiser`](crate::contracts::MaskedDenoiser).
//!
//! ```
//! use burn::prelude::*;
//! use diffusion_transformers::blocks::parts::{AttentionKind, ConditioningKind, FeedForwardKind};
//! use diffusion_transformers::models::{ComposedDiTConfig, StageLayout};
//!
//! # fn main() -> Result<(), diffusion_transformers::Error> {
//! let device = Device::flex();
//! let model = ComposedDiTConfig::new()
//!     .with_input_size(16).with_hidden_size(32).with_head_dim(8)
//!     .with_stages(StageLayout::UShaped { depths: [1, 1, 1, 1, 1] })
//!     .with_attention(AttentionKind::Downsampled { down_factor: 2, kernel: 3, cosine: true, rope: true })
//!     .with_feed_forward(FeedForwardKind::Moe { num_experts: 4, capacity: 2.0, multiple_of: 8 })
//!     .with_conditioning(ConditioningKind::AdaLnSingle)
//!     .init(&device)?;
//! let x = Tensor::<4>::zeros([2, 4, 16, 16], &device);
//! let t = Tensor::<1>::from_floats([10.0, 500.0], &device);
//! let y = Tensor::<1, Int>::from_ints([3, 1000], &device); // 1000: the null class
//! assert_eq!(model.forward(x, t, Some(y))?.dims(), [2, 4, 16, 16]);
//! # Ok(()) }
//! ```

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use rand::Rng;

use crate::blocks::parts::{AttentionPart, BlockCondition, ConditioningKind, FeedForwardPart};
use crate::blocks::{Block, BlockConfig, ConditionEmbedder, ConditionInput, EmbeddedCondition, FinalLayer, FinalLayerConfig};
use crate::blocks::microdit_block::NormLinear;
use crate::blocks::{ConditionKind, FinalProjectionKind, UDiTResample};
use crate::contracts::TokenMask;
use crate::error::{Error, Result, ensure_dims};
use crate::layers::adaln::AdaLnModulation;
use crate::layers::dwconv_ffn::{FfnForm, same_conv2d};
use crate::layers::init::{WeightInit, conv2d, frozen_param, linear};
use crate::layers::pos_embed_cropped::{CroppedPosEmbedConfig, crop_table};
use burn::nn::Linear;
use crate::layers::patch_embed::unpatchify;
use crate::layers::pos_embed::sincos_2d_from_coords;
use crate::layers::PatchEmbedConfig;

pub use super::composed_stem::Stem;
pub(crate) use super::composed_stem::{to_map, to_tokens};
pub use super::composed_config::{ComposedDiTConfig, HeadKind, MaskingConfig, StageLayout, StemKind};

impl ComposedDiTConfig {
    /// Build the model: DiT's initialisation for the patch embedding, embedders and final
    /// layer, U-DiT's for the 3x3-conv stem and head, each part's own for the blocks.
    ///
    /// # Errors
    /// As [`validate`](Self::validate), and whatever a part refuses.
    pub fn init(&self, device: &Device) -> Result<ComposedDiT> {
        self.validate()?;
        let (d, c, p) = (self.hidden_size, self.in_channels, self.patch_size);
        let g = self.grid_size();
        let widths = self.cond_widths();
        let mut index = 0;
        let mut stages = Vec::new();
        for (s, (w, _, n)) in self.stages.stages().into_iter().enumerate() {
            let mut blocks = Vec::new();
            for _ in 0..n {
                blocks.push(self.build_block(self.block_config(index, s, w * d, true), device)?);
                index += 1;
            }
            stages.push(blocks);
        }
        let u_shaped = matches!(self.stages, StageLayout::UShaped { .. });
        let (resample, reduce) = if u_shaped {
            (
                vec![
                    UDiTResample::down(d, device),
                    UDiTResample::down(2 * d, device),
                    UDiTResample::up(4 * d, device),
                    UDiTResample::up(2 * d, device),
                ],
                vec![same_conv2d([4 * d, 2 * d], 1, 1, true, false, device), same_conv2d([2 * d, 2 * d], 1, 1, true, false, device)],
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let (x_embedder, pos_embed) = match self.stem {
            StemKind::Patch if self.pos_embed_max_size.is_some() => {
                let m = self.pos_embed_max_size.unwrap_or(g);
                let table = CroppedPosEmbedConfig::new(d, m, g).with_interpolation_scale(self.pos_interp_scale).init(device)?;
                (Stem::Patch(PatchEmbedConfig::new(c, d, p).init(device)?), Some(table.table))
            }
            StemKind::Patch => {
                // numpy: arange(g, float32) / pos_interp_scale
                let coords: Vec<f64> = (0..g).map(|i| (i as f32 / self.pos_interp_scale as f32) as f64).collect();
                let table = sincos_2d_from_coords(d, &coords, &coords)?;
                let pos = Tensor::<2>::from_data(TensorData::new(table, [g * g, d]), device).unsqueeze_dim::<3>(0);
                (Stem::Patch(PatchEmbedConfig::new(c, d, p).init(device)?), Some(frozen_param(pos)))
            }
            StemKind::Conv3x3 => (Stem::Conv(conv2d([c, d], [3, 3], [1, 1], [1, 1], 1, true, WeightInit::XavierUniform, device)), None),
        };
        let (fw, p2c) = (self.final_width(), p * p * self.out_channels());
        let (output, projection) = match self.head {
            HeadKind::Linear => (None, FinalProjectionKind::Linear),
            HeadKind::Conv3x3 => (Some(same_conv2d([fw, fw], 3, 1, true, false, device)), FinalProjectionKind::Conv3x3),
        };
        let mixer_depth = self.masking.as_ref().map_or(0, |m| m.mixer_depth);
        let (maps, m, eps) = (self.has_mixer_maps(), self.mixer_width(), self.norm_eps);
        let map_bias = self.masking.as_ref().is_some_and(|m| m.map_bias);
        let caption = matches!(self.condition, ConditionKind::Caption { .. });
        Ok(ComposedDiT {
            x_embedder,
            pos_embed,
            cond_embedders: widths.iter().map(|&w| self.condition_embedder(w).init(device)).collect::<Result<_>>()?,
            block_embedders: (0..self.num_block_embedders()).map(|_| self.condition_embedder(d).init(device)).collect::<Result<_>>()?,
            t_blocks: match self.conditioning {
                ConditioningKind::AdaLnSingle => widths.iter().map(|&w| AdaLnModulation::new(w, w, 6, false, device)).collect(),
                _ => Vec::new(),
            },
            context_embedder: self.context_dim.map(|j| linear(j, d, true, WeightInit::XavierUniform, device)),
            patch_mixer: (0..mixer_depth).map(|i| self.build_block(self.mixer_block_config(i), device)).collect::<Result<_>>()?,
            patch_mixer_map_xin: maps.then(|| NormLinear::new(d, m, map_bias, eps, device)),
            patch_mixer_map_xout: maps.then(|| NormLinear::new(m, d, map_bias, eps, device)),
            patch_mixer_map_y: (maps && caption).then(|| NormLinear::new(d, m, map_bias, eps, device)),
            stages,
            resample,
            reduce,
            mask_token: self.masking.is_some().then(|| frozen_param(Tensor::zeros([1, 1, p2c], device))),
            output,
            final_layer: FinalLayerConfig::new(fw, p2c)
                .with_projection(projection)
                .with_norm_weight(self.final_norm_weight)
                .with_norm_eps(eps)
                .with_activation(self.activation)
                .init(device)?,
            input_size: self.input_size,
            patch_size: p,
            in_channels: c,
            out_channels: self.out_channels(),
            in_context: self.conditioning == ConditioningKind::InContext,
            train_mask_ratio: self.masking.as_ref().map_or(0.0, |m| m.train_mask_ratio),
            naive_masking: self.masking.as_ref().is_some_and(|m| m.naive),
            pos_embed_max_size: self.pos_embed_max_size,
        })
    }

    /// A block of `config`, with `down_shortcut` applied to downsampled-token attention (an
    /// option [`AttentionKind`](crate::blocks::parts::AttentionKind) does not carry).
    fn build_block(&self, config: BlockConfig, device: &Device) -> Result<Block> {
        let mut block = config.init(device)?;
        if let AttentionPart::Downsampled(a) = &mut block.attn {
            a.downsampler.shortcut = self.down_shortcut;
        }
        Ok(block)
    }
}

/// The condition embedder (by width) of each stage of the U: `D, 2D, 4D, 2D, 2D`.
const U_CONDITION: [usize; 5] = [0, 1, 2, 1, 1];
/// The grid of each stage of the U: `g >> shift` (`g, g/2, g/4, g/2, g`).
const U_GRID_SHIFT: [usize; 5] = [0, 1, 2, 1, 0];

/// A diffusion transformer composed from parts; see the [module docs](self).
#[derive(Module, Debug)]
pub struct ComposedDiT {
    /// Stem (`x_embedder`).
    pub x_embedder: Stem,
    /// Fixed 2-D sin-cos table `[1, N, D]` (patch stem only).
    pub pos_embed: Option<Param<Tensor<3>>>,
    /// One condition embedder per stage width (`D`; or `D, 2D, 4D`).
    pub cond_embedders: Vec<ConditionEmbedder>,
    /// Embedders of blocks 1.. (`per_block_embedders`, diffusers' DiT layout).
    pub block_embedders: Vec<ConditionEmbedder>,
    /// adaLN-single's shared regressions `SiLU, Linear(w, 6w)`, one per stage width.
    pub t_blocks: Vec<AdaLnModulation>,
    /// Projection of the context (text) tokens to `D` (MM-DiT's `context_embedder`).
    pub context_embedder: Option<Linear>,
    /// Patch-mixer blocks (deferred masking), on every token.
    pub patch_mixer: Vec<Block>,
    /// `D -> D_mixer` map into the patch-mixer (only when the widths differ).
    pub patch_mixer_map_xin: Option<NormLinear>,
    /// `D_mixer -> D` map out of the patch-mixer (applied after masking).
    pub patch_mixer_map_xout: Option<NormLinear>,
    /// `D -> D_mixer` map of the caption tokens for the patch-mixer.
    pub patch_mixer_map_y: Option<NormLinear>,
    /// The stages of blocks (one flat stage, or five of the U).
    pub stages: Vec<Vec<Block>>,
    /// U-shaped: down 1-2, down 2-3, up 3-2, up 2-1.
    pub resample: Vec<UDiTResample>,
    /// U-shaped: 1x1 convs fusing the skip concatenations (`4D -> 2D`, `2D -> 2D`).
    pub reduce: Vec<Conv2d>,
    /// Fill value of removed patches `[1, 1, p*p*C_out]` (zeros, never trained; masking
    /// only).
    pub mask_token: Option<Param<Tensor<3>>>,
    /// 3x3 conv on the last stage's map (conv head only).
    pub output: Option<Conv2d>,
    /// Final layer.
    pub final_layer: FinalLayer,
    /// Latent height = width.
    pub input_size: usize,
    /// Patch size.
    pub patch_size: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// In-context conditioning (condition tokens prepended to every stage).
    pub in_context: bool,
    /// Mask ratio of training forwards (0 without masking).
    pub train_mask_ratio: f64,
    /// Masks are applied before the patch-mixer (the naive baseline), not after it.
    pub naive_masking: bool,
    /// Side `M` of a centre-cropped `M x M` position table (inputs of any size up to `M p`).
    pub pos_embed_max_size: Option<usize>,
}

/// What a [`ComposedDiT`]'s condition embedders compute from `(t, condition)`.
#[derive(Debug, Clone)]
pub struct ComposedCondition {
    /// One per stage width (`D`; or `D, 2D, 4D`); the first conditions the flat stage and
    /// block 0, the one of the last stage conditions the head.
    pub stages: Vec<EmbeddedCondition>,
    /// Blocks 1.. with their own embedders (empty unless `per_block_embedders`).
    pub blocks: Vec<EmbeddedCondition>,
}

/// Class labels (or nothing) as the condition input.
pub(crate) fn labels(y: &Option<Tensor<1, Int>>) -> ConditionInput<'_> {
    y.as_ref().map_or(ConditionInput::None, ConditionInput::Labels)
}

impl ComposedDiT {
    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.input_size / self.patch_size
    }

    /// Number of image tokens `N`.
    pub fn num_tokens(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Number of backbone blocks.
    pub fn depth(&self) -> usize {
        self.stages.iter().map(Vec::len).sum()
    }

    /// Whether the model was built with deferred masking.
    pub fn has_masking(&self) -> bool {
        self.mask_token.is_some()
    }

    /// Number of real classes (0 unless class-conditional); label `num_classes` is the null
    /// class.
    pub fn num_classes(&self) -> usize {
        self.cond_embedders[0].labels().map_or(0, |e| e.num_classes)
    }

    /// The form of the depthwise-conv FFNs (U-DiT), if the blocks have them.
    pub fn ffn_form(&self) -> Option<FfnForm> {
        self.stages.iter().flatten().find_map(|b| match &b.mlp {
            FeedForwardPart::DwConv(m) => Some(m.form),
            _ => None,
        })
    }

    /// The model with every depthwise-conv FFN folded into its inference form (U-DiT's
    /// official `model.eval()`); outputs are unchanged up to float rounding. Models without
    /// re-parametrised FFNs are returned as they are.
    pub fn reparameterize(&self) -> Self {
        let mut out = self.clone();
        for block in out.stages.iter_mut().flatten() {
            if let FeedForwardPart::DwConv(m) = &block.mlp {
                block.mlp = FeedForwardPart::DwConv(m.reparameterize());
            }
        }
        out
    }

    /// Shapes and the condition's kind, then [`crate::validate::model_inputs`] (non-empty
    /// batch, dtype, finite values, timestep range).
    pub(crate) fn check_inputs(&self, x: Tensor<4>, t: Tensor<1>, cond: ConditionInput<'_>) -> Result<(Tensor<4>, Tensor<1>)> {
        let s = if self.pos_embed_max_size.is_some() { None } else { Some(self.input_size) };
        ensure_dims("x", x.dims(), [None, Some(self.in_channels), s, s])?;
        let b = x.dims()[0];
        if t.dims()[0] != 1 {
            ensure_dims("t", t.dims(), [Some(b)])?;
        }
        self.cond_embedders[0].check(cond, b)?;
        let (x, t) = crate::validate::model_inputs(x, t, self.x_embedder.dtype())?;
        Ok((x, if t.dims()[0] == 1 && b != 1 { t.expand([b]) } else { t }))
    }

    /// The stem plus the position table (if any).
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]` -> `[B, N, D]`
    ///
    /// # Errors
    /// [`Error::Shape`] for a wrong channel count or a size the stem cannot take.
    pub fn embed(&self, x: Tensor<4>) -> Result<Tensor<3>> {
        let grid = self.grid_of(&x);
        let tokens = self.x_embedder.forward(x)?;
        Ok(match (&self.pos_embed, self.pos_embed_max_size) {
            (Some(pos), Some(m)) => tokens + crop_table(pos.val(), m, grid)?,
            (Some(pos), None) => tokens + pos.val(),
            (None, _) => tokens,
        })
    }

    /// The patch grid `[H / p, W / p]` of a latent.
    fn grid_of(&self, x: &Tensor<4>) -> [usize; 2] {
        let [_, _, h, w] = x.dims();
        [h / self.patch_size, w / self.patch_size]
    }

    /// The conditioning from timesteps and the condition; where `drop` is true, labels become
    /// the null class (captions / pooled vectors zeros) in every embedder.
    ///
    /// # Shapes
    /// - `t`: `[B]`; `cond` as the model's condition; `drop`: `[B]`
    ///
    /// # Errors
    /// As [`ConditionEmbedder::forward`].
    pub fn embed_condition(&self, t: Tensor<1>, cond: ConditionInput<'_>, drop: Option<Tensor<1, Bool>>) -> Result<ComposedCondition> {
        self.embed_condition_with(t, cond, |_| drop.clone())
    }

    fn embed_condition_with(
        &self,
        t: Tensor<1>,
        cond: ConditionInput<'_>,
        mut drop: impl FnMut(&ConditionEmbedder) -> Option<Tensor<1, Bool>>,
    ) -> Result<ComposedCondition> {
        let mut embed = |list: &[ConditionEmbedder]| -> Result<Vec<EmbeddedCondition>> {
            list.iter().map(|e| e.forward(t.clone(), cond, drop(e))).collect()
        };
        Ok(ComposedCondition { stages: embed(&self.cond_embedders)?, blocks: embed(&self.block_embedders)? })
    }

    /// The block condition of embedder output `e` at stage width index `i`.
    fn condition(&self, i: usize, e: &EmbeddedCondition) -> BlockCondition {
        let c = e.vector();
        let shared = self.t_blocks.get(i).map(|t| t.forward(c.clone()));
        let context = Some(e.context.clone().unwrap_or_else(|| e.tokens()));
        BlockCondition { c, shared, context }
    }

    fn run_stage(
        &self,
        blocks: &[Block],
        x: Tensor<3>,
        grid: Option<[usize; 2]>,
        cond: &BlockCondition,
        per_block: &[BlockCondition],
        skip: &[usize],
    ) -> Result<Tensor<3>> {
        let extra = match (self.in_context, &cond.context) {
            (true, Some(ctx)) => Some(ctx.clone()),
            _ => None,
        };
        let m = extra.as_ref().map_or(0, |e| e.dims()[1]);
        let mut h = match extra {
            Some(e) => Tensor::cat(vec![e, x], 1),
            None => x,
        };
        let mut own = cond.clone(); // the context stream, updated by two-stream blocks
        for (i, block) in blocks.iter().enumerate() {
            if skip.contains(&i) {
                continue;
            }
            let c = i.checked_sub(1).and_then(|k| per_block.get(k)).unwrap_or(&own);
            if matches!(block.attn, AttentionPart::TwoStream(_)) {
                let (out, context) = block.forward_joint(h, grid, c)?;
                (h, own.context) = (out, context);
            } else {
                h = block.forward(h, grid, c)?;
            }
        }
        let [b, n, d] = h.dims();
        Ok(if m > 0 { h.slice([0..b, m..n, 0..d]) } else { h })
    }

    /// Runs backbone block `i` (counted over all stages) alone on `x`, with the condition its
    /// stage (or its own embedder) gives; the token grid is passed when `x` covers it.
    ///
    /// # Shapes
    /// - `x`: `[B, N, D_stage]` -> `[B, N, D_stage]`
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an index past the last block, [`Error::Shape`] for a
    /// wrong width.
    pub fn forward_block(&self, i: usize, x: Tensor<3>, cond: &ComposedCondition) -> Result<Tensor<3>> {
        let past = || Error::InvalidArgument(format!("block {i} of {}", self.depth()));
        let (mut s, mut k) = (0, i);
        while k >= self.stages.get(s).ok_or_else(past)?.len() {
            k -= self.stages[s].len();
            s += 1;
        }
        let e = match i.checked_sub(1).and_then(|j| cond.blocks.get(j)) {
            Some(own) => self.condition(0, own),
            None => {
                let w = if self.stages.len() == 1 { 0 } else { U_CONDITION[s] };
                self.condition(w, cond.stages.get(w).ok_or_else(past)?)
            }
        };
        let side = self.grid_size() >> U_GRID_SHIFT.get(s).copied().unwrap_or(0);
        let grid = (x.dims()[1] == side * side).then_some([side, side]);
        self.stages[s][k].forward(x, grid, &e)
    }

    /// Forward with an optional mask and forced condition dropout.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]`; `t`: `[B]`; `cond` as the model's condition; `drop`: `[B]`;
    ///   `mask` over `B` samples and `N` tokens
    /// - output: `[B, C_out, H, W]` (removed patches hold `mask_token`)
    ///
    /// # Errors
    /// [`Error::Shape`] for wrong shapes or an empty batch, [`Error::InvalidArgument`] for
    /// the wrong kind of condition, labels outside the table, a mask on a model without
    /// masking or `|t| > 1e5`, [`Error::Numerical`] for NaN/inf inputs.
    pub fn forward_with(
        &self,
        x: Tensor<4>,
        t: Tensor<1>,
        cond: ConditionInput<'_>,
        drop: Option<Tensor<1, Bool>>,
        mask: Option<&TokenMask>,
    ) -> Result<Tensor<4>> {
        let (x, t) = self.check_inputs(x, t, cond)?;
        if let Some(m) = mask {
            if !self.has_masking() {
                return Err(Error::InvalidArgument("this model was built without masking (ComposedDiTConfig::masking)".into()));
            }
            ensure_dims("mask", [m.batch(), m.num_tokens()], [Some(x.dims()[0]), Some(self.num_tokens())])?;
        }
        let embedded = self.embed_condition(t, cond, drop)?;
        self.forward_condition(x, &embedded, mask, None, &[])
    }

    /// The network on checked inputs with a computed condition, on the CPU pool's threads
    /// ([`crate::cpu::on_workers`]).
    pub(crate) fn forward_condition(
        &self,
        x: Tensor<4>,
        cond: &ComposedCondition,
        mask: Option<&TokenMask>,
        context: Option<Tensor<3>>,
        skip: &[usize],
    ) -> Result<Tensor<4>> {
        crate::cpu::on_workers(&x.device(), || {
            let mut conds: Vec<BlockCondition> = cond.stages.iter().enumerate().map(|(i, e)| self.condition(i, e)).collect();
            if context.is_some() {
                conds[0].context = context;
            }
            let per_block: Vec<BlockCondition> = cond.blocks.iter().map(|e| self.condition(0, e)).collect();
            let [gh, gw] = self.grid_of(&x);
            let g = self.grid_size();
            let tokens = self.embed(x)?;
            let (tokens, grid) = self.run_mixer(tokens, g, &conds[0], mask)?;
            let (h, c_final) = if self.stages.len() == 1 {
                let grid = grid.map(|_| [gh, gw]);
                (self.run_stage(&self.stages[0], tokens, grid, &conds[0], &per_block, skip)?, &conds[0])
            } else {
                self.run_u(tokens, g, &conds)?
            };
            let mut out = match &self.output {
                Some(conv) => to_tokens(self.final_layer.forward_map(conv.forward(to_map(h, g)), c_final.c.clone())?),
                None => self.final_layer.forward(h, c_final.c.clone())?,
            };
            if let (Some(m), Some(fill)) = (mask, &self.mask_token) {
                out = m.restore(out, fill.val().flatten::<1>(0, 2))?;
            }
            Ok(unpatchify(out, self.patch_size, self.out_channels, [gh, gw]))
        })
    }

    /// Masking and the patch-mixer (with its maps): tokens masked before (naive) or after
    /// (deferred) it; returns the backbone's tokens and grid (`None` when masked).
    fn run_mixer(&self, mut tokens: Tensor<3>, g: usize, cond: &BlockCondition, mask: Option<&TokenMask>) -> Result<(Tensor<3>, Option<[usize; 2]>)> {
        let naive = self.naive_masking;
        if let (Some(m), true) = (mask, naive) {
            tokens = m.keep(tokens)?;
        }
        if !self.patch_mixer.is_empty() {
            if let Some(map) = &self.patch_mixer_map_xin {
                tokens = map.forward(tokens);
            }
            let mut c = cond.clone();
            if let (Some(y), Some(map)) = (&cond.context, &self.patch_mixer_map_y) {
                c.context = Some(map.forward(y.clone()));
            }
            let grid = (mask.is_none() || !naive).then_some([g, g]);
            tokens = self.run_stage(&self.patch_mixer, tokens, grid, &c, &[], &[])?;
        }
        if let (Some(m), false) = (mask, naive) {
            tokens = m.keep(tokens)?;
        }
        if let Some(map) = &self.patch_mixer_map_xout {
            tokens = map.forward(tokens);
        }
        Ok((tokens, mask.is_none().then_some([g, g])))
    }

    /// The U: `conds` at widths `D, 2D, 4D`; returns the decoder output and its condition.
    fn run_u<'a>(&self, x: Tensor<3>, g: usize, conds: &'a [BlockCondition]) -> Result<(Tensor<3>, &'a BlockCondition)> {
        let (s, r, f) = (&self.stages, &self.resample, &self.reduce);
        let c = |i: usize| &conds[U_CONDITION[i]];
        let (g2, g4) = (g / 2, g / 4);
        let enc1 = self.run_stage(&s[0], x, Some([g, g]), c(0), &[], &[])?;
        let h = to_tokens(r[0].forward(to_map(enc1.clone(), g)));
        let enc2 = self.run_stage(&s[1], h, Some([g2, g2]), c(1), &[], &[])?;
        let h = to_tokens(r[1].forward(to_map(enc2.clone(), g2)));
        let latent = self.run_stage(&s[2], h, Some([g4, g4]), c(2), &[], &[])?;
        let up = r[2].forward(to_map(latent, g4));
        let h = to_tokens(f[0].forward(Tensor::cat(vec![up, to_map(enc2, g2)], 1)));
        let dec2 = self.run_stage(&s[3], h, Some([g2, g2]), c(3), &[], &[])?;
        let up = r[3].forward(to_map(dec2, g2));
        let h = to_tokens(f[1].forward(Tensor::cat(vec![up, to_map(enc1, g)], 1)));
        Ok((self.run_stage(&s[4], h, Some([g, g]), c(4), &[], &[])?, c(4)))
    }

    /// Denoiser forward: unmasked, no condition dropout, class labels (`None` for
    /// unconditional models; see [`forward_with`](Self::forward_with) for other conditions).
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]`, `t`: `[B]` (float timesteps), `y`: `[B]` labels in
    ///   `0..=num_classes` (`num_classes` is the null class) -> `[B, C_out, H, W]`
    ///
    /// # Errors
    /// As [`forward_with`](Self::forward_with). Time is continuous: any finite `|t| <= 1e5`
    /// is accepted (respaced and flow samplers use fractional `t`); see [`crate::validate`].
    /// Float64 inputs are cast to the model's dtype.
    pub fn forward(&self, x: Tensor<4>, t: Tensor<1>, y: Option<Tensor<1, Int>>) -> Result<Tensor<4>> {
        self.forward_with(x, t, labels(&y), None, None)
    }

    /// Training forward: each label embedder drops labels to the null class independently
    /// with its configured probability (as the official DiT and U-DiT training modes and
    /// diffusers' per-block embedders), drawing from `rng` in embedder order.
    ///
    /// # Shapes
    /// As [`forward`](Self::forward).
    ///
    /// # Errors
    /// As [`forward_with`](Self::forward_with).
    pub fn forward_train<R: Rng>(&self, x: Tensor<4>, t: Tensor<1>, y: Option<Tensor<1, Int>>, rng: &mut R) -> Result<Tensor<4>> {
        let (x, t) = self.check_inputs(x, t, labels(&y))?;
        let (b, device) = (x.dims()[0], x.device());
        let cond = self.embed_condition_with(t, labels(&y), |e| e.labels().and_then(|l| l.draw_drop_mask(b, rng, &device)))?;
        self.forward_condition(x, &cond, None, None, &[])
    }

    /// Classifier-free guidance exactly as the official DiT / U-DiT `forward_with_cfg`: the
    /// batch's first half is conditional, the second half carries null labels; both halves
    /// run on the first half's latents, the first `guided_channels` output channels are
    /// guided (`uncond + scale * (cond - uncond)`, the official code uses 3) and the rest
    /// passed through; the guided half is returned twice.
    ///
    /// Kept only as the official code's parity path (the `dit_official` and `udit_official`
    /// fixtures check it); new code guides through the sampling module's
    /// `ClassifierFreeGuidance::for_model` (`GuidedChannels::First(3)` for this rule).
    ///
    /// # Shapes
    /// - `x`: `[2B, C, H, W]`, `t`: `[2B]`, `y`: `[2B]` -> `[2B, C_out, H, W]`
    ///
    /// # Errors
    /// An odd batch, `guided_channels` outside `1..=C_out`, a non-finite scale, or
    /// [`forward`](Self::forward)'s errors.
    pub fn forward_with_cfg(&self, x: Tensor<4>, t: Tensor<1>, y: Tensor<1, Int>, cfg_scale: f64, guided_channels: usize) -> Result<Tensor<4>> {
        crate::models::official_cfg::official_forward_with_cfg(x, cfg_scale, guided_channels, |x| self.forward(x, t, Some(y)))
    }
}

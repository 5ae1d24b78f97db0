//! The one model shell: a diffusion transformer composed from parts.
//!
//! ```text
//! x [B, C, H, W] ─► patchify + sin-cos positions ─► tokens [B, N, D]
//! (t, condition) ─► ConditionEmbedder (one per stage width) ─► c, context tokens
//!                   adaLN-single: c ─► t_block (SiLU, Linear(D, 6D)), shared by the blocks
//! masking:  patch-mixer blocks (all tokens) ─► keep the unmasked tokens
//! stages:   flat: Block x depth
//!           U-shaped: enc1 (D, g) ─► down ─► enc2 (2D, g/2) ─► down ─► latent (4D, g/4)
//!                     ─► up ⊕ enc2 ─► 1x1 ─► dec2 (2D, g/2) ─► up ⊕ enc1 ─► 1x1 ─► dec1 (2D, g)
//! FinalLayer ─► masking: restore (removed tokens = mask_token) ─► unpatchify [B, C_out, H, W]
//! ```
//!
//! Every block is a [`Block`] of the configured parts; the shell implements
//! [`Denoiser`](crate::contracts::Denoiser) (class labels or nothing, see
//! `composed_denoiser.rs`) and, with masking, [`MaskedDenoiser`](crate::contracts::MaskedDenoiser).
//!
//! ```
//! use burn::prelude::*;
//! use diffusion_transformers::blocks::ConditionInput;
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
//! assert_eq!(model.forward(x, t, ConditionInput::Labels(&y))?.dims(), [2, 4, 16, 16]);
//! # Ok(()) }
//! ```

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

use crate::blocks::parts::{BlockCondition, ConditioningKind};
use crate::blocks::{Block, ConditionEmbedder, ConditionInput, EmbeddedCondition, FinalLayer, FinalLayerConfig, UDiTResample};
use crate::contracts::TokenMask;
use crate::error::{Error, Result, ensure_dims};
use crate::layers::adaln::AdaLnModulation;
use crate::layers::dwconv_ffn::same_conv2d;
use crate::layers::init::frozen_param;
use crate::layers::patch_embed::unpatchify;
use crate::layers::pos_embed::sincos_2d;
use crate::layers::{PatchEmbed, PatchEmbedConfig};

pub use super::composed_config::{ComposedDiTConfig, MaskingConfig, StageLayout};

impl ComposedDiTConfig {
    /// Build the model: DiT's initialisation for the patch embedding, embedders and final
    /// layer, each part's own for the blocks.
    ///
    /// # Errors
    /// As [`validate`](Self::validate), and whatever a part refuses.
    pub fn init(&self, device: &Device) -> Result<ComposedDiT> {
        self.validate()?;
        let d = self.hidden_size;
        let g = self.grid_size();
        let pos = sincos_2d(d, [g, g], device)?.unsqueeze_dim::<3>(0);
        let widths = self.cond_widths();
        let mut index = 0;
        let mut stages = Vec::new();
        for (w, _, n) in self.stages.stages() {
            let mut blocks = Vec::new();
            for _ in 0..n {
                blocks.push(self.block_config(index, w * d, true).init(device)?);
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
        let mixer_depth = self.masking.as_ref().map_or(0, |m| m.mixer_depth);
        let p2c = self.patch_size * self.patch_size * self.out_channels();
        Ok(ComposedDiT {
            x_embedder: PatchEmbedConfig::new(self.in_channels, d, self.patch_size).init(device)?,
            pos_embed: frozen_param(pos),
            cond_embedders: widths.iter().map(|&w| self.condition_embedder(w).init(device)).collect::<Result<_>>()?,
            t_blocks: match self.conditioning {
                ConditioningKind::AdaLnSingle => widths.iter().map(|&w| AdaLnModulation::new(w, w, 6, false, device)).collect(),
                _ => Vec::new(),
            },
            patch_mixer: (0..mixer_depth).map(|_| self.block_config(0, d, false).init(device)).collect::<Result<_>>()?,
            stages,
            resample,
            reduce,
            mask_token: self.masking.is_some().then(|| frozen_param(Tensor::zeros([1, 1, p2c], device))),
            final_layer: FinalLayerConfig::new(self.final_width(), p2c).init(device)?,
            input_size: self.input_size,
            patch_size: self.patch_size,
            in_channels: self.in_channels,
            out_channels: self.out_channels(),
            in_context: self.conditioning == ConditioningKind::InContext,
            train_mask_ratio: self.masking.as_ref().map_or(0.0, |m| m.train_mask_ratio),
        })
    }
}

/// A diffusion transformer composed from parts; see the [module docs](self).
#[derive(Module, Debug)]
pub struct ComposedDiT {
    /// Patch embedding.
    pub x_embedder: PatchEmbed,
    /// Fixed 2-D sin-cos table `[1, N, D]`.
    pub pos_embed: Param<Tensor<3>>,
    /// One condition embedder per stage width (`D`; or `D, 2D, 4D`).
    pub cond_embedders: Vec<ConditionEmbedder>,
    /// adaLN-single's shared regressions `SiLU, Linear(w, 6w)`, one per stage width.
    pub t_blocks: Vec<AdaLnModulation>,
    /// Patch-mixer blocks (deferred masking), on every token.
    pub patch_mixer: Vec<Block>,
    /// The stages of blocks (one flat stage, or five of the U).
    pub stages: Vec<Vec<Block>>,
    /// U-shaped: down 1-2, down 2-3, up 3-2, up 2-1.
    pub resample: Vec<UDiTResample>,
    /// U-shaped: 1x1 convs fusing the skip concatenations (`4D -> 2D`, `2D -> 2D`).
    pub reduce: Vec<Conv2d>,
    /// Fill value of removed patches `[1, 1, p*p*C_out]` (zeros, never trained; masking
    /// only).
    pub mask_token: Option<Param<Tensor<3>>>,
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
}

fn to_map(x: Tensor<3>, g: usize) -> Tensor<4> {
    let [b, _, c] = x.dims();
    x.reshape([b, g, g, c]).permute([0, 3, 1, 2])
}

fn to_tokens(x: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = x.dims();
    x.permute([0, 2, 3, 1]).reshape([b, h * w, c])
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

    fn condition(&self, i: usize, e: &EmbeddedCondition) -> BlockCondition {
        let c = e.vector();
        let shared = self.t_blocks.get(i).map(|t| t.forward(c.clone()));
        let context = Some(e.context.clone().unwrap_or_else(|| e.tokens()));
        BlockCondition { c, shared, context }
    }

    fn run_stage(&self, blocks: &[Block], x: Tensor<3>, grid: Option<[usize; 2]>, cond: &BlockCondition) -> Result<Tensor<3>> {
        let extra = match (self.in_context, &cond.context) {
            (true, Some(ctx)) => Some(ctx.clone()),
            _ => None,
        };
        let m = extra.as_ref().map_or(0, |e| e.dims()[1]);
        let mut h = match extra {
            Some(e) => Tensor::cat(vec![e, x], 1),
            None => x,
        };
        for block in blocks {
            h = block.forward(h, grid, cond)?;
        }
        let [b, n, d] = h.dims();
        Ok(if m > 0 { h.slice([0..b, m..n, 0..d]) } else { h })
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
        let s = Some(self.input_size);
        ensure_dims("x", x.dims(), [None, Some(self.in_channels), s, s])?;
        let b = x.dims()[0];
        ensure_dims("t", t.dims(), [Some(b)])?;
        self.cond_embedders[0].check(cond, b)?;
        let (x, t) = crate::validate::model_inputs(x, t, self.x_embedder.proj.weight.dtype())?;
        if let Some(m) = mask {
            if !self.has_masking() {
                return Err(Error::InvalidArgument("this model was built without masking (ComposedDiTConfig::masking)".into()));
            }
            ensure_dims("mask", [m.batch(), m.num_tokens()], [Some(b), Some(self.num_tokens())])?;
        }
        let embedded: Vec<EmbeddedCondition> =
            self.cond_embedders.iter().map(|e| e.forward(t.clone(), cond, drop.clone())).collect::<Result<_>>()?;
        let conds: Vec<BlockCondition> = embedded.iter().enumerate().map(|(i, e)| self.condition(i, e)).collect();
        let g = self.grid_size();
        let mut tokens = self.x_embedder.forward(x)? + self.pos_embed.val();
        tokens = self.run_stage(&self.patch_mixer, tokens, Some([g, g]), &conds[0])?;
        let grid = match mask {
            Some(m) => {
                tokens = m.keep(tokens)?;
                None
            }
            None => Some([g, g]),
        };
        let (h, c_final) = if self.stages.len() == 1 {
            (self.run_stage(&self.stages[0], tokens, grid, &conds[0])?, &conds[0])
        } else {
            self.run_u(tokens, g, &conds)?
        };
        let mut out = self.final_layer.forward(h, c_final.c.clone())?;
        if let (Some(m), Some(fill)) = (mask, &self.mask_token) {
            out = m.restore(out, fill.val().flatten::<1>(0, 2))?;
        }
        Ok(unpatchify(out, self.patch_size, self.out_channels, [g, g]))
    }

    /// The U: `conds` at widths `D, 2D, 4D`; returns the decoder output and its condition.
    fn run_u<'a>(&self, x: Tensor<3>, g: usize, conds: &'a [BlockCondition]) -> Result<(Tensor<3>, &'a BlockCondition)> {
        let (s, r, f) = (&self.stages, &self.resample, &self.reduce);
        let (g2, g4) = (g / 2, g / 4);
        let enc1 = self.run_stage(&s[0], x, Some([g, g]), &conds[0])?;
        let h = to_tokens(r[0].forward(to_map(enc1.clone(), g)));
        let enc2 = self.run_stage(&s[1], h, Some([g2, g2]), &conds[1])?;
        let h = to_tokens(r[1].forward(to_map(enc2.clone(), g2)));
        let latent = self.run_stage(&s[2], h, Some([g4, g4]), &conds[2])?;
        let up = r[2].forward(to_map(latent, g4));
        let h = to_tokens(f[0].forward(Tensor::cat(vec![up, to_map(enc2, g2)], 1)));
        let dec2 = self.run_stage(&s[3], h, Some([g2, g2]), &conds[1])?;
        let up = r[3].forward(to_map(dec2, g2));
        let h = to_tokens(f[1].forward(Tensor::cat(vec![up, to_map(enc1, g)], 1)));
        Ok((self.run_stage(&s[4], h, Some([g, g]), &conds[1])?, &conds[1]))
    }

    /// Unmasked forward without condition dropout (see [`forward_with`](Self::forward_with)).
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]`, `t`: `[B]` -> `[B, C_out, H, W]`
    ///
    /// # Errors
    /// As [`forward_with`](Self::forward_with).
    pub fn forward(&self, x: Tensor<4>, t: Tensor<1>, cond: ConditionInput<'_>) -> Result<Tensor<4>> {
        self.forward_with(x, t, cond, None, None)
    }
}

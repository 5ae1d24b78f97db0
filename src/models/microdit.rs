//! MicroDiT (Sehwag et al. 2024, "Stretching Each Dollar: Diffusion Training from Scratch on a
//! Micro-Budget", arXiv:2407.15811), matching SonyResearch/micro_diffusion
//! `micro_diffusion/models/dit.py`.
//!
//! The pieces, each usable on its own and in any combination:
//!
//! - **patch-mixer**: a few transformer blocks over *all* patch tokens before masking, so that
//!   the kept tokens carry information about the whole image (`use_patch_mixer`);
//! - **deferred masking**: the backbone sees only `floor(N (1 - ratio))` tokens chosen after the
//!   patch-mixer ([`MaskingMode::Deferred`]), or before it ([`MaskingMode::Naive`], the paper's
//!   baseline); removed positions are filled with `mask_token` after the final layer;
//! - **expert-choice MoE** feed-forwards in every `experts_every_n`-th block;
//! - **layer-wise scaling**: per-block attention and feed-forward widths from
//!   `qkv_multipliers` / `ffn_multipliers` (linearly spaced in the presets);
//! - **caption conditioning** ([`MicroDiTBackbone::MicroDiT`]): caption tokens go through an MLP
//!   and an attention block, are cross-attended by every block, and their pooled mean (through
//!   another MLP) is added to the timestep embedding that drives adaLN;
//! - or a **plain class-conditional DiT backbone** ([`MicroDiTBackbone::DiT`]): DiT's
//!   adaLN-Zero blocks, timestep and label embedders and final layer, with the same
//!   patch-mixer, masking, MoE and layer-wise scaling on top (a masked, sparse DiT). Without
//!   those extras it is exactly DiT and loads official DiT checkpoints.
//!
//! ```
//! use burn::prelude::*;
//! use diffusion_transformers::contracts::TokenMask;
//! use diffusion_transformers::models::{MicroDiTCond, MicroDiTConfig};
//! use rand::SeedableRng;
//!
//! # fn main() -> Result<(), diffusion_transformers::Error> {
//! let device = Device::flex();
//! // `MicroDiTConfig::from_name("MicroDiT_XL_2")` is the paper's 1.16B model; a small one here
//! let cfg = MicroDiTConfig::new().with_input_size(8).with_dim(32).with_depth(4).with_head_dim(8)
//!     .with_multiple_of(16).with_caption_channels(24).with_patch_mixer_depth(2)
//!     .with_patch_mixer_dim(32).with_num_experts(4).with_expert_capacity(2.0)
//!     .with_layerwise_scaling([0.5, 1.0], [0.5, 4.0]);
//! let model = cfg.init(&device)?;
//! let x = Tensor::<4>::zeros([2, 4, 8, 8], &device);
//! let t = Tensor::<1>::from_floats([0.1, -0.3], &device); // EDM: ln(sigma) / 4
//! let captions = MicroDiTCond::Caption(Tensor::zeros([2, 7, 24], &device));
//! let out = model.forward(x.clone(), t.clone(), &captions)?; // [2, 4, 8, 8]
//! // training: the backbone sees 4 of the 16 tokens
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! let mask = TokenMask::random(2, 16, 0.75, &mut rng, &device)?;
//! let masked = model.forward_masked(x, t, &captions, &mask)?;
//! assert_eq!((out.dims(), masked.dims(), mask.num_kept()), ([2, 4, 8, 8], [2, 4, 8, 8], 4));
//! # Ok(()) }
//! ```


use burn::module::Param;
use burn::prelude::*;
use rand::Rng;

use crate::blocks::microdit_block::NormLinear;
use crate::blocks::parts::BlockCondition;
use crate::blocks::{Block, ConditionEmbedder, ConditionEmbedderConfig, ConditionKind, FinalLayer, FinalLayerConfig};
use crate::error::{Error, Result, ensure_dims};
use crate::layers::activation::Activation;
use crate::layers::init::frozen_param;
use crate::layers::label_embed::random_drop_mask;
use crate::contracts::{MaskedDenoiser, TokenMask, num_keep};
use crate::layers::patch_embed::unpatchify;
use crate::layers::pos_embed::sincos_2d_from_coords;
use crate::layers::{PatchEmbed, PatchEmbedConfig, TimestepEmbedderConfig};
use crate::contracts::{Denoiser, NullConditioned, NullEmbedding, check_null_class, check_null_embedding};

pub use super::microdit_cond::{MicroDiTCond, MicroDiTNull};
pub use super::microdit_config::{MaskingMode, MicroDiTBackbone, MicroDiTConfig, MicroDiTSize, linspace};

/// What a masked training forward returns.
#[derive(Debug, Clone)]
pub struct MicroDiTOutput {
    /// The prediction `[B, C_out, H, W]` (removed patches filled with `mask_token`).
    pub sample: Tensor<4>,
    /// The mask used, `None` when nothing was masked.
    pub mask: Option<TokenMask>,
}

/// MicroDiT: patch embedding, caption (or label) and timestep conditioning, optional
/// patch-mixer, optional masking, the backbone blocks, the final layer and unpatchify.
///
/// Official keys: `x_embedder.proj`, `t_embedder.mlp.{0,2}`, `pos_embed`,
/// `y_embedder.y_proj.{fc1,norm,fc2}`, `y_emb_preprocess.*`, `pooled_y_emb_process.*`,
/// `patch_mixer.{i}.*`, `patch_mixer_map_{xin,xout,y}.{0,1}`, `blocks.{i}.*`, `mask_token`,
/// `final_layer.*` (see the `weights::microdit` module).
#[derive(Module, Debug)]
pub struct MicroDiT {
    /// Patch embedding.
    pub x_embedder: PatchEmbed,
    /// Timestep embedder and the caption path (or label table), summed into the
    /// conditioning vector.
    pub cond_embedder: ConditionEmbedder,
    /// Fixed 2-D sin-cos table `[1, N, D]` (a buffer in the reference: persisted, never trained).
    pub pos_embed: Param<Tensor<3>>,
    /// Patch-mixer blocks (empty without a patch-mixer; [`MicroDiTConfig::mixer_block_config`]).
    pub patch_mixer: Vec<Block>,
    /// `D -> D_mixer` map into the patch-mixer (only when the widths differ).
    pub patch_mixer_map_xin: Option<NormLinear>,
    /// `D_mixer -> D` map out of the patch-mixer (applied after masking).
    pub patch_mixer_map_xout: Option<NormLinear>,
    /// `D -> D_mixer` map of the caption tokens for the patch-mixer.
    pub patch_mixer_map_y: Option<NormLinear>,
    /// Backbone blocks ([`MicroDiTConfig::block_config`]).
    pub blocks: Vec<Block>,
    /// Fill value of removed patches `[1, 1, p*p*C_out]` (a zero buffer in the reference).
    pub mask_token: Param<Tensor<3>>,
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
    /// Backbone and conditioning.
    #[module(skip)]
    pub backbone: MicroDiTBackbone,
    /// Where masks are applied.
    #[module(skip)]
    pub masking: MaskingMode,
    /// Mask ratio of [`forward_train`](Self::forward_train).
    pub train_mask_ratio: f64,
    /// Condition dropout probability of [`forward_train`](Self::forward_train).
    pub cond_dropout_prob: f64,
}

/// Tokens and conditioning ready for the transformer.
struct Embedded {
    tokens: Tensor<3>,
    c: Tensor<2>,
    context: Option<Tensor<3>>,
}

impl MicroDiT {
    /// Number of image tokens `N`.
    pub fn num_tokens(&self) -> usize {
        let g = self.input_size / self.patch_size;
        g * g
    }

    /// Set the mask ratio used by [`forward_train`](Self::forward_train) (0 disables masking).
    pub fn with_train_mask_ratio(mut self, ratio: f64) -> Result<Self> {
        num_keep(self.num_tokens(), ratio)?;
        self.train_mask_ratio = ratio;
        Ok(self)
    }

    /// Switch to unmasked training (mask ratio 0), the reference's final fine-tuning phase.
    pub fn unmasked_finetuning(mut self) -> Self {
        self.train_mask_ratio = 0.0;
        self
    }

    /// Shapes and conditioning kind, then [`crate::validate::model_inputs`] (non-empty batch,
    /// dtype, finite values, timestep range).
    fn check_inputs(&self, x: Tensor<4>, t: Tensor<1>, cond: &MicroDiTCond) -> Result<(Tensor<4>, Tensor<1>)> {
        let s = Some(self.input_size);
        ensure_dims("x", x.dims(), [None, Some(self.in_channels), s, s])?;
        let b = x.dims()[0];
        if t.dims()[0] != 1 {
            ensure_dims("t", t.dims(), [Some(b)])?;
        }
        self.cond_embedder.check(cond.input(), b)?;
        crate::validate::model_inputs(x, t, self.x_embedder.proj.weight.dtype())
    }

    /// Patch embedding plus position table, and the conditioning: `c = t_emb + pooled caption`
    /// (or `+ label embedding`) and the processed caption tokens.
    fn embed(&self, x: Tensor<4>, t: Tensor<1>, cond: &MicroDiTCond, drop: Option<Tensor<1, Bool>>) -> Result<Embedded> {
        let (x, t) = self.check_inputs(x, t, cond)?;
        let b = x.dims()[0];
        let tokens = self.x_embedder.forward(x)? + self.pos_embed.val();
        let t = if t.dims()[0] == 1 && b != 1 { t.expand([b]) } else { t };
        let e = self.cond_embedder.forward(t, cond.input(), drop)?;
        Ok(Embedded { tokens, c: e.vector(), context: e.context })
    }

    /// Patch-mixer, masking, backbone, final layer, unmasking and unpatchify.
    fn run(&self, e: Embedded, mask: Option<&TokenMask>) -> Result<Tensor<4>> {
        let Embedded { mut tokens, c, context } = e;
        if let Some(m) = mask {
            ensure_dims("mask", [m.batch(), m.num_tokens()], [Some(tokens.dims()[0]), Some(self.num_tokens())])?;
        }
        let naive = self.masking == MaskingMode::Naive;
        if let (Some(m), true) = (mask, naive) {
            tokens = m.keep(tokens)?;
        }
        if !self.patch_mixer.is_empty() {
            if let Some(map) = &self.patch_mixer_map_xin {
                tokens = map.forward(tokens);
            }
            let mixer_ctx = match (&context, &self.patch_mixer_map_y) {
                (Some(y), Some(map)) => Some(map.forward(y.clone())),
                (y, _) => y.clone(),
            };
            let cond = BlockCondition { c: c.clone(), shared: None, context: mixer_ctx };
            for block in &self.patch_mixer {
                tokens = block.forward(tokens, None, &cond)?;
            }
        }
        if let (Some(m), false) = (mask, naive) {
            tokens = m.keep(tokens)?;
        }
        if let Some(map) = &self.patch_mixer_map_xout {
            tokens = map.forward(tokens);
        }
        let cond = BlockCondition { c: c.clone(), shared: None, context };
        for block in &self.blocks {
            tokens = block.forward(tokens, None, &cond)?;
        }
        let mut out = self.final_layer.forward(tokens, c)?;
        if let Some(m) = mask {
            out = m.restore(out, self.mask_token.val().flatten::<1>(0, 2))?;
        }
        let g = self.input_size / self.patch_size;
        Ok(unpatchify(out, self.patch_size, self.out_channels, [g, g]))
    }

    /// Unmasked forward (inference path).
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]`; `t`: `[B]` or `[1]` (broadcast) float timesteps (EDM feeds
    ///   `ln(sigma) / 4`); `cond`: captions `[B, L, caption_channels]` or labels `[B]`
    /// - output: `[B, C_out, H, W]`
    ///
    /// # Errors
    /// [`Error::Shape`] for wrong shapes or an empty batch, [`Error::InvalidArgument`] for the
    /// wrong conditioning kind, labels outside the table or `|t| > 1e5`, [`Error::Numerical`]
    /// for NaN/inf in `x`, `t` or the captions. Time is continuous (EDM's `ln(sigma) / 4` is
    /// negative for `sigma < 1`); see [`crate::validate`]. Float64 inputs are cast.
    pub fn forward(&self, x: Tensor<4>, t: Tensor<1>, cond: &MicroDiTCond) -> Result<Tensor<4>> {
        let e = self.embed(x, t, cond, None)?;
        self.run(e, None)
    }

    /// Masked forward with a given mask: only the kept tokens go through the backbone (and
    /// through the patch-mixer too with [`MaskingMode::Naive`]); removed patches of the output
    /// hold `mask_token`.
    ///
    /// # Shapes
    /// - as [`forward`](Self::forward); `mask` over `B` samples and `N` tokens
    pub fn forward_masked(&self, x: Tensor<4>, t: Tensor<1>, cond: &MicroDiTCond, mask: &TokenMask) -> Result<Tensor<4>> {
        let e = self.embed(x, t, cond, None)?;
        self.run(e, Some(mask))
    }

    /// Forward with a random mask of ratio `mask_ratio` drawn from `rng` (the reference's
    /// `forward(mask_ratio=...)`); ratio 0 masks nothing.
    pub fn forward_with_mask_ratio<R: Rng + ?Sized>(
        &self,
        x: Tensor<4>,
        t: Tensor<1>,
        cond: &MicroDiTCond,
        mask_ratio: f64,
        rng: &mut R,
    ) -> Result<MicroDiTOutput> {
        let mask = self.draw_mask(x.dims()[0], mask_ratio, rng, &x.device())?;
        let e = self.embed(x, t, cond, None)?;
        Ok(MicroDiTOutput { sample: self.run(e, mask.as_ref())?, mask })
    }

    fn draw_mask<R: Rng + ?Sized>(&self, batch: usize, ratio: f64, rng: &mut R, device: &Device) -> Result<Option<TokenMask>> {
        if ratio == 0.0 {
            return Ok(None);
        }
        Ok(Some(TokenMask::random(batch, self.num_tokens(), ratio, rng, device)?))
    }

    /// Training forward: conditions are dropped with `cond_dropout_prob` (labels to the null
    /// class, captions to zeros) and tokens masked at the model's `train_mask_ratio`, both
    /// drawn from `rng`.
    pub fn forward_train<R: Rng + ?Sized>(&self, x: Tensor<4>, t: Tensor<1>, cond: &MicroDiTCond, rng: &mut R) -> Result<MicroDiTOutput> {
        let b = x.dims()[0];
        let device = x.device();
        let p = match (cond, self.cond_embedder.labels()) {
            (MicroDiTCond::Labels(_), Some(e)) => e.dropout_prob,
            _ => self.cond_dropout_prob,
        };
        let drop = (p > 0.0).then(|| random_drop_mask(b, p, &mut &mut *rng, &device));
        let mask = self.draw_train_mask(b, rng, &device)?;
        let e = self.embed(x, t, cond, drop)?;
        Ok(MicroDiTOutput { sample: self.run(e, mask.as_ref())?, mask })
    }
}

impl Denoiser for MicroDiT {
    /// Captions or labels, matching the backbone.
    type Cond = MicroDiTCond;

    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
        self.forward(x, t, cond)
    }
}

/// The null must fit the backbone: the null class `num_classes` (with the label table's null
/// row) for labels, zero captions or caption embeddings `caption_channels` wide for captions.
impl NullConditioned for MicroDiT {
    fn check_null(&self, null: &MicroDiTNull) -> Result<()> {
        match (null, self.cond_embedder.labels(), self.cond_embedder.caption()) {
            (MicroDiTNull::Label(k), Some(e), _) => check_null_class(*k, e.num_classes, e.num_rows()),
            (MicroDiTNull::ZeroCaption, _, Some(_)) => Ok(()),
            (MicroDiTNull::Caption(n), _, Some(c)) => {
                check_null_embedding("caption", &NullEmbedding::Given(n.clone()), [None, None, Some(c.y_proj.fc1.weight.dims()[0])])
            }
            _ => Err(Error::InvalidConfig(format!("null conditioning {null:?} does not fit this model's backbone"))),
        }
    }
}

impl MaskedDenoiser for MicroDiT {
    fn patch_size(&self) -> usize {
        self.patch_size
    }

    fn num_tokens(&self) -> usize {
        MicroDiT::num_tokens(self)
    }

    fn train_mask_ratio(&self) -> f64 {
        self.train_mask_ratio
    }

    fn denoise_masked(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond, mask: &TokenMask) -> Result<Tensor<4>> {
        self.forward_masked(x, t, cond, mask)
    }
}


impl MicroDiTConfig {
    /// The condition embedder: the timestep embedder (512 frequencies and tanh-GELU for the
    /// MicroDiT backbone, DiT's 256 and SiLU for the DiT backbone) and the caption path (or
    /// DiT's label table).
    pub fn condition_embedder(&self) -> ConditionEmbedderConfig {
        let micro = self.backbone == MicroDiTBackbone::MicroDiT;
        let timestep = TimestepEmbedderConfig::new(self.dim)
            .with_frequency_embedding_size(self.backbone.frequency_size())
            .with_activation(if micro { Activation::GeluTanh } else { Activation::Silu });
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
        ConditionEmbedderConfig::new(timestep).with_condition(condition)
    }

    /// Initialise a [`MicroDiT`] with the reference initialisation (DiT's for the DiT
    /// backbone).
    pub fn init(&self, device: &Device) -> Result<MicroDiT> {
        self.validate()?;
        let d = self.dim;
        let micro = self.backbone == MicroDiTBackbone::MicroDiT;
        let style = self.backbone.block_style();
        let g = self.grid_size();
        // numpy: arange(g, float32) / (g / base_size) / pos_interp_scale, base_size = g
        let coords: Vec<f64> = (0..g).map(|i| (i as f32 / self.pos_interp_scale as f32) as f64).collect();
        let table = sincos_2d_from_coords(d, &coords, &coords)?;
        let pos_embed = Tensor::<2>::from_data(TensorData::new(table, [g * g, d]), device).unsqueeze_dim::<3>(0);
        let eps = self.norm_eps;
        let mixer = if self.use_patch_mixer {
            (0..self.patch_mixer_depth).map(|i| self.mixer_block_config(i).init(device)).collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let maps = self.has_mixer_maps();
        let (m, bias) = (self.patch_mixer_dim, self.use_bias);
        Ok(MicroDiT {
            x_embedder: PatchEmbedConfig::new(self.in_channels, d, self.patch_size).init(device)?,
            cond_embedder: self.condition_embedder().init(device)?,
            pos_embed: frozen_param(pos_embed),
            patch_mixer: mixer,
            patch_mixer_map_xin: maps.then(|| NormLinear::new(d, m, bias, eps, device)),
            patch_mixer_map_xout: maps.then(|| NormLinear::new(m, d, bias, eps, device)),
            patch_mixer_map_y: (maps && micro).then(|| NormLinear::new(d, m, bias, eps, device)),
            blocks: (0..self.depth).map(|i| self.block_config(i)?.init(device)).collect::<Result<_>>()?,
            mask_token: frozen_param(Tensor::zeros([1, 1, self.patch_size * self.patch_size * self.out_channels()], device)),
            final_layer: FinalLayerConfig::new(d, self.patch_size * self.patch_size * self.out_channels())
                .with_norm_weight(micro)
                .with_norm_eps(eps)
                .with_activation(style.modulation_activation())
                .init(device)?,
            input_size: self.input_size,
            patch_size: self.patch_size,
            in_channels: self.in_channels,
            out_channels: self.out_channels(),
            backbone: self.backbone,
            masking: self.masking,
            train_mask_ratio: self.train_mask_ratio,
            cond_dropout_prob: self.cond_dropout_prob,
        })
    }
}

#[cfg(test)]
#[path = "microdit_tests.rs"]
mod tests;

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


use std::ops::Deref;

use burn::prelude::*;
use rand::Rng;

use crate::contracts::{Denoiser, MaskedDenoiser, NullConditioned, NullEmbedding, TokenMask, check_null_class, check_null_embedding, num_keep};
use crate::error::{Error, Result};
use crate::layers::label_embed::random_drop_mask;
use crate::models::ComposedDiT;

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

/// MicroDiT: the model shell [`ComposedDiT`] built by [`MicroDiTConfig::shell`] (patch
/// embedding, caption or label conditioning, patch-mixer, masking, backbone, final layer,
/// unpatchify), called with a [`MicroDiTCond`]. The wrapper holds only what the shell's
/// label-conditioned API cannot: the conditioning type of its contracts and the caption
/// dropout of [`forward_train`](Self::forward_train). It dereferences to the shell.
///
/// Official keys: `x_embedder.proj`, `t_embedder.mlp.{0,2}`, `pos_embed`,
/// `y_embedder.y_proj.{fc1,norm,fc2}`, `y_emb_preprocess.*`, `pooled_y_emb_process.*`,
/// `patch_mixer.{i}.*`, `patch_mixer_map_{xin,xout,y}.{0,1}`, `blocks.{i}.*`, `mask_token`,
/// `final_layer.*` (see the `weights::microdit` module).
#[derive(Module, Debug)]
pub struct MicroDiT {
    /// The shell (every module; module paths `shell.*`).
    pub shell: ComposedDiT,
    /// Condition dropout probability of [`forward_train`](Self::forward_train).
    pub cond_dropout_prob: f64,
}

impl Deref for MicroDiT {
    type Target = ComposedDiT;

    fn deref(&self) -> &ComposedDiT {
        &self.shell
    }
}

impl MicroDiT {
    /// Set the mask ratio used by [`forward_train`](Self::forward_train) (0 disables masking).
    ///
    /// # Errors
    /// A ratio outside `[0, 1)`.
    pub fn with_train_mask_ratio(mut self, ratio: f64) -> Result<Self> {
        num_keep(self.num_tokens(), ratio)?;
        self.shell.train_mask_ratio = ratio;
        Ok(self)
    }

    /// Switch to unmasked training (mask ratio 0), the reference's final fine-tuning phase.
    pub fn unmasked_finetuning(mut self) -> Self {
        self.shell.train_mask_ratio = 0.0;
        self
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
        self.shell.forward_with(x, t, cond.input(), None, None)
    }

    /// Masked forward with a given mask: only the kept tokens go through the backbone (and
    /// through the patch-mixer too with [`MaskingMode::Naive`]); removed patches of the output
    /// hold `mask_token`.
    ///
    /// # Shapes
    /// - as [`forward`](Self::forward); `mask` over `B` samples and `N` tokens
    ///
    /// # Errors
    /// As [`forward`](Self::forward), and a mask of the wrong size.
    pub fn forward_masked(&self, x: Tensor<4>, t: Tensor<1>, cond: &MicroDiTCond, mask: &TokenMask) -> Result<Tensor<4>> {
        self.shell.forward_with(x, t, cond.input(), None, Some(mask))
    }

    /// Forward with a random mask of ratio `mask_ratio` drawn from `rng` (the reference's
    /// `forward(mask_ratio=...)`); ratio 0 masks nothing.
    ///
    /// # Shapes
    /// As [`forward`](Self::forward).
    ///
    /// # Errors
    /// As [`forward`](Self::forward), and a ratio outside `[0, 1)`.
    pub fn forward_with_mask_ratio<R: Rng + ?Sized>(
        &self,
        x: Tensor<4>,
        t: Tensor<1>,
        cond: &MicroDiTCond,
        mask_ratio: f64,
        rng: &mut R,
    ) -> Result<MicroDiTOutput> {
        let mask = self.draw_mask(x.dims()[0], mask_ratio, rng, &x.device())?;
        Ok(MicroDiTOutput { sample: self.shell.forward_with(x, t, cond.input(), None, mask.as_ref())?, mask })
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
    ///
    /// # Shapes
    /// As [`forward`](Self::forward).
    ///
    /// # Errors
    /// As [`forward`](Self::forward).
    pub fn forward_train<R: Rng + ?Sized>(&self, x: Tensor<4>, t: Tensor<1>, cond: &MicroDiTCond, rng: &mut R) -> Result<MicroDiTOutput> {
        let b = x.dims()[0];
        let device = x.device();
        let p = match (cond, self.cond_embedders[0].labels()) {
            (MicroDiTCond::Labels(_), Some(e)) => e.dropout_prob,
            _ => self.cond_dropout_prob,
        };
        let drop = (p > 0.0).then(|| random_drop_mask(b, p, &mut &mut *rng, &device));
        let mask = self.draw_train_mask(b, rng, &device)?;
        Ok(MicroDiTOutput { sample: self.shell.forward_with(x, t, cond.input(), drop, mask.as_ref())?, mask })
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
        let e = &self.cond_embedders[0];
        match (null, e.labels(), e.caption()) {
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
        self.shell.num_tokens()
    }

    fn train_mask_ratio(&self) -> f64 {
        self.train_mask_ratio
    }

    fn denoise_masked(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond, mask: &TokenMask) -> Result<Tensor<4>> {
        self.forward_masked(x, t, cond, mask)
    }
}

impl MicroDiTConfig {
    /// Initialise a [`MicroDiT`]: the [`shell`](Self::shell) with the reference
    /// initialisation (DiT's for the DiT backbone).
    ///
    /// # Errors
    /// As [`validate`](Self::validate).
    pub fn init(&self, device: &Device) -> Result<MicroDiT> {
        self.validate()?;
        Ok(MicroDiT { shell: self.shell()?.init(device)?, cond_dropout_prob: self.cond_dropout_prob })
    }
}

#[cfg(test)]
#[path = "microdit_tests.rs"]
mod tests;

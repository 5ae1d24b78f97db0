//! The MM-DiT joint transformer block (SD3, diffusers `JointTransformerBlock`) as a preset of
//! the one [`Block`]: the block's tokens are the image stream, the context tokens the text
//! stream, and the [`TwoStream`](crate::blocks::parts::AttentionKind::TwoStream) attention
//! part carries the text stream's own modulation and MLP. Per stream, exactly as diffusers'
//! `JointTransformerBlock` with `AdaLayerNormZero`:
//!
//! ```text
//! shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = Linear(SiLU(c))     (6 chunks, per stream)
//! h_s   = LN(x_s) * (1 + scale_a) + shift_a                                 (LN: no affine, eps 1e-6)
//! a_s   = JointAttention(h_image, h_text)_s                                 (one attention, all tokens)
//! x_s  += gate_a * a_s
//! x_s  += gate_m * MLP(LN(x_s) * (1 + scale_m) + shift_m)                   (MLP: ratio 4, tanh-GELU)
//! ```
//!
//! | stream | modulation | attention projections | MLP |
//! |---|---|---|---|
//! | image (the block's tokens) | the `AdaLnZero` conditioning part | `attn.joint.streams.0` | the block's `Mlp` part |
//! | text (the context tokens) | `attn.context_modulation` | `attn.joint.streams.1` | `attn.context_mlp` |
//!
//! A **pre-only** text stream (`context_pre_only`, SD3's last block) is only modulated
//! (`shift, scale`, diffusers' `AdaLayerNormContinuous`) and feeds keys/values to the image
//! stream; [`Block::forward_joint`] returns no text tokens for it.
//!
//! **Dual attention** (SD3.5's MMDiT-X, diffusers `use_dual_attention` with
//! `SD35AdaLayerNormZeroX`) is the [`AdaLnZeroDual`](crate::blocks::parts::ConditioningKind::AdaLnZeroDual)
//! conditioning part: a 9-chunk image modulation and a second, image-only self-attention on
//! the same normalised input, added after the joint attention.
//!
//! ```
//! use burn::prelude::*;
//! use diffusion_transformers::blocks::JointBlockConfig;
//! use diffusion_transformers::blocks::parts::BlockCondition;
//!
//! # fn main() -> Result<(), diffusion_transformers::Error> {
//! let device = Device::flex();
//! // width 64, 4 heads; the text stream is pre-only in the last block
//! let depth = 2;
//! let blocks = (0..depth)
//!     .map(|i| JointBlockConfig::new(64, 4).with_context_pre_only(i + 1 == depth).init(&device))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let mut image = Tensor::<3>::zeros([1, 16, 64], &device);
//! let mut text = Tensor::<3>::zeros([1, 7, 64], &device);
//! let c = Tensor::<2>::zeros([1, 64], &device);
//! for block in &blocks {
//!     let cond = BlockCondition { c: c.clone(), shared: None, context: Some(text.clone()) };
//!     let (x, t) = block.forward_joint(image, None, &cond)?;
//!     // a pre-only text stream returns None; keep its last input (it is not used any more)
//!     (image, text) = (x, t.unwrap_or(text));
//! }
//! assert_eq!(image.dims(), [1, 16, 64]);
//! # Ok(()) }
//! ```

use burn::prelude::*;

use crate::blocks::block::{Block, BlockConfig};
use crate::blocks::parts::{AttentionKind, ConditioningKind, FeedForwardKind};
use crate::error::Result;
use crate::layers::attention::QkNorm;

/// The MM-DiT block preset, turned into a [`BlockConfig`] by
/// [`block_config`](Self::block_config).
#[derive(Config, Debug)]
pub struct JointBlockConfig {
    /// Width `C` of both streams and of the conditioning vector.
    pub d_model: usize,
    /// Attention heads (`C` must be divisible by them).
    pub n_heads: usize,
    /// MLP hidden width is `int(C * mlp_ratio)`. Default: 4.0.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Per-head query/key normalisation (eps 1e-6) of the joint and the dual attention.
    /// Default: none (SD3); RMSNorm in SD3.5.
    #[config(default = "QkNorm::None")]
    pub qk_norm: QkNorm,
    /// The text stream is pre-only (SD3's last block, diffusers `context_pre_only`).
    /// Default: false.
    #[config(default = false)]
    pub context_pre_only: bool,
    /// The image stream has a second, image-only self-attention and a 9-chunk modulation
    /// (SD3.5 MMDiT-X, diffusers `use_dual_attention`). Default: false.
    #[config(default = false)]
    pub dual_attention: bool,
}

impl JointBlockConfig {
    /// The [`Block`] configuration of this preset (see the [module docs](self)).
    pub fn block_config(&self) -> BlockConfig {
        let conditioning = if self.dual_attention { ConditioningKind::AdaLnZeroDual } else { ConditioningKind::AdaLnZero };
        BlockConfig::new(self.d_model, self.n_heads)
            .with_attention(AttentionKind::TwoStream { context_pre_only: self.context_pre_only })
            .with_feed_forward(FeedForwardKind::Mlp)
            .with_conditioning(conditioning)
            .with_qk_norm(self.qk_norm)
            .with_mlp_ratio(self.mlp_ratio)
    }

    /// Initialise the block: Xavier linears, zero adaLN modulations (adaLN-Zero, so a fresh
    /// block is the identity on both full streams).
    ///
    /// # Errors
    /// As [`BlockConfig::init`].
    pub fn init(&self, device: &Device) -> Result<Block> {
        self.block_config().init(device)
    }
}

#[cfg(test)]
#[path = "joint_block_tests.rs"]
mod tests;

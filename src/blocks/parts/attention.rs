//! The attention part of a [`Block`](crate::blocks::Block): one enum arm per variant, each a
//! layer of [`crate::layers`] (or a part file of this folder) used as it is.
//!
//! | kind | module | needs |
//! |---|---|---|
//! | [`AttentionKind::MultiHead`] | [`layers::Attention`](crate::layers::Attention) (fused qkv, optional QK norm) | tokens |
//! | [`AttentionKind::Downsampled`] | [`layers::DownsampledAttention`](crate::layers::DownsampledAttention) (U-DiT) | the full token grid |
//! | [`AttentionKind::Cosine`] | [`CosineAttention`](super::cosine_attention::CosineAttention) | tokens |
//! | [`AttentionKind::Joint`] | [`layers::JointAttention`](crate::layers::JointAttention) over (tokens, context); the context stream is key/value only | context tokens |
//! | [`AttentionKind::Cross`] | [`layers::CrossAttention`](crate::layers::CrossAttention): the tokens attend to the context only | context tokens |
//!
//! Adding a variant: a new file in this folder (or a layer), one arm in [`AttentionKind`] and
//! [`AttentionPart`], one line in [`AttentionKind::init`] and [`AttentionPart::forward`].

use burn::prelude::*;

use crate::blocks::parts::cosine_attention::CosineAttention;
use crate::error::{Error, Result, ensure_config};
use crate::layers::attention::{Attention, AttentionConfig, CrossAttention, CrossAttentionConfig, QkNorm};
use crate::layers::downsampled_attention::{
    AttentionScore, DownsampledAttention, DownsampledAttentionConfig, downsampled_attention_macs,
};
use crate::layers::joint_attention::{JointAttention, JointAttentionConfig};

/// Which attention a block uses.
#[derive(Config, Debug, PartialEq, Eq)]
pub enum AttentionKind {
    /// Multi-head self-attention (DiT).
    MultiHead,
    /// Downsampled-token self-attention (U-DiT): depthwise `kernel x kernel` conv, attention
    /// within each of the `down_factor^2` interleaved sub-grids, optional cosine scores and
    /// 2-D RoPE. Needs the full token grid.
    Downsampled {
        /// Down factor `f` (both grid sides must be multiples of it).
        down_factor: usize,
        /// Odd kernel of the depthwise downsampler.
        kernel: usize,
        /// Cosine-similarity scores instead of dot products.
        cosine: bool,
        /// 2-D RoPE on the sub-grid (head width divisible by 4).
        rope: bool,
    },
    /// Cosine-similarity self-attention with a learned per-head temperature.
    Cosine,
    /// Joint attention over the tokens and the context tokens, with per-stream projections
    /// (MM-DiT); the context only supplies keys and values.
    Joint,
    /// Cross-attention of the tokens over the context tokens (no self-attention).
    Cross,
}

impl AttentionKind {
    /// Whether the part needs the full token grid (it cannot run on masked tokens).
    pub fn needs_grid(&self) -> bool {
        matches!(self, AttentionKind::Downsampled { .. })
    }

    /// Whether the part attends to context tokens.
    pub fn needs_context(&self) -> bool {
        matches!(self, AttentionKind::Joint | AttentionKind::Cross)
    }

    /// Whether the part supports an attention width other than the block width.
    pub fn scales(&self) -> bool {
        matches!(self, AttentionKind::MultiHead | AttentionKind::Cosine)
    }

    /// Parameters of the part (see [`init`](Self::init) for the arguments).
    pub fn num_params(&self, d: usize, n_heads: usize, hidden: usize, qk_norm: QkNorm) -> usize {
        let dh = hidden / n_heads.max(1);
        let norms = match qk_norm {
            QkNorm::None => 0,
            QkNorm::RmsNorm => 2 * dh,
            QkNorm::LayerNorm => 4 * dh,
        };
        let lin = |i: usize, o: usize| i * o + o;
        match self {
            AttentionKind::MultiHead => lin(d, 3 * hidden) + lin(hidden, d) + norms,
            AttentionKind::Downsampled { kernel, cosine, .. } => {
                d * kernel * kernel + d + lin(d, 3 * d) + lin(d, d) + if *cosine { n_heads } else { 0 }
            }
            AttentionKind::Cosine => lin(d, 3 * hidden) + lin(hidden, d) + n_heads,
            AttentionKind::Joint => 2 * lin(d, 3 * d) + lin(d, d) + 2 * norms,
            AttentionKind::Cross => lin(d, d) + lin(d, 2 * d) + lin(d, d),
        }
    }

    /// Multiply-accumulates of the part over `n` tokens of width `d` on `grid`, with `m`
    /// context tokens (matrix products and attention scores, the DiT paper's convention).
    pub fn macs(&self, d: usize, hidden: usize, n: usize, grid: [usize; 2], m: usize) -> f64 {
        let (d, h, n, m) = (d as f64, hidden as f64, n as f64, m as f64);
        match self {
            AttentionKind::MultiHead | AttentionKind::Cosine => n * (3.0 * d * h + h * d) + 2.0 * n * n * h,
            AttentionKind::Downsampled { down_factor, kernel, .. } => {
                downsampled_attention_macs(d as usize, grid, *down_factor, *kernel)
            }
            AttentionKind::Joint => (n + m) * 3.0 * d * d + n * d * d + 2.0 * n * (n + m) * d,
            AttentionKind::Cross => 2.0 * n * d * d + 2.0 * m * d * d + 2.0 * n * m * d,
        }
    }

    /// Builds the part for width `d_model` with `n_heads` heads in an attention space of width
    /// `hidden` (`d_model` unless scaled) and per-head QK norm `qk_norm`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for widths the part cannot take, a scaled width or QK norm
    /// on a part without them.
    pub fn init(&self, d_model: usize, n_heads: usize, hidden: usize, qk_norm: QkNorm, device: &Device) -> Result<AttentionPart> {
        ensure_config(hidden == d_model || self.scales(), || {
            format!("{self:?} attention keeps the block width; layer-wise attention scaling needs MultiHead or Cosine")
        })?;
        let has_qk_norm = matches!(self, AttentionKind::MultiHead | AttentionKind::Joint);
        ensure_config(qk_norm == QkNorm::None || has_qk_norm, || format!("{self:?} attention has no QK norm option"))?;
        Ok(match self {
            AttentionKind::MultiHead => AttentionPart::MultiHead(
                AttentionConfig::new(d_model, n_heads).with_d_hidden(Some(hidden)).with_qk_norm(qk_norm).init(device)?,
            ),
            AttentionKind::Downsampled { down_factor, kernel, cosine, rope } => AttentionPart::Downsampled(
                DownsampledAttentionConfig::new(d_model, n_heads)
                    .with_down_factor(*down_factor)
                    .with_downsampler_kernel(*kernel)
                    .with_score(if *cosine { AttentionScore::Cosine } else { AttentionScore::DotProduct })
                    .with_rope(*rope)
                    .init(device)?,
            ),
            AttentionKind::Cosine => AttentionPart::Cosine(CosineAttention::new(d_model, hidden, n_heads, device)?),
            AttentionKind::Joint => AttentionPart::Joint(
                JointAttentionConfig::new(d_model, n_heads).with_pre_only(vec![1]).with_qk_norm(qk_norm).init(device)?,
            ),
            AttentionKind::Cross => {
                AttentionPart::Cross(CrossAttentionConfig::new(d_model, d_model, n_heads).init(device)?)
            }
        })
    }
}

/// The attention part of a block (see the [module docs](self)).
#[derive(Module, Debug)]
pub enum AttentionPart {
    /// Multi-head self-attention.
    MultiHead(Attention),
    /// Downsampled-token self-attention.
    Downsampled(DownsampledAttention),
    /// Cosine-similarity self-attention.
    Cosine(CosineAttention),
    /// Joint attention with the context.
    Joint(JointAttention),
    /// Cross-attention over the context.
    Cross(CrossAttention),
}

impl AttentionPart {
    /// # Shapes
    /// - `x`: `[B, N, D]`; `grid`: the `[rows, cols]` of the tokens when they are a full grid
    ///   (`None` for masked tokens); `context`: `[B, M, D]`
    /// - output: `[B, N, D]`
    ///
    /// # Errors
    /// A missing grid or context the part needs, or shapes it cannot take.
    pub fn forward(&self, x: Tensor<3>, grid: Option<[usize; 2]>, context: Option<&Tensor<3>>) -> Result<Tensor<3>> {
        let context = || {
            context.cloned().ok_or_else(|| Error::InvalidArgument("this attention part needs context tokens".into()))
        };
        match self {
            AttentionPart::MultiHead(a) => a.try_forward(x),
            AttentionPart::Downsampled(a) => {
                let grid = grid.ok_or_else(|| {
                    Error::InvalidArgument("downsampled-token attention needs the full token grid (no masking)".into())
                })?;
                a.forward_tokens(x, grid)
            }
            AttentionPart::Cosine(a) => a.forward(x),
            AttentionPart::Joint(a) => {
                let out = a.forward(vec![x, context()?])?;
                out.into_iter().next().flatten().ok_or_else(|| Error::InvalidArgument("joint attention lost its first stream".into()))
            }
            AttentionPart::Cross(a) => Ok(a.forward(x, context()?)),
        }
    }
}

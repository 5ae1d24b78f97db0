//! The attention part of a [`Block`](crate::blocks::Block): one enum arm per variant, each a
//! layer of [`crate::layers`] (or a part file of this folder) used as it is.
//!
//! | kind | module | needs |
//! |---|---|---|
//! | [`AttentionKind::MultiHead`] | [`layers::Attention`](crate::layers::Attention) (fused qkv, optional QK norm) | tokens |
//! | [`AttentionKind::Downsampled`] | [`layers::DownsampledAttention`](crate::layers::DownsampledAttention) (U-DiT) | the full token grid |
//! | [`AttentionKind::Cosine`] | [`CosineAttention`] | tokens |
//! | [`AttentionKind::Joint`] | [`layers::JointAttention`](crate::layers::JointAttention) over (tokens, context); the context stream is key/value only | context tokens |
//! | [`AttentionKind::Cross`] | [`layers::CrossAttention`](crate::layers::CrossAttention): the tokens attend to the context only | context tokens |
//! | [`AttentionKind::TwoStream`] | [`TwoStreamAttention`]: joint attention that also updates the context stream (MM-DiT) | context tokens, `c` |
//!
//! Adding a variant: a new file in this folder (or a layer), one arm in [`AttentionKind`] and
//! [`AttentionPart`], one line in [`AttentionKind::init`], [`AttentionKind::num_params`],
//! [`AttentionKind::macs`] and [`AttentionPart::forward`].

use burn::prelude::*;

use crate::blocks::parts::conditioning::BlockCondition;
use crate::blocks::parts::cosine_attention::CosineAttention;
use crate::blocks::parts::spec::PartSpec;
use crate::blocks::parts::two_stream::TwoStreamAttention;
use crate::error::{Error, Result, ensure_config};
use crate::layers::attention::{Attention, CrossAttention, CrossAttentionConfig, QkNorm};
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
    /// MM-DiT's joint attention over two streams, the tokens and the context tokens, where
    /// the context is a stream of its own: the part carries the context stream's adaLN-Zero
    /// modulation and tanh-GELU MLP and updates the context tokens (see
    /// [`TwoStreamAttention`]).
    TwoStream {
        /// The context stream only supplies (modulated) keys and values and is not updated
        /// (SD3's last block, diffusers `context_pre_only`).
        context_pre_only: bool,
    },
}

impl AttentionKind {
    /// Whether the part needs the full token grid (it cannot run on masked tokens).
    pub fn needs_grid(&self) -> bool {
        matches!(self, AttentionKind::Downsampled { .. })
    }

    /// Whether the part attends to context tokens.
    pub fn needs_context(&self) -> bool {
        matches!(self, AttentionKind::Joint | AttentionKind::Cross | AttentionKind::TwoStream { .. })
    }

    /// Whether the part supports an attention width other than the block width.
    pub fn scales(&self) -> bool {
        matches!(self, AttentionKind::MultiHead | AttentionKind::Cosine)
    }

    /// Whether the part has the QK norm option `qk_norm`.
    fn has_qk_norm(&self, qk_norm: QkNorm) -> bool {
        match self {
            AttentionKind::MultiHead => true,
            AttentionKind::Joint | AttentionKind::TwoStream { .. } => qk_norm != QkNorm::FullLayerNorm,
            _ => qk_norm == QkNorm::None,
        }
    }

    /// Parameters of the part for a block of spec `s`.
    pub fn num_params(&self, s: &PartSpec) -> usize {
        let (d, hidden, n_heads) = (s.d_model, s.attn_hidden, s.n_heads);
        let norms = s.qk_norm.num_params(s.head_dim());
        let lin = |i: usize, o: usize| i * o + o;
        let lin_b = |i: usize, o: usize| i * o + if s.bias { o } else { 0 };
        match self {
            AttentionKind::MultiHead => lin_b(d, 3 * hidden) + lin_b(hidden, d) + norms,
            AttentionKind::Downsampled { kernel, cosine, .. } => {
                d * kernel * kernel + d + lin(d, 3 * d) + lin(d, d) + if *cosine { n_heads } else { 0 }
            }
            AttentionKind::Cosine => lin(d, 3 * hidden) + lin(hidden, d) + n_heads,
            AttentionKind::Joint => 2 * lin(d, 3 * d) + lin(d, d) + 2 * norms,
            AttentionKind::Cross => lin_b(d, d) + lin_b(d, 2 * d) + lin_b(d, d),
            AttentionKind::TwoStream { context_pre_only } => TwoStreamAttention::num_params(s, *context_pre_only),
        }
    }

    /// Multiply-accumulates of the part over `n` tokens on `grid` with `m` context tokens
    /// (matrix products and attention scores, the DiT paper's convention).
    pub fn macs(&self, s: &PartSpec, n: usize, grid: [usize; 2], m: usize) -> f64 {
        let (d, h, nf, mf) = (s.d_model as f64, s.attn_hidden as f64, n as f64, m as f64);
        match self {
            AttentionKind::MultiHead | AttentionKind::Cosine => nf * (3.0 * d * h + h * d) + 2.0 * nf * nf * h,
            AttentionKind::Downsampled { down_factor, kernel, .. } => {
                downsampled_attention_macs(s.d_model, grid, *down_factor, *kernel)
            }
            AttentionKind::Joint => (nf + mf) * 3.0 * d * d + nf * d * d + 2.0 * nf * (nf + mf) * d,
            AttentionKind::Cross => 2.0 * nf * d * d + 2.0 * mf * d * d + 2.0 * nf * mf * d,
            AttentionKind::TwoStream { context_pre_only } => TwoStreamAttention::macs(s, *context_pre_only, n, m),
        }
    }

    /// Builds the part for a block of spec `s`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for widths the part cannot take, a scaled width or a QK norm
    /// on a part without them.
    pub fn init(&self, s: &PartSpec, device: &Device) -> Result<AttentionPart> {
        let (d_model, n_heads, hidden) = (s.d_model, s.n_heads, s.attn_hidden);
        ensure_config(hidden == d_model || self.scales(), || {
            format!("{self:?} attention keeps the block width; layer-wise attention scaling needs MultiHead or Cosine")
        })?;
        ensure_config(self.has_qk_norm(s.qk_norm), || format!("{self:?} attention has no {:?} QK norm option", s.qk_norm))?;
        let [init_in, init_out] = s.init;
        Ok(match self {
            AttentionKind::MultiHead => {
                AttentionPart::MultiHead(s.attention_config(n_heads).with_d_hidden(Some(hidden)).init(device)?)
            }
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
                JointAttentionConfig::new(d_model, n_heads).with_pre_only(vec![1]).with_qk_norm(s.qk_norm).init(device)?,
            ),
            AttentionKind::Cross => AttentionPart::Cross(
                CrossAttentionConfig::new(d_model, d_model, n_heads)
                    .with_bias(s.bias)
                    .with_init_in(init_in)
                    .with_init_out(init_out)
                    .init(device)?,
            ),
            AttentionKind::TwoStream { context_pre_only } => {
                AttentionPart::TwoStream(TwoStreamAttention::new(s, *context_pre_only, device)?)
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
    /// Two-stream joint attention that updates the context stream.
    TwoStream(TwoStreamAttention),
}

impl AttentionPart {
    /// # Shapes
    /// - `x`: `[B, N, D]`; `grid`: the `[rows, cols]` of the tokens when they are a full grid
    ///   (`None` for masked tokens); `cond`: the conditioning vector and context tokens
    ///   `[B, M, D]`
    /// - output: the attention output `[B, N, D]`, and the context tokens updated by a
    ///   [`TwoStream`](AttentionPart::TwoStream) part (`None` for the others, and for a
    ///   pre-only context stream)
    ///
    /// # Errors
    /// A missing grid or context the part needs, or shapes it cannot take.
    pub fn forward(&self, x: Tensor<3>, grid: Option<[usize; 2]>, cond: &BlockCondition) -> Result<(Tensor<3>, Option<Tensor<3>>)> {
        let context = || {
            cond.context.clone().ok_or_else(|| Error::InvalidArgument("this attention part needs context tokens".into()))
        };
        let out = match self {
            AttentionPart::MultiHead(a) => a.try_forward(x)?,
            AttentionPart::Downsampled(a) => {
                let grid = grid.ok_or_else(|| {
                    Error::InvalidArgument("downsampled-token attention needs the full token grid (no masking)".into())
                })?;
                a.forward_tokens(x, grid)?
            }
            AttentionPart::Cosine(a) => a.forward(x)?,
            AttentionPart::Joint(a) => {
                let out = a.forward(vec![x, context()?])?;
                out.into_iter().next().flatten().ok_or_else(|| Error::InvalidArgument("joint attention lost its first stream".into()))?
            }
            AttentionPart::Cross(a) => a.forward(x, context()?),
            AttentionPart::TwoStream(a) => return a.forward(x, context()?, cond.c.clone()),
        };
        Ok((out, None))
    }
}

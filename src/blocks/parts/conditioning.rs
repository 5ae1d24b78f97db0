//! The conditioning part of a [`Block`](crate::blocks::Block): how the conditioning vector
//! `c` (or the context tokens) enters the block. The five designs:
//!
//! | kind | parameters | attention / FFN sub-layer `i` |
//! |---|---|---|
//! | [`ConditioningKind::AdaLnZero`] (DiT) | `adaLN_modulation: SiLU, Linear(D_c, 6D)`, zero | `x + g_i * f(LN(x) (1 + s_i) + b_i)` |
//! | [`ConditioningKind::AdaLn`] | `Linear(D_c, 4D)`, Xavier | `x + f(LN(x) (1 + s_i) + b_i)` |
//! | [`ConditioningKind::AdaLnSingle`] (PixArt-alpha) | per block `scale_shift_table [6, D]` (`randn / sqrt(D)`); the shell's shared `t_block: SiLU, Linear(D, 6D)` | as adaLN-Zero with `(b, s, g) = table + t_block(c)` |
//! | [`ConditioningKind::CrossAttention`] | affine LayerNorms, `CrossAttention` | `x + f(LN_i(x))`, then `x + cross_attn(LN(x), context)` after attention |
//! | [`ConditioningKind::InContext`] | affine LayerNorms | `x + f(LN_i(x))`; the shell prepends the condition tokens |
//! | [`ConditioningKind::AdaLnZeroCross`] (MicroDiT) | [`CaptionConditioning`]: weight-only LayerNorms, `adaLN_modulation`, `CrossAttention` | as adaLN-Zero, then the ungated `x + cross_attn(LN(x), context)` after attention |
//! | [`ConditioningKind::AdaLnZeroDual`] (SD3.5 MMDiT-X) | [`DualAttention`]: `Linear(D_c, 9D)`, a second self-attention `attn2` | as adaLN-Zero, then `x + g_2 * attn2(LN(x) (1 + s_2) + b_2)` on the attention's normalised input |
//!
//! `LN` is parameter-free (eps 1e-6) in the adaptive designs, affine in the others (weight
//! only in MicroDiT's). The adaLN linears take [`PartSpec::modulation_activation`] first.
//!
//! Adding a design: a new file in this folder, one arm in [`ConditioningKind`] and
//! [`ConditioningPart`], and its lines in `num_params`, `macs`, `init`, `modulation`, `norm`
//! and (for an extra sub-layer) `middle`.

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;

use crate::blocks::parts::caption_conditioning::CaptionConditioning;
use crate::blocks::parts::dual_attention::DualAttention;
use crate::blocks::parts::spec::PartSpec;
use crate::error::{Error, Result, ensure_dims};
use crate::layers::adaln::AdaLnModulation;
use crate::layers::attention::{CrossAttention, CrossAttentionConfig};
use crate::layers::norm::{gated_residual, layer_norm, modulate};

/// Epsilon of every LayerNorm of the block.
pub const BLOCK_NORM_EPS: f64 = 1e-6;

/// How a block is conditioned.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ConditioningKind {
    /// adaLN-Zero: shift, scale and zero-initialised gates regressed per block.
    AdaLnZero,
    /// adaLN: shift and scale regressed per block, no gates.
    AdaLn,
    /// adaLN-single (PixArt-alpha): one shared regression in the shell plus a learned
    /// per-block table.
    AdaLnSingle,
    /// Cross-attention over the context tokens after self-attention.
    CrossAttention,
    /// In-context condition tokens (prepended by the shell).
    InContext,
    /// adaLN-Zero over weight-only LayerNorms plus an ungated cross-attention over the context
    /// (caption) tokens after the attention (MicroDiT).
    AdaLnZeroCross,
    /// adaLN-Zero with a 9-chunk modulation driving a second self-attention on the same
    /// normalised input (SD3.5's MMDiT-X dual attention).
    AdaLnZeroDual,
}

impl ConditioningKind {
    /// Whether the design's LayerNorms are parameter-free ones of the fixed epsilon
    /// [`BLOCK_NORM_EPS`] (they store no epsilon of their own).
    pub fn fixed_norm_eps(&self) -> bool {
        matches!(self, Self::AdaLnZero | Self::AdaLn | Self::AdaLnSingle | Self::AdaLnZeroDual)
    }

    /// Whether the design needs context tokens.
    pub fn needs_context(&self) -> bool {
        matches!(self, Self::CrossAttention | Self::AdaLnZeroCross)
    }

    /// Parameters of the part for a block of spec `s`.
    pub fn num_params(&self, s: &PartSpec) -> usize {
        let (d, d_cond) = (s.d_model, s.d_cond);
        let lin = |i: usize, o: usize| i * o + o;
        match self {
            ConditioningKind::AdaLnZero => lin(d_cond, 6 * d),
            ConditioningKind::AdaLn => lin(d_cond, 4 * d),
            ConditioningKind::AdaLnSingle => 6 * d,
            ConditioningKind::CrossAttention => 3 * 2 * d + 2 * lin(d, d) + lin(d, 2 * d),
            ConditioningKind::InContext => 2 * 2 * d,
            ConditioningKind::AdaLnZeroCross => CaptionConditioning::num_params(s),
            ConditioningKind::AdaLnZeroDual => DualAttention::num_params(s),
        }
    }

    /// Multiply-accumulates over `n` tokens with `m` context tokens.
    pub fn macs(&self, s: &PartSpec, n: usize, m: usize) -> f64 {
        let (d, c, nf, mf) = (s.d_model as f64, s.d_cond as f64, n as f64, m as f64);
        match self {
            ConditioningKind::AdaLnZero => 6.0 * c * d,
            ConditioningKind::AdaLn => 4.0 * c * d,
            ConditioningKind::AdaLnSingle | ConditioningKind::InContext => 0.0,
            ConditioningKind::CrossAttention => 2.0 * nf * d * d + 2.0 * mf * d * d + 2.0 * nf * mf * d,
            ConditioningKind::AdaLnZeroCross => CaptionConditioning::macs(s, n, m),
            ConditioningKind::AdaLnZeroDual => DualAttention::macs(s, n),
        }
    }

    /// Builds the part for a block of spec `s`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for widths the cross-attention cannot take.
    pub fn init(&self, s: &PartSpec, device: &Device) -> Result<ConditioningPart> {
        let (d, d_cond) = (s.d_model, s.d_cond);
        let norm = || LayerNormConfig::new(d).with_epsilon(s.norm_eps).init(device);
        let act = s.modulation_activation;
        Ok(match self {
            ConditioningKind::AdaLnZero => {
                ConditioningPart::AdaLnZero(AdaLnModulation::new(d_cond, d, 6, true, device).with_activation(act))
            }
            ConditioningKind::AdaLn => {
                ConditioningPart::AdaLn(AdaLnModulation::new(d_cond, d, 4, false, device).with_activation(act))
            }
            ConditioningKind::AdaLnSingle => {
                let init = burn::nn::Initializer::Normal { mean: 0.0, std: 1.0 / (d as f64).sqrt() };
                ConditioningPart::AdaLnSingle(ScaleShiftTable { scale_shift_table: init.init([6, d], device) })
            }
            ConditioningKind::CrossAttention => ConditioningPart::CrossAttention(CrossConditioning {
                norm1: norm(),
                norm2: norm(),
                norm_cross: norm(),
                cross_attn: CrossAttentionConfig::new(d, d, s.n_heads).init(device)?,
            }),
            ConditioningKind::InContext => ConditioningPart::InContext(AffineNorms { norm1: norm(), norm2: norm() }),
            ConditioningKind::AdaLnZeroCross => ConditioningPart::AdaLnZeroCross(CaptionConditioning::new(s, device)?),
            ConditioningKind::AdaLnZeroDual => ConditioningPart::AdaLnZeroDual(DualAttention::new(s, device)?),
        })
    }
}

/// PixArt-alpha's per-block table (key `scale_shift_table`).
#[derive(Module, Debug)]
pub struct ScaleShiftTable {
    /// `[6, D]`: shift, scale, gate of attention, then of the FFN.
    pub scale_shift_table: Param<Tensor<2>>,
}

/// The affine pre-norms of a non-adaptive block.
#[derive(Module, Debug)]
pub struct AffineNorms {
    /// Before the attention.
    pub norm1: LayerNorm,
    /// Before the FFN.
    pub norm2: LayerNorm,
}

/// DiT's cross-attention design: affine pre-norms plus a cross-attention sub-layer.
#[derive(Module, Debug)]
pub struct CrossConditioning {
    /// Before the attention.
    pub norm1: LayerNorm,
    /// Before the FFN.
    pub norm2: LayerNorm,
    /// Before the cross-attention.
    pub norm_cross: LayerNorm,
    /// Cross-attention over the context tokens.
    pub cross_attn: CrossAttention,
}

/// The conditioning part of a block (see the [module docs](self)).
#[derive(Module, Debug)]
pub enum ConditioningPart {
    /// adaLN-Zero modulation (6 chunks).
    AdaLnZero(AdaLnModulation),
    /// adaLN modulation (4 chunks).
    AdaLn(AdaLnModulation),
    /// adaLN-single table.
    AdaLnSingle(ScaleShiftTable),
    /// Cross-attention design.
    CrossAttention(CrossConditioning),
    /// In-context design.
    InContext(AffineNorms),
    /// MicroDiT's adaLN-Zero with a caption cross-attention.
    AdaLnZeroCross(CaptionConditioning),
    /// MMDiT-X's adaLN-Zero with a dual attention.
    AdaLnZeroDual(DualAttention),
}

/// What a block is conditioned on.
#[derive(Debug, Clone)]
pub struct BlockCondition {
    /// Conditioning vector `[B, D_c]`.
    pub c: Tensor<2>,
    /// adaLN-single: the shell's shared regression `t_block(c)` in 6 chunks `[B, D]`.
    pub shared: Option<Vec<Tensor<2>>>,
    /// Context tokens `[B, M, D]` (captions, or the condition embeddings as tokens).
    pub context: Option<Tensor<3>>,
}

/// Shift, scale and gate of one sub-layer (each absent when the design has none).
#[derive(Debug, Clone, Default)]
pub struct SubLayerModulation {
    /// Shift `[B, D]`.
    pub shift: Option<Tensor<2>>,
    /// Scale `[B, D]`.
    pub scale: Option<Tensor<2>>,
    /// Residual gate `[B, D]`.
    pub gate: Option<Tensor<2>>,
}

impl SubLayerModulation {
    /// The modulations of the attention, the FFN and (with 9 chunks) the extra sub-layer,
    /// from chunks in the reference order (`shift, scale[, gate]` per sub-layer).
    fn from_chunks(v: Vec<Tensor<2>>, gated: bool) -> [Self; 3] {
        let mut it = v.into_iter();
        let mut stage = || Self { shift: it.next(), scale: it.next(), gate: if gated { it.next() } else { None } };
        let (a, f) = (stage(), stage());
        [a, f, stage()]
    }

    /// `x (1 + scale) + shift` (identity without them).
    pub fn modulate(&self, x: Tensor<3>) -> Tensor<3> {
        match (&self.shift, &self.scale) {
            (Some(b), Some(s)) => modulate(x, b.clone(), s.clone()),
            _ => x,
        }
    }

    /// `x + gate * y` (`x + y` without a gate).
    pub fn residual(&self, x: Tensor<3>, y: Tensor<3>) -> Tensor<3> {
        match &self.gate {
            Some(g) => gated_residual(x, g.clone(), y),
            None => x + y,
        }
    }
}

impl ConditioningPart {
    /// The modulation of the attention, the FFN and the extra sub-layer (the dual attention;
    /// the identity for the other designs).
    ///
    /// # Errors
    /// [`Error::Shape`] for a conditioning vector of the wrong width, [`Error::InvalidArgument`]
    /// for adaLN-single without the shell's shared regression.
    pub fn modulation(&self, cond: &BlockCondition) -> Result<[SubLayerModulation; 3]> {
        let check = |m: &AdaLnModulation| {
            ensure_dims("c", cond.c.dims(), [None, Some(m.linear.weight.dims()[0])])
        };
        Ok(match self {
            ConditioningPart::AdaLnZero(m) => {
                check(m)?;
                SubLayerModulation::from_chunks(m.forward(cond.c.clone()), true)
            }
            ConditioningPart::AdaLn(m) => {
                check(m)?;
                SubLayerModulation::from_chunks(m.forward(cond.c.clone()), false)
            }
            ConditioningPart::AdaLnZeroCross(CaptionConditioning { ada_ln_modulation: m, .. })
            | ConditioningPart::AdaLnZeroDual(DualAttention { ada_ln_modulation: m, .. }) => {
                check(m)?;
                SubLayerModulation::from_chunks(m.forward(cond.c.clone()), true)
            }
            ConditioningPart::AdaLnSingle(t) => {
                let shared = cond.shared.as_ref().filter(|s| s.len() == 6).ok_or_else(|| {
                    Error::InvalidArgument("adaLN-single blocks need the shell's shared t_block regression".into())
                })?;
                let [_, d] = t.scale_shift_table.dims();
                let rows = t.scale_shift_table.val().chunk(6, 0);
                let chunks = shared
                    .iter()
                    .zip(rows)
                    .map(|(s, r)| {
                        ensure_dims("t_block chunk", s.dims(), [None, Some(d)])?;
                        Ok(s.clone() + r)
                    })
                    .collect::<Result<Vec<_>>>()?;
                SubLayerModulation::from_chunks(chunks, true)
            }
            ConditioningPart::CrossAttention(_) | ConditioningPart::InContext(_) => Default::default(),
        })
    }

    /// The pre-norm of sub-layer `i` (0: attention, 1: FFN).
    pub fn norm(&self, i: usize, x: Tensor<3>) -> Tensor<3> {
        let affine = match self {
            ConditioningPart::CrossAttention(c) => Some(if i == 0 { &c.norm1 } else { &c.norm2 }),
            ConditioningPart::InContext(n) => Some(if i == 0 { &n.norm1 } else { &n.norm2 }),
            ConditioningPart::AdaLnZeroCross(c) => return c.norm(if i == 0 { 1 } else { 3 }, x),
            _ => None,
        };
        match affine {
            Some(n) => n.forward(x),
            None => layer_norm(x, BLOCK_NORM_EPS),
        }
    }

    /// The extra sub-layer between the attention and the FFN: the cross-attention
    /// `x + cross_attn(LN(x), context)` of the cross-attention designs, the dual attention
    /// `x + g_2 * attn2(modulate(normed, extra))` on the attention's normalised input `normed`;
    /// the identity otherwise.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the design needs context tokens and has none;
    /// [`Error::Shape`] for context of another width.
    pub fn middle(&self, x: Tensor<3>, normed: Tensor<3>, extra: &SubLayerModulation, context: Option<&Tensor<3>>) -> Result<Tensor<3>> {
        match self {
            ConditioningPart::CrossAttention(c) => {
                let ctx = context.ok_or_else(|| Error::InvalidArgument("cross-attention conditioning needs context tokens".into()))?;
                ensure_dims("context", ctx.dims(), [Some(x.dims()[0]), None, Some(x.dims()[2])])?;
                Ok(x.clone() + c.cross_attn.forward(c.norm_cross.forward(x), ctx.clone()))
            }
            ConditioningPart::AdaLnZeroCross(c) => c.cross(x, context),
            ConditioningPart::AdaLnZeroDual(dual) => Ok(extra.residual(x, dual.attn2.try_forward(extra.modulate(normed))?)),
            _ => Ok(x),
        }
    }
}

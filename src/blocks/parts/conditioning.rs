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
//!
//! `LN` is parameter-free (eps 1e-6) in the adaptive designs, affine in the others.

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;

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
}

impl ConditioningKind {
    /// Parameters of the part for width `d` and a `d_cond` vector.
    pub fn num_params(&self, d: usize, d_cond: usize) -> usize {
        let lin = |i: usize, o: usize| i * o + o;
        match self {
            ConditioningKind::AdaLnZero => lin(d_cond, 6 * d),
            ConditioningKind::AdaLn => lin(d_cond, 4 * d),
            ConditioningKind::AdaLnSingle => 6 * d,
            ConditioningKind::CrossAttention => 3 * 2 * d + 2 * lin(d, d) + lin(d, 2 * d),
            ConditioningKind::InContext => 2 * 2 * d,
        }
    }

    /// Multiply-accumulates over `n` tokens of width `d` with `m` context tokens.
    pub fn macs(&self, d: usize, d_cond: usize, n: usize, m: usize) -> f64 {
        let (d, c, n, m) = (d as f64, d_cond as f64, n as f64, m as f64);
        match self {
            ConditioningKind::AdaLnZero => 6.0 * c * d,
            ConditioningKind::AdaLn => 4.0 * c * d,
            ConditioningKind::AdaLnSingle | ConditioningKind::InContext => 0.0,
            ConditioningKind::CrossAttention => 2.0 * n * d * d + 2.0 * m * d * d + 2.0 * n * m * d,
        }
    }

    /// Builds the part for a block of width `d_model` conditioned on a `d_cond` vector.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for widths the cross-attention cannot take.
    pub fn init(&self, d_model: usize, d_cond: usize, n_heads: usize, device: &Device) -> Result<ConditioningPart> {
        let d = d_model;
        let norm = || LayerNormConfig::new(d).with_epsilon(BLOCK_NORM_EPS).init(device);
        Ok(match self {
            ConditioningKind::AdaLnZero => ConditioningPart::AdaLnZero(AdaLnModulation::new(d_cond, d, 6, true, device)),
            ConditioningKind::AdaLn => ConditioningPart::AdaLn(AdaLnModulation::new(d_cond, d, 4, false, device)),
            ConditioningKind::AdaLnSingle => {
                let init = burn::nn::Initializer::Normal { mean: 0.0, std: 1.0 / (d as f64).sqrt() };
                ConditioningPart::AdaLnSingle(ScaleShiftTable { scale_shift_table: init.init([6, d], device) })
            }
            ConditioningKind::CrossAttention => ConditioningPart::CrossAttention(CrossConditioning {
                norm1: norm(),
                norm2: norm(),
                norm_cross: norm(),
                cross_attn: CrossAttentionConfig::new(d, d, n_heads).init(device)?,
            }),
            ConditioningKind::InContext => ConditioningPart::InContext(AffineNorms { norm1: norm(), norm2: norm() }),
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
    fn from_chunks(mut v: Vec<Tensor<2>>, gated: bool) -> [Self; 2] {
        let take = |v: &mut Vec<Tensor<2>>| Some(v.remove(0));
        let stage = |v: &mut Vec<Tensor<2>>| Self { shift: take(v), scale: take(v), gate: if gated { take(v) } else { None } };
        let a = stage(&mut v);
        [a, stage(&mut v)]
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
    /// The modulation of the attention and the FFN sub-layers.
    ///
    /// # Errors
    /// [`Error::Shape`] for a conditioning vector of the wrong width, [`Error::InvalidArgument`]
    /// for adaLN-single without the shell's shared regression.
    pub fn modulation(&self, cond: &BlockCondition) -> Result<[SubLayerModulation; 2]> {
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
            _ => None,
        };
        match affine {
            Some(n) => n.forward(x),
            None => layer_norm(x, BLOCK_NORM_EPS),
        }
    }

    /// The cross-attention sub-layer `x + cross_attn(LN(x), context)` of the cross-attention
    /// design; the identity otherwise.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the design needs context tokens and has none;
    /// [`Error::Shape`] for context of another width.
    pub fn cross(&self, x: Tensor<3>, context: Option<&Tensor<3>>) -> Result<Tensor<3>> {
        match self {
            ConditioningPart::CrossAttention(c) => {
                let ctx = context.ok_or_else(|| Error::InvalidArgument("cross-attention conditioning needs context tokens".into()))?;
                ensure_dims("context", ctx.dims(), [Some(x.dims()[0]), None, Some(x.dims()[2])])?;
                Ok(x.clone() + c.cross_attn.forward(c.norm_cross.forward(x), ctx.clone()))
            }
            _ => Ok(x),
        }
    }
}

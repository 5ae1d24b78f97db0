//! MicroDiT's conditioning as a block part (SonyResearch/micro_diffusion `DiTBlock`):
//! adaLN-Zero over **bias-free** (weight-only) LayerNorms, plus an **ungated** cross-attention
//! sub-layer over the caption tokens between the attention and the feed-forward:
//!
//! ```text
//! shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = Linear(act(c))      (act: tanh-GELU in MicroDiT)
//! x += gate_a * attn(norm1(x) (1 + scale_a) + shift_a)
//! x += cross_attn(norm2(x), captions)                                      (no gate, no modulation)
//! x += gate_f * ffn(norm3(x) (1 + scale_f) + shift_f)
//! ```
//!
//! The cross-attention keeps the block width `D` (heads of the block's head width) and takes
//! the block's QK norm (MicroDiT: LayerNorm without affine over all heads), biases and init.

use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;

use crate::blocks::parts::spec::PartSpec;
use crate::error::{Error, Result, ensure_config, ensure_dims};
use crate::layers::adaln::AdaLnModulation;
use crate::layers::attention::{CrossAttention, CrossAttentionConfig};
use crate::layers::norm::apply_layer_norm;

/// A LayerNorm with a weight and no bias (the reference's `create_norm('layernorm')`).
pub fn weight_only_norm(d: usize, eps: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d).with_epsilon(eps).with_bias(false).init(device)
}

/// adaLN-Zero with weight-only norms and an ungated caption cross-attention (see the
/// [module docs](self)). Official keys `norm{1,2,3}.weight`, `cross_attn.{q_linear,kv_linear,proj}`
/// (`cross_attn.{q,kv,proj}` here), `adaLN_modulation.1`.
#[derive(Module, Debug)]
pub struct CaptionConditioning {
    /// Before the attention.
    pub norm1: LayerNorm,
    /// Before the cross-attention.
    pub norm2: LayerNorm,
    /// Before the feed-forward.
    pub norm3: LayerNorm,
    /// Cross-attention over the caption tokens.
    pub cross_attn: CrossAttention,
    /// adaLN-Zero modulation (6 chunks, zero-initialised).
    pub ada_ln_modulation: AdaLnModulation,
    /// Epsilon of the three norms.
    pub norm_eps: f64,
}

impl CaptionConditioning {
    /// The part for a block of spec `s`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the block width is not a multiple of the head width.
    pub fn new(s: &PartSpec, device: &Device) -> Result<Self> {
        let (d, hd) = (s.d_model, s.head_dim());
        ensure_config(hd > 0 && d.is_multiple_of(hd), || {
            format!("the caption cross-attention needs the block width {d} to be a multiple of the head width {hd}")
        })?;
        let [init_in, init_out] = s.init;
        let norm = || weight_only_norm(d, s.norm_eps, device);
        Ok(Self {
            norm1: norm(),
            norm2: norm(),
            norm3: norm(),
            cross_attn: CrossAttentionConfig::new(d, d, d / hd)
                .with_bias(s.bias)
                .with_qk_norm(s.qk_norm)
                .with_qk_norm_eps(s.norm_eps)
                .with_init_in(init_in)
                .with_init_out(init_out)
                .init(device)?,
            ada_ln_modulation: AdaLnModulation::new(s.d_cond, d, 6, true, device).with_activation(s.modulation_activation),
            norm_eps: s.norm_eps,
        })
    }

    /// Parameters of the part.
    pub fn num_params(s: &PartSpec) -> usize {
        let d = s.d_model;
        let lin_b = |i: usize, o: usize| i * o + if s.bias { o } else { 0 };
        3 * d + 2 * lin_b(d, d) + lin_b(d, 2 * d) + s.d_cond * 6 * d + 6 * d
    }

    /// Multiply-accumulates over `n` tokens with `m` caption tokens.
    pub fn macs(s: &PartSpec, n: usize, m: usize) -> f64 {
        let (d, c, n, m) = (s.d_model as f64, s.d_cond as f64, n as f64, m as f64);
        6.0 * c * d + 2.0 * n * d * d + 2.0 * m * d * d + 2.0 * n * m * d
    }

    /// The cross-attention sub-layer `x + cross_attn(norm2(x), captions)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] without caption tokens, [`Error::Shape`] for captions of
    /// another batch or width.
    pub fn cross(&self, x: Tensor<3>, context: Option<&Tensor<3>>) -> Result<Tensor<3>> {
        let ctx = context.ok_or_else(|| Error::InvalidArgument("caption cross-attention needs caption tokens".into()))?;
        ensure_dims("context", ctx.dims(), [Some(x.dims()[0]), None, Some(x.dims()[2])])?;
        Ok(x.clone() + self.cross_attn.forward(self.norm(2, x), ctx.clone()))
    }

    /// Norm `i` (1: before the attention, 2: the cross-attention, 3: the feed-forward) of `x`.
    pub fn norm(&self, i: usize, x: Tensor<3>) -> Tensor<3> {
        let norm = match i {
            1 => &self.norm1,
            2 => &self.norm2,
            _ => &self.norm3,
        };
        apply_layer_norm(norm, x, self.norm_eps)
    }
}

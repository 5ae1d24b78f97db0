//! MM-DiT's two-stream joint attention as a block part (diffusers `JointTransformerBlock`):
//! the block's tokens are stream 0, the context tokens stream 1 with weights of their own. The
//! block modulates and normalises its tokens as usual and hands them in; the part does the
//! same for the context stream with its own adaLN-Zero modulation, runs one
//! [`JointAttention`] over both, and finishes the context stream's update with its own MLP:
//!
//! ```text
//! shift, scale, gate_a, shift_m, scale_m, gate_m = Linear(act(c))          (context stream)
//! h_ctx          = LN(ctx) (1 + scale) + shift                              (LN: no affine)
//! a_x, a_ctx     = JointAttention(h_x, h_ctx)                               (one attention, all tokens)
//! ctx           += gate_a * a_ctx
//! ctx           += gate_m * MLP(LN(ctx) (1 + scale_m) + shift_m)             (tanh-GELU MLP)
//! ```
//!
//! A **pre-only** context stream (SD3's last block, diffusers `context_pre_only`) has a
//! 2-chunk modulation `(shift, scale)` (diffusers' `AdaLayerNormContinuous`), supplies keys and
//! values only and is not updated: no output projection, no MLP.

use burn::prelude::*;

use crate::blocks::parts::spec::PartSpec;
use crate::error::{Result, ensure_dims};
use crate::layers::adaln::AdaLnModulation;
use crate::layers::joint_attention::{JointAttention, JointAttentionConfig};
use crate::layers::mlp::{Mlp, MlpConfig};
use crate::layers::norm::{gated_residual, layer_norm, modulate};

/// Two-stream joint attention carrying the context stream's modulation and MLP (see the
/// [module docs](self)).
#[derive(Module, Debug)]
pub struct TwoStreamAttention {
    /// Per-stream projections (stream 0: the block's tokens, stream 1: the context) and the
    /// joint attention.
    pub joint: JointAttention,
    /// The context stream's adaLN modulation: 6 chunks (shift, scale, gate of the attention,
    /// then of the MLP), 2 (shift, scale) when pre-only. Zero-initialised.
    pub context_modulation: AdaLnModulation,
    /// The context stream's tanh-GELU MLP; `None` when pre-only.
    pub context_mlp: Option<Mlp>,
    /// Epsilon of the context stream's (affine-free) LayerNorms.
    pub norm_eps: f64,
}

impl TwoStreamAttention {
    fn chunks(pre_only: bool) -> usize {
        if pre_only { 2 } else { 6 }
    }

    /// The part for a block of spec `s` (Xavier linears, zero modulation).
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] for widths the joint attention or MLP cannot take.
    pub fn new(s: &PartSpec, context_pre_only: bool, device: &Device) -> Result<Self> {
        let d = s.d_model;
        let joint = JointAttentionConfig::new(d, s.n_heads)
            .with_pre_only(if context_pre_only { vec![1] } else { vec![] })
            .with_qk_norm(s.qk_norm)
            .with_qk_norm_eps(s.norm_eps)
            .init(device)?;
        let context_mlp = match context_pre_only {
            true => None,
            false => Some(MlpConfig::new(d, s.ffn_hidden).init(device)?),
        };
        Ok(Self {
            joint,
            context_modulation: AdaLnModulation::new(s.d_cond, d, Self::chunks(context_pre_only), true, device)
                .with_activation(s.modulation_activation),
            context_mlp,
            norm_eps: s.norm_eps,
        })
    }

    /// Parameters of the part.
    pub fn num_params(s: &PartSpec, context_pre_only: bool) -> usize {
        let (d, h) = (s.d_model, s.ffn_hidden);
        let lin = |i: usize, o: usize| i * o + o;
        let outputs = if context_pre_only { 1 } else { 2 };
        let mlp = if context_pre_only { 0 } else { lin(d, h) + lin(h, d) };
        2 * lin(d, 3 * d) + outputs * lin(d, d) + 2 * s.qk_norm.num_params(s.head_dim())
            + lin(s.d_cond, Self::chunks(context_pre_only) * d)
            + mlp
    }

    /// Multiply-accumulates over `n` tokens and `m` context tokens (a pre-only context
    /// evaluates no queries, output projection or MLP).
    pub fn macs(s: &PartSpec, context_pre_only: bool, n: usize, m: usize) -> f64 {
        let (d, h, c) = (s.d_model as f64, s.ffn_hidden as f64, s.d_cond as f64);
        let (n, m) = (n as f64, m as f64);
        let out = if context_pre_only { n } else { n + m }; // tokens with outputs
        let mlp = if context_pre_only { 0.0 } else { 2.0 * m * d * h };
        3.0 * (n + m) * d * d + out * d * d + 2.0 * out * (n + m) * d + c * Self::chunks(context_pre_only) as f64 * d + mlp
    }

    /// # Shapes
    /// - `x`: `[B, N, D]` the block's normalised, modulated tokens; `context`: `[B, M, D]`
    ///   the context tokens as they enter the block; `c`: `[B, D_c]`
    /// - output: the tokens' attention output `[B, N, D]` and the updated context tokens
    ///   `[B, M, D]` (`None` when pre-only)
    ///
    /// # Errors
    /// [`crate::Error::Shape`] for a context or `c` of the wrong shape.
    pub fn forward(&self, x: Tensor<3>, context: Tensor<3>, c: Tensor<2>) -> Result<(Tensor<3>, Option<Tensor<3>>)> {
        let d = self.joint.d_model();
        let b = x.dims()[0];
        ensure_dims("context", context.dims(), [Some(b), None, Some(d)])?;
        ensure_dims("c", c.dims(), [Some(b), Some(self.context_modulation.linear.weight.dims()[0])])?;
        let ln = |t: Tensor<3>| layer_norm(t, self.norm_eps);
        let mut m = self.context_modulation.forward(c).into_iter();
        let (shift, scale) = (m.next().expect("shift"), m.next().expect("scale"));
        let h_ctx = modulate(ln(context.clone()), shift, scale);
        let mut out = self.joint.forward(vec![x, h_ctx])?.into_iter();
        let a_x = out.next().flatten().expect("stream 0 has an output");
        let (Some(a_ctx), Some(mlp)) = (out.next().flatten(), self.context_mlp.as_ref()) else {
            return Ok((a_x, None));
        };
        let [g_a, s_m, sc_m, g_m]: [Tensor<2>; 4] = m.collect::<Vec<_>>().try_into().expect("6 chunks");
        let ctx = gated_residual(context, g_a, a_ctx);
        let ctx = gated_residual(ctx.clone(), g_m, mlp.forward(modulate(ln(ctx), s_m, sc_m)));
        Ok((a_x, Some(ctx)))
    }
}

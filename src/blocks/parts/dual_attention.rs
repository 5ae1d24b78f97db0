//! SD3.5's MMDiT-X dual attention as a conditioning part (diffusers `use_dual_attention`,
//! `SD35AdaLayerNormZeroX`): adaLN-Zero with a 9-chunk modulation whose last three chunks
//! drive a second, block-only self-attention `attn2` on the **same** normalised input as the
//! block's attention, added after the attention's residual:
//!
//! ```text
//! shift_a, scale_a, gate_a, shift_f, scale_f, gate_f, shift_2, scale_2, gate_2 = Linear(act(c))
//! n  = LN(x)                                                   (no affine, eps 1e-6)
//! x += gate_a * attn(n (1 + scale_a) + shift_a)
//! x += gate_2 * attn2(n (1 + scale_2) + shift_2)
//! x += gate_f * ffn(LN(x) (1 + scale_f) + shift_f)
//! ```
//!
//! `attn2` is a multi-head self-attention of the block width with the block's QK norm.

use burn::prelude::*;

use crate::blocks::parts::spec::PartSpec;
use crate::error::Result;
use crate::layers::adaln::AdaLnModulation;
use crate::layers::attention::Attention;

/// adaLN-Zero with a second self-attention (see the [module docs](self)).
#[derive(Module, Debug)]
pub struct DualAttention {
    /// The 9-chunk modulation (zero-initialised).
    pub ada_ln_modulation: AdaLnModulation,
    /// The second self-attention.
    pub attn2: Attention,
}

impl DualAttention {
    /// The part for a block of spec `s`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] for widths the attention cannot take.
    pub fn new(s: &PartSpec, device: &Device) -> Result<Self> {
        let d = s.d_model;
        Ok(Self {
            ada_ln_modulation: AdaLnModulation::new(s.d_cond, d, 9, true, device).with_activation(s.modulation_activation),
            attn2: s.attention_config(s.full_width_heads()).init(device)?,
        })
    }

    /// Parameters of the part.
    pub fn num_params(s: &PartSpec) -> usize {
        let d = s.d_model;
        let lin_b = |i: usize, o: usize| i * o + if s.bias { o } else { 0 };
        s.d_cond * 9 * d + 9 * d + lin_b(d, 3 * d) + lin_b(d, d) + s.qk_norm.num_params(s.head_dim())
    }

    /// Multiply-accumulates over `n` tokens.
    pub fn macs(s: &PartSpec, n: usize) -> f64 {
        let (d, c, n) = (s.d_model as f64, s.d_cond as f64, n as f64);
        9.0 * c * d + 4.0 * n * d * d + 2.0 * n * n * d
    }
}

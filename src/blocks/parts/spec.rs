//! What every part is built from: the block's widths and the options its parts share, filled
//! in by [`BlockConfig::spec`](crate::blocks::BlockConfig::spec) and handed to each part kind's
//! `init`, `num_params` and `macs`.

use crate::layers::activation::Activation;
use crate::layers::attention::{AttentionConfig, QkNorm};
use crate::layers::init::WeightInit;

/// The widths and shared options of one block's parts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartSpec {
    /// Block width `D`.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Width of the attention space (`D` unless layer-wise scaled).
    pub attn_hidden: usize,
    /// Nominal FFN hidden width (each feed-forward derives its actual width from it).
    pub ffn_hidden: usize,
    /// Width of the conditioning vector `c`.
    pub d_cond: usize,
    /// Query/key normalisation of the attentions that have one.
    pub qk_norm: QkNorm,
    /// Biases on the attention, cross-attention and feed-forward linears.
    pub bias: bool,
    /// Init of the input-side (`qkv`, `q`, `kv`, `w1`, ...) and output-side (`proj`, `w3`,
    /// ...) projections.
    pub init: [WeightInit; 2],
    /// Epsilon of the block's LayerNorms (and of a full-width QK LayerNorm).
    pub norm_eps: f64,
    /// Activation in front of the adaLN linear.
    pub modulation_activation: Activation,
}

impl PartSpec {
    /// Width of one attention head, `attn_hidden / n_heads`.
    pub fn head_dim(&self) -> usize {
        self.attn_hidden / self.n_heads.max(1)
    }

    /// Heads of an attention of the block width `D` with this spec's head width (the
    /// cross-attention of a layer-wise scaled block keeps width `D`).
    pub fn full_width_heads(&self) -> usize {
        self.d_model / self.head_dim().max(1)
    }

    /// The normal-init standard deviations `(input side, output side)` when both projections
    /// are normal-initialised (MicroDiT's `custom_init`), for the layers configured by stds.
    pub fn normal_stds(&self) -> Option<(f64, f64)> {
        match self.init {
            [WeightInit::Normal(a), WeightInit::Normal(b)] => Some((a, b)),
            _ => None,
        }
    }

    /// The self-attention of this spec's block with `n_heads` heads over the width `D`: its
    /// QK norm and eps, biases and inits (the hidden width is left at `D`).
    pub fn attention_config(&self, n_heads: usize) -> AttentionConfig {
        let [init_in, init_out] = self.init;
        AttentionConfig::new(self.d_model, n_heads)
            .with_qk_norm(self.qk_norm)
            .with_qk_norm_eps(self.norm_eps)
            .with_qkv_bias(self.bias)
            .with_proj_bias(self.bias)
            .with_init_in(init_in)
            .with_init_out(init_out)
    }
}

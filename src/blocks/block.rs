//! One configurable transformer block, assembled from the [`parts`](crate::blocks::parts)
//! its [`BlockConfig`] names:
//!
//! ```text
//!  n = norm_1(x)
//!  a, context' = attention(modulate(n, shift_a, scale_a), grid, cond)     context' only from a two-stream part
//!  x = x + gate_a * a
//!  x = middle(x, n)       cross-attention (cross-attention / caption designs), dual attention (MMDiT-X), else identity
//!  x = x + gate_f * feed-forward(modulate(norm_2(x), shift_f, scale_f), grid)
//! ```
//!
//! The conditioning part decides the norms (parameter-free, affine or weight-only), the
//! modulation, the gates and the middle sub-layer (see
//! [`parts::conditioning`](crate::blocks::parts::conditioning)); a two-stream attention part
//! carries the context stream's own modulation and MLP and returns the updated context
//! ([`Block::forward_joint`]).
//!
//! # The blocks of the crate's models as presets
//! | model | attention | feed-forward | conditioning | options |
//! |---|---|---|---|---|
//! | DiT (4 designs) | `MultiHead` | `Mlp` | `AdaLnZero` / `AdaLn` / `CrossAttention` / `InContext` | |
//! | U-DiT | `Downsampled` | `DwConv` | `AdaLnZero` | |
//! | MicroDiT | `MultiHead` (scaled width) | `SwiGlu` / `Moe` | `AdaLnZeroCross` | `QkNorm::FullLayerNorm`, `bias`, normal `init`, tanh-GELU adaLN, `ffn_hidden` |
//! | MM-DiT (SD3) | `TwoStream` (`context_pre_only` in the last block) | `Mlp` | `AdaLnZero` | per-head `qk_norm` (SD3.5) |
//! | MMDiT-X (SD3.5-medium) | `TwoStream` | `Mlp` | `AdaLnZeroDual` | `QkNorm::RmsNorm` |

use burn::prelude::*;

use crate::blocks::parts::{AttentionKind, AttentionPart, BlockCondition, ConditioningKind, ConditioningPart};
use crate::blocks::parts::{FeedForwardKind, FeedForwardPart, PartSpec};
use crate::blocks::parts::conditioning::BLOCK_NORM_EPS;
use crate::error::{Result, ensure_config, ensure_dims};
use crate::layers::activation::Activation;
use crate::layers::attention::QkNorm;
use crate::layers::init::WeightInit;

/// Configuration of a [`Block`].
#[derive(Config, Debug)]
pub struct BlockConfig {
    /// Width `D`.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Attention part. Default: multi-head self-attention.
    #[config(default = "AttentionKind::MultiHead")]
    pub attention: AttentionKind,
    /// Feed-forward part. Default: GELU MLP.
    #[config(default = "FeedForwardKind::Mlp")]
    pub feed_forward: FeedForwardKind,
    /// Conditioning part. Default: adaLN-Zero.
    #[config(default = "ConditioningKind::AdaLnZero")]
    pub conditioning: ConditioningKind,
    /// QK norm of the attentions that have one (per head: multi-head, joint, two-stream, dual;
    /// full width: multi-head and the caption cross-attention). Default: none.
    #[config(default = "QkNorm::None")]
    pub qk_norm: QkNorm,
    /// FFN nominal hidden width is `int(D * mlp_ratio)` (unless `ffn_hidden` is set).
    /// Default: 4.0.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Attention width when scaled (layer-wise scaling); `None`: `D`. Default: None.
    #[config(default = "None")]
    pub attn_hidden: Option<usize>,
    /// FFN nominal hidden width when set (layer-wise scaling); `None`: `int(D * mlp_ratio)`.
    /// Default: None.
    #[config(default = "None")]
    pub ffn_hidden: Option<usize>,
    /// Width of the conditioning vector; `None`: `D`. Default: None.
    #[config(default = "None")]
    pub d_cond: Option<usize>,
    /// Biases on the attention, cross-attention and feed-forward linears (MicroDiT's
    /// `use_bias`). Default: true.
    #[config(default = true)]
    pub bias: bool,
    /// Normal-init standard deviations `[input side, output side]` of the attention,
    /// cross-attention and feed-forward projections (MicroDiT's `custom_init`); `None`:
    /// Xavier-uniform (DiT). Default: None.
    #[config(default = "None")]
    pub init_std: Option<[f64; 2]>,
    /// Epsilon of the block's LayerNorms (the parameter-free norms of the adaptive designs
    /// are fixed at 1e-6). Default: 1e-6.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// Activation in front of the adaLN linears. Default: SiLU (MicroDiT: tanh-GELU).
    #[config(default = "Activation::Silu")]
    pub modulation_activation: Activation,
}

impl BlockConfig {
    /// FFN nominal hidden width: `ffn_hidden`, or `int(D * mlp_ratio)`.
    pub fn mlp_hidden(&self) -> usize {
        self.ffn_hidden.unwrap_or((self.d_model as f64 * self.mlp_ratio) as usize)
    }

    /// The widths and shared options the parts are built from.
    pub fn spec(&self) -> PartSpec {
        let d = self.d_model;
        PartSpec {
            d_model: d,
            n_heads: self.n_heads,
            attn_hidden: self.attn_hidden.unwrap_or(d),
            ffn_hidden: self.mlp_hidden(),
            d_cond: self.d_cond.unwrap_or(d),
            qk_norm: self.qk_norm,
            bias: self.bias,
            init: match self.init_std {
                Some([a, b]) => [WeightInit::Normal(a), WeightInit::Normal(b)],
                None => [WeightInit::XavierUniform; 2],
            },
            norm_eps: self.norm_eps,
            modulation_activation: self.modulation_activation,
        }
    }

    /// Whether a part needs the full token grid (so the block cannot run on masked tokens).
    pub fn needs_grid(&self) -> bool {
        self.attention.needs_grid() || self.feed_forward.needs_grid()
    }

    /// Exact parameter count of the block (equals `Module::num_params` of the built block).
    pub fn num_params(&self) -> usize {
        let s = self.spec();
        self.attention.num_params(&s) + self.feed_forward.num_params(&s) + self.conditioning.num_params(&s)
    }

    /// Multiply-accumulates of one forward over `n` tokens on `grid` with `m` context tokens.
    ///
    /// # Errors
    /// An MoE whose experts would take no token.
    pub fn macs(&self, n: usize, grid: [usize; 2], m: usize) -> Result<f64> {
        let s = self.spec();
        Ok(self.attention.macs(&s, n, grid, m) + self.feed_forward.macs(&s, n)? + self.conditioning.macs(&s, n, m))
    }

    /// Checks the sizes and that the parts fit together; called by [`init`](Self::init).
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] naming the problem.
    pub fn validate(&self) -> Result<()> {
        let d = self.d_model;
        ensure_config(d > 0 && self.n_heads > 0, || format!("block width and heads must be positive: {self:?}"))?;
        ensure_config(self.mlp_ratio > 0.0 && self.mlp_hidden() > 0, || {
            format!("the FFN hidden width must be positive: mlp_ratio {}, ffn_hidden {:?}", self.mlp_ratio, self.ffn_hidden)
        })?;
        ensure_config(self.d_cond.is_none_or(|c| c > 0), || "d_cond must be positive".to_string())?;
        ensure_config(self.norm_eps > 0.0, || format!("norm_eps must be positive, got {}", self.norm_eps))?;
        ensure_config(!self.conditioning.fixed_norm_eps() || self.norm_eps == BLOCK_NORM_EPS, || {
            format!("{:?} conditioning normalises with eps {BLOCK_NORM_EPS}, got norm_eps {}", self.conditioning, self.norm_eps)
        })?;
        ensure_config(!matches!(self.attention, AttentionKind::TwoStream { .. }) || !self.feed_forward.needs_grid(), || {
            "a two-stream block's feed-forward runs on context tokens too and cannot need the token grid".to_string()
        })
    }

    /// Initialise a [`Block`].
    ///
    /// # Errors
    /// As [`validate`](Self::validate), and whatever a part refuses (widths, heads, a scaled
    /// width or QK norm on a part without them).
    pub fn init(&self, device: &Device) -> Result<Block> {
        self.validate()?;
        let s = self.spec();
        Ok(Block {
            attn: self.attention.init(&s, device)?,
            mlp: self.feed_forward.init(&s, device)?,
            conditioning: self.conditioning.init(&s, device)?,
        })
    }
}

/// A transformer block assembled from parts (see the [module docs](self)).
#[derive(Module, Debug)]
pub struct Block {
    /// Attention part.
    pub attn: AttentionPart,
    /// Feed-forward part.
    pub mlp: FeedForwardPart,
    /// Conditioning part (norms, modulation, gates, the middle sub-layer).
    pub conditioning: ConditioningPart,
}

impl Block {
    /// # Shapes
    /// - `x`: `[B, N, D]`; `grid`: `[rows, cols]` when the tokens are a full grid (`None` for
    ///   masked or extra tokens); `cond` as [`BlockCondition`]
    /// - output: `[B, N, D]`
    ///
    /// # Errors
    /// A grid or context a part needs but is not given, or mismatched shapes.
    pub fn forward(&self, x: Tensor<3>, grid: Option<[usize; 2]>, cond: &BlockCondition) -> Result<Tensor<3>> {
        Ok(self.forward_joint(x, grid, cond)?.0)
    }

    /// [`forward`](Self::forward), also returning the context tokens as a two-stream
    /// attention part updates them (`None` for the other parts and a pre-only context).
    ///
    /// # Shapes
    /// - as [`forward`](Self::forward); the context output `[B, M, D]`
    ///
    /// # Errors
    /// As [`forward`](Self::forward).
    pub fn forward_joint(&self, x: Tensor<3>, grid: Option<[usize; 2]>, cond: &BlockCondition) -> Result<(Tensor<3>, Option<Tensor<3>>)> {
        ensure_dims("c", cond.c.dims(), [Some(x.dims()[0]), None])?;
        let [attn_mod, ffn_mod, extra_mod] = self.conditioning.modulation(cond)?;
        let n = self.conditioning.norm(0, x.clone());
        let (a, context) = self.attn.forward(attn_mod.modulate(n.clone()), grid, cond)?;
        let x = attn_mod.residual(x, a);
        let x = self.conditioning.middle(x, n, &extra_mod, cond.context.as_ref())?;
        let h = ffn_mod.modulate(self.conditioning.norm(1, x.clone()));
        Ok((ffn_mod.residual(x, self.mlp.forward(h, grid)?), context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(b: usize, d: usize, device: &Device) -> BlockCondition {
        BlockCondition {
            c: crate::test_util::randn([b, d], 11, device),
            shared: Some(crate::test_util::randn([b, 6 * d], 12, device).chunk(6, 1)),
            context: Some(crate::test_util::randn([b, 3, d], 13, device)),
        }
    }

    #[test]
    fn adaln_zero_block_starts_as_identity() {
        let device = Device::flex();
        let block = BlockConfig::new(16, 2).init(&device).unwrap();
        let x = crate::test_util::randn([2, 16, 16], 1, &device);
        let y = block.forward(x.clone(), Some([4, 4]), &cond(2, 16, &device)).unwrap();
        assert!(y.equal(x).all().into_scalar::<bool>());
    }

    #[test]
    fn grid_and_context_are_required_where_a_part_needs_them() {
        let device = Device::flex();
        let x = crate::test_util::randn([2, 16, 16], 2, &device);
        let down = AttentionKind::Downsampled { down_factor: 2, kernel: 3, cosine: true, rope: true };
        let block = BlockConfig::new(16, 2).with_attention(down).init(&device).unwrap();
        assert!(block.forward(x.clone(), None, &cond(2, 16, &device)).is_err());
        assert_eq!(block.forward(x.clone(), Some([4, 4]), &cond(2, 16, &device)).unwrap().dims(), [2, 16, 16]);
        let joint = BlockConfig::new(16, 2).with_attention(AttentionKind::Joint).init(&device).unwrap();
        let no_ctx = BlockCondition { context: None, ..cond(2, 16, &device) };
        assert!(joint.forward(x.clone(), None, &no_ctx).is_err());
        let single = BlockConfig::new(16, 2).with_conditioning(ConditioningKind::AdaLnSingle).init(&device).unwrap();
        assert!(single.forward(x, None, &BlockCondition { shared: None, ..cond(2, 16, &device) }).is_err());
    }

    #[test]
    fn parts_refuse_what_they_cannot_do() {
        let device = Device::flex();
        let down = AttentionKind::Downsampled { down_factor: 2, kernel: 3, cosine: false, rope: false };
        assert!(BlockConfig::new(16, 2).with_attention(down.clone()).with_attn_hidden(Some(8)).init(&device).is_err());
        assert!(BlockConfig::new(16, 2).with_attention(down).with_qk_norm(QkNorm::RmsNorm).init(&device).is_err());
        assert!(BlockConfig::new(16, 3).init(&device).is_err());
        assert!(BlockConfig::new(16, 2).with_mlp_ratio(0.0).init(&device).is_err());
        // a scaled multi-head attention runs at its own width
        let scaled = BlockConfig::new(16, 2).with_attn_hidden(Some(8)).init(&device).unwrap();
        let x = crate::test_util::randn([1, 4, 16], 3, &device);
        assert_eq!(scaled.forward(x, None, &cond(1, 16, &device)).unwrap().dims(), [1, 4, 16]);
    }
}

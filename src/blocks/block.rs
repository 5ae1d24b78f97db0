//! One configurable transformer block, assembled from the [`parts`](crate::blocks::parts)
//! its [`BlockConfig`] names:
//!
//! ```text
//!  x ──► norm_1 ─► modulate(shift_a, scale_a) ─► attention(·, grid, context) ─► ×gate_a ─► + ─┐
//!  │                                                                                      ▲   │
//!  └──────────────────────────────────────────────────────────────────────────────────────┘   │
//!  x ◄── cross(x, context)            (cross-attention conditioning only)  ◄───────────────────┘
//!  x ──► norm_2 ─► modulate(shift_f, scale_f) ─► feed-forward(·, grid) ─► ×gate_f ─► + ─► out
//! ```
//!
//! The conditioning part decides the norms (parameter-free or affine), the modulation and the
//! gates (see [`parts::conditioning`](crate::blocks::parts::conditioning)).

use burn::prelude::*;

use crate::blocks::parts::{AttentionKind, AttentionPart, BlockCondition, ConditioningKind, ConditioningPart};
use crate::blocks::parts::{FeedForwardKind, FeedForwardPart};
use crate::error::{Result, ensure_config, ensure_dims};
use crate::layers::attention::QkNorm;

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
    /// Per-head QK norm of the attention (multi-head and joint). Default: none.
    #[config(default = "QkNorm::None")]
    pub qk_norm: QkNorm,
    /// FFN nominal hidden width is `int(D * mlp_ratio)`. Default: 4.0.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Attention width when scaled (layer-wise scaling); `None`: `D`. Default: None.
    #[config(default = "None")]
    pub attn_hidden: Option<usize>,
    /// Width of the conditioning vector; `None`: `D`. Default: None.
    #[config(default = "None")]
    pub d_cond: Option<usize>,
}

impl BlockConfig {
    /// FFN nominal hidden width, `int(D * mlp_ratio)`.
    pub fn mlp_hidden(&self) -> usize {
        (self.d_model as f64 * self.mlp_ratio) as usize
    }

    /// Whether a part needs the full token grid (so the block cannot run on masked tokens).
    pub fn needs_grid(&self) -> bool {
        self.attention.needs_grid() || self.feed_forward.needs_grid()
    }

    /// Exact parameter count of the block (equals `Module::num_params` of the built block).
    pub fn num_params(&self) -> usize {
        let d = self.d_model;
        let hidden = self.attn_hidden.unwrap_or(d);
        self.attention.num_params(d, self.n_heads, hidden, self.qk_norm)
            + self.feed_forward.num_params(d, self.mlp_hidden())
            + self.conditioning.num_params(d, self.d_cond.unwrap_or(d))
    }

    /// Multiply-accumulates of one forward over `n` tokens on `grid` with `m` context tokens.
    ///
    /// # Errors
    /// An MoE whose experts would take no token.
    pub fn macs(&self, n: usize, grid: [usize; 2], m: usize) -> Result<f64> {
        let d = self.d_model;
        let hidden = self.attn_hidden.unwrap_or(d);
        Ok(self.attention.macs(d, hidden, n, grid, m)
            + self.feed_forward.macs(d, self.mlp_hidden(), n)?
            + self.conditioning.macs(d, self.d_cond.unwrap_or(d), n, m))
    }

    /// Checks the sizes and that the parts fit together; called by [`init`](Self::init).
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] naming the problem.
    pub fn validate(&self) -> Result<()> {
        let d = self.d_model;
        ensure_config(d > 0 && self.n_heads > 0, || format!("block width and heads must be positive: {self:?}"))?;
        ensure_config(self.mlp_ratio > 0.0 && self.mlp_hidden() > 0, || {
            format!("mlp_ratio must give a positive hidden width, got {}", self.mlp_ratio)
        })?;
        ensure_config(self.d_cond.is_none_or(|c| c > 0), || "d_cond must be positive".to_string())
    }

    /// Initialise a [`Block`].
    ///
    /// # Errors
    /// As [`validate`](Self::validate), and whatever a part refuses (widths, heads, a scaled
    /// width or QK norm on a part without them).
    pub fn init(&self, device: &Device) -> Result<Block> {
        self.validate()?;
        let d = self.d_model;
        let hidden = self.attn_hidden.unwrap_or(d);
        Ok(Block {
            attn: self.attention.init(d, self.n_heads, hidden, self.qk_norm, device)?,
            mlp: self.feed_forward.init(d, self.mlp_hidden(), device)?,
            conditioning: self.conditioning.init(d, self.d_cond.unwrap_or(d), self.n_heads, device)?,
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
    /// Conditioning part (norms, modulation, gates, cross-attention).
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
        ensure_dims("c", cond.c.dims(), [Some(x.dims()[0]), None])?;
        let [attn_mod, ffn_mod] = self.conditioning.modulation(cond)?;
        let ctx = cond.context.as_ref();
        let h = attn_mod.modulate(self.conditioning.norm(0, x.clone()));
        let x = attn_mod.residual(x, self.attn.forward(h, grid, ctx)?);
        let x = self.conditioning.cross(x, ctx)?;
        let h = ffn_mod.modulate(self.conditioning.norm(1, x.clone()));
        Ok(ffn_mod.residual(x, self.mlp.forward(h, grid)?))
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

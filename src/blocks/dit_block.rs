//! The four conditioning designs the DiT paper compares (Fig. 3), as presets of the one
//! [`Block`](crate::blocks::Block): multi-head self-attention and a tanh-GELU MLP, conditioned
//! by the design's [`ConditioningKind`].

use burn::prelude::*;

use crate::blocks::BlockConfig;
use crate::blocks::parts::{AttentionKind, ConditioningKind, FeedForwardKind};

/// How a block is conditioned on the timestep/class (DiT paper, Sec. 3.2).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// adaLN-Zero: adaptive LayerNorm shift/scale plus zero-initialised residual gates
    /// (the paper's best design and the official model).
    AdaLnZero,
    /// adaLN: adaptive LayerNorm shift/scale, no gates, no zero init.
    AdaLn,
    /// Cross-attention over the conditioning tokens `[t_emb, y_emb]` after self-attention.
    CrossAttention,
    /// In-context: conditioning tokens are appended to the sequence (handled by the model);
    /// the block is a plain pre-norm ViT block.
    InContext,
}

impl BlockKind {
    /// The conditioning part of the design.
    pub fn conditioning(self) -> ConditioningKind {
        match self {
            BlockKind::AdaLnZero => ConditioningKind::AdaLnZero,
            BlockKind::AdaLn => ConditioningKind::AdaLn,
            BlockKind::CrossAttention => ConditioningKind::CrossAttention,
            BlockKind::InContext => ConditioningKind::InContext,
        }
    }

    /// The DiT block of this design: width `d_model`, `n_heads` heads, MLP hidden width
    /// `int(d_model * mlp_ratio)` (official keys `attn.qkv`, `attn.proj`, `mlp.fc{1,2}`,
    /// `adaLN_modulation.1` = the block's `conditioning.linear`).
    pub fn block_config(self, d_model: usize, n_heads: usize, mlp_ratio: f64) -> BlockConfig {
        BlockConfig::new(d_model, n_heads)
            .with_attention(AttentionKind::MultiHead)
            .with_feed_forward(FeedForwardKind::Mlp)
            .with_conditioning(self.conditioning())
            .with_mlp_ratio(mlp_ratio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::parts::BlockCondition;

    #[test]
    fn adaln_zero_starts_as_identity_and_the_others_do_not() {
        let device = Device::flex();
        let x = crate::test_util::randn([2, 5, 16], 103, &device);
        let c = crate::test_util::randn([2, 16], 104, &device);
        let cond = BlockCondition { c: c.clone(), shared: None, context: Some(c.unsqueeze_dim::<3>(1)) };
        for kind in [BlockKind::AdaLnZero, BlockKind::AdaLn, BlockKind::CrossAttention, BlockKind::InContext] {
            let block = kind.block_config(16, 2, 4.0).init(&device).unwrap();
            let y = block.forward(x.clone(), None, &cond).unwrap();
            assert_eq!(y.dims(), [2, 5, 16]);
            let identity = y.equal(x.clone()).all().into_scalar::<bool>();
            assert_eq!(identity, kind == BlockKind::AdaLnZero, "{kind:?}");
        }
    }
}

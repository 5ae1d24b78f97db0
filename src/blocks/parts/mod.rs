//! The parts a [`Block`](crate::blocks::Block) is assembled from, one file per part kind:
//!
//! - [`attention`]: multi-head, downsampled-token, cosine, joint, cross-attention
//!   ([`cosine_attention`] holds the one variant that is not a layer of its own);
//! - [`feed_forward`]: GELU MLP, SwiGLU, depthwise-conv FFN, expert-choice MoE;
//! - [`conditioning`]: adaLN-Zero, adaLN, adaLN-single, cross-attention, in-context tokens;
//! - [`scaling`]: layer-wise scaling of the attention and FFN widths.
//!
//! QK normalisation is an option of the attention parts that have it
//! ([`QkNorm`](crate::layers::QkNorm): per-head LayerNorm or RMSNorm).
//!
//! Each part kind is a config enum (`...Kind`, what a [`BlockConfig`](crate::blocks::BlockConfig)
//! names) and a module enum (`...Part`, what the block holds) whose `forward` dispatches on
//! the arm. Adding a variant is one new file (or an existing layer) and one arm in each.

pub mod attention;
pub mod conditioning;
pub mod cosine_attention;
pub mod feed_forward;
pub mod scaling;

pub use attention::{AttentionKind, AttentionPart};
pub use conditioning::{BlockCondition, ConditioningKind, ConditioningPart, SubLayerModulation};
pub use cosine_attention::CosineAttention;
pub use feed_forward::{FeedForwardKind, FeedForwardPart};
pub use scaling::LayerwiseScaling;

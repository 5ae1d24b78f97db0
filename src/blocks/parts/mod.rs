//! The parts a [`Block`](crate::blocks::Block) is assembled from, one file per part kind:
//!
//! - [`attention`]: multi-head, downsampled-token, cosine, joint, cross-attention, two-stream
//!   joint attention ([`cosine_attention`] and [`two_stream`] hold the variants that are not
//!   layers of their own);
//! - [`feed_forward`]: GELU MLP, SwiGLU, depthwise-conv FFN, expert-choice MoE;
//! - [`conditioning`]: adaLN-Zero, adaLN, adaLN-single, cross-attention, in-context tokens,
//!   MicroDiT's adaLN-Zero with caption cross-attention ([`caption_conditioning`]), MMDiT-X's
//!   adaLN-Zero with dual attention ([`dual_attention`]);
//! - [`scaling`]: layer-wise scaling of the attention and FFN widths;
//! - [`spec`]: the widths and shared options (biases, init, norm epsilon, adaLN activation)
//!   every part is built from.
//!
//! QK normalisation is an option of the attention parts that have it
//! ([`QkNorm`](crate::layers::QkNorm): per-head LayerNorm or RMSNorm, or a parameter-free
//! LayerNorm over all heads).
//!
//! Each part kind is a config enum (`...Kind`, what a [`BlockConfig`](crate::blocks::BlockConfig)
//! names) and a module enum (`...Part`, what the block holds) whose `forward` dispatches on
//! the arm. Adding a variant is one new file (or an existing layer) and one arm in each.

pub mod attention;
pub mod caption_conditioning;
pub mod conditioning;
pub mod cosine_attention;
pub mod dual_attention;
pub mod feed_forward;
pub mod scaling;
pub mod spec;
pub mod two_stream;

pub use attention::{AttentionKind, AttentionPart};
pub use caption_conditioning::CaptionConditioning;
pub use conditioning::{BlockCondition, ConditioningKind, ConditioningPart, SubLayerModulation};
pub use cosine_attention::CosineAttention;
pub use dual_attention::DualAttention;
pub use feed_forward::{FeedForwardKind, FeedForwardPart};
pub use scaling::{LayerwiseScaling, qkv_hidden};
pub use spec::PartSpec;
pub use two_stream::TwoStreamAttention;

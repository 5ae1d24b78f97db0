//! Reusable layers shared by every model of the crate.

pub mod activation;
pub mod adaln;
pub mod attention;
pub mod cosine_attention;
pub mod downsampled_attention;
pub mod dwconv_ffn;
pub mod init;
pub mod joint_attention;
pub mod label_embed;
pub mod mlp;
pub mod moe;
pub mod norm;
pub mod patch_embed;
pub mod pos_embed;
pub mod pos_embed_cropped;
pub mod rope2d;
pub mod swiglu;
pub mod timestep_embed;

pub use activation::Activation;
pub use adaln::AdaLnModulation;
pub use attention::{Attention, AttentionConfig, CrossAttention, CrossAttentionConfig, HeadNorm, QkNorm};
pub use downsampled_attention::{AttentionScore, DownsampledAttention, DownsampledAttentionConfig};
pub use dwconv_ffn::{DwConvFfn, DwConvFfnConfig, FfnForm};
pub use joint_attention::{JointAttention, JointAttentionConfig, JointAttentionStream};
pub use label_embed::{LabelEmbedder, LabelEmbedderConfig};
pub use mlp::{Mlp, MlpConfig};
pub use moe::{ExpertChoiceMoe, ExpertChoiceMoeConfig};
pub use patch_embed::{PatchEmbed, PatchEmbedConfig};
pub use pos_embed_cropped::{CroppedPosEmbed, CroppedPosEmbedConfig};
pub use rope2d::Rope2d;
pub use swiglu::{SwiGlu, SwiGluConfig};
pub use timestep_embed::{TimestepEmbedder, TimestepEmbedderConfig};

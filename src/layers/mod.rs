//! Reusable layers shared by every model of the crate.

pub mod activation;
pub mod adaln;
pub mod attention;
pub mod init;
pub mod label_embed;
pub mod mlp;
pub mod norm;
pub mod patch_embed;
pub mod pos_embed;
pub mod timestep_embed;

pub use activation::Activation;
pub use adaln::AdaLnModulation;
pub use attention::{Attention, AttentionConfig, CrossAttention, CrossAttentionConfig, HeadNorm, QkNorm};
pub use label_embed::{LabelEmbedder, LabelEmbedderConfig};
pub use mlp::{Mlp, MlpConfig};
pub use patch_embed::{PatchEmbed, PatchEmbedConfig};
pub use timestep_embed::{TimestepEmbedder, TimestepEmbedderConfig};

//! Transformer blocks built from [`crate::layers`].

pub mod block;
pub mod condition_embed;
pub mod dit_block;
pub mod final_layer;
pub mod joint_block;
pub mod udit_block;
pub mod microdit_block;
pub mod parts;

pub use block::{Block, BlockConfig};
pub use condition_embed::{
    CaptionEmbedder, ConditionEmbedder, ConditionEmbedderConfig, ConditionInput, ConditionKind, ConditionPath, EmbeddedCondition,
};
pub use dit_block::BlockKind;
pub use final_layer::{FinalLayer, FinalLayerConfig, FinalProjection, FinalProjectionKind};
pub use joint_block::JointBlockConfig;
pub use microdit_block::{BlockStyle, MicroDiTBlockConfig};
pub use udit_block::UDiTResample;

//! Helpers shared by the integration tests.

use diffusion_transformers::models::DiTConfig;

/// A tiny class-conditional DiT for training tests: 8x8x3 inputs, patch 4, width 32, depth 2,
/// 2 heads, 4 classes, no learned sigma.
pub fn tiny_dit_config() -> DiTConfig {
    DiTConfig::new()
        .with_input_size(8)
        .with_patch_size(4)
        .with_in_channels(3)
        .with_hidden_size(32)
        .with_depth(2)
        .with_num_heads(2)
        .with_num_classes(4)
        .with_learn_sigma(false)
}

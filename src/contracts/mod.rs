//! The contracts: the traits and small types that every layer of the crate (and user code)
//! shares. This module sits at the bottom of the crate: it imports nothing but [`crate::error`],
//! and every other module may import it.
//!
//! | contract | what it promises |
//! |---|---|
//! | [`Denoiser`] | `(x_t, t, cond) -> prediction`; every model implements it in its own file |
//! | [`MaskedDenoiser`] | the same from a subset of patch tokens ([`TokenMask`]), for masked training |
//! | [`Conditioning`] | a conditioning that can be batched with its null counterpart (guidance) |
//! | [`NullConditioned`] | a model that checks a null conditioning against itself (null class, embedding width) |
//! | [`guide`], [`GuidedChannels`] | the guidance combination `uncond + s * (cond - uncond)` |
//! | [`NoiseSource`] | where standard-normal noise comes from: a seeded generator or a [`RecordedNoise`] |
//! | [`TrainRng`] | a seedable generator whose state a checkpoint can save |
//! | [`BatchShard`] | cutting a conditioning along the batch for data-parallel steps |
//! | [`Objective`] | the training loss of a model on a batch of clean data |
//! | [`PromptEncoder`] | prompts (and negative prompts) to a model's conditioning, for text-to-image |

pub mod conditioning;
pub mod denoiser;
pub mod guidance;
pub mod mask;
pub mod noise;
pub mod objective;
pub mod prompt;
pub mod rng;
pub mod shard;

pub use conditioning::{Conditioning, NullConditioned, NullEmbedding, check_null_class, check_null_embedding};
pub use denoiser::{Denoiser, MaskedDenoiser, SkipLayerDenoiser};
pub use guidance::{GuidedChannels, guide};
pub use mask::{TokenMask, num_keep, patch_loss};
pub use noise::{NoiseSource, RecordedNoise, normal_vec, randn, randn_like};
pub use objective::Objective;
pub use prompt::{EncodedPrompts, PromptEncoder};
pub use rng::TrainRng;
pub use shard::BatchShard;

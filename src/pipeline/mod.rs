//! End-to-end latent diffusion: any (guided) latent denoiser, process, sampler and
//! conditioning to images through the autoencoder, and images to latents for training.
//!
//! - [`image`]: 8-bit RGB images, their `[-1, 1]` tensors, torchvision-style image folders.
//! - [`generate`]: [`LatentDiffusionPipeline`], the generic pipeline: a [`Denoiser`]
//!   (guidance included), a [`Plan`] of any process, any [`Sampler`], the model's
//!   conditioning, then the VAE decoder.
//! - [`dit`]: [`DitPipeline`], class labels to images with a DiT as DiT's `sample.py`.
//!
//! [`Denoiser`]: crate::contracts::Denoiser
//! [`Plan`]: crate::diffusion::process::Plan
//! [`Sampler`]: crate::sampling::Sampler
//! - [`encode`]: images (or a whole folder, batch by batch) to scaled latents.
//! - `text_to_image` (feature `text`): prompts to images, `TextToImagePipeline` over any
//!   prompt encoder and `scheduler` (flow matching or EDM); `sd3`: `Sd3Pipeline` for SD3 /
//!   SD3.5 diffusers folders; `microdit_text`: `MicroDiTPipeline` for micro_diffusion's
//!   MicroDiT checkpoints.

pub mod dit;
pub mod encode;
pub mod generate;
pub mod image;
#[cfg(feature = "text")]
pub mod microdit_text;
#[cfg(feature = "text")]
pub mod scheduler;
#[cfg(feature = "text")]
pub mod sd3;
#[cfg(feature = "text")]
pub mod text_to_image;

pub use dit::{DitPipeline, GuidedDiT, PipelineConfig};
pub use generate::LatentDiffusionPipeline;
pub use encode::{EncodedBatch, LatentDraw, encode_folder, encode_images};
pub use image::{IMAGE_EXTENSIONS, ImageFolder, RgbImage, images_to_tensor, tensor_to_images};
#[cfg(feature = "text")]
pub use microdit_text::{MicroDiTCheckpoint, MicroDiTPipeline, SDXL_VAE_SCALING_FACTOR};
#[cfg(feature = "text")]
pub use scheduler::{EdmScheduler, FlowMatchScheduler, TextToImageScheduler};
#[cfg(feature = "text")]
pub use sd3::{Sd3Pipeline, Sd3Prompts};
#[cfg(feature = "text")]
pub use text_to_image::{SkipLayerSettings, TextToImagePipeline, TextToImageSettings};

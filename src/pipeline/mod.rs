//! End-to-end latent diffusion: class labels to images through a latent denoiser, a sampler
//! with classifier-free guidance and the autoencoder, and images to latents for training.
//!
//! - [`image`]: 8-bit RGB images, their `[-1, 1]` tensors, torchvision-style image folders.
//! - [`generate`]: [`LatentDiffusionPipeline`], class labels to images (DDPM, DDIM or
//!   DPM-Solver++ with classifier-free guidance, then the VAE decoder).
//! - [`encode`]: images (or a whole folder, batch by batch) to scaled latents.

pub mod encode;
pub mod generate;
pub mod image;

pub use generate::{LatentDiffusionPipeline, LatentSpec, PipelineConfig, SamplerKind};
pub use encode::{EncodedBatch, LatentDraw, encode_folder, encode_images};
pub use image::{IMAGE_EXTENSIONS, ImageFolder, RgbImage, images_to_tensor, tensor_to_images};

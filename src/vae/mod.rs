//! The Stable Diffusion variational autoencoder (diffusers `AutoencoderKL`): the latent space
//! DiT, U-DiT, MicroDiT and SD3's MM-DiT diffuse in.
//!
//! - [`AutoencoderKlConfig`]: diffusers' `config.json` fields, with the presets
//!   [`sd_vae_ft`](AutoencoderKlConfig::sd_vae_ft) (`stabilityai/sd-vae-ft-ema`/`-mse`,
//!   scaling 0.18215) and [`sd3`](AutoencoderKlConfig::sd3) (16 channels, scaling 1.5305,
//!   shift 0.0609, no quant convolutions).
//! - [`AutoencoderKl`]: [`encode`](AutoencoderKl::encode) to a [`DiagonalGaussian`]
//!   posterior (mean, clamped log-variance, seeded [`sample`](DiagonalGaussian::sample)),
//!   [`decode`](AutoencoderKl::decode), [`decode_tiled`](AutoencoderKl::decode_tiled) with
//!   bounded memory ([`DecodeTiling`]), [`scale`](AutoencoderKl::scale) /
//!   [`unscale`](AutoencoderKl::unscale) between VAE latents and diffusion latents.
//! - Loading diffusers checkpoints (a `.safetensors` file, or a directory with
//!   `config.json` and `diffusion_pytorch_model.safetensors`):
//!   [`AutoencoderKl::from_pretrained`], `weights::LoadWeights::load_weights`; key names in
//!   the `weights::vae` module.
//!
//! Images are `[B, 3, H, W]` in `[-1, 1]` with `H`, `W` multiples of the downsampling factor
//! `f = 2^(levels - 1)` (8 for the released VAEs); latents are `[B, C_lat, H / f, W / f]`.

pub mod blocks;
pub mod config;
pub mod model;
pub mod posterior;
pub mod tiling;

pub use blocks::{AttentionBlock, DownEncoderBlock2d, Downsample2d, MidBlock2d, ResnetBlock2d, UpDecoderBlock2d, Upsample2d};
pub use config::{AutoencoderKlConfig, VAE_PRESETS};
pub use model::{AutoencoderKl, Decoder, Encoder};
pub use posterior::DiagonalGaussian;
pub use tiling::DecodeTiling;

//! MicroDiT text to image as SonyResearch/micro_diffusion's `LatentDiffusion.generate`
//! samples it, through the generic [`TextToImagePipeline`]:
//!
//! ```text
//! y = OpenCLIP ViT-H/14 text tower(prompts)                 [B, 77, 1024]  (MicroDiTTextEncoder)
//! x = sigma_max z,  z ~ N(0, I)                             [B, C, latent_res, latent_res]
//! F = F(x, y0) + g (F(x, y) - F(x, y0)),  y0 = 0            (forward_with_cfg: zero captions)
//! D = c_skip x + c_out F(c_in x, ln(sigma) / 4)             (EDM preconditioning, sigma_data 0.9)
//! Heun over Karras sigmas (0.002, 80, rho 7), the last step Euler; 30 steps, guidance 5
//! images = VAE.decode(x / scaling_factor)                   (SDXL's VAE: 0.13025)
//! ```
//!
//! Guiding `F` or `D` is the same (`D` is affine in `F` with the same `c_skip x`).
//! [`MicroDiTPipeline::from_checkpoint`] loads a released micro_diffusion checkpoint (the whole
//! `LatentDiffusion` state: `dit.`, `vae.`, `text_encoder.` prefixes).

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::contracts::NullConditioned;
use crate::error::{Error, Result};
use crate::models::{MicroDiT, MicroDiTConfig, MicroDiTNull};
use crate::pipeline::scheduler::EdmScheduler;
use crate::pipeline::text_to_image::TextToImagePipeline;
use crate::text::{ClipTextConfig, MicroDiTTextEncoder};
use crate::vae::{AutoencoderKl, AutoencoderKlConfig};
use crate::weights::{LazyCheckpoint, LoadWeights};

/// SDXL's VAE latent scaling factor, micro_diffusion's default VAE (`stabilityai/stable-diffusion-xl-base-1.0`).
pub const SDXL_VAE_SCALING_FACTOR: f64 = 0.13025;

/// MicroDiT, its OpenCLIP text tower, the VAE, EDM sampling (see the [module docs](self)); run
/// with [`TextToImageSettings::microdit`](crate::pipeline::TextToImageSettings::microdit).
pub type MicroDiTPipeline = TextToImagePipeline<MicroDiT, MicroDiTTextEncoder>;

/// What a micro_diffusion checkpoint does not say: the DiT's and the text tower's
/// configurations, the VAE's scaling factor, the EDM options.
#[derive(Debug, Clone)]
pub struct MicroDiTCheckpoint {
    /// The DiT (e.g. `MicroDiTConfig::from_name("MicroDiT_XL_2")?.with_input_size(64)
    /// .with_pos_interp_scale(2.0)` for the 512px releases).
    pub config: MicroDiTConfig,
    /// The OpenCLIP text tower. Default: DFN5B's ViT-H/14 with QuickGELU
    /// ([`ClipTextConfig::open_clip_vit_h_14`]).
    pub text_config: ClipTextConfig,
    /// The VAE's `scaling_factor`. Default: [`SDXL_VAE_SCALING_FACTOR`] (micro_diffusion's
    /// default VAE; the weights' shapes alone would give SD's 0.18215).
    pub vae_scaling_factor: f64,
    /// The EDM options. Default: micro_diffusion's.
    pub scheduler: EdmScheduler,
    /// The text tower's weights when they are not in the checkpoint: open_clip's own file of
    /// the model (`apple/DFN5B-CLIP-ViT-H-14-378`'s `open_clip_pytorch_model.bin`). Default:
    /// none (the checkpoint's `text_encoder.` tensors).
    pub text_weights: Option<PathBuf>,
}

impl MicroDiTCheckpoint {
    /// `config` with the DFN5B text tower, SDXL's VAE scaling factor and micro_diffusion's EDM
    /// options.
    pub fn new(config: MicroDiTConfig) -> Self {
        Self { config, text_config: ClipTextConfig::open_clip_vit_h_14(true), vae_scaling_factor: SDXL_VAE_SCALING_FACTOR, scheduler: EdmScheduler::default(), text_weights: None }
    }

    /// Sets the VAE's scaling factor (e.g. for `ostris/vae-kl-f8-d16`, the 16-channel models').
    pub fn with_vae_scaling_factor(mut self, scaling_factor: f64) -> Self {
        self.vae_scaling_factor = scaling_factor;
        self
    }
}

impl MicroDiTPipeline {
    /// A pipeline over a caption-conditioned `model`, its text encoder, `vae` (its scaling
    /// factor as set) and EDM `scheduler`; images are the model's `input_size` latents
    /// (`input_size * f` pixels square).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a model without captions or whose input channels differ
    /// from the VAE's latent channels.
    pub fn microdit(model: MicroDiT, text_encoder: MicroDiTTextEncoder, vae: AutoencoderKl, scheduler: EdmScheduler) -> Result<Self> {
        model.check_null(&MicroDiTNull::ZeroCaption)?;
        if model.in_channels != vae.latent_channels() {
            return Err(Error::InvalidConfig(format!(
                "the MicroDiT takes {} channels but the VAE has {} latent channels",
                model.in_channels,
                vae.latent_channels()
            )));
        }
        let side = model.input_size * vae.downsample_factor();
        let patch = model.patch_size;
        Self::without_skip_layers(model, text_encoder, vae, scheduler, patch, [side, side])
    }

    /// Load a micro_diffusion checkpoint (`.pt` with the `pytorch` feature, or safetensors):
    /// the DiT under `dit.`, the VAE under `vae.` (diffusers `AutoencoderKL` names, its
    /// configuration read from the shapes), the OpenCLIP text tower (`options.text_config`)
    /// under `text_encoder.encoder.clip_model.` (or from `options.text_weights`); the tokenizer from `tokenizer` (see
    /// [`MicroDiTTextEncoder::load`]). Every model is built on `device` in its float dtype.
    ///
    /// ```no_run
    /// use burn::prelude::*;
    /// use diffusion_transformers::models::MicroDiTConfig;
    /// use diffusion_transformers::pipeline::{MicroDiTCheckpoint, MicroDiTPipeline, TextToImageSettings};
    ///
    /// # fn main() -> Result<(), diffusion_transformers::Error> {
    /// let device = Device::flex();
    /// // the 512px release: latent 64, pos_interp_scale 2
    /// let config = MicroDiTConfig::from_name("MicroDiT_XL_2")?.with_input_size(64).with_pos_interp_scale(2.0);
    /// let pipeline = MicroDiTPipeline::from_checkpoint(
    ///     "dit_4_channel_37M_real_and_synthetic_data.pt",
    ///     "bpe_simple_vocab_16e6.txt",
    ///     &MicroDiTCheckpoint::new(config),
    ///     &device,
    /// )?;
    /// let images = pipeline.generate(&["An elegant squirrel pirate on a ship"], None, &TextToImageSettings::microdit(), 0, None)?;
    /// assert_eq!(images[0].width(), 512);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable files, [`Error::InvalidConfig`],
    /// [`Error::CheckpointMismatch`] listing the DiT's, VAE's or text tower's bad keys.
    pub fn from_checkpoint(checkpoint: impl AsRef<Path>, tokenizer: impl AsRef<Path>, options: &MicroDiTCheckpoint, device: &Device) -> Result<Self> {
        let checkpoint = checkpoint.as_ref();
        let weights = LazyCheckpoint::open(checkpoint)?;
        let mut vae_weights = weights.clone();
        vae_weights.retain_prefix("vae.");
        let mut model = options.config.init(device)?;
        model.load_lazy(weights)?;
        let mut vae = AutoencoderKlConfig::from_lazy(&vae_weights)?.with_scaling_factor(options.vae_scaling_factor).init(device)?;
        vae.load_lazy(vae_weights)?;
        let text_weights = options.text_weights.as_deref().unwrap_or(checkpoint);
        let text_encoder = MicroDiTTextEncoder::load_with(&options.text_config, text_weights, tokenizer, device)?;
        Self::microdit(model, text_encoder, vae, options.scheduler.clone())
    }
}

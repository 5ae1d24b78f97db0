//! SD3 / SD3.5 as a [`TextToImagePipeline`]: MM-DiT (MMDiT-X), CLIP-L + CLIP-G (+ T5) prompt
//! encoding as diffusers' `StableDiffusion3Pipeline.encode_prompt`, the 16-channel VAE, flow
//! matching; loaded from a diffusers folder ([`Sd3Pipeline::from_pretrained`]).

use std::path::Path;

use burn::prelude::*;

use crate::contracts::{EncodedPrompts, NullEmbedding, PromptEncoder};
use crate::error::{Error, Result};
use crate::models::{MMDiT, MMDiTConfig};
use crate::pipeline::scheduler::FlowMatchScheduler;
use crate::pipeline::text_to_image::TextToImagePipeline;
use crate::text::config::read_config_file;
use crate::text::{Sd3PromptOptions, Sd3TextEncoders};
use crate::vae::AutoencoderKl;
use crate::weights::LoadWeights;

/// SD3's prompt encoding ([`Sd3TextEncoders::encode_prompt`]) with its options, as a
/// [`PromptEncoder`]: the null conditioning is the negative prompts' embeddings.
#[derive(Debug)]
pub struct Sd3Prompts {
    /// The three text encoders and their tokenizers.
    pub encoders: Sd3TextEncoders,
    /// `max_sequence_length`, `clip_skip`, `prompt_2`, ... (`do_classifier_free_guidance` is
    /// set by each call).
    pub options: Sd3PromptOptions,
}

impl PromptEncoder for Sd3Prompts {
    type Cond = (Tensor<3>, Tensor<2>);

    fn encode_prompts(&self, prompts: &[&str], negative_prompts: Option<&[&str]>, guidance: bool) -> Result<EncodedPrompts<Self::Cond>> {
        let options = Sd3PromptOptions { do_classifier_free_guidance: guidance, ..self.options.clone() };
        let e = self.encoders.encode_prompt(prompts, negative_prompts, &options)?;
        let null = match (e.negative_prompt_embeds, e.negative_pooled_prompt_embeds) {
            (Some(t), Some(p)) => Some((NullEmbedding::Given(t), NullEmbedding::Given(p))),
            _ => None,
        };
        Ok(((e.prompt_embeds, e.pooled_prompt_embeds), null))
    }
}

/// SD3 / SD3.5: MM-DiT (MMDiT-X), CLIP-L + CLIP-G (+ T5), the 16-channel VAE.
pub type Sd3Pipeline = TextToImagePipeline<MMDiT, Sd3Prompts>;

/// `dir/name` if it is a folder, else an [`Error::Io`] naming it.
fn subfolder(dir: &Path, name: &str, what: &str) -> Result<std::path::PathBuf> {
    let p = dir.join(name);
    if p.is_dir() {
        Ok(p)
    } else {
        Err(Error::Io { path: p, reason: format!("no such folder ({what} of a diffusers SD3 folder)") })
    }
}

impl Sd3Pipeline {
    /// Load a diffusers SD3 / SD3.5 folder: `transformer/`, `vae/`, `text_encoder/`,
    /// `text_encoder_2/`, `tokenizer/`, `tokenizer_2/`, `scheduler/scheduler_config.json`,
    /// and `text_encoder_3/` + `tokenizer_3/` when `with_t5` and present (safetensors, sharded
    /// or not). Every model is built on `device` in its float dtype (configure the device to
    /// bf16 / f16 for reduced precision) and its weights streamed in.
    ///
    /// ```no_run
    /// use burn::prelude::*;
    /// use diffusion_transformers::pipeline::{Sd3Pipeline, SkipLayerSettings, TextToImageSettings};
    /// use diffusion_transformers::text::Sd3PromptOptions;
    ///
    /// # fn main() -> Result<(), diffusion_transformers::Error> {
    /// let device = Device::flex();
    /// let pipeline = Sd3Pipeline::from_pretrained("stable-diffusion-3.5-medium", true, Sd3PromptOptions::default(), &device)?;
    /// let settings = TextToImageSettings {
    ///     num_inference_steps: 40,
    ///     guidance_scale: 4.5,
    ///     size: Some([768, 1024]), // [height, width], multiples of 16
    ///     skip_layer_guidance: Some(SkipLayerSettings::new(vec![7, 8, 9])),
    ///     ..TextToImageSettings::default()
    /// };
    /// let images = pipeline.generate(&["a capybara holding a sign that reads Hello World"], None, &settings, 0, None)?;
    /// assert_eq!((images[0].width(), images[0].height()), (1024, 768));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] naming a missing folder or file, [`Error::InvalidConfig`],
    /// [`Error::CheckpointMismatch`].
    pub fn from_pretrained(dir: impl AsRef<Path>, with_t5: bool, options: Sd3PromptOptions, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::Io { path: dir.to_path_buf(), reason: "no such folder (a diffusers SD3 folder)".into() });
        }
        for (name, what) in [
            ("transformer", "the MM-DiT"),
            ("vae", "the autoencoder"),
            ("text_encoder", "CLIP-L"),
            ("text_encoder_2", "CLIP-G"),
            ("tokenizer", "CLIP-L's tokenizer"),
            ("tokenizer_2", "CLIP-G's tokenizer"),
            ("scheduler", "the scheduler"),
        ] {
            subfolder(dir, name, what)?;
        }
        let with_t5 = with_t5 && dir.join("text_encoder_3").is_dir();
        if with_t5 {
            subfolder(dir, "tokenizer_3", "T5's tokenizer")?;
        }
        let scheduler = FlowMatchScheduler::from_diffusers_config(&read_config_file(&dir.join("scheduler/scheduler_config.json"))?)?;
        let tcfg = MMDiTConfig::from_diffusers_config(&read_config_file(&dir.join("transformer/config.json"))?)?;
        let mut model = tcfg.init(device)?;
        model.load_weights(dir.join("transformer"))?;
        let vae = AutoencoderKl::from_pretrained(dir.join("vae"), device)?;
        let encoders = Sd3TextEncoders::load(dir, with_t5, device)?;
        let side = tcfg.sample_size * vae.downsample_factor();
        let patch = model.patch_size;
        Self::new(model, Sd3Prompts { encoders, options }, vae, scheduler, patch, [side, side])
    }
}


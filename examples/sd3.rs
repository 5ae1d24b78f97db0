//! Text to image with Stable Diffusion 3 / 3.5 from a diffusers folder, with no Python.
//!
//! ```text
//! cargo run --release --example sd3 -- --model stable-diffusion-3-medium-diffusers \
//!     --prompt "a photo of a cat holding a sign that says hello world" [--negative-prompt ""] \
//!     [--steps 28] [--cfg 7.0] [--seed 0] [--width 1024 --height 768] [--dtype f32|f16|bf16] \
//!     [--skip-layers 7,8,9] [--no-t5] [--out sd3.png]
//! ```
//!
//! `--model` is a diffusers-layout folder (`transformer/`, `vae/`, `text_encoder/`,
//! `text_encoder_2/`, `text_encoder_3/` (optional), `tokenizer*/`, `scheduler/`), as the Hugging
//! Face repositories `stabilityai/stable-diffusion-3-medium-diffusers`,
//! `stabilityai/stable-diffusion-3.5-medium`, `-3.5-large` and `-3.5-large-turbo` hold it; the
//! crate downloads nothing. `--dtype bf16` / `f16` builds every model in that dtype (weights are
//! converted on load and stay there), halving the memory. `--skip-layers` turns on SD3.5's
//! skip-layer guidance (Stability recommends 7,8,9 for 3.5-medium). The device is Burn's
//! default (the first enabled backend, or the one named by `BURN_DEVICE`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::FloatDType;
use clap::{Parser, ValueEnum};
use diffusion_transformers::pipeline::{Sd3Pipeline, SkipLayerSettings, TextToImageSettings};
use diffusion_transformers::sampling::Progress;
use diffusion_transformers::text::Sd3PromptOptions;

use common::cli::{image_size, non_negative, positive};

const WEIGHTS_HELP: &str = "Download a diffusers SD3 folder from Hugging Face (accept the model's licence there first), e.g.\n    \
    huggingface-cli download stabilityai/stable-diffusion-3-medium-diffusers --local-dir sd3-medium\n  \
    or stabilityai/stable-diffusion-3.5-medium, stabilityai/stable-diffusion-3.5-large, \
    stabilityai/stable-diffusion-3.5-large-turbo,\n  and pass the folder with --model.";

/// The float dtype the models are built and run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dtype {
    F32,
    F16,
    Bf16,
}

/// Make an image from a prompt with SD3 / SD3.5 (diffusers folder).
#[derive(Parser, Debug)]
#[command(after_help = format!("Getting the weights:\n  {WEIGHTS_HELP}"))]
struct Args {
    /// The diffusers folder (transformer/, vae/, text_encoder*/, tokenizer*/, scheduler/).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prompt.
    #[arg(long, default_value = "a photo of a cat holding a sign that says hello world")]
    prompt: String,
    /// The negative prompt (classifier-free guidance's unconditional branch).
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Denoising steps.
    #[arg(long, default_value_t = 28, value_parser = positive)]
    steps: usize,
    /// Classifier-free guidance scale (guidance runs above 1; 3.5-large-turbo: 0 with 4 steps).
    #[arg(long, default_value_t = 7.0, value_parser = non_negative)]
    cfg: f64,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image width in pixels (default: the model's, 1024); a multiple of 16 for SD3.
    #[arg(long, value_parser = image_size)]
    width: Option<usize>,
    /// Image height in pixels (default: the model's, 1024); a multiple of 16 for SD3.
    #[arg(long, value_parser = image_size)]
    height: Option<usize>,
    /// Float dtype of the models.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// Skip-layer guidance on these blocks (comma separated; diffusers' scale 2.8, steps 1%-20%).
    #[arg(long, value_delimiter = ',')]
    skip_layers: Vec<usize>,
    /// Run without T5 (zeros in its place; less memory, weaker text following).
    #[arg(long)]
    no_t5: bool,
    /// T5 token count.
    #[arg(long, default_value_t = 256, value_parser = positive)]
    max_sequence_length: usize,
    /// Output PNG.
    #[arg(long, default_value = "sd3.png")]
    out: PathBuf,
}

/// The model folder, or the message saying where to get one.
fn model_dir(model: Option<&Path>) -> Result<&Path, String> {
    let dir = model.ok_or_else(|| format!("no --model folder given.\n  {WEIGHTS_HELP}"))?;
    let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true);
    if empty {
        return Err(format!("`{}` is missing or empty.\n  {WEIGHTS_HELP}", dir.display()));
    }
    Ok(dir)
}

fn run(args: Args) -> Result<(), String> {
    let dir = model_dir(args.model.as_deref())?;
    let mut device = Device::default();
    let dtype = match args.dtype {
        Dtype::F32 => None,
        Dtype::F16 => Some(FloatDType::F16),
        Dtype::Bf16 => Some(FloatDType::BF16),
    };
    if let Some(d) = dtype {
        if !device.supports_dtype(d) {
            return Err(format!("the device {device:?} does not support {d:?}; use --dtype f32"));
        }
        device.configure(d).map_err(|e| format!("cannot switch the device to {d:?}: {e:?}"))?;
    }
    println!("device: {device:?}, dtype {:?}", args.dtype);
    let start = Instant::now();
    let options = Sd3PromptOptions { max_sequence_length: args.max_sequence_length, ..Sd3PromptOptions::default() };
    let pipeline = Sd3Pipeline::from_pretrained(dir, !args.no_t5, options, &device).map_err(|e| e.to_string())?;
    let t5 = if pipeline.encoder().encoders.t5.is_some() { "with T5" } else { "without T5" };
    println!("loaded {} ({t5}) in {:.1?}", dir.display(), start.elapsed());

    let default = pipeline.latent_shape(1, &TextToImageSettings::default()).map_err(|e| e.to_string())?;
    let f = pipeline.vae().downsample_factor();
    let size = [args.height.unwrap_or(default[2] * f), args.width.unwrap_or(default[3] * f)];
    let settings = TextToImageSettings {
        num_inference_steps: args.steps,
        guidance_scale: args.cfg,
        size: Some(size),
        skip_layer_guidance: (!args.skip_layers.is_empty()).then(|| SkipLayerSettings::new(args.skip_layers.clone())),
        ..TextToImageSettings::default()
    };
    pipeline.latent_shape(1, &settings).map_err(|e| e.to_string())?;
    println!("{:?}: {}x{}, {} steps, guidance {}, seed {}", args.prompt, size[1], size[0], args.steps, args.cfg, args.seed);
    let bar = common::progress::bar("sampling", args.steps as u64, 0);
    let mut report = |p: &Progress| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("t = {:.0}", p.timestep));
    };
    let start = Instant::now();
    let negative = [args.negative_prompt.as_str()];
    let images = pipeline
        .generate(&[args.prompt.as_str()], Some(&negative), &settings, args.seed, Some(&mut report))
        .map_err(|e| e.to_string())?;
    bar.finish();
    println!("sampled and decoded in {:.1?}", start.elapsed());
    let img = images.into_iter().next().ok_or("no image was generated")?;
    let (w, h) = (img.width() as u32, img.height() as u32);
    image::RgbImage::from_raw(w, h, img.into_raw())
        .ok_or("image buffer of the wrong size")?
        .save(&args.out)
        .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn main() {
    common::cli::main_with(run);
}

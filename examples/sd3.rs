//! Text to image with Stable Diffusion 3 / 3.5 from a diffusers folder, or with MicroDiT from a
//! micro_diffusion checkpoint, with no Python.
//!
//! ```text
//! cargo run --release --example sd3 -- --model stable-diffusion-3-medium-diffusers \
//!     --prompt "a photo of a cat holding a sign that says hello world" [--negative-prompt ""] \
//!     [--steps 28] [--cfg 7.0] [--seed 0] [--width 1024 --height 768] [--dtype f32|f16|bf16] \
//!     [--skip-layers 7,8,9] [--no-t5] [--out sd3.png]
//! cargo run --release --example sd3 -- --family microdit \
//!     --model dit_4_channel_37M_real_and_synthetic_data.pt --tokenizer bpe_simple_vocab_16e6.txt \
//!     [--text-encoder open_clip_pytorch_model.bin] [--arch MicroDiT_XL_2] [--resolution 512] \
//!     [--vae-scaling-factor 0.13025] [--steps 30] [--cfg 5.0] [--seed 0] [--out microdit.png]
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
//!
//! With `--family microdit`, `--model` is a released micro_diffusion checkpoint (the DiT, SDXL's
//! VAE and the DFN5B OpenCLIP text tower in one `.pt`), sampled as micro_diffusion's
//! `LatentDiffusion.generate`: EDM, Heun, zero-caption guidance; the image is square,
//! `--resolution` pixels (the checkpoint's training resolution: 512 for the released ones).

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::FloatDType;
use clap::{Parser, ValueEnum};
use diffusion_transformers::contracts::{Denoiser, PromptEncoder};
use diffusion_transformers::models::MicroDiTConfig;
use diffusion_transformers::pipeline::{MicroDiTCheckpoint, MicroDiTPipeline, Sd3Pipeline, SkipLayerSettings};
use diffusion_transformers::pipeline::{TextToImagePipeline, TextToImageSettings};
use diffusion_transformers::sampling::Progress;
use diffusion_transformers::text::Sd3PromptOptions;

use common::cli::{image_size, non_negative, positive};

const WEIGHTS_HELP: &str = "Download a diffusers SD3 folder from Hugging Face (accept the model's licence there first), e.g.\n    \
    huggingface-cli download stabilityai/stable-diffusion-3-medium-diffusers --local-dir sd3-medium\n  \
    or stabilityai/stable-diffusion-3.5-medium, stabilityai/stable-diffusion-3.5-large, \
    stabilityai/stable-diffusion-3.5-large-turbo,\n  and pass the folder with --model.";

const MICRODIT_HELP: &str = "Download a MicroDiT checkpoint from Hugging Face (VSehwag24/MicroDiT), e.g.\n    \
    huggingface-cli download VSehwag24/MicroDiT dit_4_channel_37M_real_and_synthetic_data.pt --local-dir microdit\n  \
    (it holds the DiT, the VAE (stabilityai/sdxl-vae's weights) and the text tower), and pass it with --model;\n  \
    the tokenizer with --tokenizer: open_clip's bpe_simple_vocab_16e6.txt (gunzipped, from the open_clip_torch package)\n  \
    or a CLIP BPE tokenizer folder (e.g. tokenizer/ of stabilityai/stable-diffusion-xl-base-1.0).\n  \
    A checkpoint without the text tower: --text-encoder open_clip_pytorch_model.bin of apple/DFN5B-CLIP-ViT-H-14-378.";

/// The model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Family {
    /// SD3 / SD3.5 from a diffusers folder.
    Sd3,
    /// MicroDiT from a micro_diffusion checkpoint.
    Microdit,
}

/// The float dtype the models are built and run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dtype {
    F32,
    F16,
    Bf16,
}

/// Make an image from a prompt with SD3 / SD3.5 (diffusers folder) or MicroDiT.
#[derive(Parser, Debug)]
#[command(after_help = format!("Getting the weights:\n  {WEIGHTS_HELP}\n\n  MicroDiT: {MICRODIT_HELP}"))]
struct Args {
    /// The model family.
    #[arg(long, value_enum, default_value_t = Family::Sd3)]
    family: Family,
    /// SD3: the diffusers folder (transformer/, vae/, text_encoder*/, tokenizer*/, scheduler/);
    /// MicroDiT: the checkpoint file.
    #[arg(long)]
    model: Option<PathBuf>,
    /// MicroDiT: the tokenizer (open_clip's bpe_simple_vocab_16e6.txt or a CLIP BPE folder).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// MicroDiT: the text tower's weights when not in the checkpoint (open_clip's file).
    #[arg(long)]
    text_encoder: Option<PathBuf>,
    /// MicroDiT: the architecture (MicroDiT_Tiny_2, _XL_2, ...).
    #[arg(long, default_value = "MicroDiT_XL_2")]
    arch: String,
    /// MicroDiT: the image side in pixels the checkpoint was trained at (256 or 512).
    #[arg(long, default_value_t = 512, value_parser = image_size)]
    resolution: usize,
    /// MicroDiT: the VAE's latent scaling factor (SDXL's VAE: 0.13025).
    #[arg(long, default_value_t = 0.13025)]
    vae_scaling_factor: f64,
    /// The prompt.
    #[arg(long, default_value = "a photo of a cat holding a sign that says hello world")]
    prompt: String,
    /// The negative prompt (classifier-free guidance's unconditional branch).
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Denoising steps (default: SD3 28, MicroDiT 30).
    #[arg(long, value_parser = positive)]
    steps: Option<usize>,
    /// Classifier-free guidance scale (guidance runs above 1; 3.5-large-turbo: 0 with 4 steps;
    /// default: SD3 7, MicroDiT 5).
    #[arg(long, value_parser = non_negative)]
    cfg: Option<f64>,
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
    /// Output PNG (default: sd3.png or microdit.png).
    #[arg(long)]
    out: Option<PathBuf>,
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

/// The MicroDiT checkpoint and tokenizer, or the message saying where to get them.
fn microdit_files(args: &Args) -> Result<(&Path, &Path), String> {
    let file = args.model.as_deref().ok_or_else(|| format!("no --model checkpoint given.\n  {MICRODIT_HELP}"))?;
    if !file.is_file() {
        return Err(format!("`{}` is not a file.\n  {MICRODIT_HELP}", file.display()));
    }
    let tokenizer = args.tokenizer.as_deref().ok_or_else(|| format!("no --tokenizer given.\n  {MICRODIT_HELP}"))?;
    if !tokenizer.exists() {
        return Err(format!("`{}` is missing.\n  {MICRODIT_HELP}", tokenizer.display()));
    }
    Ok((file, tokenizer))
}

fn run(args: Args) -> Result<(), String> {
    let files = match args.family {
        Family::Sd3 => (model_dir(args.model.as_deref())?, None),
        Family::Microdit => {
            let (file, tokenizer) = microdit_files(&args)?;
            (file, Some(tokenizer))
        }
    };
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
    match files {
        (dir, None) => {
            let options = Sd3PromptOptions { max_sequence_length: args.max_sequence_length, ..Sd3PromptOptions::default() };
            let pipeline = Sd3Pipeline::from_pretrained(dir, !args.no_t5, options, &device).map_err(|e| e.to_string())?;
            let t5 = if pipeline.encoder().encoders.t5.is_some() { "with T5" } else { "without T5" };
            println!("loaded {} ({t5}) in {:.1?}", dir.display(), start.elapsed());
            let settings = TextToImageSettings {
                skip_layer_guidance: (!args.skip_layers.is_empty()).then(|| SkipLayerSettings::new(args.skip_layers.clone())),
                ..TextToImageSettings::default()
            };
            let negative = [args.negative_prompt.as_str()];
            generate(&pipeline, &args, settings, Some(&negative))
        }
        (file, Some(tokenizer)) => {
            let side = args.resolution;
            if side % 8 != 0 {
                return Err(format!("--resolution must be a multiple of 8, got {side}"));
            }
            let config = MicroDiTConfig::from_name(&args.arch)
                .map_err(|e| e.to_string())?
                .with_input_size(side / 8)
                .with_pos_interp_scale(side as f64 / 256.0);
            let options = MicroDiTCheckpoint { text_weights: args.text_encoder.clone(), ..MicroDiTCheckpoint::new(config) }
                .with_vae_scaling_factor(args.vae_scaling_factor);
            let pipeline = MicroDiTPipeline::from_checkpoint(file, tokenizer, &options, &device).map_err(|e| e.to_string())?;
            println!("loaded {} ({}) in {:.1?}", file.display(), args.arch, start.elapsed());
            // micro_diffusion guides with zero captions; a negative prompt replaces them
            let negative = [args.negative_prompt.as_str()];
            let negative = (!args.negative_prompt.is_empty()).then_some(&negative[..]);
            generate(&pipeline, &args, TextToImageSettings::microdit(), negative)
        }
    }
}

/// Samples one image for the prompt with the family's `defaults` (overridden by the
/// arguments) and writes the PNG.
fn generate<M, E>(pipeline: &TextToImagePipeline<M, E>, args: &Args, defaults: TextToImageSettings, negative: Option<&[&str]>) -> Result<(), String>
where
    E: PromptEncoder,
    M: Denoiser<Cond = E::Cond>,
{
    let default = pipeline.latent_shape(1, &defaults).map_err(|e| e.to_string())?;
    let f = pipeline.vae().downsample_factor();
    let size = [args.height.unwrap_or(default[2] * f), args.width.unwrap_or(default[3] * f)];
    let settings = TextToImageSettings {
        num_inference_steps: args.steps.unwrap_or(defaults.num_inference_steps),
        guidance_scale: args.cfg.unwrap_or(defaults.guidance_scale),
        size: Some(size),
        ..defaults
    };
    pipeline.latent_shape(1, &settings).map_err(|e| e.to_string())?;
    let (steps, cfg) = (settings.num_inference_steps, settings.guidance_scale);
    println!("{:?}: {}x{}, {steps} steps, guidance {cfg}, seed {}", args.prompt, size[1], size[0], args.seed);
    let bar = common::progress::bar("sampling", steps as u64, 0);
    let mut report = |p: &Progress| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("t = {:.2}", p.timestep));
    };
    let start = Instant::now();
    let images = pipeline
        .generate(&[args.prompt.as_str()], negative, &settings, args.seed, Some(&mut report))
        .map_err(|e| e.to_string())?;
    bar.finish();
    println!("sampled and decoded in {:.1?}", start.elapsed());
    let img = images.into_iter().next().ok_or("no image was generated")?;
    let (w, h) = (img.width() as u32, img.height() as u32);
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(if args.family == Family::Sd3 { "sd3.png" } else { "microdit.png" }));
    image::RgbImage::from_raw(w, h, img.into_raw())
        .ok_or("image buffer of the wrong size")?
        .save(&out)
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn main() {
    common::cli::main_with(run);
}

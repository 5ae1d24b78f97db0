//! Sample ImageNet pictures from the released DiT weights and the Stable Diffusion VAE, with no
//! Python, and write them as a PNG.
//!
//! ```text
//! cargo run --release --example sample_dit -- --dit DiT-XL-2-256x256.pt --vae sd-vae-ft-ema \
//!     --class 207 --seed 0 [--class 360 ...] [--steps 250] [--sampler ddpm|ddim|dpm-solver++] \
//!     [--cfg 4.0] [--guided-channels 3|all] [--heads 16] [--tile 32] [--out sample.png]
//! cargo run --release --features cuda --example sample_dit -- ...   # on the GPU
//! ```
//!
//! The files are not downloaded by the crate:
//! - `--dit`: an official DiT checkpoint from the facebookresearch/DiT release,
//!   `https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt` (or `DiT-XL-2-512x512.pt`).
//!   The architecture (size, patch, image size, classes) is read from the checkpoint; the number
//!   of heads is `hidden / 64` as in every DiT preset (override with `--heads`).
//! - `--vae`: the Stable Diffusion VAE in diffusers' format, e.g. Hugging Face
//!   `stabilityai/sd-vae-ft-ema` (or `-mse`): a directory with `config.json` and
//!   `diffusion_pytorch_model.safetensors`, or the weights file alone.
//!
//! Defaults are DiT's `sample.py`: DDPM with 250 steps, guidance scale 4 on the first three
//! latent channels. `--sampler ddim` defaults to 50 steps and `dpm-solver++` to 20. The device
//! is Burn's default (the first enabled backend, or the one named by `BURN_DEVICE`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use burn::prelude::*;
use clap::Parser;
use diffusion_transformers::models::{DiT, DiTConfig};
use indicatif::{ProgressBar, ProgressStyle};
use diffusion_transformers::pipeline::{DitPipeline, PipelineConfig, RgbImage};
use diffusion_transformers::sampling::{Progress, SamplerKind};
use diffusion_transformers::vae::AutoencoderKl;
use diffusion_transformers::weights::{Checkpoint, LoadWeights};

const DIT_HELP: &str = "Download an official DiT checkpoint from the facebookresearch/DiT release, e.g.\n    \
    https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt   (or DiT-XL-2-512x512.pt)";
const VAE_HELP: &str = "Download the Stable Diffusion VAE from Hugging Face (`stabilityai/sd-vae-ft-ema` or \
    `stabilityai/sd-vae-ft-mse`),\n    e.g. `huggingface-cli download stabilityai/sd-vae-ft-ema --local-dir sd-vae-ft-ema`,\n    \
    and pass the directory (config.json + diffusion_pytorch_model.safetensors) or the weights file.";

/// `None`: guidance on every channel.
type GuidedChannels = Option<usize>;

/// Sample ImageNet classes from an official DiT checkpoint and the Stable Diffusion VAE.
#[derive(Parser, Debug)]
#[command(allow_negative_numbers = true, after_help = format!("Getting the files:\n  {DIT_HELP}\n  {VAE_HELP}"))]
struct Args {
    /// The DiT checkpoint (e.g. DiT-XL-2-256x256.pt).
    #[arg(long)]
    dit: PathBuf,
    /// The VAE: a diffusers folder (config.json + diffusion_pytorch_model.safetensors) or the
    /// weights file.
    #[arg(long)]
    vae: PathBuf,
    /// ImageNet class ids (repeat the flag or separate with commas).
    #[arg(long = "class", value_delimiter = ',', default_values_t = [207])]
    classes: Vec<usize>,
    /// Seed of the initial noise (and of stochastic samplers).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sampler: ddpm, ddim, euler, euler-a, heun, edm, dpm++2m (or dpm), dpm++3m, dpm++sde, unipc, unipc3.
    #[arg(long, default_value = "ddpm", value_parser = sampler)]
    sampler: SamplerKind,
    /// Sampler steps (default: the sampler's own: DDPM 250, DDIM 50, DPM-Solver++ 20, ...).
    #[arg(long, value_parser = positive)]
    steps: Option<usize>,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 4.0)]
    cfg: f64,
    /// Latent channels guidance applies to: a number, or `all`.
    #[arg(long, default_value = "3", value_parser = guided_channels)]
    guided_channels: GuidedChannels,
    /// Attention heads (default: hidden size / 64, as in every DiT preset).
    #[arg(long, value_parser = positive)]
    heads: Option<usize>,
    /// Decode the latents in tiles of this many latent pixels (overlap a quarter), to save memory.
    #[arg(long, value_parser = positive)]
    tile: Option<usize>,
    /// Output PNG.
    #[arg(long, default_value = "sample.png")]
    out: PathBuf,
}

fn positive(s: &str) -> Result<usize, String> {
    s.parse::<usize>().ok().filter(|&v| v >= 1).ok_or_else(|| format!("expected a whole number of at least 1, got `{s}`"))
}

fn sampler(s: &str) -> Result<SamplerKind, String> {
    SamplerKind::from_name(s).map_err(|e| e.to_string())
}

fn guided_channels(s: &str) -> Result<GuidedChannels, String> {
    if s == "all" { Ok(None) } else { positive(s).map(Some).map_err(|e| format!("{e} or `all`")) }
}

/// Build a DiT matching an official checkpoint's shapes.
fn dit_from_checkpoint(checkpoint: &Checkpoint, heads: Option<usize>, device: &Device) -> Result<DiT, String> {
    let ck = if checkpoint.tensors().keys().all(|k| k.starts_with("ema.") || k.starts_with("model.") || k.starts_with("opt.")) {
        // A DiT training checkpoint ({"model", "ema", "opt", "args"}): sample with the EMA weights.
        checkpoint.clone().sub_checkpoint("ema.")
    } else {
        checkpoint.clone()
    };
    let shape = |k: &str| ck.get(k).map(|d| d.shape().to_vec()).ok_or_else(|| format!("the DiT checkpoint has no `{k}` (is it an official DiT checkpoint?)"));
    let proj = shape("x_embedder.proj.weight")?; // [D, C, p, p]
    let (hidden, in_channels, patch) = (proj[0], proj[1], proj[2]);
    let tokens = shape("pos_embed")?[1];
    let grid = (tokens as f64).sqrt().round() as usize;
    let depth = (0..).take_while(|i| ck.contains(&format!("blocks.{i}.attn.qkv.weight"))).count();
    let mlp_hidden = shape("blocks.0.mlp.fc1.weight")?[0];
    let out = shape("final_layer.linear.weight")?[0] / (patch * patch);
    let classes = shape("y_embedder.embedding_table.weight")?[0] - 1; // the last row is the null class
    let heads = heads.unwrap_or((hidden / 64).max(1));
    let config = DiTConfig::new()
        .with_input_size(grid * patch)
        .with_patch_size(patch)
        .with_in_channels(in_channels)
        .with_hidden_size(hidden)
        .with_depth(depth)
        .with_num_heads(heads)
        .with_mlp_ratio(mlp_hidden as f64 / hidden as f64)
        .with_num_classes(classes)
        .with_learn_sigma(out == 2 * in_channels);
    println!(
        "DiT: depth {depth}, hidden {hidden}, {heads} heads, patch {patch}, {}x{} latents, {classes} classes{}",
        grid * patch,
        grid * patch,
        if config.learn_sigma { ", learned sigma" } else { "" }
    );
    let mut dit = config.init(device).map_err(|e| e.to_string())?;
    dit.load_checkpoint(&ck).map_err(|e| e.to_string())?;
    Ok(dit)
}

/// Images side by side in rows of up to 4 with 2-pixel black borders (torchvision's
/// `save_image(nrow=4)` layout).
fn grid(images: &[RgbImage]) -> image::RgbImage {
    let (w, h, pad) = (images[0].width() as u32, images[0].height() as u32, 2u32);
    let cols = images.len().min(4) as u32;
    let rows = images.len().div_ceil(4) as u32;
    let mut out = image::RgbImage::new(cols * (w + pad) + pad, rows * (h + pad) + pad);
    for (i, img) in images.iter().enumerate() {
        let (x0, y0) = (pad + (i as u32 % 4) * (w + pad), pad + (i as u32 / 4) * (h + pad));
        for y in 0..h {
            for x in 0..w {
                let p = img.pixel(x as usize, y as usize).expect("in bounds");
                out.put_pixel(x0 + x, y0 + y, image::Rgb(p));
            }
        }
    }
    out
}

fn run(args: Args) -> Result<(), String> {
    let device = Device::default();
    println!("device: {device:?}");
    let start = Instant::now();
    let checkpoint = Checkpoint::from_file(&args.dit).map_err(|e| e.to_string())?;
    let dit = dit_from_checkpoint(&checkpoint, args.heads, &device)?;
    drop(checkpoint);
    let vae = AutoencoderKl::from_pretrained(&args.vae, &device).map_err(|e| e.to_string())?;
    println!("loaded the DiT and the VAE in {:.1?}", start.elapsed());

    let steps = args.steps.unwrap_or(args.sampler.default_steps());
    let mut config = PipelineConfig::new()
        .with_sampler(args.sampler.clone())
        .with_num_steps(steps)
        .with_cfg_scale(args.cfg)
        .with_guided_channels(args.guided_channels);
    if let Some(tile) = args.tile {
        config = config.with_decode_tiling(Some((tile, tile / 4)));
    }
    let pipeline = DitPipeline::new(dit, vae, config).map_err(|e| e.to_string())?;
    println!("sampling classes {:?} with {:?}, {steps} steps, guidance {}, seed {}", args.classes, args.sampler, args.cfg, args.seed);
    let start = Instant::now();
    let bar = ProgressBar::new(steps as u64).with_style(
        ProgressStyle::with_template("sampling [{bar:30.cyan/blue}] {pos}/{len} {msg} | {per_sec} | eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut report = |p: &Progress| {
        bar.set_length(p.total_steps as u64);
        bar.set_position(p.step as u64);
        bar.set_message(format!("t = {:.0}", p.timestep));
    };
    let images = pipeline.generate(&args.classes, args.seed, &mut report).map_err(|e| e.to_string())?;
    bar.finish();
    println!("sampled and decoded {} image(s) in {:.1?}", images.len(), start.elapsed());
    grid(&images).save(&args.out).map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn missing(path: &Path, what: &str, help: &str) -> bool {
    if path.exists() {
        return false;
    }
    eprintln!("error: {what} `{}` not found.\n  {help}", path.display());
    true
}

fn main() -> ExitCode {
    diffusion_transformers::cpu::tune_allocator(); // keep large CPU buffers for reuse
    let args = Args::parse();
    let dit_missing = missing(&args.dit, "DiT checkpoint", DIT_HELP);
    let vae_missing = missing(&args.vae, "VAE", VAE_HELP);
    if dit_missing || vae_missing {
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

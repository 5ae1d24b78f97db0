//! Draw a large class-conditional sample set for FID evaluation, as DiT's `sample_ddp.py`:
//! split over every device given, resumable (finished shards are kept on disk and skipped on a
//! rerun), written at the end as the ADM evaluator's `.npz` (`arr_0`: uint8 `[N, H, W, 3]`,
//! `arr_1`: the labels) and optionally as PNGs.
//!
//! ```text
//! # DiT-XL/2 256x256, FID-50K as in the paper (250 DDPM steps, guidance 1.5)
//! cargo run --release --features cuda --example sample_fid -- \
//!     --dit DiT-XL-2-256x256.pt --vae sd-vae-ft-ema --model DiT-XL/2 --image-size 256 \
//!     --num-samples 50000 --sampler ddpm --steps 250 --cfg 1.5 \
//!     --devices cuda:0,cuda:1 --dir samples/dit-xl2-cfg1.5 --out samples/dit-xl2-cfg1.5.npz
//! ```
//!
//! Shard `i` is drawn from the seed `seed + i`, so the set does not depend on the number of
//! devices. See `docs/evaluation.md`.

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use clap::Parser;
use diffusion_transformers::eval::{SampleShards, class_labels};
use diffusion_transformers::models::DiTConfig;
use diffusion_transformers::pipeline::{DitPipeline, PipelineConfig};
use diffusion_transformers::sampling::SamplerKind;
use diffusion_transformers::weights::LoadWeights;
use diffusion_transformers::sampling::NoProgress;
use diffusion_transformers::vae::AutoencoderKl;

#[derive(Parser, Debug, Clone)]
#[command(about = "Sample a class-conditional DiT at scale into an ADM-style .npz")]
struct Args {
    /// DiT checkpoint (official `.pt`, or `.safetensors`).
    #[arg(long)]
    dit: PathBuf,
    /// VAE directory or weights file (stabilityai/sd-vae-ft-ema or -mse).
    #[arg(long)]
    vae: PathBuf,
    /// DiT preset (DiT-XL/2, DiT-B/4, ...).
    #[arg(long, default_value = "DiT-XL/2")]
    model: String,
    /// Image size (the latent size is a eighth of it).
    #[arg(long, default_value_t = 256)]
    image_size: usize,
    /// Number of classes of the model.
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
    /// Images to draw.
    #[arg(long, default_value_t = 50_000)]
    num_samples: usize,
    /// Images per shard (= per sampling batch).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Sampler: ddpm, ddim or dpm-solver++.
    #[arg(long, default_value = "ddpm")]
    sampler: String,
    /// Sampling steps (default: 250 DDPM, 50 DDIM, 20 DPM-Solver++).
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale (1: none).
    #[arg(long, default_value_t = 1.5)]
    cfg: f64,
    /// Class-balanced labels (i % num_classes) instead of uniformly random ones.
    #[arg(long)]
    balanced: bool,
    /// Global seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Devices, comma-separated: flex, cuda:N, wgpu.
    #[arg(long, default_value = "flex", value_delimiter = ',')]
    devices: Vec<String>,
    /// Directory of the shards (resumable).
    #[arg(long)]
    dir: PathBuf,
    /// Output `.npz`.
    #[arg(long)]
    out: PathBuf,
    /// Also write every sample as `DIR/png/NNNNNN.png`.
    #[arg(long)]
    png: bool,
}

fn device(name: &str) -> Result<Device, String> {
    match name.split_once(':').unwrap_or((name, "0")) {
        ("flex", _) => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        ("cuda", i) => Ok(Device::cuda(i.parse().map_err(|_| format!("bad device `{name}`"))?)),
        #[cfg(feature = "wgpu")]
        ("wgpu", _) => Ok(Device::wgpu(burn::prelude::DeviceKind::DefaultDevice)),
        _ => Err(format!("unknown or not compiled-in device `{name}`")),
    }
}

fn worker(args: &Args, shards: &SampleShards, labels: &[usize], rank: usize, start: Instant) -> Result<(), String> {
    let e = |e: diffusion_transformers::Error| e.to_string();
    let dev = device(&args.devices[rank])?;
    let mut dit = DiTConfig::from_name(&args.model).map_err(e)?.with_input_size(args.image_size / 8).with_num_classes(args.num_classes).init(&dev).map_err(e)?;
    dit.load_weights(&args.dit).map_err(e)?;
    let vae = AutoencoderKl::from_pretrained(&args.vae, &dev).map_err(e)?;
    let sampler = SamplerKind::from_name(&args.sampler).map_err(e)?;
    let steps = args.steps.unwrap_or(sampler.default_steps());
    let config = PipelineConfig::new().with_sampler(sampler).with_num_steps(steps).with_cfg_scale(args.cfg);
    let pipeline = DitPipeline::new(dit, vae, config).map_err(e)?;
    for i in shards.pending(rank, args.devices.len()) {
        let range = shards.shard_range(i);
        let images = pipeline.generate(&labels[range.clone()], args.seed + i as u64, &mut NoProgress).map_err(e)?;
        if args.png {
            for (k, im) in images.iter().enumerate() {
                let path = args.dir.join("png").join(format!("{:06}.png", range.start + k));
                image::RgbImage::from_raw(im.width() as u32, im.height() as u32, im.as_raw().to_vec())
                    .ok_or("bad image")?
                    .save(&path)
                    .map_err(|err| format!("{}: {err}", path.display()))?;
            }
        }
        shards.write_shard(i, &images).map_err(e)?;
        eprintln!("[{}] shard {i}: {}/{} images done ({:.0} s)", args.devices[rank], shards.completed(), shards.total(), start.elapsed().as_secs_f64());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let settings = format!(
        "{} {} classes={} sampler={} steps={:?} cfg={} balanced={} seed={} dit={}",
        args.model, args.image_size, args.num_classes, args.sampler, args.steps, args.cfg, args.balanced, args.seed, args.dit.display()
    );
    let shards = SampleShards::open(&args.dir, args.num_samples, args.batch_size, [args.image_size; 2], &settings)?;
    if args.png {
        std::fs::create_dir_all(args.dir.join("png"))?;
    }
    let labels = class_labels(args.num_samples, args.num_classes, args.balanced, args.seed);
    eprintln!("{} of {} images already drawn", shards.completed(), shards.total());
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.devices.len()).map(|rank| s.spawn({
            let (args, shards, labels) = (&args, &shards, &labels);
            move || worker(args, shards, labels, rank, start)
        })).collect();
        handles.into_iter().map(|h| h.join().map_err(|_| "a sampling thread panicked".to_string())?).collect::<Result<Vec<_>, String>>()
    })?;
    shards.write_npz(&args.out, Some(&labels))?;
    eprintln!("wrote {} ({} images, {:.0} s)", args.out.display(), shards.total(), start.elapsed().as_secs_f64());
    Ok(())
}

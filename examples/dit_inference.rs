//! Build any of the twelve DiT presets, optionally load official or diffusers weights, and run
//! a (guided) forward pass on random latents.
//!
//! ```text
//! cargo run --release --example dit_inference -- --model DiT-S/2 [--weights DiT-XL-2-256x256.pt] [--batch 4]
//! cargo run --release --features cuda --example dit_inference   # on the GPU
//! ```
//!
//! The device is Burn's default: the first enabled backend (CUDA, wgpu, ..., flex), or the one
//! named by `BURN_DEVICE`.

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use clap::Parser;
use diffusion_transformers::models::DiTConfig;
use diffusion_transformers::contracts::randn;
use rand::SeedableRng;
use diffusion_transformers::weights::LoadWeights;

/// Build a DiT preset, optionally load weights, and time a (guided) forward pass.
#[derive(Parser, Debug)]
struct Args {
    /// A DiT preset: DiT-{S,B,L,XL}/{2,4,8}.
    #[arg(long, default_value = "DiT-S/2", value_parser = preset)]
    model: String,
    /// Official or diffusers weights to load (`.pt`, `.safetensors` or a diffusers folder).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Batch size.
    #[arg(long, default_value_t = 2, value_parser = positive)]
    batch: usize,
}

fn preset(s: &str) -> Result<String, String> {
    DiTConfig::from_name(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}

fn positive(s: &str) -> Result<usize, String> {
    s.parse::<usize>().ok().filter(|&v| v >= 1).ok_or_else(|| format!("expected a whole number of at least 1, got `{s}`"))
}

fn main() -> Result<(), diffusion_transformers::Error> {
    diffusion_transformers::cpu::tune_allocator(); // keep large CPU buffers for reuse
    let Args { model: name, weights, batch } = Args::parse();
    let device = Device::default();
    println!("device: {device:?}");
    let config = DiTConfig::from_name(&name)?;
    println!(
        "{name}: {} parameters, {:.2} GFLOPs per forward (paper convention)",
        config.num_params(),
        config.flops() / 1e9
    );
    let mut model = config.init(&device)?;
    match weights {
        Some(path) => {
            model.load_weights(&path)?;
            println!("loaded {}", path.display());
        }
        None => println!("random init (pass --weights <file> to load a checkpoint)"),
    }
    let s = config.input_size;
    let x = randn([batch, config.in_channels, s, s], &mut rand::rngs::StdRng::seed_from_u64(0), &device);
    let t = Tensor::<1>::full([batch], 500.0, &device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![207i64; batch], [batch]), &device);

    let start = Instant::now();
    let out = model.forward(x.clone(), t.clone(), Some(y.clone()))?;
    device.sync().ok();
    println!("forward: {:?} -> {:?} in {:.1?}", x.dims(), out.dims(), start.elapsed());

    // Guided forward: conditional half, then the same latents with the null label.
    let null = Tensor::<1, Int>::full([batch], config.num_classes as i64, &device);
    let guided = model.forward_with_cfg(
        Tensor::cat(vec![x.clone(), x], 0),
        Tensor::cat(vec![t.clone(), t], 0),
        Tensor::cat(vec![y, null], 0),
        4.0,
        3,
    )?;
    println!("forward_with_cfg (scale 4, first 3 channels): {:?}", guided.dims());
    Ok(())
}

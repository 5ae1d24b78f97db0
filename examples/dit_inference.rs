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

use std::time::Instant;

use burn::prelude::*;
use diffusion_transformers::models::DiTConfig;
use diffusion_transformers::contracts::randn;
use rand::SeedableRng;
use diffusion_transformers::weights::LoadWeights;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), diffusion_transformers::Error> {
    diffusion_transformers::cpu::tune_allocator(); // keep large CPU buffers for reuse
    let name = arg("--model").unwrap_or_else(|| "DiT-S/2".into());
    let batch: usize = arg("--batch").and_then(|b| b.parse().ok()).unwrap_or(2);
    let device = Device::default();
    println!("device: {device:?}");
    let config = DiTConfig::from_name(&name)?;
    println!(
        "{name}: {} parameters, {:.2} GFLOPs per forward (paper convention)",
        config.num_params(),
        config.flops() / 1e9
    );
    let mut model = config.init(&device)?;
    match arg("--weights") {
        Some(path) => {
            model.load_weights(&path)?;
            println!("loaded {path}");
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

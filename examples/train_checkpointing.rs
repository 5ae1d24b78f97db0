//! Step time and peak memory of DiT training with and without Burn's gradient checkpointing
//! (`TrainerConfig::gradient_checkpointing`): class-conditional rectified flow on random
//! 32x32x4 latents, AdamW, one process per setting (the peak is the process's).
//!
//! ```text
//! cargo run --release --example train_checkpointing -- --model DiT-B/2 --batch 8 --steps 4
//! cargo run --release --example train_checkpointing -- --model DiT-B/2 --batch 8 --steps 4 --checkpointing
//! ```
//!
//! Prints each step's time, the median of the steps after the first (warm-up) and the peak
//! resident memory (Linux `VmHWM`: weights, optimizer state, EMA and activations).

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use burn::prelude::*;
use clap::Parser;
use common::cli;
use diffusion_transformers::diffusion::RectifiedFlowConfig;
use diffusion_transformers::models::DiTConfig;
use diffusion_transformers::training::{Trainer, TrainerConfig};
use rand::{Rng, SeedableRng};
use rand::rngs::StdRng;

/// Time DiT training steps with or without gradient checkpointing.
#[derive(Parser, Debug)]
struct Args {
    /// DiT preset (DiT-S/2 ... DiT-XL/8).
    #[arg(long, default_value = "DiT-B/2", value_parser = cli::model_name)]
    model: String,
    /// Batch size.
    #[arg(long, default_value_t = 8, value_parser = cli::positive)]
    batch: usize,
    /// Training steps (the first is reported as warm-up).
    #[arg(long, default_value_t = 4, value_parser = cli::positive)]
    steps: usize,
    /// Turn on Burn's gradient checkpointing.
    #[arg(long)]
    checkpointing: bool,
}

fn main() {
    cli::main_with(run);
}

fn run(args: Args) -> Result<(), String> {
    let e = |e: diffusion_transformers::Error| e.to_string();
    let device = Device::flex().autodiff();
    device.seed(0);
    let config = DiTConfig::from_name(&args.model)
        .map_err(e)?
        .with_input_size(32)
        .with_in_channels(4)
        .with_num_classes(1000)
        .with_learn_sigma(false);
    let model = config.init(&device).map_err(e)?;
    let trainer_config = TrainerConfig { gradient_checkpointing: args.checkpointing, ema_decay: 0.9999, ..Default::default() };
    let mut trainer = Trainer::new(model, trainer_config).map_err(e)?;
    let flow = RectifiedFlowConfig::new().init().map_err(e)?;

    let mut rng = StdRng::seed_from_u64(1);
    let b = args.batch;
    let x: Vec<f32> = (0..b * 4 * 32 * 32).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    let x = Tensor::<4>::from_data(TensorData::new(x, [b, 4, 32, 32]), &device);
    let y: Vec<i64> = (0..b).map(|_| rng.random_range(0..1000)).collect();
    // plain labels: they join the parameters' checkpointing strategy (see TrainerConfig)
    let y = Some(Tensor::<1, Int>::from_data(TensorData::new(y, [b]), &Device::flex()));

    let mut times = Vec::with_capacity(args.steps);
    for step in 0..args.steps {
        let start = Instant::now();
        let loss = trainer.train_step(&flow, x.clone(), &y).map_err(e)?;
        let secs = start.elapsed().as_secs_f64();
        println!("step {step}: loss {loss:.4}, {secs:.2} s");
        times.push(secs);
    }
    let mut steady = times[1.min(times.len() - 1)..].to_vec();
    steady.sort_by(f64::total_cmp);
    let median = steady[steady.len() / 2];
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string())))
        .unwrap_or_else(|| "unknown".into());
    println!(
        "{} batch {b}, checkpointing {}: median step {median:.2} s (after the first), peak RSS {peak}",
        args.model, args.checkpointing
    );
    Ok(())
}

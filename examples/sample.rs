//! Load a checkpoint written by the `quickstart` example and write a grid of samples (one
//! labelled row per class) with a chosen sampler, step count, seed and guidance scale.
//!
//! ```text
//! cargo run --release --example sample -- --checkpoint out/quickstart/checkpoint \
//!     [--sampler dpm++2m|unipc|ddim|ddpm|euler|euler-a|heun|...] [--steps 25] [--seed 0] [--cfg 3.0] [--per-class 8] [--out grid.png]
//! ```

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use burn::prelude::*;
use clap::Parser;
use common::cli;
use common::generate::{ObjectiveKind, sample};
use diffusion_transformers::data::CLASSES;
use diffusion_transformers::models::{ComposedDiTConfig, DiTConfig};
use diffusion_transformers::sampling::SAMPLER_NAMES;
use diffusion_transformers::training::checkpoint::{latest_checkpoint, read_verified_state};
use diffusion_transformers::weights::load_burnpack;

/// Sample a grid (one row per class) from a checkpoint of the `quickstart` example, with its
/// EMA weights.
#[derive(Parser, Debug)]
#[command(allow_negative_numbers = true)]
struct Args {
    /// A checkpoint folder (`step-N`), or the folder holding them and `latest`.
    #[arg(long, default_value = "out/quickstart/checkpoint")]
    checkpoint: PathBuf,
    /// Sampler (default: dpm++2m for ddpm checkpoints, euler for flow).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(SAMPLER_NAMES))]
    sampler: Option<String>,
    /// Sampler steps.
    #[arg(long, default_value_t = 25, value_parser = cli::positive)]
    steps: usize,
    /// Seed of the initial noise (and of stochastic samplers).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Classifier-free guidance scale (1: no guidance).
    #[arg(long, default_value_t = 3.0, value_parser = cli::non_negative)]
    cfg: f64,
    /// Samples per class (one row per class).
    #[arg(long, default_value_t = 8, value_parser = cli::positive)]
    per_class: usize,
    /// Output PNG.
    #[arg(long, default_value = "samples.png")]
    out: PathBuf,
}

fn run(args: Args) -> Result<(), String> {
    // Either a checkpoint directory (step-N) or the folder holding them and `latest`.
    let root = &args.checkpoint;
    let dir = if root.join("state.json").exists() { root.clone() } else { latest_checkpoint(root).map_err(|e| e.to_string())? };
    let state = read_verified_state(&dir).map_err(|e| e.to_string())?;
    // the model shell (`shell`); checkpoints of earlier quickstarts hold a DiT config (`model`)
    let config: ComposedDiTConfig = match state.metadata.get("shell") {
        Some(shell) => serde_json::from_value(shell.clone()),
        None => serde_json::from_value::<DiTConfig>(state.metadata["model"].clone()).map(|c| c.shell()),
    }
    .map_err(|e| format!("{}: checkpoint metadata has no model config: {e}", dir.display()))?;
    let objective = ObjectiveKind::parse(state.metadata["objective"].as_str().unwrap_or(""))?;
    let sampler = args.sampler.unwrap_or_else(|| objective.default_sampler().into());
    let device = Device::flex();
    let model = config.init(&device).map_err(|e| e.to_string())?;
    let model = load_burnpack(&model, dir.join("ema.bpk")).map_err(|e| e.to_string())?;
    let labels: Vec<i64> = (0..CLASSES.len()).flat_map(|c| std::iter::repeat_n(c as i64, args.per_class)).collect();
    println!("{} (step {}), {sampler} with {} steps", dir.display(), state.step, args.steps);
    let images = sample(&model, objective, &sampler, args.steps, args.cfg, &labels, args.seed, &device)
        .map_err(|e| e.to_string())?;
    let names: Vec<&str> = CLASSES.iter().map(|c| c.0).collect();
    let title = format!("step {}: {sampler}, {} steps, guidance {}, seed {}", state.step, args.steps, args.cfg, args.seed);
    let zoom = (64 / config.input_size).max(1);
    common::plot::save_grid(images, args.per_class, zoom, Some(&title), Some(&names), &args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn main() {
    common::cli::main_with(run);
}

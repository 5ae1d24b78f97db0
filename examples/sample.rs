//! Load a checkpoint written by the `quickstart` example and write a grid of samples (one row
//! per class) with a chosen sampler, step count, seed and guidance scale.
//!
//! ```text
//! cargo run --release --example sample -- --checkpoint out/quickstart/checkpoint \
//!     [--sampler dpm++2m|unipc|ddim|ddpm|euler|euler-a|heun|...] [--steps 25] [--seed 0] [--cfg 3.0] [--per-class 8] [--out grid.png]
//! ```

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use burn::prelude::*;
use common::generate::{ObjectiveKind, sample};
use diffusion_transformers::data::CLASSES;
use diffusion_transformers::models::DiTConfig;
use diffusion_transformers::training::checkpoint::{latest_checkpoint, read_verified_state};
use diffusion_transformers::weights::load_burnpack;

fn run() -> Result<(), String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        println!("sample --checkpoint DIR [--sampler S] [--steps N] [--seed N] [--cfg SCALE] [--per-class N] [--out FILE]");
        return Ok(());
    }
    let get = |name: &str| argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1).cloned());
    let num = |name: &str, d: f64| get(name).map_or(Ok(d), |v| v.parse::<f64>().map_err(|_| format!("{name}: not a number: {v}")));
    let root = PathBuf::from(get("--checkpoint").unwrap_or_else(|| "out/quickstart/checkpoint".into()));
    // Either a checkpoint directory (step-N) or the folder holding them and `latest`.
    let dir = if root.join("state.json").exists() { root.clone() } else { latest_checkpoint(&root).map_err(|e| e.to_string())? };
    let state = read_verified_state(&dir).map_err(|e| e.to_string())?;
    let config: DiTConfig = serde_json::from_value(state.metadata["model"].clone())
        .map_err(|e| format!("{}: checkpoint metadata has no model config: {e}", dir.display()))?;
    let objective = ObjectiveKind::parse(state.metadata["objective"].as_str().unwrap_or(""))?;
    let sampler = get("--sampler").unwrap_or_else(|| objective.default_sampler().into());
    let steps = num("--steps", 25.0)? as usize;
    let per_class = num("--per-class", 8.0)?;
    if !(per_class >= 1.0 && per_class.fract() == 0.0) {
        return Err(format!("--per-class: give a whole number of samples, at least 1 (got {per_class})"));
    }
    let per_class = per_class as usize;
    let device = Device::flex();
    let model = config.init(&device).map_err(|e| e.to_string())?;
    let model = load_burnpack(&model, dir.join("ema.bpk")).map_err(|e| e.to_string())?;
    let labels: Vec<i64> = (0..CLASSES.len()).flat_map(|c| std::iter::repeat_n(c as i64, per_class)).collect();
    println!("{} (step {}), {sampler} with {steps} steps", dir.display(), state.step);
    let images = sample(&model, objective, &sampler, steps, num("--cfg", 3.0)?, &labels, num("--seed", 0.0)? as u64, &device)
        .map_err(|e| e.to_string())?;
    let out = PathBuf::from(get("--out").unwrap_or_else(|| "samples.png".into()));
    common::save_grid(images, per_class, (64 / config.input_size).max(1), &out)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn main() {
    diffusion_transformers::cpu::tune_allocator(); // keep large CPU buffers for reuse
    if let Err(msg) = run() {
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}

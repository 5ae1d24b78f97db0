//! Evaluate a sample batch against a reference batch as the ADM evaluator does: FID, sFID,
//! Inception Score, precision and recall.
//!
//! ```text
//! cargo run --release --example evaluate -- \
//!     --samples samples.npz --reference VIRTUAL_imagenet256_labeled.npz \
//!     --inception pt_inception-2015-12-05-6726825d.pth
//! ```
//!
//! Both `.npz` files hold `arr_0`: uint8 `[N, H, W, 3]`. Reference statistics stored in the
//! reference batch (`mu`, `sigma`, `mu_s`, `sigma_s`) are used unless `--recompute-reference`.
//! See `docs/evaluation.md`.

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use clap::Parser;
use diffusion_transformers::eval::{Evaluator, InceptionV3};

#[derive(Parser, Debug)]
#[command(about = "FID, sFID, Inception Score, precision and recall of a sample batch")]
struct Args {
    /// Sample batch (`.npz`, `arr_0`: uint8 [N, H, W, 3]).
    #[arg(long)]
    samples: PathBuf,
    /// Reference batch (`.npz`), e.g. VIRTUAL_imagenet256_labeled.npz.
    #[arg(long)]
    reference: PathBuf,
    /// pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth or .safetensors).
    #[arg(long)]
    inception: PathBuf,
    /// Images per Inception forward.
    #[arg(long, default_value_t = 50)]
    batch_size: usize,
    /// Compute the reference FID/sFID statistics from its images even if the file stores them.
    #[arg(long)]
    recompute_reference: bool,
    /// Device: `flex` (CPU) or `cuda` / `wgpu` when built with that feature.
    #[arg(long, default_value = "flex")]
    device: String,
}

fn device(name: &str) -> Result<Device, String> {
    match name {
        "flex" => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::prelude::DeviceKind::DefaultDevice)),
        other => Err(format!("unknown or not compiled-in device `{other}`")),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = device(&args.device)?;
    let evaluator = Evaluator::new(InceptionV3::from_file(&args.inception, &device)?, &device, args.batch_size);
    let start = Instant::now();
    let progress = |what: &'static str| {
        move |done: usize, total: usize| {
            if done == total || done % (20 * args.batch_size) < args.batch_size {
                eprintln!("{what}: {done}/{total} images ({:.0} s)", start.elapsed().as_secs_f64());
            }
        }
    };
    let reference = evaluator.features_of_npz(&args.reference, &mut progress("reference"))?;
    let stored = if args.recompute_reference { None } else { Evaluator::stored_reference_stats(&args.reference)? };
    if stored.is_some() {
        eprintln!("using the FID/sFID statistics stored in {}", args.reference.display());
    }
    let samples = evaluator.features_of_npz(&args.samples, &mut progress("samples"))?;
    eprintln!("computing the metrics ({:.0} s)", start.elapsed().as_secs_f64());
    let r = evaluator.evaluate(&samples, &reference, stored)?;
    println!("Inception Score: {:.4} (std {:.4})", r.inception_score, r.inception_score_std);
    println!("FID: {:.4}", r.fid);
    println!("sFID: {:.4}", r.sfid);
    println!("Precision: {:.4}", r.precision);
    println!("Recall: {:.4}", r.recall);
    Ok(())
}

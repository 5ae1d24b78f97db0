//! Seconds per denoising step and peak memory of SD3-medium shapes with random weights (no
//! download): MM-DiT depth 24, `[2, 16, H/8, W/8]` latents (one prompt with classifier-free
//! guidance: batch 2 per model call), 333 text tokens (77 CLIP + 256 T5) of width 4096, flow
//! Euler; then the SD3 VAE's decode of one latent. The numbers of `docs/benchmarks.md`.
//!
//! ```text
//! cargo run --example sd3_step_time -- [--dtype f32|f16|bf16] [--steps 2] [--size 512] [--depth 24] [--warmup 0]
//! BURN_DEVICE=wgpu cargo run --release --features vulkan --example sd3_step_time -- --warmup 1 --dtype f16
//! ```
//!
//! `benches/pytorch_sd3_step.py` times the same shapes with diffusers.
//!
//! Parameters are materialised by a small warm-up forward before timing. Each step reports
//! its wall time (after a device sync) and the process's CPU time (user + system, all threads; from
//! `/proc/self/stat`), which a shared machine disturbs less; the peak resident memory
//! (`VmHWM`) is read from `/proc/self/status` at the end (Linux).

mod common;

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::FloatDType;
use clap::Parser;
use diffusion_transformers::contracts::{Denoiser, NullEmbedding, randn};
use diffusion_transformers::diffusion::process::{Process, RectifiedFlowProcess};
use diffusion_transformers::diffusion::timesteps::TimestepSchedule;
use diffusion_transformers::models::MMDiTConfig;
use diffusion_transformers::sampling::{ClassifierFreeGuidance, Euler, Progress, Sampler};
use diffusion_transformers::vae::AutoencoderKlConfig;
use rand::SeedableRng;
use rand::rngs::StdRng;

use common::cli::positive;

/// Time SD3-medium denoising steps and the VAE decode on random weights.
#[derive(Parser, Debug)]
struct Args {
    /// Float dtype of the models (f16: GPU backends; bf16: flex).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
    dtype: String,
    /// Timed denoising steps.
    #[arg(long, default_value_t = 2, value_parser = positive)]
    steps: usize,
    /// Image side in pixels (a multiple of 16).
    #[arg(long, default_value_t = 512, value_parser = positive)]
    size: usize,
    /// MM-DiT depth (24: SD3-medium).
    #[arg(long, default_value_t = 24, value_parser = positive)]
    depth: usize,
    /// Text tokens (77 CLIP + `max_sequence_length` T5).
    #[arg(long, default_value_t = 333, value_parser = positive)]
    text_tokens: usize,
    /// Untimed full-size model calls and VAE decodes before timing (GPU backends compile and
    /// autotune their kernels on first use).
    #[arg(long, default_value_t = 0)]
    warmup: usize,
}

/// CPU seconds (user + system, every thread) this process has used, if the kernel reports it
/// (`/proc/self/stat` fields 14 and 15, in clock ticks of 1/100 s).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Peak resident memory of this process in GiB (`VmHWM`), if the kernel reports it.
fn peak_gib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / (1024.0 * 1024.0))
}

fn run(args: Args) -> Result<(), String> {
    let e = |e: diffusion_transformers::Error| e.to_string();
    let mut device = Device::default();
    let reduced = match args.dtype.as_str() {
        "f16" => Some(FloatDType::F16),
        "bf16" => Some(FloatDType::BF16),
        _ => None,
    };
    if let Some(dtype) = reduced {
        if !device.supports_dtype(dtype) {
            return Err(format!("{device:?} does not support {dtype:?}"));
        }
        device.configure(dtype).map_err(|e| format!("{e:?}"))?;
    }
    let cfg = MMDiTConfig::sd3_medium().with_num_layers(args.depth);
    let start = Instant::now();
    let model = cfg.init(&device).map_err(e)?;
    let mut rng = StdRng::seed_from_u64(0);
    let (d_text, d_pool) = (cfg.joint_attention_dim, cfg.pooled_projection_dim);
    // Warm-up forward at a tiny size: materialises every parameter (random init).
    let tiny = (randn([1, 16, 16, 16], &mut rng, &device), Tensor::<1>::from_floats([500.0], &device));
    let warm = (Tensor::<3>::zeros([1, 1, d_text], &device), Tensor::<2>::zeros([1, d_pool], &device));
    model.denoise(tiny.0.cast(device.settings().float_dtype), tiny.1, &warm).map_err(e)?;
    println!("{} parameters ({:?}) built in {:.1} s", cfg.num_params(), args.dtype, start.elapsed().as_secs_f64());

    let text = randn([1, args.text_tokens, d_text], &mut rng, &device);
    let pooled = randn([1, d_pool], &mut rng, &device);
    let dtype = device.settings().float_dtype;
    let null = (NullEmbedding::Given(text.clone().cast(dtype) * 0.5), NullEmbedding::Given(pooled.clone().cast(dtype) * 0.5));
    let guided = ClassifierFreeGuidance::new(&model, null, 7.0).map_err(e)?;
    let plan = RectifiedFlowProcess::new(1000, 3.0).map_err(e)?.plan(args.steps, &TimestepSchedule::new()).map_err(e)?;
    let side = args.size / 8;
    let noise = randn([1, 16, side, side], &mut rng, &device).cast(dtype);
    let cond = (text.cast(dtype), pooled.cast(dtype));
    for _ in 0..args.warmup {
        guided.denoise(noise.clone(), Tensor::<1>::from_floats([500.0], &device), &cond).map_err(e)?;
        device.sync().map_err(|e| format!("{e:?}"))?;
    }
    let mut times = Vec::new();
    let mut last = (Instant::now(), cpu_seconds().unwrap_or(0.0));
    let mut report = |p: &Progress| {
        let _ = device.sync();
        let (wall, cpu) = (last.0.elapsed().as_secs_f64(), cpu_seconds().unwrap_or(0.0) - last.1);
        println!("step {}/{}: {wall:.2} s wall, {cpu:.2} s CPU", p.step, p.total_steps);
        times.push((wall, cpu));
        last = (Instant::now(), cpu_seconds().unwrap_or(0.0));
    };
    let z = Euler.sample_from(&plan, &guided, &cond, noise, &mut rng, Some(&mut report)).map_err(e)?;
    let n = times.len() as f64;
    let (wall, cpu) = (times.iter().map(|t| t.0).sum::<f64>() / n, times.iter().map(|t| t.1).sum::<f64>() / n);
    println!("denoising: {wall:.2} s wall, {cpu:.2} s CPU per step (mean of {n}), latents {:?}", z.dims());
    drop(guided);
    drop(model);

    let vae = AutoencoderKlConfig::sd3().init(&device).map_err(e)?;
    vae.decode(randn([1, 16, 2, 2], &mut rng, &device).cast(dtype)).map_err(e)?; // materialise
    for _ in 0..args.warmup {
        let _ = vae.decode(z.clone().narrow(0, 0, 1)).map_err(e)?.into_data();
    }
    let (start, cpu) = (Instant::now(), cpu_seconds().unwrap_or(0.0));
    let image = vae.decode(vae.unscale(z.narrow(0, 0, 1))).map_err(e)?;
    let _ = image.into_data();
    let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds().unwrap_or(0.0) - cpu);
    println!("VAE decode of one {}x{} image: {wall:.2} s wall, {cpu:.2} s CPU", args.size, args.size);
    if let Some(gib) = peak_gib() {
        println!("peak resident memory: {gib:.2} GiB");
    }
    Ok(())
}

fn main() {
    common::cli::main_with(run);
}

//! Times the attention op alone and the DiT, U-DiT and MicroDiT workloads of `benches/dit.rs`
//! and `benches/models.rs` that it sits in, one workload per process, so that two builds (or ours
//! and PyTorch) can be run alternately on a shared machine.
//!
//! ```text
//! cargo run --release --no-default-features --features flex --example bench_attention -- attention
//! cargo run --release --no-default-features --features flex --example bench_attention -- forward
//! cargo run --release --no-default-features --features flex --example bench_attention -- train
//! cargo run --release --no-default-features --features flex --example bench_attention -- udit-train
//! ```
//!
//! - `attention`: `sdpa` on DiT-S/2 batch-8 shapes (`[8, 6, 256, 64]`), forward on the plain
//!   device, then forward plus backward on the autodiff device;
//! - `forward`: the DiT-S/2 batch-8 forward on 32x32x4 latents (as `benches/dit.rs`);
//! - `train`: its training step (forward, MSE, backward, AdamW; as `benches/dit.rs`);
//!   `--model B` times DiT-B/2 instead of DiT-S/2 in `forward` and `train`, `--batch N` batch
//!   N instead of 8;
//! - `udit-forward`, `udit-train`: the U-DiT-S batch-2 forward (re-parametrised FFNs folded, as
//!   PyTorch's eval mode) and training step of `benches/models.rs`;
//! - `microdit-forward` / `microdit-train`: MicroDiT_Tiny_2 batch 2 with 77 caption tokens
//!   (as `benches/models.rs`), with `--mask 0.75` masking that share of the tokens (0: none).
//!
//! Prints the median and the spread (min, max) of `--iters` timed runs after one warm-up.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use clap::{Parser, ValueEnum};
use diffusion_transformers::contracts::TokenMask;
use diffusion_transformers::layers::attention::sdpa;
use diffusion_transformers::models::{DiTConfig, MicroDiTCond, MicroDiTConfig, UDiTConfig};
use rand::SeedableRng;

#[path = "../benches/common/mod.rs"]
mod common;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Workload {
    Attention,
    Forward,
    Train,
    UditForward,
    UditTrain,
    MicroditForward,
    MicroditTrain,
}

/// Time attention and the DiT, U-DiT and MicroDiT forward and training step on the CPU (flex).
#[derive(Parser, Debug)]
struct Args {
    /// What to time.
    #[arg(value_enum)]
    workload: Workload,
    /// Timed runs after the warm-up.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// DiT size of `forward` and `train`: S (DiT-S/2) or B (DiT-B/2).
    #[arg(long, default_value = "S")]
    model: String,
    /// Batch size of `forward` and `train`.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    batch: u16,
    /// Share of the tokens masked in `microdit-*` (0: unmasked).
    #[arg(long, default_value_t = 0.0)]
    mask: f64,
}

/// Median, min and max of `f`'s wall time over `iters` runs after one warm-up, in ms.
fn time(iters: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    f();
    let mut ms: Vec<f64> = (0..iters.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[0], ms[ms.len() - 1])
}

fn report(name: &str, (median, min, max): (f64, f64, f64)) {
    println!("{name}: median {median:.2} ms (min {min:.2}, max {max:.2})");
}

fn main() {
    let args = Args::parse();
    diffusion_transformers::cpu::tune_allocator();
    let device = Device::flex();
    device.seed(0);
    let randn = |shape: [usize; 4], device: &Device| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device);
    match args.workload {
        Workload::Attention => {
            let shape = [8, 6, 256, 64];
            let (q, k, v) = (randn(shape, &device), randn(shape, &device), randn(shape, &device));
            report("attention forward [8, 6, 256, 64]", time(args.iters, || {
                let _ = sdpa(q.clone(), k.clone(), v.clone()).into_data();
            }));
            let ad = device.autodiff();
            let [q, k, v] = [q, k, v].map(|t| Tensor::<4>::from_data(t.into_data(), &ad).require_grad());
            let upstream = randn(shape, &ad);
            report("attention forward+backward [8, 6, 256, 64]", time(args.iters, || {
                let grads = (sdpa(q.clone(), k.clone(), v.clone()) * upstream.clone()).sum().backward();
                let _ = (q.grad(&grads), k.grad(&grads), v.grad(&grads));
            }));
        }
        Workload::UditForward => {
            let config = UDiTConfig::from_name("U-DiT-S").expect("preset");
            let (x, t, y) = common::udit_inputs(&config, &device);
            let model = config.init(&device).expect("model").reparameterize();
            report("U-DiT-S b2 forward", time(args.iters, || {
                let _ = model.forward(x.clone(), t.clone(), Some(y.clone())).expect("forward").into_data();
            }));
        }
        Workload::UditTrain => {
            let device = device.autodiff();
            let config = UDiTConfig::from_name("U-DiT-S").expect("preset");
            let (x, t, y) = common::udit_inputs(&config, &device);
            let target = common::randn([x.dims()[0], config.out_channels(), config.input_size, config.input_size], &device);
            let mut train = common::TrainStep::new(config.init(&device).expect("model"), &device);
            report("U-DiT-S b2 training step", time(args.iters, || {
                train.step(&target, |m| m.forward(x.clone(), t.clone(), Some(y.clone())).expect("forward"));
            }));
        }
        Workload::Forward | Workload::Train => {
            let train = matches!(args.workload, Workload::Train);
            let device = if train { device.autodiff() } else { device };
            let name = format!("DiT-{}/2", args.model);
            let config = DiTConfig::from_name(&name).expect("preset");
            let (b, s) = (usize::from(args.batch), config.input_size);
            let x = randn([b, 4, s, s], &device);
            let t = Tensor::<1>::full([b], 500.0, &device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64; b], [b]), &device);
            let model = config.init(&device).expect("model");
            if !train {
                report(&format!("{name} b{b} forward"), time(args.iters, || {
                    let _ = model.forward(x.clone(), t.clone(), Some(y.clone())).expect("forward").into_data();
                }));
                return;
            }
            let target = randn([b, config.out_channels(), s, s], &device);
            let mut step = common::TrainStep::new(model, &device);
            report(&format!("{name} b{b} training step"), time(args.iters, || {
                step.step(&target, |m| m.forward(x.clone(), t.clone(), Some(y.clone())).expect("forward"));
            }));
        }
        Workload::MicroditForward | Workload::MicroditTrain => microdit(&args),
    }
}

/// MicroDiT_Tiny_2 batch 2, forward or training step, masked at `args.mask` (as
/// `benches/models.rs`).
fn microdit(args: &Args) {
    let train = matches!(args.workload, Workload::MicroditTrain);
    let device = if train { common::device().autodiff() } else { common::device() };
    device.seed(0);
    let config = MicroDiTConfig::from_name("MicroDiT_Tiny_2").expect("preset");
    let (b, s) = (2, config.input_size);
    let x = common::randn([b, 4, s, s], &device);
    let t = Tensor::<1>::full([b], 500.0, &device);
    let cond = MicroDiTCond::Caption(common::randn([b, 77, config.caption_channels], &device));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mask = (args.mask > 0.0)
        .then(|| TokenMask::random(b, config.num_tokens(), args.mask, &mut rng, &device).expect("mask"));
    let model = config.init(&device).expect("model");
    let run = |m: &diffusion_transformers::models::MicroDiT| match &mask {
        Some(mask) => m.forward_masked(x.clone(), t.clone(), &cond, mask).expect("forward"),
        None => m.forward(x.clone(), t.clone(), &cond).expect("forward"),
    };
    let label = format!("MicroDiT_Tiny_2 mask{} b2", args.mask);
    if !train {
        report(&format!("{label} forward"), time(args.iters, || {
            let _ = run(&model).into_data();
        }));
        return;
    }
    let target = common::randn([b, config.out_channels(), s, s], &device);
    let mut step = common::TrainStep::new(model, &device);
    report(&format!("{label} training step"), time(args.iters, || step.step(&target, run)));
}

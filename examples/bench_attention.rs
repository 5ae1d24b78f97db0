//! Times the attention op alone and the DiT and U-DiT workloads of `benches/dit.rs` and
//! `benches/models.rs` that it sits in, one workload per process, so that two builds (or ours
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
//! - `udit-forward`, `udit-train`: the U-DiT-S batch-2 forward (re-parametrised FFNs folded, as
//!   PyTorch's eval mode) and training step of `benches/models.rs`.
//!
//! Prints the median and the spread (min, max) of `--iters` timed runs after one warm-up.

use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use clap::{Parser, ValueEnum};
use diffusion_transformers::layers::attention::sdpa;
use diffusion_transformers::models::{DiTConfig, UDiTConfig};

#[path = "../benches/common/mod.rs"]
mod bench_common;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Workload {
    Attention,
    Forward,
    Train,
    UditForward,
    UditTrain,
}

/// Time attention, the DiT-S/2 batch-8 and the U-DiT-S batch-2 forward and training step on
/// the CPU (flex).
#[derive(Parser, Debug)]
struct Args {
    /// What to time.
    #[arg(value_enum)]
    workload: Workload,
    /// Timed runs after the warm-up.
    #[arg(long, default_value_t = 5)]
    iters: usize,
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
            let (x, t, y) = bench_common::udit_inputs(&config, &device);
            let model = config.init(&device).expect("model").reparameterize();
            report("U-DiT-S b2 forward", time(args.iters, || {
                let _ = model.forward(x.clone(), t.clone(), Some(y.clone())).expect("forward").into_data();
            }));
        }
        Workload::UditTrain => {
            let device = device.autodiff();
            let config = UDiTConfig::from_name("U-DiT-S").expect("preset");
            let (x, t, y) = bench_common::udit_inputs(&config, &device);
            let target = bench_common::randn([x.dims()[0], config.out_channels(), config.input_size, config.input_size], &device);
            let mut train = bench_common::TrainStep::new(config.init(&device).expect("model"), &device);
            report("U-DiT-S b2 training step", time(args.iters, || {
                train.step(&target, |m| m.forward(x.clone(), t.clone(), Some(y.clone())).expect("forward"));
            }));
        }
        Workload::Forward | Workload::Train => {
            let train = matches!(args.workload, Workload::Train);
            let device = if train { device.autodiff() } else { device };
            let config = DiTConfig::from_name("DiT-S/2").expect("preset");
            let (b, s) = (8, config.input_size);
            let x = randn([b, 4, s, s], &device);
            let t = Tensor::<1>::full([b], 500.0, &device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64; b], [b]), &device);
            let mut model = Some(config.init(&device).expect("model"));
            if !train {
                let model = model.take().expect("model");
                report("DiT-S/2 b8 forward", time(args.iters, || {
                    let _ = model.forward(x.clone(), t.clone(), Some(y.clone())).expect("forward").into_data();
                }));
                return;
            }
            let target = randn([b, config.out_channels(), s, s], &device);
            let mut optim = AdamWConfig::new().with_weight_decay(0.0).with_epsilon(1e-8).init();
            report("DiT-S/2 b8 training step", time(args.iters, || {
                let m = model.take().expect("model");
                let out = m.forward(x.clone(), t.clone(), Some(y.clone())).expect("forward");
                let grads = GradientsParams::from_grads((out - target.clone()).square().mean().backward(), &m);
                model = Some(optim.step(1e-4, m, grads));
            }));
        }
    }
}

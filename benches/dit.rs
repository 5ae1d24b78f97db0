//! DiT forward (inference) and training-step benchmarks on 32x32x4 latents.
//!
//! `cargo bench --bench dit` (CPU, flex). Backend: `BURN_DEVICE=cuda|wgpu` with the matching
//! crate feature (`cargo bench --features cuda --bench dit`). The device is synced inside
//! every timed iteration.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;

use burn::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};
use diffusion_transformers::models::DiTConfig;

use common::{TrainStep, device, labels, randn, record_peak_memory, reset_peak_memory};

fn forward(c: &mut Criterion) {
    let device = device();
    let mut group = c.benchmark_group("dit_forward");
    group.sample_size(10);
    for name in ["DiT-S/2", "DiT-B/2"] {
        let config = DiTConfig::from_name(name).unwrap();
        let model = config.init(&device).unwrap();
        for batch in [1, 8] {
            let s = config.input_size;
            let (x, t, y) = (randn([batch, 4, s, s], &device), Tensor::full([batch], 500.0, &device), labels(batch, &device));
            let run = || {
                let out = model.forward(x.clone(), t.clone(), Some(y.clone())).unwrap();
                device.sync().unwrap();
                out
            };
            reset_peak_memory();
            black_box(run()); // warm-up (JIT/autotune on GPU backends)
            group.bench_function(format!("{name}/b{batch}"), |b| b.iter(|| black_box(run())));
            record_peak_memory(&format!("dit_forward/{name}/b{batch}"));
        }
    }
    group.finish();
}

fn train_step(c: &mut Criterion) {
    let device = device().autodiff();
    let mut group = c.benchmark_group("dit_train_step");
    group.sample_size(10);
    for name in ["DiT-S/2", "DiT-B/2"] {
        let config = DiTConfig::from_name(name).unwrap();
        for batch in [1, 8] {
            let s = config.input_size;
            let (x, t, y) = (randn([batch, 4, s, s], &device), Tensor::full([batch], 500.0, &device), labels(batch, &device));
            let target = randn([batch, config.out_channels(), s, s], &device);
            reset_peak_memory();
            let mut train = TrainStep::new(config.init(&device).unwrap(), &device);
            let mut step = || train.step(&target, |m| m.forward(x.clone(), t.clone(), Some(y.clone())).unwrap());
            step();
            group.bench_function(format!("{name}/b{batch}"), |b| b.iter(&mut step));
            record_peak_memory(&format!("dit_train_step/{name}/b{batch}"));
        }
    }
    group.finish();
}

criterion_group!(benches, forward, train_step);
criterion_main!(benches);

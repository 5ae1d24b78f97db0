//! DiT forward (inference) and training-step benchmarks on 32x32x4 latents.
//!
//! `cargo bench --bench dit` (CPU, flex). Backend: `BURN_DEVICE=cuda|wgpu` with the matching
//! crate feature (`cargo bench --features cuda --bench dit`). The device is synced inside
//! every timed iteration.

use std::hint::black_box;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use criterion::{Criterion, criterion_group, criterion_main};
use diffusion_transformers::models::DiTConfig;

fn device() -> Device {
    match std::env::var("BURN_DEVICE").as_deref() {
        Ok("flex") | Err(_) => Device::flex(),
        Ok(_) => Device::default(),
    }
}

fn inputs(config: &DiTConfig, batch: usize, device: &Device) -> (Tensor<4>, Tensor<1>, Tensor<1, Int>) {
    let s = config.input_size;
    (
        Tensor::random([batch, config.in_channels, s, s], Distribution::Normal(0.0, 1.0), device),
        Tensor::full([batch], 500.0, device),
        Tensor::from_data(TensorData::new(vec![1i64; batch], [batch]), device),
    )
}

fn forward(c: &mut Criterion) {
    let device = device();
    let mut group = c.benchmark_group("dit_forward");
    group.sample_size(10);
    for name in ["DiT-S/2", "DiT-B/2"] {
        let config = DiTConfig::from_name(name).unwrap();
        let model = config.init(&device).unwrap();
        for batch in [1, 8] {
            let (x, t, y) = inputs(&config, batch, &device);
            let run = || {
                let out = model.forward(x.clone(), t.clone(), Some(y.clone())).unwrap();
                device.sync().unwrap();
                out
            };
            black_box(run()); // warm-up (JIT/autotune on GPU backends)
            group.bench_function(format!("{name}/b{batch}"), |b| b.iter(|| black_box(run())));
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
            let mut model = Some(config.init(&device).unwrap());
            let mut optim = AdamWConfig::new().with_weight_decay(0.0).with_epsilon(1e-8).init();
            let (x, t, y) = inputs(&config, batch, &device);
            let target = Tensor::<4>::random(
                [batch, config.out_channels(), config.input_size, config.input_size],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let mut step = || {
                let m = model.take().unwrap();
                let loss = (m.forward(x.clone(), t.clone(), Some(y.clone())).unwrap() - target.clone()).square().mean();
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                model = Some(optim.step(1e-4, m, grads));
                device.sync().unwrap();
            };
            step();
            group.bench_function(format!("{name}/b{batch}"), |b| b.iter(&mut step));
        }
    }
    group.finish();
}

criterion_group!(benches, forward, train_step);
criterion_main!(benches);

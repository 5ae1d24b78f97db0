//! U-DiT-S, MicroDiT (unmasked and with 75% of the tokens masked) and MM-DiT at depth 8:
//! forward (inference) and training step (forward + MSE + backward + AdamW), batch 2, 32x32
//! latents (4 channels; 16 for MM-DiT with 77 text tokens), as `benches/pytorch_reference.py`.
//!
//! `cargo bench --bench models` (flex); `BURN_DEVICE=wgpu` with `--features wgpu`.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;

use burn::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};
use diffusion_transformers::contracts::TokenMask;
use diffusion_transformers::models::{MMDiTConfig, MicroDiTCond, MicroDiTConfig, UDiTConfig};
use rand::SeedableRng;

use common::{TrainStep, device, randn, record_peak_memory, reset_peak_memory, udit_inputs};

const BATCH: usize = 2;

/// Times `run` (which must sync the device) as `group/id` after one warm-up call.
fn bench<T>(c: &mut Criterion, group: &str, id: &str, mut run: impl FnMut() -> T) {
    reset_peak_memory();
    black_box(run());
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.bench_function(id, |b| b.iter(|| black_box(run())));
    g.finish();
    record_peak_memory(&format!("{group}/{id}"));
}

fn timesteps(device: &Device) -> Tensor<1> {
    Tensor::full([BATCH], 500.0, device)
}

fn udit(c: &mut Criterion) {
    let config = UDiTConfig::from_name("U-DiT-S").unwrap();
    let s = config.input_size;
    let device = device();
    // inference form, as PyTorch's eval mode folds the re-parametrised FFNs
    let model = config.init(&device).unwrap().reparameterize();
    let (x, t, y) = udit_inputs(&config, &device);
    bench(c, "udit_forward", "U-DiT-S/b2", || {
        let out = model.forward(x.clone(), t.clone(), Some(y.clone())).unwrap();
        device.sync().unwrap();
        out
    });
    let device = device.autodiff();
    let (x, t, y) = udit_inputs(&config, &device);
    let target = randn([BATCH, config.out_channels(), s, s], &device);
    let mut train = TrainStep::new(config.init(&device).unwrap(), &device);
    bench(c, "udit_train_step", "U-DiT-S/b2", || {
        train.step(&target, |m| m.forward(x.clone(), t.clone(), Some(y.clone())).unwrap())
    });
}

fn microdit(c: &mut Criterion) {
    let name = "MicroDiT_Tiny_2";
    let config = MicroDiTConfig::from_name(name).unwrap();
    let s = config.input_size;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let device = device();
    let model = config.init(&device).unwrap();
    let x = randn([BATCH, 4, s, s], &device);
    let cond = MicroDiTCond::Caption(randn([BATCH, 77, config.caption_channels], &device));
    let mask = TokenMask::random(BATCH, model.num_tokens(), 0.75, &mut rng, &device).unwrap();
    bench(c, "microdit_forward", &format!("{name}/b2"), || {
        let out = model.forward(x.clone(), timesteps(&device), &cond).unwrap();
        device.sync().unwrap();
        out
    });
    bench(c, "microdit_forward", &format!("{name}/mask0.75/b2"), || {
        let out = model.forward_masked(x.clone(), timesteps(&device), &cond, &mask).unwrap();
        device.sync().unwrap();
        out
    });
    let device = device.autodiff();
    let x = randn([BATCH, 4, s, s], &device);
    let cond = MicroDiTCond::Caption(randn([BATCH, 77, config.caption_channels], &device));
    let target = randn([BATCH, config.out_channels(), s, s], &device);
    let mut train = TrainStep::new(config.init(&device).unwrap(), &device);
    let mask = TokenMask::random(BATCH, config.num_tokens(), 0.75, &mut rng, &device).unwrap();
    bench(c, "microdit_train_step", &format!("{name}/mask0/b2"), || {
        train.step(&target, |m| m.forward(x.clone(), timesteps(&device), &cond).unwrap())
    });
    bench(c, "microdit_train_step", &format!("{name}/mask0.75/b2"), || {
        train.step(&target, |m| m.forward_masked(x.clone(), timesteps(&device), &cond, &mask).unwrap())
    });
}

fn mmdit(c: &mut Criterion) {
    // SD3-medium's widths at depth 8: hidden 512, 8 heads, text 4096 -> 512, pooled 2048.
    let config = MMDiTConfig::from_depth(8).unwrap().with_sample_size(32);
    let device = device();
    let inputs = |device: &Device| {
        (
            randn([BATCH, config.in_channels, 32, 32], device),
            timesteps(device),
            randn([BATCH, 77, config.joint_attention_dim], device),
            randn([BATCH, config.pooled_projection_dim], device),
        )
    };
    let model = config.init(&device).unwrap();
    let (x, t, text, pooled) = inputs(&device);
    bench(c, "mmdit_forward", "d8/b2", || {
        let out = model.forward(x.clone(), t.clone(), text.clone(), pooled.clone()).unwrap();
        device.sync().unwrap();
        out
    });
    let device = device.autodiff();
    let (x, t, text, pooled) = inputs(&device);
    let target = randn([BATCH, config.out_channels, 32, 32], &device);
    let mut train = TrainStep::new(config.init(&device).unwrap(), &device);
    bench(c, "mmdit_train_step", "d8/b2", || {
        train.step(&target, |m| m.forward(x.clone(), t.clone(), text.clone(), pooled.clone()).unwrap())
    });
}

criterion_group!(benches, udit, microdit, mmdit);
criterion_main!(benches);

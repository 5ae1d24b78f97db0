//! One step of each sampler with DiT-S/2 at batch 8 on 32x32x4 latents: a 4-step run, timed
//! and divided by 4 (so a step includes the model calls it makes: one, or two for Heun).
//! The Gaussian samplers drive a learned-sigma DiT-S/2, the flow and EDM samplers one
//! without (4 output channels). Same workloads as `benches/pytorch_reference.py` (diffusers'
//! schedulers).
//!
//! `cargo bench --bench samplers`

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use burn::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};
use diffusion_transformers::diffusion::{EdmConfig, GaussianDiffusionConfig};
use diffusion_transformers::models::DiTConfig;
use diffusion_transformers::sampling::{
    DdimSampler, DdpmSampler, DpmSolverPp2M, EdmSamplerConfig, FlowEulerSampler, FlowHeunSampler,
    FlowMatchScheduleConfig, FlowSampler, GaussianSampler, NoProgress,
};
use rand::SeedableRng;

use common::{device, labels, randn, record_peak_memory, reset_peak_memory};

const STEPS: usize = 4;
const BATCH: usize = 8;

/// Times a `STEPS`-step run as `sampler_step/<name>/DiT-S/2/b8`, reporting the time per step.
fn bench(c: &mut Criterion, name: &str, device: &Device, mut run: impl FnMut() -> Tensor<4>) {
    let mut sync = || {
        black_box(run());
        device.sync().unwrap();
    };
    reset_peak_memory();
    sync();
    let mut group = c.benchmark_group("sampler_step");
    group.sample_size(10);
    let id = format!("{name}/DiT-S/2/b{BATCH}");
    group.bench_function(&id, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                sync();
            }
            start.elapsed() / STEPS as u32
        })
    });
    group.finish();
    record_peak_memory(&format!("sampler_step/{id}"));
}

fn gaussian(c: &mut Criterion) {
    let device = device();
    let model = DiTConfig::from_name("DiT-S/2").unwrap().init(&device).unwrap();
    let cond = Some(labels(BATCH, &device));
    let noise = randn([BATCH, 4, 32, 32], &device);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let respaced = GaussianDiffusionConfig::dit(&STEPS.to_string()).init().unwrap();
    let ddim = GaussianDiffusionConfig::dit(&format!("ddim{STEPS}")).init().unwrap();
    let ddpm = DdpmSampler::new();
    bench(c, "ddpm", &device, || {
        ddpm.sample_from(&respaced, &model, &cond, noise.clone(), &mut rng, &mut NoProgress).unwrap()
    });
    let ddim_sampler = DdimSampler::new(0.0).unwrap();
    bench(c, "ddim", &device, || {
        ddim_sampler.sample_from(&ddim, &model, &cond, noise.clone(), &mut rng, &mut NoProgress).unwrap()
    });
    let dpm = DpmSolverPp2M::new();
    bench(c, "dpm_solver++2m", &device, || {
        dpm.sample_from(&respaced, &model, &cond, noise.clone(), &mut rng, &mut NoProgress).unwrap()
    });
}

fn flow_and_edm(c: &mut Criterion) {
    let device = device();
    let model = DiTConfig::from_name("DiT-S/2").unwrap().with_learn_sigma(false).init(&device).unwrap();
    let cond = Some(labels(BATCH, &device));
    let noise = randn([BATCH, 4, 32, 32], &device);
    let schedule = FlowMatchScheduleConfig::new().init(STEPS).unwrap();
    let euler = FlowEulerSampler::new(schedule.clone());
    bench(c, "flow_euler", &device, || euler.sample_from(&model, &cond, noise.clone(), &mut NoProgress).unwrap());
    let heun = FlowHeunSampler::new(schedule);
    bench(c, "flow_heun", &device, || heun.sample_from(&model, &cond, noise.clone(), &mut NoProgress).unwrap());
    let edm = EdmConfig::new().init().unwrap();
    let sampler = EdmSamplerConfig::new().with_num_steps(STEPS).init().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    bench(c, "edm_heun", &device, || {
        sampler.sample_from(&edm, &model, noise.clone(), &cond, &mut rng, &mut NoProgress).unwrap()
    });
}

criterion_group!(benches, gaussian, flow_and_edm);
criterion_main!(benches);

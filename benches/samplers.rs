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
use diffusion_transformers::diffusion::GaussianDiffusionConfig;
use diffusion_transformers::diffusion::process::{EdmProcess, Plan, Process, RectifiedFlowProcess};
use diffusion_transformers::diffusion::timesteps::{SigmaSpacing, TimestepSchedule};
use diffusion_transformers::models::DiTConfig;
use diffusion_transformers::sampling::{Sampler, SamplerKind};
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

/// Benchmarks each named sampler on `plan`.
fn bench_all<M: diffusion_transformers::contracts::Denoiser>(c: &mut Criterion, prefix: &str, names: &[&str], plan: &Plan, model: &M, cond: &M::Cond, noise: &Tensor<4>, device: &Device) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    for name in names {
        let sampler = SamplerKind::from_name(name).unwrap();
        bench(c, &format!("{prefix}{name}"), device, || sampler.sample_from(plan, model, cond, noise.clone(), &mut rng, None).unwrap());
    }
}

fn gaussian(c: &mut Criterion) {
    let device = device();
    let model = DiTConfig::from_name("DiT-S/2").unwrap().init(&device).unwrap();
    let cond = Some(labels(BATCH, &device));
    let noise = randn([BATCH, 4, 32, 32], &device);
    let respaced = GaussianDiffusionConfig::dit(&STEPS.to_string()).init().unwrap();
    let plan = respaced.plan(STEPS, &TimestepSchedule::new()).unwrap();
    bench_all(c, "", &["ddpm", "ddim", "dpm++2m", "unipc", "euler-a"], &plan, &model, &cond, &noise, &device);
}

fn flow_and_edm(c: &mut Criterion) {
    let device = device();
    let model = DiTConfig::from_name("DiT-S/2").unwrap().with_learn_sigma(false).init(&device).unwrap();
    let cond = Some(labels(BATCH, &device));
    let noise = randn([BATCH, 4, 32, 32], &device);
    let flow = RectifiedFlowProcess::new(1000, 1.0).unwrap().plan(STEPS, &TimestepSchedule::new()).unwrap();
    bench_all(c, "flow_", &["euler", "heun", "dpm++2m", "unipc"], &flow, &model, &cond, &noise, &device);
    let edm = EdmProcess::new(0.002, 80.0, 7.0, 0.9).unwrap();
    let plan = edm.plan(STEPS, &TimestepSchedule::new().with_sigmas(SigmaSpacing::Karras)).unwrap();
    bench_all(c, "edm_", &["heun", "edm"], &plan, &model, &cond, &noise, &device);
}

criterion_group!(benches, gaussian, flow_and_edm);
criterion_main!(benches);

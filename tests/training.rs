//! Trainer: loss decreases, checkpoints resume exactly, damaged checkpoints are reported,
//! non-finite losses and gradients stop with the step, bad batches and devices are typed errors,
//! gradient clipping clips.

mod common;

use burn::prelude::*;
use burn::tensor::TensorData;
use diffusion_transformers::Error;
use diffusion_transformers::models::DiT;
use diffusion_transformers::contracts::{Denoiser, Objective, TrainRng, randn};
use diffusion_transformers::training::{OptimizerConfig, Trainer, TrainerConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use diffusion_transformers::weights::LoadWeights;

/// A small denoising objective: predict the noise added at a random noise level. With
/// [`FixedDraws`] the draws repeat every call (a fixed batch of noise and timesteps).
struct NoisePrediction;
struct FixedDraws;

impl Objective<DiT> for FixedDraws {
    fn loss(&self, model: &DiT, x0: Tensor<4>, cond: &Option<Tensor<1, Int>>, _rng: &mut TrainRng) -> diffusion_transformers::Result<Tensor<1>> {
        NoisePrediction.loss(model, x0, cond, &mut <TrainRng as rand::SeedableRng>::seed_from_u64(5))
    }
}

impl Objective<DiT> for NoisePrediction {
    fn loss(&self, model: &DiT, x0: Tensor<4>, cond: &Option<Tensor<1, Int>>, rng: &mut TrainRng) -> diffusion_transformers::Result<Tensor<1>> {
        let dims = x0.dims();
        let n: usize = dims.iter().product();
        let noise: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        let noise = Tensor::<4>::from_data(TensorData::new(noise, dims), &x0.device());
        let t: Vec<f32> = (0..dims[0]).map(|_| rng.random_range(0.0..1000.0)).collect();
        let t = Tensor::<1>::from_data(TensorData::new(t, [dims[0]]), &x0.device());
        let out = model.denoise(x0 + noise.clone() * 0.5, t, cond)?;
        Ok((out - noise).square().mean())
    }
}

struct NanLoss;

impl Objective<DiT> for NanLoss {
    fn loss(&self, _m: &DiT, x0: Tensor<4>, _c: &Option<Tensor<1, Int>>, _r: &mut TrainRng) -> diffusion_transformers::Result<Tensor<1>> {
        Ok(x0.sum() * f32::NAN)
    }
}

fn trainer_config() -> TrainerConfig {
    TrainerConfig {
        optimizer: OptimizerConfig { lr: 1e-3, warmup_steps: 2, ..Default::default() },
        ema_decay: 0.99,
        ema_warmup: true,
        seed: 11,
        keep_checkpoints: 2,
        gradient_checkpointing: false,
    }
}

fn batch(device: &Device) -> (Tensor<4>, Option<Tensor<1, Int>>) {
    let x: Vec<f32> = (0..4 * 3 * 64).map(|i| ((i * 29 % 83) as f32 / 41.0) - 1.0).collect();
    (Tensor::from_data(TensorData::new(x, [4, 3, 8, 8]), device), Some(Tensor::from_ints([0, 1, 2, 3], device)))
}

fn params(m: &DiT) -> Vec<u8> {
    m.to_checkpoint().unwrap().tensors().values().flat_map(|d| d.as_bytes().to_vec()).collect()
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dt_training_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn loss_decreases_on_a_fixed_batch() {
    let device = Device::flex().autodiff();
    device.seed(1);
    let mut tr = Trainer::new(common::tiny_dit_config().init(&device).unwrap(), trainer_config()).unwrap();
    let (x, y) = batch(&device);
    let losses: Vec<f32> = (0..40).map(|_| tr.train_step(&FixedDraws, x.clone(), &y).unwrap()).collect();
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[35..].iter().sum::<f32>() / 5.0;
    assert!(last < 0.5 * first, "{first} -> {last}");
    assert_eq!(tr.step(), 40);
    // The EMA moved away from the online model's initial weights but lags behind it.
    assert_ne!(params(tr.ema_model()), params(tr.model()));
}

#[test]
fn resume_continues_the_same_trajectory_and_damage_is_reported() {
    let device = Device::flex().autodiff();
    let init = common::tiny_dit_config().init(&device).unwrap();
    let (x, y) = batch(&device);
    let root = tmp("resume");

    // Uninterrupted: 6 steps.
    let mut a = Trainer::new(init.clone(), trainer_config()).unwrap();
    let full: Vec<f32> = (0..6).map(|_| a.train_step(&NoisePrediction, x.clone(), &y).unwrap()).collect();

    // Interrupted after 3, saved, resumed into a fresh model, 3 more.
    let mut b = Trainer::new(init.clone(), trainer_config()).unwrap();
    let mut part: Vec<f32> = (0..3).map(|_| b.train_step(&NoisePrediction, x.clone(), &y).unwrap()).collect();
    let first_ckpt = b.save_checkpoint(&root, serde_json::json!({"note": "three"})).unwrap();
    drop(b);
    let fresh = common::tiny_dit_config().init(&device).unwrap();
    let (mut c, meta) = Trainer::resume(fresh, trainer_config(), &root).unwrap();
    assert_eq!(meta["note"], "three");
    assert_eq!(c.step(), 3);
    part.extend((0..3).map(|_| c.train_step(&NoisePrediction, x.clone(), &y).unwrap()));
    assert_eq!(part, full, "resumed run must follow the uninterrupted loss trajectory exactly");
    assert_eq!(params(c.model()), params(a.model()));
    assert_eq!(params(c.ema_model()), params(a.ema_model()));

    // A newer checkpoint whose file gets truncated: resume falls back to the older one, says
    // so, and moves the damaged one aside.
    let newest = c.save_checkpoint(&root, serde_json::Value::Null).unwrap();
    let f = newest.join("model.bpk");
    let len = std::fs::metadata(&f).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(len / 2).unwrap();
    let err = Trainer::resume_from(common::tiny_dit_config().init(&device).unwrap(), trainer_config(), &newest).err().unwrap();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("truncated"), "{err}");
    let (old, _) = Trainer::resume(common::tiny_dit_config().init(&device).unwrap(), trainer_config(), &root).unwrap();
    assert_eq!(old.step(), 3);
    let report = old.resumed().unwrap();
    assert_eq!(report.dir, first_ckpt);
    assert!(!report.branched);
    assert_eq!(report.skipped.len(), 1);
    assert!(report.skipped[0].1.contains("truncated"), "{:?}", report.skipped);
    assert_eq!(report.skipped[0].0, root.join("damaged-step-00000006"));
    assert!(!newest.exists() && report.skipped[0].0.exists());
    // Nothing valid left: the error of the newest.
    std::fs::write(first_ckpt.join("ema.bpk"), b"garbage").unwrap();
    let err = Trainer::resume(common::tiny_dit_config().init(&device).unwrap(), trainer_config(), &root).err().unwrap();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn non_finite_loss_stops_with_the_step() {
    let device = Device::flex().autodiff();
    let mut tr = Trainer::new(common::tiny_dit_config().init(&device).unwrap(), trainer_config()).unwrap();
    let x = randn([2, 3, 8, 8], &mut StdRng::seed_from_u64(3), &device);
    let y = Some(Tensor::<1, Int>::from_ints([0, 1], &device));
    tr.train_step(&NoisePrediction, x.clone(), &y).unwrap();
    let before = params(tr.model());
    let e = tr.train_step(&NanLoss, x, &y).unwrap_err();
    assert!(matches!(e, Error::Numerical(_)) && e.to_string().contains("step 1"), "{e}");
    assert_eq!(params(tr.model()), before);
}

/// Finite loss (0) whose gradient is NaN: `d sqrt(u) / du` is infinite at 0.
struct NanGradient;

impl Objective<DiT> for NanGradient {
    fn loss(&self, model: &DiT, x0: Tensor<4>, cond: &Option<Tensor<1, Int>>, _r: &mut TrainRng) -> diffusion_transformers::Result<Tensor<1>> {
        let t = Tensor::<1>::full([x0.dims()[0]], 10.0, &x0.device());
        Ok((model.denoise(x0, t, cond)?.abs() * 0.0).sum().sqrt())
    }
}

#[test]
fn non_finite_gradients_stop_with_the_step_and_the_parameter() {
    let device = Device::flex().autodiff();
    let mut tr = Trainer::new(common::tiny_dit_config().init(&device).unwrap(), trainer_config()).unwrap();
    let (x, y) = batch(&device);
    let before = params(tr.model());
    let e = tr.train_step(&NanGradient, x, &y).unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, Error::Numerical(_)) && m.contains("step 0") && m.contains("gradient of `"), "{m}");
    assert_eq!(params(tr.model()), before);
    assert_eq!(tr.step(), 0);
}

#[test]
fn bad_batches_and_devices_are_typed_errors() {
    let device = Device::flex().autodiff();
    let mut tr = Trainer::new(common::tiny_dit_config().init(&device).unwrap(), trainer_config()).unwrap();
    let empty = Tensor::<4>::zeros([0, 3, 8, 8], &device);
    let e = tr.train_step(&NoisePrediction, empty, &Some(Tensor::<1, Int>::zeros([0], &device))).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let (x, y) = batch(&device);
    let nan = x.clone().slice_fill([0..1, 0..1, 0..1, 0..1], f32::NAN);
    let e = tr.train_step(&NoisePrediction, nan, &y).unwrap_err();
    assert!(matches!(e, Error::Numerical(_)) && e.to_string().contains("`x0`") && e.to_string().contains("step 0"), "{e}");
    // A model on a device without autodiff: an error instead of Burn's panic in `backward`.
    let plain = Device::flex();
    let mut no_grad = Trainer::new(common::tiny_dit_config().init(&plain).unwrap(), trainer_config()).unwrap();
    let (x, y) = batch(&plain);
    let e = no_grad.train_step(&NoisePrediction, x, &y).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("autodiff"), "{e}");
    assert_eq!(tr.step(), 0);
}

#[test]
fn gradient_clipping_clips() {
    let device = Device::flex();
    let clipped = OptimizerConfig { grad_clip_norm: Some(0.5), ..Default::default() }.init().unwrap();
    let g = Tensor::<2>::from_floats([[30.0, -40.0], [0.0, 0.0]], &device); // norm 50
    let out = clipped.grad_clipping().expect("clipping configured").clip_gradient(g.clone());
    let norm = out.clone().square().sum().sqrt().into_scalar::<f32>();
    assert!((norm - 0.5).abs() < 1e-6, "{norm}");
    // Same direction, scaled by 0.5 / 50.
    out.into_data().assert_approx_eq::<f32>(&(g.clone() * 0.01).into_data(), burn::tensor::Tolerance::absolute(1e-7));
    // A gradient within the bound is left alone; no clipping by default.
    let small = g.clone() * 0.001;
    clipped.grad_clipping().unwrap().clip_gradient(small.clone()).into_data().assert_eq(&small.into_data(), true);
    assert!(OptimizerConfig::default().init().unwrap().grad_clipping().is_none());
}

/// Reads the gradient-checkpointing strategy of every float parameter.
struct Strategies(Vec<Option<burn::tensor::GradientCheckpointingStrategy>>);

impl burn::module::ModuleVisitor for Strategies {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        self.0.push(param.val().gradient_checkpointing_strategy());
    }
}

#[test]
fn gradient_checkpointing_gives_the_same_losses_and_weights() {
    use burn::tensor::GradientCheckpointingStrategy::{Balanced, Disabled};
    let device = Device::flex().autodiff();
    device.seed(4);
    let init = common::tiny_dit_config().init(&device).unwrap();
    // The labels are plain tensors (no autodiff): Burn refuses to mix the checkpointing
    // strategy of the parameters with the plain autodiff device's in the label embedding.
    let (x, _) = batch(&device);
    let (_, y) = batch(&Device::flex());
    let run = |checkpointing: bool| {
        let config = TrainerConfig { gradient_checkpointing: checkpointing, ..trainer_config() };
        let mut tr = Trainer::new(init.clone(), config).unwrap();
        let losses: Vec<f32> = (0..3).map(|_| tr.train_step(&NoisePrediction, x.clone(), &y).unwrap()).collect();
        let mut strategies = Strategies(vec![]);
        tr.model().visit(&mut strategies);
        (losses, params(tr.model()), strategies.0)
    };
    let (plain_losses, plain_weights, plain_strategies) = run(false);
    let (ckpt_losses, ckpt_weights, ckpt_strategies) = run(true);
    // The switch is on: every parameter carries the Balanced strategy after the updates.
    assert!(!ckpt_strategies.is_empty() && ckpt_strategies.iter().all(|s| *s == Some(Balanced)), "{ckpt_strategies:?}");
    assert!(plain_strategies.iter().all(|s| *s == Some(Disabled)));
    // Recomputing activations runs the same operations, so the losses and the updated weights
    // (which depend on every gradient through AdamW) agree.
    for (a, b) in plain_losses.iter().zip(&ckpt_losses) {
        assert!((a - b).abs() <= 1e-6 * a.abs(), "{plain_losses:?} vs {ckpt_losses:?}");
    }
    let as_f32 = |b: &[u8]| b.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
    let (a, b) = (as_f32(&plain_weights), as_f32(&ckpt_weights));
    let max_diff = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    assert!(max_diff <= 1e-6, "weights differ by {max_diff}");
}

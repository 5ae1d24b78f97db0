//! Trainer: loss decreases, checkpoints resume exactly, damaged checkpoints are reported,
//! non-finite losses stop with the step.

mod common;

use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use diffusion_transformers::Error;
use diffusion_transformers::models::DiT;
use diffusion_transformers::contracts::{Denoiser, Objective, TrainRng};
use diffusion_transformers::training::{OptimizerConfig, Trainer, TrainerConfig};
use rand::Rng;

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
    }
}

fn batch(device: &Device) -> (Tensor<4>, Option<Tensor<1, Int>>) {
    let x: Vec<f32> = (0..4 * 3 * 64).map(|i| ((i * 29 % 83) as f32 / 41.0) - 1.0).collect();
    (Tensor::from_data(TensorData::new(x, [4, 3, 8, 8]), device), Some(Tensor::from_ints([0, 1, 2, 3], device)))
}

fn params(m: &DiT) -> Vec<u8> {
    m.to_official_checkpoint().unwrap().tensors().values().flat_map(|d| d.as_bytes().to_vec()).collect()
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

    // A newer checkpoint whose file gets truncated: clear error, the older one still loads.
    let newest = c.save_checkpoint(&root, serde_json::Value::Null).unwrap();
    let f = newest.join("model.bpk");
    let len = std::fs::metadata(&f).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(len / 2).unwrap();
    let err = Trainer::resume(common::tiny_dit_config().init(&device).unwrap(), trainer_config(), &root).err().unwrap();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("truncated"), "{err}");
    let (old, _) = Trainer::resume_from(common::tiny_dit_config().init(&device).unwrap(), trainer_config(), &first_ckpt).unwrap();
    assert_eq!(old.step(), 3);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn non_finite_loss_stops_with_the_step() {
    let device = Device::flex().autodiff();
    let mut tr = Trainer::new(common::tiny_dit_config().init(&device).unwrap(), trainer_config()).unwrap();
    let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Default, &device);
    let y = Some(Tensor::<1, Int>::from_ints([0, 1], &device));
    tr.train_step(&NoisePrediction, x.clone(), &y).unwrap();
    let before = params(tr.model());
    let e = tr.train_step(&NanLoss, x, &y).unwrap_err();
    assert!(matches!(e, Error::Numerical(_)) && e.to_string().contains("step 1"), "{e}");
    assert_eq!(params(tr.model()), before);
}

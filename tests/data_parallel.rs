//! Data-parallel training: two CPU devices, each on half of the batch, follow the same
//! trajectory as one device on the whole batch (gradients averaged, not summed); one device is
//! the plain trainer; checkpoints resume a data-parallel run exactly; bad input is an error.
//!
//! Burn 0.22 runs collectives (all-reduce) on CUDA and remote devices only, so on CPU the
//! two-device runs use [`GradientSync::Accumulate`], Burn's multi-device optimizer step. The
//! flex device is a unit struct: "two CPU devices" is the flex device listed twice, each with
//! its own model replica, thread and autodiff graph.

use burn::module::{Module, ModuleVisitor, Param};
mod common;

use burn::prelude::*;
use burn::tensor::TensorData;
use diffusion_transformers::Error;
use diffusion_transformers::models::DiT;
use diffusion_transformers::contracts::{Denoiser, Objective, TrainRng};
use diffusion_transformers::training::{DataParallelTrainer, GradientSync, OptimizerConfig, Trainer, TrainerConfig};
use rand::Rng;

type DtResult<T> = diffusion_transformers::Result<T>;

/// Noise prediction whose noise and timesteps are functions of each sample (its pixels and its
/// label), so a sample contributes the same loss whichever shard it lands in.
struct PerSampleDraws;

impl Objective<DiT> for PerSampleDraws {
    fn loss(
        &self,
        model: &DiT,
        x0: Tensor<4>,
        cond: &Option<Tensor<1, Int>>,
        _rng: &mut TrainRng,
    ) -> DtResult<Tensor<1>> {
        let noise = (x0.clone() * 7.3).sin();
        let t = cond.as_ref().expect("labelled batch").clone().float() * 200.0 + 100.0;
        let out = model.denoise(x0 + noise.clone() * 0.5, t, cond)?;
        Ok((out - noise).square().mean())
    }
}

/// `factor` times another objective: with 2.0, what summing (instead of averaging) two
/// devices' gradients would train on.
struct Scaled<O>(O, f32);

impl<O: Objective<DiT>> Objective<DiT> for Scaled<O> {
    fn loss(
        &self,
        model: &DiT,
        x0: Tensor<4>,
        cond: &Option<Tensor<1, Int>>,
        rng: &mut TrainRng,
    ) -> DtResult<Tensor<1>> {
        Ok(self.0.loss(model, x0, cond, rng)? * self.1)
    }
}

/// Noise and timesteps drawn from the trainer's RNG.
struct NoisePrediction;

impl Objective<DiT> for NoisePrediction {
    fn loss(
        &self,
        model: &DiT,
        x0: Tensor<4>,
        cond: &Option<Tensor<1, Int>>,
        rng: &mut TrainRng,
    ) -> DtResult<Tensor<1>> {
        let dims = x0.dims();
        let noise: Vec<f32> = (0..dims.iter().product()).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        let noise = Tensor::<4>::from_data(TensorData::new(noise, dims), &x0.device());
        let t: Vec<f32> = (0..dims[0]).map(|_| rng.random_range(0.0..1000.0)).collect();
        let t = Tensor::<1>::from_data(TensorData::new(t, [dims[0]]), &x0.device());
        let out = model.denoise(x0 + noise.clone() * 0.5, t, cond)?;
        Ok((out - noise).square().mean())
    }
}

/// A NaN loss on the shard whose first label is 2 (the second device's half of [`batch`]).
struct NanOnSecondShard;

impl Objective<DiT> for NanOnSecondShard {
    fn loss(
        &self,
        model: &DiT,
        x0: Tensor<4>,
        cond: &Option<Tensor<1, Int>>,
        rng: &mut TrainRng,
    ) -> DtResult<Tensor<1>> {
        let first = cond.as_ref().unwrap().clone().narrow(0, 0, 1).into_scalar::<i64>();
        let loss = PerSampleDraws.loss(model, x0, cond, rng)?;
        Ok(if first == 2 { loss * f32::NAN } else { loss })
    }
}

/// AdamW with a large epsilon, so an update scales with the gradient (plain Adam would take
/// nearly the same step for a gradient and twice that gradient, hiding a sum-for-mean bug).
fn trainer_config() -> TrainerConfig {
    TrainerConfig {
        optimizer: OptimizerConfig { lr: 0.05, epsilon: 1.0, weight_decay: 0.01, ..Default::default() },
        ema_decay: 0.9,
        ema_warmup: false,
        seed: 3,
        keep_checkpoints: 2,
        gradient_checkpointing: false,
    }
}

fn batch(device: &Device) -> (Tensor<4>, Option<Tensor<1, Int>>) {
    let x: Vec<f32> = (0..4 * 3 * 64).map(|i| ((i * 29 % 83) as f32 / 41.0) - 1.0).collect();
    (Tensor::from_data(TensorData::new(x, [4, 3, 8, 8]), device), Some(Tensor::from_ints([0, 1, 2, 3], device)))
}

struct Collect(Vec<f32>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.0.extend(p.val().into_data().iter::<f32>());
    }
}

fn params(m: &DiT) -> Vec<f32> {
    let mut c = Collect(vec![]);
    m.visit(&mut c);
    c.0
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn two_cpu_devices() -> Vec<Device> {
    vec![Device::flex().autodiff(), Device::flex().autodiff()]
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dt_data_parallel_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Largest parameter difference allowed between the data-parallel and the whole-batch runs
/// (float rounding; measured 5e-10).
const TOL: f32 = 1e-6;

#[test]
fn two_devices_on_half_batches_match_one_device_on_the_whole_batch() {
    let devices = two_cpu_devices();
    devices[0].seed(7);
    let init = common::tiny_dit_config().init(&devices[0]).unwrap();
    let (x, y) = batch(&devices[0]);

    let mut single = Trainer::new(init.clone(), trainer_config()).unwrap();
    let mut summed = Trainer::new(init.clone(), trainer_config()).unwrap();
    let mut dp = DataParallelTrainer::new(Trainer::new(init.clone(), trainer_config()).unwrap(), devices).unwrap();
    assert_eq!(dp.gradient_sync(), GradientSync::Accumulate);

    for step in 0..3 {
        let want = single.train_step(&PerSampleDraws, x.clone(), &y).unwrap();
        summed.train_step(&Scaled(PerSampleDraws, 2.0), x.clone(), &y).unwrap();
        let got = dp.train_step(&PerSampleDraws, x.clone(), &y).unwrap();
        // The reported loss is the mean over both halves, i.e. the whole-batch loss.
        assert!((got - want).abs() <= 1e-5 * want.abs(), "step {step}: loss {got} vs {want}");
    }
    assert_eq!(dp.step(), 3);

    let (p_dp, p_single, p_summed) = (params(dp.model()), params(single.model()), params(summed.model()));
    let moved = max_diff(&p_single, &params(&init));
    let diff = max_diff(&p_dp, &p_single);
    let sum_diff = max_diff(&p_summed, &p_single);
    assert!(moved > 1e-3, "training moved the parameters by {moved}");
    assert!(diff < TOL, "data-parallel parameters differ from the whole-batch run by {diff}");
    // The check can tell an average from a sum: summing would have moved them this much.
    assert!(sum_diff > 1000.0 * TOL, "a sum of gradients would differ by only {sum_diff}");
    let ema_diff = max_diff(&params(dp.ema_model()), &params(single.ema_model()));
    assert!(ema_diff < TOL, "EMA differs by {ema_diff}");
    // The model stays on the main device and keeps training with a single device afterwards.
    let mut back = dp.into_trainer();
    assert!(back.train_step(&PerSampleDraws, x, &y).unwrap().is_finite());
}

#[test]
fn one_device_is_exactly_the_plain_trainer() {
    let device = Device::flex().autodiff();
    let init = common::tiny_dit_config().init(&device).unwrap();
    let (x, y) = batch(&device);
    let mut plain = Trainer::new(init.clone(), trainer_config()).unwrap();
    let mut dp = DataParallelTrainer::new(Trainer::new(init, trainer_config()).unwrap(), vec![device]).unwrap();
    let a: Vec<f32> = (0..3).map(|_| plain.train_step(&NoisePrediction, x.clone(), &y).unwrap()).collect();
    let b: Vec<f32> = (0..3).map(|_| dp.train_step(&NoisePrediction, x.clone(), &y).unwrap()).collect();
    assert_eq!(a, b);
    assert_eq!(params(plain.model()), params(dp.model()));
    assert_eq!(params(plain.ema_model()), params(dp.ema_model()));
}

#[test]
fn resume_continues_a_data_parallel_run_exactly() {
    let devices = two_cpu_devices();
    let init = common::tiny_dit_config().init(&devices[0]).unwrap();
    let (x, y) = batch(&devices[0]);
    let root = tmp("resume");

    let mut full =
        DataParallelTrainer::new(Trainer::new(init.clone(), trainer_config()).unwrap(), devices.clone()).unwrap();
    let want: Vec<f32> = (0..4).map(|_| full.train_step(&NoisePrediction, x.clone(), &y).unwrap()).collect();

    let mut first = DataParallelTrainer::new(Trainer::new(init, trainer_config()).unwrap(), devices.clone()).unwrap();
    let mut got: Vec<f32> = (0..2).map(|_| first.train_step(&NoisePrediction, x.clone(), &y).unwrap()).collect();
    first.save_checkpoint(&root, serde_json::json!({})).unwrap();
    drop(first);
    let (resumed, _) = Trainer::resume(common::tiny_dit_config().init(&devices[0]).unwrap(), trainer_config(), &root).unwrap();
    let mut second = DataParallelTrainer::new(resumed, devices).unwrap();
    assert_eq!(second.step(), 2);
    got.extend((0..2).map(|_| second.train_step(&NoisePrediction, x.clone(), &y).unwrap()));
    assert_eq!(got, want);
    assert_eq!(params(second.model()), params(full.model()));
    assert_eq!(params(second.ema_model()), params(full.ema_model()));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_devices_are_errors() {
    let device = Device::flex().autodiff();
    let trainer = || Trainer::new(common::tiny_dit_config().init(&device).unwrap(), trainer_config()).unwrap();

    let empty = DataParallelTrainer::new(trainer(), vec![]);
    assert!(matches!(empty, Err(Error::InvalidArgument(_))));
    let no_autodiff = DataParallelTrainer::new(trainer(), vec![device.clone(), Device::flex()]);
    assert!(matches!(no_autodiff, Err(Error::InvalidArgument(m)) if m.contains("autodiff")));
    // Burn 0.22 has no collectives on CPU devices: asking for an all-reduce is an error, not a
    // panic inside Burn.
    let all_reduce = DataParallelTrainer::with_gradient_sync(trainer(), two_cpu_devices(), GradientSync::AllReduce);
    assert!(matches!(all_reduce, Err(Error::InvalidArgument(m)) if m.contains("CUDA")));
    // One device needs no collective, so any sync works.
    assert!(DataParallelTrainer::with_gradient_sync(trainer(), vec![device.clone()], GradientSync::AllReduce).is_ok());
}

#[test]
fn bad_batches_and_non_finite_losses_are_errors_that_change_nothing() {
    let devices = two_cpu_devices();
    let init = common::tiny_dit_config().init(&devices[0]).unwrap();
    let before = params(&init);
    let mut dp = DataParallelTrainer::new(Trainer::new(init, trainer_config()).unwrap(), devices.clone()).unwrap();
    let (x, y) = batch(&devices[0]);

    let odd =
        dp.train_step(&PerSampleDraws, x.clone().narrow(0, 0, 3), &Some(Tensor::from_ints([0, 1, 2], &devices[0])));
    assert!(matches!(odd, Err(Error::Shape { ref name, .. }) if name == "x0"), "{odd:?}");
    let short_labels = dp.train_step(&PerSampleDraws, x.clone(), &Some(Tensor::from_ints([0, 1], &devices[0])));
    assert!(matches!(short_labels, Err(Error::Shape { ref name, .. }) if name == "cond"), "{short_labels:?}");
    let nan = dp.train_step(&NanOnSecondShard, x.clone(), &y).unwrap_err().to_string();
    assert!(nan.contains("device 1") && nan.contains("step 0"), "{nan}");

    let empty = dp.train_step(&PerSampleDraws, Tensor::zeros([0, 3, 8, 8], &devices[0]), &Some(Tensor::zeros([0], &devices[0])));
    assert!(matches!(empty, Err(Error::Shape { .. })), "{empty:?}");
    let nan_x = x.clone().slice_fill([3..4, 0..1, 0..1, 0..1], f32::NAN);
    assert!(matches!(dp.train_step(&PerSampleDraws, nan_x, &y), Err(Error::Numerical(_))));
    let nan_grad = dp.train_step(&NanGradient, x.clone(), &y).unwrap_err().to_string();
    assert!(nan_grad.contains("gradient of `") && nan_grad.contains("step 0"), "{nan_grad}");

    assert_eq!(dp.step(), 0);
    assert_eq!(params(dp.model()), before);
    assert!(dp.train_step(&PerSampleDraws, x, &y).unwrap().is_finite());
    assert_eq!(dp.step(), 1);
}

/// A finite loss (0) whose gradient is NaN: `d sqrt(u) / du` is infinite at 0.
struct NanGradient;

impl Objective<DiT> for NanGradient {
    fn loss(&self, model: &DiT, x0: Tensor<4>, cond: &Option<Tensor<1, Int>>, _rng: &mut TrainRng) -> DtResult<Tensor<1>> {
        let t = Tensor::<1>::full([x0.dims()[0]], 10.0, &x0.device());
        Ok((model.denoise(x0, t, cond)?.abs() * 0.0).sum().sqrt())
    }
}

/// The all-reduce path on two CUDA GPUs (skipped with fewer):
/// `cargo test --release --features cuda --test data_parallel`.
#[cfg(feature = "cuda")]
#[test]
fn all_reduce_on_two_cuda_gpus_matches_one_gpu_on_the_whole_batch() {
    let devices = Device::enumerate(burn::tensor::DeviceType::Cuda).autodiff().into_vec();
    if devices.len() < 2 {
        eprintln!("skipped: {} CUDA device(s), the all-reduce test needs 2", devices.len());
        return;
    }
    let devices = devices[..2].to_vec();
    let init = common::tiny_dit_config().init(&devices[0]).unwrap();
    let (x, y) = batch(&devices[0]);
    let mut single = Trainer::new(init.clone(), trainer_config()).unwrap();
    let mut dp = DataParallelTrainer::new(Trainer::new(init, trainer_config()).unwrap(), devices).unwrap();
    assert_eq!(dp.gradient_sync(), GradientSync::AllReduce);
    for step in 0..3 {
        let want = single.train_step(&PerSampleDraws, x.clone(), &y).unwrap();
        let got = dp.train_step(&PerSampleDraws, x.clone(), &y).unwrap();
        assert!((got - want).abs() <= 1e-4 * want.abs(), "step {step}: loss {got} vs {want}");
    }
    let diff = max_diff(&params(dp.model()), &params(single.model()));
    assert!(diff < 1e-4, "all-reduce parameters differ from the whole-batch run by {diff}");
    // Every replica applied the same averaged gradient.
    for replica in dp.replicas() {
        assert_eq!(params(replica), params(dp.model()));
    }
}

//! What every bench binary shares: the device and the allocator setting.

#![allow(dead_code)] // each bench binary uses its own part

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use diffusion_transformers::training::OptimizerConfig;
use burn::prelude::*;
use burn::tensor::Distribution;

/// The device to time on: flex (default), `BURN_DEVICE=ndarray` (with the `ndarray` or
/// `ndarray-openblas` feature), or `BURN_DEVICE=cuda|wgpu` with the matching crate feature;
/// `DT_DTYPE=f16|bf16` configures its float dtype (inputs are cast where a bench needs it). Also applies [`diffusion_transformers::cpu::tune_allocator`] (as the README
/// recommends for CPU use) unless `DT_DEFAULT_MALLOC=1`; `benches/compare.sh` gives PyTorch the
/// same setting through the environment.
pub fn device() -> Device {
    if std::env::var("DT_DEFAULT_MALLOC").as_deref() != Ok("1") {
        diffusion_transformers::cpu::tune_allocator();
    }
    let mut device = match std::env::var("BURN_DEVICE").as_deref() {
        Ok("flex") | Err(_) => Device::flex(),
        #[cfg(feature = "ndarray")]
        Ok("ndarray") => Device::ndarray(),
        Ok(_) => Device::default(),
    };
    let dtype = match std::env::var("DT_DTYPE").as_deref() {
        Err(_) | Ok("f32") => return device,
        Ok("f16") => burn::tensor::FloatDType::F16,
        Ok("bf16") => burn::tensor::FloatDType::BF16,
        Ok(other) => panic!("unknown DT_DTYPE `{other}` (expected f32, f16 or bf16)"),
    };
    assert!(device.supports_dtype(dtype), "{device:?} does not support {dtype:?}");
    device.configure(dtype).expect("configure the device's float dtype");
    device
}

/// Standard normal tensor.
pub fn randn<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Class labels, all `1`.
pub fn labels(batch: usize, device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(vec![1i64; batch], [batch]), device)
}

/// The U-DiT workloads' inputs (as `benches/pytorch_udit.py`): batch-2 standard normal latents
/// of `config`'s size, timesteps 500, labels 1.
pub fn udit_inputs(config: &diffusion_transformers::models::UDiTConfig, device: &Device) -> (Tensor<4>, Tensor<1>, Tensor<1, Int>) {
    const BATCH: usize = 2;
    let s = config.input_size;
    (randn([BATCH, 4, s, s], device), Tensor::full([BATCH], 500.0, device), labels(BATCH, device))
}

/// A training step as the PyTorch reference times it: forward, MSE against a fixed target,
/// backward, AdamW (lr 1e-4, no weight decay, PyTorch's epsilon: the crate's
/// [`OptimizerConfig`] defaults, the one-pass `FusedAdamW` that the crate's `Trainer` uses),
/// then a device sync.
pub struct TrainStep<M: Module> {
    model: Option<M>,
    optim: ModuleOptimizer,
    device: Device,
}

impl<M: Module> TrainStep<M> {
    /// Wraps a model initialised on an autodiff device.
    pub fn new(model: M, device: &Device) -> Self {
        let optim = OptimizerConfig::default().init().expect("default optimizer config");
        Self { model: Some(model), optim, device: device.clone() }
    }

    /// One step; `output` runs the model, the loss is `mean((output - target)^2)`.
    pub fn step(&mut self, target: &Tensor<4>, output: impl Fn(&M) -> Tensor<4>) {
        let m = self.model.take().expect("model present between steps");
        let loss = (output(&m) - target.clone()).square().mean();
        // backward and update on the CPU pool's threads, as the crate's `Trainer` runs them
        let grads = GradientsParams::from_grads(diffusion_transformers::cpu::on_workers(&self.device, || loss.backward()), &m);
        let optim = &mut self.optim;
        self.model = Some(diffusion_transformers::cpu::on_workers(&self.device, || optim.step(1e-4, m, grads)));
        self.device.sync().expect("device sync");
    }
}

/// Resets the process's peak resident memory (Linux `/proc/self/clear_refs`), so that the
/// next [`record_peak_memory`] covers one workload.
pub fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Appends the peak resident memory since [`reset_peak_memory`] (Linux `VmHWM`, whole
/// process: weights, optimizer state and activations) for `id` to
/// `target/bench_memory.jsonl`, which `benches/report.py` reads.
pub fn record_peak_memory(id: &str) {
    let Some(kib) = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("VmHWM:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
    }) else {
        return;
    };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench_memory.jsonl");
    let line = format!("{{\"id\": \"{id}\", \"peak_rss_bytes\": {}}}\n", kib * 1024);
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(line.as_bytes());
    }
}

//! A training loop step that works with any model of the crate and any objective: AdamW,
//! EMA, learning-rate schedule, NaN/inf guard, crash-safe checkpoints with exact resume.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use rand::SeedableRng;

use crate::contracts::{Denoiser, Objective, TrainRng};
use crate::error::{Error, Result};
use crate::training::checkpoint::{CheckpointState, io, latest_checkpoint, read_verified_state, write_checkpoint};
use crate::training::ema::Ema;
use crate::training::optimizer::OptimizerConfig;
use crate::weights::{load_burnpack, save_burnpack};

/// Trainer settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerConfig {
    /// AdamW, schedule and clipping.
    pub optimizer: OptimizerConfig,
    /// EMA decay (DiT: 0.9999).
    pub ema_decay: f64,
    /// EMA warm-up `min(decay, (1+n)/(10+n))`, useful for short runs.
    pub ema_warmup: bool,
    /// Seed of the training RNG (timesteps, noise, label dropout).
    pub seed: u64,
    /// Checkpoints to keep on disk.
    pub keep_checkpoints: usize,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self { optimizer: OptimizerConfig::default(), ema_decay: 0.9999, ema_warmup: false, seed: 0, keep_checkpoints: 2 }
    }
}

/// Online model, EMA, optimizer state, step counter and RNG: everything a run needs to
/// continue exactly where it stopped.
pub struct Trainer<M: Module + Denoiser> {
    // `pub(super)`: the data-parallel trainer drives the same state.
    pub(super) model: Option<M>,
    pub(super) ema: Ema<M>,
    pub(super) optim: ModuleOptimizer,
    pub(super) step: u64,
    pub(super) rng: TrainRng,
    pub(super) config: TrainerConfig,
}

impl<M: Module + Denoiser> Trainer<M> {
    /// Start training `model` (built on an autodiff device, e.g. `Device::flex().autodiff()`).
    pub fn new(model: M, config: TrainerConfig) -> Result<Self> {
        let optim = config.optimizer.init()?;
        if !(0.0..1.0).contains(&config.ema_decay) {
            return Err(Error::InvalidConfig(format!("EMA decay must lie in [0, 1), got {}", config.ema_decay)));
        }
        let mut ema = Ema::new(&model, config.ema_decay);
        ema.warmup = config.ema_warmup;
        Ok(Self { model: Some(model), ema, optim, step: 0, rng: TrainRng::seed_from_u64(config.seed), config })
    }

    /// The online model.
    pub fn model(&self) -> &M {
        self.model.as_ref().expect("model present between steps")
    }

    /// The EMA model (inference mode).
    pub fn ema_model(&self) -> &M {
        &self.ema.model
    }

    /// Optimisation steps taken.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The training RNG (e.g. to draw a batch reproducibly).
    pub fn rng(&mut self) -> &mut TrainRng {
        &mut self.rng
    }

    /// The settings.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// One optimisation step on a batch: loss, backward, AdamW update (at the scheduled
    /// learning rate), EMA update. Returns the loss. A non-finite loss stops with
    /// [`Error::Numerical`] naming the step, before the parameters are touched.
    pub fn train_step<O: Objective<M>>(&mut self, objective: &O, x0: Tensor<4>, cond: &M::Cond) -> Result<f32> {
        let model = self.model.take().expect("model present between steps");
        let result = (|| {
            let loss = objective.loss(&model, x0, cond, &mut self.rng)?;
            let value = loss.clone().into_scalar::<f32>();
            if !value.is_finite() {
                return Err(Error::Numerical(format!("loss is {value} at step {}", self.step)));
            }
            Ok((loss, value))
        })();
        let (loss, value) = match result {
            Ok(v) => v,
            Err(e) => {
                self.model = Some(model);
                return Err(e);
            }
        };
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = self.config.optimizer.lr_at(self.step);
        let model = self.optim.step(lr, model, grads);
        self.ema.update(&model);
        self.model = Some(model);
        self.step += 1;
        Ok(value)
    }

    /// Save a crash-safe checkpoint under `root` (see [`crate::training::checkpoint`]) with
    /// free-form `metadata`; returns its directory.
    pub fn save_checkpoint(&self, root: impl AsRef<Path>, metadata: serde_json::Value) -> Result<PathBuf> {
        let state = CheckpointState {
            step: self.step,
            rng: self.rng.state(),
            ema_updates: self.ema.updates,
            metadata,
            files: vec![],
        };
        write_checkpoint(root.as_ref(), state, self.config.keep_checkpoints, |dir| {
            save_burnpack(self.model(), dir.join("model.bpk"))?;
            save_burnpack(&self.ema.model, dir.join("ema.bpk"))?;
            let p = dir.join("optim.bin");
            self.optim.save(&p).map_err(|e| Error::Write { path: p.clone(), reason: e.to_string() })
        })
    }

    /// Resume from the newest checkpoint under `root`; `model` is a freshly built model of the
    /// same architecture on the training device. Returns the trainer and the metadata saved.
    pub fn resume(model: M, config: TrainerConfig, root: impl AsRef<Path>) -> Result<(Self, serde_json::Value)> {
        let dir = latest_checkpoint(root.as_ref())?;
        Self::resume_from(model, config, &dir)
    }

    /// Resume from one checkpoint directory (e.g. an older one when the newest is damaged).
    pub fn resume_from(model: M, config: TrainerConfig, dir: &Path) -> Result<(Self, serde_json::Value)> {
        let state = read_verified_state(dir)?;
        let online = load_burnpack(&model, dir.join("model.bpk"))?;
        let ema_model = load_burnpack(&model.valid(), dir.join("ema.bpk"))?;
        let p = dir.join("optim.bin");
        let optim = config.optimizer.init()?.load(&p).map_err(|e| io(&p, e))?;
        let mut trainer = Self::new(online, config)?;
        trainer.ema.model = ema_model;
        trainer.ema.updates = state.ema_updates;
        trainer.optim = optim;
        trainer.step = state.step;
        trainer.rng = TrainRng::from_state(state.rng);
        Ok((trainer, state.metadata))
    }
}

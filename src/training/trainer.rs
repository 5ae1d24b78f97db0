//! A training loop step that works with any model of the crate and any objective: AdamW,
//! EMA, learning-rate schedule, NaN/inf guard, crash-safe checkpoints with exact resume.
//!
//! Guards: a step rejects an empty batch, non-finite data and a model without autodiff
//! before touching anything; a non-finite loss or gradient stops the step before the update
//! ([`crate::training::guard`]); a checkpoint is written only when the weights are finite and
//! within [`DEFAULT_MAX_ABS_WEIGHT`] (see [`Trainer::with_weight_bound`]).

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::GradientCheckpointingStrategy;
use rand::SeedableRng;

use crate::contracts::{Denoiser, Objective, TrainRng};
use crate::error::{Error, Result};
use crate::training::checkpoint::{
    CheckpointState, RunId, SaveOptions, has_later_checkpoint, io, list_checkpoints, quarantine, read_verified_state,
    write_checkpoint,
};
use crate::durable::remove_temporaries;
use crate::training::guard::{check_gradients, check_weights};
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
    /// Burn's gradient checkpointing (the `Balanced` strategy of
    /// `Device::autodiff().gradient_checkpointing()`): memory-bound operations (element-wise,
    /// normalisation, activations) are recomputed in the backward pass instead of keeping their
    /// outputs, compute-bound ones (matmuls) keep theirs. Less peak memory for some more time;
    /// the loss and gradients are the same. The trainer moves the model's parameters and each
    /// batch to that strategy; tensors of the conditioning (class labels included) must be
    /// plain (created without `.autodiff()`) or created on the checkpointing device
    /// `device.autodiff().gradient_checkpointing()`: Burn panics when one operation mixes two
    /// strategies.
    pub gradient_checkpointing: bool,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerConfig::default(),
            ema_decay: 0.9999,
            ema_warmup: false,
            seed: 0,
            keep_checkpoints: 2,
            gradient_checkpointing: false,
        }
    }
}

/// Default bound on `|w|` of every weight before a checkpoint is written: a learning-rate
/// blow-up gives finite but huge weights, which must not replace the last good checkpoint.
pub const DEFAULT_MAX_ABS_WEIGHT: f32 = 1e4;

/// How [`Trainer::resume`] found its checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeReport {
    /// The checkpoint resumed.
    pub dir: PathBuf,
    /// Newer checkpoints that failed verification, each moved aside to `damaged-<name>`
    /// (its new path) with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Whether the run continues from an older point of its history as a new branch
    /// ([`RunId::branch`]); its saves then may not overwrite the later steps in the same root.
    pub branched: bool,
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
    run: RunId,
    overwrite: bool,
    weight_bound: Option<f32>,
    resumed: Option<ResumeReport>,
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
        let model = if config.gradient_checkpointing { model.map(&mut Checkpointed) } else { model };
        Ok(Self {
            model: Some(model),
            ema,
            optim,
            step: 0,
            rng: TrainRng::seed_from_u64(config.seed),
            config,
            run: RunId::fresh(),
            overwrite: false,
            weight_bound: Some(DEFAULT_MAX_ABS_WEIGHT),
            resumed: None,
        })
    }

    /// Let this run's checkpoints replace the later checkpoints of another run in the same root
    /// (e.g. a run resumed from an older step that is meant to replace the original's
    /// continuation). Without it such a save is refused; see [`crate::training::checkpoint`].
    pub fn with_overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }

    /// Bound on `|w|` checked before every checkpoint (default [`DEFAULT_MAX_ABS_WEIGHT`];
    /// `None` checks finiteness only).
    pub fn with_weight_bound(mut self, max_abs: Option<f32>) -> Self {
        self.weight_bound = max_abs;
        self
    }

    /// The run's identity, recorded in its checkpoints.
    pub fn run(&self) -> &RunId {
        &self.run
    }

    /// How the trainer was resumed (`None` for a fresh one).
    pub fn resumed(&self) -> Option<&ResumeReport> {
        self.resumed.as_ref()
    }

    /// Errors unless the step can run: a non-empty, finite batch and a model on autodiff
    /// devices (Burn panics in `backward` otherwise).
    pub(super) fn check_step_input(&self, x0: &Tensor<4>) -> Result<()> {
        crate::validate::non_empty_batch("x0", &x0.dims())?;
        if let Some(d) = self.model().devices().into_iter().find(|d| !d.is_autodiff()) {
            return Err(Error::InvalidArgument(format!(
                "training needs the model on an autodiff device (`device.autodiff()`), it lives on {d:?}"
            )));
        }
        crate::validate::ensure_finite("x0", x0).map_err(|e| match e {
            Error::Numerical(m) => Error::Numerical(format!("{m} at step {}", self.step)),
            e => e,
        })
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
    ///
    /// # Errors
    /// [`Error::Shape`] for an empty batch, [`Error::InvalidArgument`] for a model without
    /// autodiff, [`Error::Numerical`] for non-finite data, loss or gradients (naming the step
    /// and, for gradients, the parameter); the model is unchanged after any of them.
    pub fn train_step<O: Objective<M>>(&mut self, objective: &O, x0: Tensor<4>, cond: &M::Cond) -> Result<f32> {
        self.check_step_input(&x0)?;
        let x0 = if self.config.gradient_checkpointing { checkpointed(x0) } else { x0 };
        let device = x0.device();
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
        // the backward and the update on the CPU pool's threads, as the model's forward
        let grads = GradientsParams::from_grads(crate::cpu::on_workers(&device, || loss.backward()), &model);
        if let Err(e) = check_gradients(&model, &grads, self.step) {
            self.model = Some(model);
            return Err(e);
        }
        let lr = self.config.optimizer.lr_at(self.step);
        let optim = &mut self.optim;
        let model = crate::cpu::on_workers(&device, || optim.step(lr, model, grads));
        self.ema.update(&model);
        self.model = Some(model);
        self.step += 1;
        Ok(value)
    }

    /// Save a crash-safe, durable checkpoint under `root` (see [`crate::training::checkpoint`])
    /// with free-form `metadata`; returns its directory.
    ///
    /// # Errors
    /// [`Error::Numerical`] when the online or EMA weights are not finite or exceed the weight
    /// bound (nothing is written, every earlier checkpoint stays); [`Error::InvalidArgument`]
    /// when `root` holds later checkpoints of another run (see [`with_overwrite`](Self::with_overwrite));
    /// [`Error::Write`] when writing fails.
    pub fn save_checkpoint(&self, root: impl AsRef<Path>, metadata: serde_json::Value) -> Result<PathBuf> {
        let what = |m: &str| format!("refusing to save the checkpoint of step {}: {m}", self.step);
        check_weights(self.model(), &what("online model"), self.weight_bound)?;
        check_weights(&self.ema.model, &what("EMA model"), self.weight_bound)?;
        let state = CheckpointState {
            step: self.step,
            rng: self.rng.state(),
            ema_updates: self.ema.updates,
            metadata,
            files: vec![],
            run: self.run.clone(),
        };
        let options = SaveOptions { keep: self.config.keep_checkpoints, overwrite: self.overwrite };
        write_checkpoint(root.as_ref(), state, &options, |dir| {
            save_burnpack(self.model(), dir.join("model.bpk"))?;
            save_burnpack(&self.ema.model, dir.join("ema.bpk"))?;
            let p = dir.join("optim.bin");
            self.optim.save(&p).map_err(|e| Error::Write { path: p.clone(), reason: e.to_string() })
        })
    }

    /// Resume from the newest valid checkpoint under `root`; `model` is a freshly built model of
    /// the same architecture on the training device. Returns the trainer and the metadata saved.
    ///
    /// Newer checkpoints that fail verification (truncated or corrupted files) are moved aside
    /// to `damaged-<name>` and listed in [`resumed`](Self::resumed); the run continues from the
    /// newest valid one as the same run. Stale save temporaries are removed.
    ///
    /// # Errors
    /// [`Error::Io`] when no checkpoint under `root` is valid (the error of the newest one).
    pub fn resume(model: M, config: TrainerConfig, root: impl AsRef<Path>) -> Result<(Self, serde_json::Value)> {
        let root = root.as_ref();
        remove_temporaries(root);
        let mut skipped = Vec::new();
        let mut first_error = None;
        for candidate in list_checkpoints(root).into_iter().rev() {
            match Self::load(model.clone(), config.clone(), &candidate.path) {
                Ok((mut trainer, state)) => {
                    let damaged: Vec<(PathBuf, String)> =
                        skipped.drain(..).map(|(p, e): (PathBuf, String)| (quarantine(&p), e)).collect();
                    trainer.run = continued(&state);
                    trainer.resumed = Some(ResumeReport { dir: candidate.path, skipped: damaged, branched: false });
                    return Ok((trainer, state.metadata));
                }
                Err(e) => {
                    skipped.push((candidate.path, e.to_string()));
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| io(root, "no checkpoint here")))
    }

    /// Resume from one checkpoint directory. When a later checkpoint exists beside it, the
    /// trainer is a new branch of the run ([`ResumeReport::branched`]): saving it into the same
    /// root is refused unless [`with_overwrite`](Self::with_overwrite) is set.
    pub fn resume_from(model: M, config: TrainerConfig, dir: &Path) -> Result<(Self, serde_json::Value)> {
        let (mut trainer, state) = Self::load(model, config, dir)?;
        let branched = has_later_checkpoint(dir);
        trainer.run = if branched { RunId::branch(&state.run, state.step) } else { continued(&state) };
        trainer.resumed = Some(ResumeReport { dir: dir.to_path_buf(), skipped: vec![], branched });
        Ok((trainer, state.metadata))
    }

    fn load(model: M, config: TrainerConfig, dir: &Path) -> Result<(Self, CheckpointState)> {
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
        Ok((trainer, state))
    }
}

/// Moves every autodiff float parameter to Burn's `Balanced` checkpointing strategy (the
/// optimizer keeps a parameter's strategy across updates).
struct Checkpointed;

impl ModuleMapper for Checkpointed {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(checkpointed)
    }
}

/// `t` under the `Balanced` checkpointing strategy when it is an autodiff tensor (a plain tensor
/// joins any strategy as it is).
pub(super) fn checkpointed<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if t.is_autodiff() { t.with_gradient_checkpointing_strategy(GradientCheckpointingStrategy::Balanced) } else { t }
}

/// The run identity of a trainer continuing `state`'s run from its newest checkpoint; a
/// checkpoint without one (older versions) starts a run descending from it.
fn continued(state: &CheckpointState) -> RunId {
    if state.run.id.is_empty() { RunId::branch(&state.run, state.step) } else { state.run.clone() }
}

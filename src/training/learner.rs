//! Burn's own training loop for the crate's models and objectives (feature `train`):
//! [`DiffusionLearner`] pairs any [`Denoiser`] with any [`Objective`] and implements
//! `burn-train`'s `TrainStep` and `InferenceStep`, so `burn::train::Learner` and
//! `SupervisedTraining` train it with their metrics, dashboard, checkpointing, multi-device
//! strategies and early stopping.
//!
//! Each [`DiffusionBatch`] carries the seed of its timesteps and noise, so a step is a pure
//! function of the model and the batch (any device, any worker order), and a validation set
//! with fixed seeds gives the same loss at every epoch: a curve that can be compared.
//!
//! A batch the objective rejects does not panic: the step's [`DiffusionOutput`] carries the
//! error with a NaN loss and no gradients (Burn's step traits cannot return an error).
//!
//! # Which loop
//! - `Learner` (this module): the standard Burn workflow: metrics (`LossMetric`, learning rate,
//!   CPU/GPU use), the terminal dashboard, epoch checkpoints, validation, multi-device
//!   strategies. Use it to train a model in an application built around `burn-train`.
//! - [`Trainer`](crate::training::Trainer): what the `Learner` does not do: an EMA of the
//!   weights (what diffusion models sample with), checkpoints that resume *exactly*
//!   (optimizer, EMA, RNG and step, crash-safe, with run identities) mid-epoch, and the
//!   NaN/inf guard that refuses a step with a non-finite loss or gradient. The quickstart uses
//!   it. To sample well after a `Learner` run, average the weights yourself
//!   ([`Ema`](crate::training::Ema)) or train longer at a lower final learning rate.
//!
//! ```no_run
//! # use burn::prelude::*;
//! use burn::train::{Learner, SupervisedTraining};
//! use burn::train::metric::LossMetric;
//! use diffusion_transformers::diffusion::RectifiedFlowConfig;
//! use diffusion_transformers::models::DiTConfig;
//! use diffusion_transformers::training::LabelDropout;
//! use diffusion_transformers::training::learner::DiffusionLearner;
//! # fn loaders() -> (std::sync::Arc<dyn burn::data::dataloader::DataLoader<diffusion_transformers::training::learner::DiffusionBatch<Option<Tensor<1, Int>>>>>, std::sync::Arc<dyn burn::data::dataloader::DataLoader<diffusion_transformers::training::learner::DiffusionBatch<Option<Tensor<1, Int>>>>>) { unimplemented!() }
//! # fn main() -> Result<(), diffusion_transformers::Error> {
//! let device = Device::flex().autodiff();
//! let model = DiTConfig::new().with_input_size(16).with_in_channels(3).with_patch_size(4)
//!     .with_hidden_size(64).with_depth(2).with_num_heads(2).with_num_classes(10)
//!     .with_learn_sigma(false).init(&device)?;
//! // Label dropout trains the null class (10) that guidance samples with.
//! let objective = LabelDropout::new(RectifiedFlowConfig::new().init()?, 10, 0.1)?;
//! let learner_model = DiffusionLearner::new(model, objective);
//! let (train, valid) = loaders(); // DataLoaders of DiffusionBatch (see examples/train_learner.rs)
//! let result = SupervisedTraining::new("out/learner", train, valid)
//!     .metrics((LossMetric::new(),))
//!     .num_epochs(2)
//!     .launch(Learner::new(learner_model, burn::optim::AdamWConfig::new().init(), 1e-3));
//! let trained = result.model.model; // the DiT, ready to sample
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;

use burn::module::ModuleDisplay;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::ExecutionError;
use burn::train::metric::{Adaptor, ItemLazy, LossInput};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use rand::SeedableRng;

use crate::contracts::{Denoiser, Objective, TrainRng};
use crate::error::{Error, Result};

/// One training or validation batch: clean data, its conditioning and the seed of the
/// timesteps and noise drawn for it.
#[derive(Debug, Clone)]
pub struct DiffusionBatch<C> {
    /// Clean data `[B, C, H, W]`.
    pub x0: Tensor<4>,
    /// The model's conditioning (class labels, text embeddings, ...).
    pub cond: C,
    /// Seed of the batch's timesteps and noise.
    pub seed: u64,
}

/// The output of a step: the batch's loss, read by `LossMetric`, or the error that stopped it.
#[derive(Debug, Clone)]
pub struct DiffusionOutput {
    /// Mean loss of the batch, `[1]`; NaN when the step failed (see [`error`](Self::error)).
    pub loss: Tensor<1>,
    /// Why the objective could not compute the loss (a batch whose shape or conditioning does
    /// not fit the model), `None` for a step that ran. A failed training step has no
    /// gradients, so the optimizer leaves the model as it was.
    pub error: Option<Arc<Error>>,
}

impl DiffusionOutput {
    /// The output of a step that failed with `error`: a NaN loss on `device` and the error.
    fn failed(error: Error, device: &Device) -> Self {
        Self { loss: Tensor::from_floats([f32::NAN], device), error: Some(Arc::new(error)) }
    }
}

impl ItemLazy for DiffusionOutput {
    fn sync(self) -> std::result::Result<Self, ExecutionError> {
        // No readback: dispatch the pending work and leave the autodiff graph behind.
        self.loss.device().flush()?;
        Ok(Self { loss: self.loss.without_autodiff(), error: self.error })
    }
}

impl Adaptor<LossInput> for DiffusionOutput {
    fn adapt(&self) -> LossInput {
        LossInput::new(self.loss.clone())
    }
}

/// A model and its training objective, trainable by `burn::train::Learner`. Its only
/// parameters are the model's (saved checkpoints hold the model under `model.`).
#[derive(Module, Debug)]
pub struct DiffusionLearner<M: Module, O> {
    /// The model being trained.
    pub model: M,
    /// The objective (DDPM, rectified flow, EDM, or your own [`Objective`]).
    #[module(skip)]
    pub objective: O,
}

impl<M: Module, O> DiffusionLearner<M, O> {
    /// Pairs `model` with `objective`.
    pub fn new(model: M, objective: O) -> Self {
        Self { model, objective }
    }

    /// The model.
    pub fn into_model(self) -> M {
        self.model
    }
}

impl<M, O> DiffusionLearner<M, O>
where
    M: Module + Denoiser,
    O: Objective<M>,
{
    /// The objective's loss on `batch`, with the batch's seed.
    ///
    /// # Errors
    /// The objective's (a batch whose shape or conditioning does not fit the model).
    pub fn batch_loss(&self, batch: DiffusionBatch<M::Cond>) -> Result<Tensor<1>> {
        let mut rng = TrainRng::seed_from_u64(batch.seed);
        self.objective.loss(&self.model, batch.x0, &batch.cond, &mut rng)
    }
}

impl<M, O> TrainStep for DiffusionLearner<M, O>
where
    M: Module + ModuleDisplay + Denoiser,
    M::Cond: Send + 'static,
    O: Objective<M> + Clone + fmt::Debug + Send + Sync + 'static,
{
    type Input = DiffusionBatch<M::Cond>;
    type Output = DiffusionOutput;

    /// A failed step does not panic: Burn's step traits cannot return an error, so the output
    /// carries it ([`DiffusionOutput::error`]) with a NaN loss (what `LossMetric` shows) and
    /// no gradients (the optimizer skips the update).
    fn step(&self, batch: Self::Input) -> TrainOutput<Self::Output> {
        let device = batch.x0.device();
        match self.batch_loss(batch) {
            Ok(loss) => {
                // the backward on the CPU pool's threads, as the forward ([`crate::cpu::on_workers`])
                let grads = crate::cpu::on_workers(&loss.device(), || loss.backward());
                TrainOutput::new(self, grads, DiffusionOutput { loss, error: None })
            }
            Err(e) => TrainOutput { grads: GradientsParams::new(), item: DiffusionOutput::failed(e, &device) },
        }
    }
}

impl<M, O> InferenceStep for DiffusionLearner<M, O>
where
    M: Module + ModuleDisplay + Denoiser,
    M::Cond: Send + 'static,
    O: Objective<M> + Clone + fmt::Debug + Send + Sync + 'static,
{
    type Input = DiffusionBatch<M::Cond>;
    type Output = DiffusionOutput;

    /// A failed step reports its error in the output with a NaN loss, as the training step.
    fn step(&self, batch: Self::Input) -> Self::Output {
        let device = batch.x0.device();
        match self.batch_loss(batch) {
            Ok(loss) => DiffusionOutput { loss, error: None },
            Err(e) => DiffusionOutput::failed(e, &device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::RectifiedFlowConfig;
    use crate::models::DiTConfig;

    fn batch(device: &Device, seed: u64) -> DiffusionBatch<Option<Tensor<1, Int>>> {
        let mut rng = TrainRng::seed_from_u64(7);
        DiffusionBatch {
            x0: crate::contracts::randn([2, 3, 8, 8], &mut rng, device),
            cond: Some(Tensor::from_ints([1, 2], device)),
            seed,
        }
    }

    #[test]
    fn steps_are_pure_functions_of_the_batch_and_reach_every_parameter() {
        let device = Device::flex().autodiff();
        device.seed(0);
        let model = DiTConfig::new()
            .with_input_size(8)
            .with_in_channels(3)
            .with_hidden_size(32)
            .with_depth(1)
            .with_num_heads(2)
            .with_num_classes(10)
            .with_learn_sigma(false)
            .init(&device)
            .unwrap();
        let learner = DiffusionLearner::new(model, RectifiedFlowConfig::new().init().unwrap());
        let valid = learner.valid();
        let loss = |seed| InferenceStep::step(&valid, batch(&Device::flex(), seed)).loss.into_scalar::<f32>();
        assert_eq!(loss(3), loss(3), "same seed, same loss");
        assert_ne!(loss(3), loss(4), "another seed draws other noise");

        let out = TrainStep::step(&learner, batch(&device, 3));
        let train_loss = out.item.loss.clone().into_scalar::<f32>();
        assert!(train_loss.is_finite() && train_loss > 0.0, "{train_loss}");
        let grads = out.grads;
        // The adaLN-Zero blocks start as the identity, but the final layer and the embedders
        // get gradients from the first step.
        let mut params = 0;
        let mut with_grad = 0;
        struct Count<'a>(&'a burn::optim::GradientsParams, &'a mut usize, &'a mut usize);
        impl burn::module::ModuleVisitor for Count<'_> {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
                *self.1 += 1;
                *self.2 += usize::from(self.0.get::<D>(param.id).is_some());
            }
        }
        learner.visit(&mut Count(&grads, &mut params, &mut with_grad));
        assert!(with_grad > 0 && params > 0, "{with_grad} of {params} parameters have a gradient");
        assert!(out.item.error.is_none());

        // A batch the model cannot take (4 channels for a 3-channel model) is reported, not a
        // panic: NaN loss, the error, no gradients.
        let mut bad = batch(&device, 3);
        bad.x0 = Tensor::zeros([2, 4, 8, 8], &device);
        let out = TrainStep::step(&learner, bad);
        assert!(out.item.loss.into_scalar::<f32>().is_nan());
        assert!(matches!(out.item.error.as_deref(), Some(Error::Shape { .. })), "{:?}", out.item.error);
        let mut none = 0;
        learner.visit(&mut Count(&out.grads, &mut params, &mut none));
        assert_eq!(none, 0, "a failed step has no gradients");
        let out = InferenceStep::step(&valid, DiffusionBatch { x0: Tensor::zeros([2, 4, 8, 8], &Device::flex()), ..batch(&Device::flex(), 3) });
        assert!(out.loss.into_scalar::<f32>().is_nan() && out.error.is_some());
    }
}

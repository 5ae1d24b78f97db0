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
//! use diffusion_transformers::training::learner::DiffusionLearner;
//! # fn loaders() -> (std::sync::Arc<dyn burn::data::dataloader::DataLoader<diffusion_transformers::training::learner::DiffusionBatch<Option<Tensor<1, Int>>>>>, std::sync::Arc<dyn burn::data::dataloader::DataLoader<diffusion_transformers::training::learner::DiffusionBatch<Option<Tensor<1, Int>>>>>) { unimplemented!() }
//! # fn main() -> Result<(), diffusion_transformers::Error> {
//! let device = Device::flex().autodiff();
//! let model = DiTConfig::new().with_input_size(16).with_in_channels(3).with_patch_size(4)
//!     .with_hidden_size(64).with_depth(2).with_num_heads(2).with_num_classes(10)
//!     .with_learn_sigma(false).init(&device)?;
//! let learner_model = DiffusionLearner::new(model, RectifiedFlowConfig::new().init()?);
//! let (train, valid) = loaders(); // DataLoaders of DiffusionBatch (see examples/train_learner.rs)
//! let result = SupervisedTraining::new("out/learner", train, valid)
//!     .metrics((LossMetric::new(),))
//!     .num_epochs(2)
//!     .launch(Learner::new(learner_model, burn::optim::AdamWConfig::new().init(), 1e-3));
//! let trained = result.model.model; // the DiT, ready to sample
//! # Ok(()) }
//! ```

use std::fmt;

use burn::module::ModuleDisplay;
use burn::prelude::*;
use burn::tensor::ExecutionError;
use burn::train::metric::{Adaptor, ItemLazy, LossInput};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use rand::SeedableRng;

use crate::contracts::{Denoiser, Objective, TrainRng};

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

/// The output of a step: the batch's loss, read by `LossMetric`.
#[derive(Debug, Clone)]
pub struct DiffusionOutput {
    /// Mean loss of the batch, `[1]`.
    pub loss: Tensor<1>,
}

impl ItemLazy for DiffusionOutput {
    fn sync(self) -> std::result::Result<Self, ExecutionError> {
        // No readback: dispatch the pending work and leave the autodiff graph behind.
        self.loss.device().flush()?;
        Ok(Self { loss: self.loss.without_autodiff() })
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
    /// # Panics
    /// When the objective fails (a batch whose shape or conditioning does not fit the model):
    /// Burn's step traits cannot return an error. Check a batch with
    /// [`Objective::loss`] first when its shape comes from user input.
    fn batch_loss(&self, batch: DiffusionBatch<M::Cond>) -> Tensor<1> {
        let mut rng = TrainRng::seed_from_u64(batch.seed);
        match self.objective.loss(&self.model, batch.x0, &batch.cond, &mut rng) {
            Ok(loss) => loss,
            Err(e) => panic!("diffusion training step: {e}"),
        }
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

    fn step(&self, batch: Self::Input) -> TrainOutput<Self::Output> {
        let loss = self.batch_loss(batch);
        TrainOutput::new(self, loss.backward(), DiffusionOutput { loss })
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

    fn step(&self, batch: Self::Input) -> Self::Output {
        DiffusionOutput { loss: self.batch_loss(batch) }
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
    }
}

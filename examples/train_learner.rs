//! Train a class-conditional DiT on the shapes dataset with Burn's own training loop
//! (`burn::train::Learner` and `SupervisedTraining`: loss metric, terminal dashboard or log
//! lines, epoch checkpoints, validation), then sample a grid from the trained model.
//!
//! ```text
//! cargo run --release --features train --example train_learner
//! cargo run --release --features train --example train_learner -- --help
//! ```
//!
//! The crate's models and objectives plug in through
//! `diffusion_transformers::training::learner::DiffusionLearner`; each batch carries the seed
//! of its timesteps and noise (here: from the indices of its images), so the validation loss
//! is measured on the same noise every epoch. For EMA weights, exact mid-run resume and the
//! NaN guard use the crate's `Trainer` instead (the `quickstart` example).

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::optim::AdamWConfig;
use burn::prelude::*;
use burn::train::metric::LossMetric;
use burn::train::{Learner, SupervisedTraining};
use clap::Parser;
use common::cli;
use common::generate::{ObjectiveKind, sample};
use diffusion_transformers::data::{CLASSES, ShapesDataset};
use diffusion_transformers::diffusion::RectifiedFlowConfig;
use diffusion_transformers::models::DiTConfig;
use diffusion_transformers::training::LabelDropout;
use diffusion_transformers::training::learner::{DiffusionBatch, DiffusionLearner};

/// Train a DiT with burn-train's Learner (rectified flow), then sample a grid.
#[derive(Parser, Debug)]
#[command(allow_negative_numbers = true)]
struct Args {
    /// Epochs.
    #[arg(long, default_value_t = 4, value_parser = cli::positive)]
    epochs: usize,
    /// Training images per epoch.
    #[arg(long, default_value_t = 8192, value_parser = cli::positive)]
    epoch_size: usize,
    /// Batch size.
    #[arg(long, default_value_t = 32, value_parser = cli::positive)]
    batch: usize,
    /// Learning rate (constant).
    #[arg(long, default_value_t = 2e-3, value_parser = cli::positive_f64)]
    lr: f64,
    /// Seed of the data, initial weights and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (the Learner's logs and checkpoints, and samples.png).
    #[arg(long, default_value = "out/train_learner")]
    out: PathBuf,
}

/// An image of the shapes dataset with its index (the seed of its batch's noise).
#[derive(Debug, Clone)]
struct Item {
    index: usize,
    pixels: Vec<f32>,
    label: usize,
}

/// `len` images of a shapes dataset starting at `offset`, as a Burn dataset.
struct Shapes {
    data: ShapesDataset,
    offset: usize,
    len: usize,
}

impl Dataset<Item> for Shapes {
    fn get(&self, index: usize) -> Result<Item, DatasetError> {
        assert!(index < self.len, "index {index} out of {} (Burn's Dataset contract)", self.len);
        let (pixels, label) = self.data.get(self.offset + index);
        Ok(Item { index: self.offset + index, pixels, label })
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// Stacks items into a [`DiffusionBatch`] whose seed is a hash of the items' indices.
#[derive(Clone)]
struct ShapesBatcher {
    size: usize,
}

impl Batcher<Item, DiffusionBatch<Option<Tensor<1, Int>>>> for ShapesBatcher {
    fn batch(&self, items: Vec<Item>, device: &Device) -> DiffusionBatch<Option<Tensor<1, Int>>> {
        let b = items.len();
        let seed = items.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, it| (h ^ it.index as u64).wrapping_mul(0x100_0000_01b3));
        let labels: Vec<i64> = items.iter().map(|it| it.label as i64).collect();
        let pixels: Vec<f32> = items.into_iter().flat_map(|it| it.pixels).collect();
        DiffusionBatch {
            x0: Tensor::from_data(TensorData::new(pixels, [b, 3, self.size, self.size]), device),
            cond: Some(Tensor::from_data(TensorData::new(labels, [b]), device)),
            seed,
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let e = |e: diffusion_transformers::Error| e.to_string();
    let size = 16;
    let device = Device::flex();
    let train_device = device.clone().autodiff();
    train_device.seed(args.seed);
    let data = ShapesDataset::new(args.seed, 50_000, size).map_err(e)?;
    let config = DiTConfig::new()
        .with_input_size(size)
        .with_in_channels(3)
        .with_patch_size(4)
        .with_hidden_size(128)
        .with_depth(4)
        .with_num_heads(4)
        .with_num_classes(CLASSES.len())
        .with_learn_sigma(false);
    let model = config.init(&train_device).map_err(e)?;
    // Label dropout trains the null class that guidance samples with.
    let objective = LabelDropout::new(RectifiedFlowConfig::new().init().map_err(e)?, CLASSES.len(), 0.1).map_err(e)?;
    let learner_model = DiffusionLearner::new(model, objective);

    let batcher = ShapesBatcher { size };
    let train = DataLoaderBuilder::new(batcher.clone())
        .batch_size(args.batch)
        .shuffle(args.seed)
        .num_workers(1)
        .build(Shapes { data: data.clone(), offset: 0, len: args.epoch_size });
    let valid = DataLoaderBuilder::new(batcher).batch_size(args.batch).build(Shapes { data, offset: 45_000, len: 1024 });
    let optimizer = AdamWConfig::new().with_weight_decay(0.0).with_epsilon(1e-8).init();
    let result = SupervisedTraining::new(&args.out, train, valid)
        .metrics((LossMetric::new(),))
        .num_epochs(args.epochs)
        .summary()
        .launch(Learner::new(learner_model, optimizer, args.lr));
    let trained = result.model.into_model(); // the final weights (the Learner keeps no EMA)

    let labels: Vec<i64> = (0..CLASSES.len()).flat_map(|c| std::iter::repeat_n(c as i64, 8)).collect();
    let images = sample(&trained, ObjectiveKind::Flow, "euler", 25, 3.0, &labels, args.seed + 1, &device).map_err(e)?;
    let names: Vec<&str> = CLASSES.iter().map(|c| c.0).collect();
    let path = args.out.join("samples.png");
    let title = format!("Learner, {} epochs of {} images: euler, 25 steps, guidance 3", args.epochs, args.epoch_size);
    common::plot::save_grid(images, 8, 4, Some(&title), Some(&names), &path)?;
    println!("wrote {}", path.display());
    Ok(())
}

fn main() {
    common::cli::main_with(run);
}

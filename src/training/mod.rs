//! Training support for every model and objective of the crate: AdamW as DiT trains,
//! EMA, learning-rate schedules, gradient clipping, a NaN/inf guard and crash-safe
//! checkpoints that resume exactly, on one device or data-parallel on several.

pub mod checkpoint;
pub mod data_parallel;
pub mod ema;
pub mod guard;
pub mod label_dropout;
#[cfg(feature = "train")]
pub mod learner;
pub mod optimizer;
pub mod trainer;

pub use data_parallel::{DataParallelTrainer, GradientSync, supports_all_reduce};
pub use ema::Ema;
pub use label_dropout::LabelDropout;
pub use optimizer::{LrSchedule, OptimizerConfig};
pub use trainer::{DEFAULT_MAX_ABS_WEIGHT, ResumeReport, Trainer, TrainerConfig};

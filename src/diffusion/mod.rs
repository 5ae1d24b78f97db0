//! Noise schedules and diffusion processes: discrete Gaussian diffusion (DDPM) with respacing
//! and the diffusers-compatible DDPM/DDIM schedulers.

pub mod edm;
pub mod flow;
pub mod gaussian;
pub mod likelihood;
pub mod process;
pub mod respace;
pub mod schedule;
pub mod schedulers;
pub mod timestep_sampling;
pub mod timesteps;

pub use edm::{Edm, EdmConfig, EdmLoss, EdmScalings, MaskedEdm};
pub use gaussian::{
    ClipMode, GaussianDiffusion, GaussianDiffusionConfig, LossType, PredictionType, TrainingLosses, VarianceType,
};
pub use schedule::{BetaSchedule, NoiseSchedule};
pub use schedulers::{DdimScheduler, DdimStepOptions, DdpmScheduler, SchedulerConfig};
pub use flow::{
    FlowLoss, FlowPrediction, RectifiedFlow, RectifiedFlowConfig, convert_prediction, flow_matching_loss, interpolate,
    velocity_target,
};
pub use timestep_sampling::{
    BaseDraw, LossWeighting, MODE_SCALE_MAX, MODE_SCALE_MIN, TimestepDensity, TimestepSampler, TimestepSamplerConfig,
    inverse_time_shift, resolution_shift, time_shift, time_shift_tensor,
};

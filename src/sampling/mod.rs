//! Samplers and guidance, generic over any [`Denoiser`](crate::contracts::Denoiser).

pub mod cfg;
pub mod ddim;
pub mod ddpm;
pub mod dpm_solver;
pub mod edm;
pub mod flow_euler;
pub mod flow_heun;
pub mod progress;
pub mod sampler;

pub use cfg::ClassifierFreeGuidance;
pub use ddim::DdimSampler;
pub use ddpm::DdpmSampler;
pub use dpm_solver::DpmSolverPp2M;
pub use edm::{EdmSampler, EdmSamplerConfig, EdmSolver};
pub use flow_euler::{FlowEulerSampler, FlowMatchSchedule, FlowMatchScheduleConfig, FlowSampler};
pub use flow_heun::FlowHeunSampler;
pub use progress::{NoProgress, Progress, ProgressCallback};
pub use sampler::GaussianSampler;

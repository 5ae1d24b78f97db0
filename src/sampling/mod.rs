//! Samplers and guidance, generic over any [`Denoiser`](crate::contracts::Denoiser) and any diffusion
//! [`Process`](crate::diffusion::process::Process): a process gives a
//! [`Plan`](crate::diffusion::process::Plan) of noise levels, a [`Sampler`] runs it.

pub mod cfg;
pub mod ddim;
pub mod ddpm;
pub mod dpm_solver;
pub mod euler;
pub mod euler_ancestral;
pub mod heun;
pub mod kinds;
pub mod progress;
pub mod run;
pub mod skip_layer;
pub mod sampler;
pub mod unipc;

pub use cfg::{ClassifierFreeGuidance, Guidance, Guided};
pub use ddim::Ddim;
pub use ddpm::Ddpm;
pub use dpm_solver::{DpmSolverPp, SolverType};
pub use euler::Euler;
pub use euler_ancestral::EulerAncestral;
pub use heun::{Churn, Heun};
pub use kinds::{SAMPLER_NAMES, SamplerKind};
pub use progress::{NoProgress, Progress, ProgressCallback};
pub use sampler::Sampler;
pub use skip_layer::{
    SD35_MEDIUM_SKIP_LAYERS, SLG_DEFAULT_SCALE, SLG_DEFAULT_START, SLG_DEFAULT_STOP, SkipLayerGuidance,
    in_step_window, skip_layer_guide,
};
pub use unipc::{UniPc, UniPcVariant};

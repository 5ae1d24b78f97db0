//! Samplers and guidance, generic over any [`Denoiser`] and any diffusion
//! [`Process`](crate::diffusion::process::Process): a process gives a
//! [`Plan`](crate::diffusion::process::Plan) of noise levels, a [`Sampler`] runs it.

pub mod cfg;
pub mod ddim;
pub mod ddpm;
pub mod denoiser;
pub mod dpm_solver;
pub mod euler;
pub mod euler_ancestral;
pub mod heun;
pub mod kinds;
pub mod noise;
pub mod progress;
pub mod run;
pub mod sampler;
pub mod unipc;

pub use cfg::{ClassifierFreeGuidance, Conditioning, Guidance, Guided, GuidedChannels, NullEmbedding, guide};
pub use ddim::Ddim;
pub use ddpm::Ddpm;
pub use denoiser::Denoiser;
pub use dpm_solver::{DpmSolverPp, SolverType};
pub use euler::Euler;
pub use euler_ancestral::EulerAncestral;
pub use heun::{Churn, Heun};
pub use kinds::{SAMPLER_NAMES, SamplerKind};
pub use noise::{NoiseSource, RecordedNoise};
pub use progress::{NoProgress, Progress, ProgressCallback};
pub use sampler::Sampler;
pub use unipc::{UniPc, UniPcVariant};

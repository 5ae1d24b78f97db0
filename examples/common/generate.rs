//! Sampling a class-conditional DiT with any of the crate's samplers and classifier-free
//! guidance; shared by the `quickstart` and `sample` examples.

use burn::prelude::*;
use diffusion_transformers::Result;
use diffusion_transformers::diffusion::process::{Plan, Process, RectifiedFlowProcess};
use diffusion_transformers::diffusion::timesteps::TimestepSchedule;
use diffusion_transformers::diffusion::{ClipMode, GaussianDiffusionConfig};
use diffusion_transformers::models::DiT;
use diffusion_transformers::contracts::GuidedChannels;
use diffusion_transformers::sampling::{ClassifierFreeGuidance, Progress, ProgressCallback, Sampler, SamplerKind};
use diffusion_transformers::contracts::TrainRng;

/// Training objective of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ObjectiveKind {
    /// DDPM with the hybrid loss and learned sigma (DiT's).
    Ddpm,
    /// Rectified flow (SD3's).
    Flow,
}

impl ObjectiveKind {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ddpm" => Ok(Self::Ddpm),
            "flow" => Ok(Self::Flow),
            _ => Err(format!("unknown objective `{s}` (ddpm or flow)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ddpm => "ddpm",
            Self::Flow => "flow",
        }
    }

    /// The default sampler of the objective.
    pub fn default_sampler(self) -> &'static str {
        match self {
            Self::Ddpm => "dpm",
            Self::Flow => "euler",
        }
    }
}

/// Sample `labels.len()` images `[B, C, S, S]` with guidance `scale` using any sampler of
/// [`SamplerKind::from_name`] (`ddpm`, `ddim`, `euler`, `euler-a`, `heun`, `dpm++2m`, `unipc`,
/// ...) on the objective's process with `steps` steps. The predicted `x0` is clamped to the
/// data range [-1, 1] (pixel space).
#[allow(clippy::too_many_arguments)]
pub fn sample(
    model: &DiT,
    objective: ObjectiveKind,
    sampler: &str,
    steps: usize,
    scale: f64,
    labels: &[i64],
    seed: u64,
    device: &Device,
) -> Result<Tensor<4>> {
    use rand::SeedableRng;
    let b = labels.len();
    let y = Some(Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [b]), device));
    let null = model.cond_embedders[0].labels().map_or(0, |e| e.null_label());
    let shape = [b, model.in_channels, model.input_size, model.input_size];
    let mut rng = TrainRng::seed_from_u64(seed);
    let bar = super::progress::bar("sampling", steps as u64, 0);
    let mut progress = |p: &Progress| {
        bar.set_length(p.total_steps as u64);
        bar.set_position(p.step as u64);
    };
    let sampler = SamplerKind::from_name(sampler)?;
    // Guidance on the prediction channels (learned-variance channels pass through).
    let guided = ClassifierFreeGuidance::new(model, null, scale)?.with_channels(GuidedChannels::First(model.in_channels));
    let plan: Plan = match objective {
        ObjectiveKind::Ddpm => {
            let diffusion = GaussianDiffusionConfig::dit(&steps.to_string()).init()?;
            diffusion.plan(steps, &TimestepSchedule::new())?
        }
        ObjectiveKind::Flow => RectifiedFlowProcess::new(1000, 1.0)?.plan(steps, &TimestepSchedule::new())?,
    };
    let plan = plan.with_clip(ClipMode::Clamp(1.0));
    let images = sampler.sample(&plan, &guided, &y, shape, device, &mut rng, Some(&mut progress as &mut dyn ProgressCallback));
    bar.finish();
    images
}

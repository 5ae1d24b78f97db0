//! Sampling a class-conditional DiT with any of the crate's samplers and classifier-free
//! guidance; shared by the `quickstart` and `sample` examples.

use burn::prelude::*;
use diffusion_transformers::Result;
use diffusion_transformers::diffusion::{ClipMode, GaussianDiffusionConfig};
use diffusion_transformers::models::DiT;
use diffusion_transformers::contracts::GuidedChannels;
use diffusion_transformers::sampling::{
    ClassifierFreeGuidance, DdimSampler, DdpmSampler, DpmSolverPp2M, FlowEulerSampler, FlowHeunSampler,
    FlowMatchScheduleConfig, FlowSampler, GaussianSampler, Progress,
};
use diffusion_transformers::contracts::TrainRng;

/// Training objective of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectiveKind {
    Ddpm,
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

/// Sample `labels.len()` images `[B, C, S, S]` with guidance `scale` using `sampler`
/// (`ddpm`, `ddim`, `dpm` for DDPM models; `euler`, `heun` for flow models) and `steps`
/// model-evaluation steps. DDPM samplers clamp the predicted `x0` to the data range [-1, 1]
/// (pixel space).
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
    let null = model.y_embedder.as_ref().map_or(0, |e| e.null_label());
    let shape = [b, model.in_channels, model.input_size, model.input_size];
    let mut rng = TrainRng::seed_from_u64(seed);
    let mut progress = |p: &Progress| {
        eprint!("\r  sampling step {}/{}", p.step, p.total_steps);
        if p.step == p.total_steps {
            eprintln!();
        }
    };
    let bad = |s: &str| diffusion_transformers::Error::InvalidArgument(format!("sampler `{s}` does not fit a {} model", objective.name()));
    match objective {
        ObjectiveKind::Ddpm => {
            // Guidance on the eps channels (the first `in_channels`), as the official DiT.
            let guided = ClassifierFreeGuidance::new(model, null, scale)?
                .with_channels(GuidedChannels::First(model.in_channels));
            let respacing = if sampler == "ddim" { format!("ddim{steps}") } else { steps.to_string() };
            let diffusion = GaussianDiffusionConfig::dit(&respacing).init()?;
            let clip = ClipMode::Clamp(1.0);
            match sampler {
                "ddpm" => DdpmSampler::new().with_clip(clip).sample(&diffusion, &guided, &y, shape, device, &mut rng, &mut progress),
                "ddim" => DdimSampler::new(0.0)?.with_clip(clip).sample(&diffusion, &guided, &y, shape, device, &mut rng, &mut progress),
                "dpm" => DpmSolverPp2M::new().with_clip(clip).sample(&diffusion, &guided, &y, shape, device, &mut rng, &mut progress),
                s => Err(bad(s)),
            }
        }
        ObjectiveKind::Flow => {
            let guided = ClassifierFreeGuidance::new(model, null, scale)?.with_channels(GuidedChannels::All);
            let schedule = FlowMatchScheduleConfig::new().init(steps)?;
            match sampler {
                "euler" => FlowEulerSampler::new(schedule).sample(&guided, &y, shape, device, &mut rng, &mut progress),
                "heun" => FlowHeunSampler::new(schedule).sample(&guided, &y, shape, device, &mut rng, &mut progress),
                s => Err(bad(s)),
            }
        }
    }
}

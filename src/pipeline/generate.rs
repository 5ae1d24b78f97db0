//! Class labels to images: latent noise, a sampler of the discrete Gaussian diffusion with
//! classifier-free guidance, then the autoencoder's decoder (DiT's `sample.py`).

use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::diffusion::gaussian::{GaussianDiffusion, GaussianDiffusionConfig, VarianceType};
use crate::diffusion::respace::space_timesteps;
use crate::diffusion::schedule::BetaSchedule;
use crate::error::{Error, Result, ensure_config};
use crate::models::DiT;
use crate::pipeline::encode::{LatentDraw, encode_images};
use crate::pipeline::image::{RgbImage, tensor_to_images};
use crate::contracts::randn;
use crate::diffusion::process::Process;
use crate::diffusion::timesteps::TimestepSchedule;
use crate::contracts::{Denoiser, GuidedChannels};
use crate::sampling::{ClassifierFreeGuidance, Ddim, ProgressCallback, Sampler};
use crate::vae::{AutoencoderKl, DecodeTiling};

/// The sampler a [`LatentDiffusionPipeline`] runs.
#[derive(Config, Debug, Copy, PartialEq)]
pub enum SamplerKind {
    /// Ancestral DDPM over `num_steps` evenly respaced timesteps (DiT's `sample.py`, 250 steps).
    Ddpm,
    /// DDIM with stochasticity `eta` (0: deterministic) over the DDIM paper's integer-stride
    /// timesteps (`"ddimN"` respacing; evenly respaced when no integer stride gives `N`).
    Ddim {
        /// Stochasticity `eta >= 0`.
        eta: f64,
    },
    /// DPM-Solver++(2M), the fast deterministic sampler (15-25 steps).
    DpmSolverPp,
    /// UniPC (order 2, bh2), deterministic (10-20 steps).
    UniPc,
    /// Euler.
    Euler,
    /// Euler ancestral.
    EulerAncestral,
    /// Heun (two model calls per step).
    Heun,
}

impl SamplerKind {
    /// Parse `ddpm`, `ddim` (eta 0), `dpm` / `dpm-solver` / `dpm-solver++`, `unipc`, `euler`,
    /// `euler-a`, `heun`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "ddpm" => Ok(Self::Ddpm),
            "ddim" => Ok(Self::Ddim { eta: 0.0 }),
            "dpm" | "dpm-solver" | "dpm-solver++" | "dpmsolver++" | "dpm++2m" => Ok(Self::DpmSolverPp),
            "unipc" => Ok(Self::UniPc),
            "euler" => Ok(Self::Euler),
            "euler-a" => Ok(Self::EulerAncestral),
            "heun" => Ok(Self::Heun),
            _ => Err(Error::InvalidArgument(format!(
                "unknown sampler `{name}` (expected ddpm, ddim, dpm-solver++, unipc, euler, euler-a or heun)"
            ))),
        }
    }

    /// The sampler this selects.
    ///
    /// # Errors
    /// An invalid DDIM `eta`.
    pub fn sampler(self) -> Result<crate::sampling::SamplerKind> {
        use crate::sampling::{DpmSolverPp, Euler, EulerAncestral, Heun, SamplerKind as S, UniPc};
        Ok(match self {
            Self::Ddpm => S::Ddpm(crate::sampling::Ddpm),
            Self::Ddim { eta } => S::Ddim(Ddim::new(eta)?),
            Self::DpmSolverPp => S::DpmSolverPp(DpmSolverPp { first_order_final: 2, ..DpmSolverPp::new(2)? }),
            Self::UniPc => S::UniPc(UniPc::new(2)?),
            Self::Euler => S::Euler(Euler),
            Self::EulerAncestral => S::EulerAncestral(EulerAncestral),
            Self::Heun => S::Heun(Heun::new()),
        })
    }

    /// The usual number of steps: 250 (DDPM, as the DiT paper), 50 (DDIM), 20 (DPM-Solver++).
    pub fn default_steps(self) -> usize {
        match self {
            Self::Ddpm => 250,
            Self::Ddim { .. } => 50,
            Self::DpmSolverPp | Self::UniPc => 20,
            Self::Euler | Self::EulerAncestral => 50,
            Self::Heun => 25,
        }
    }

    /// The timestep respacing of `num_steps` steps out of `diffusion_steps` for this sampler.
    pub fn respacing(self, num_steps: usize, diffusion_steps: usize) -> String {
        let ddim = format!("ddim{num_steps}");
        match self {
            Self::Ddim { .. } if space_timesteps(diffusion_steps, &ddim).is_ok() => ddim,
            _ => num_steps.to_string(),
        }
    }
}

/// Sampling settings of a [`LatentDiffusionPipeline`]; the defaults are DiT's `sample.py`
/// (DDPM, 250 steps, guidance 4 on the first 3 channels, linear 1000-step schedule).
#[derive(Config, Debug)]
pub struct PipelineConfig {
    /// Sampler. Default: DDPM.
    #[config(default = "SamplerKind::Ddpm")]
    pub sampler: SamplerKind,
    /// Model evaluations (respaced timesteps). Default: 250.
    #[config(default = 250)]
    pub num_steps: usize,
    /// Classifier-free guidance scale (1 disables guidance). Default: 4.0.
    #[config(default = 4.0)]
    pub cfg_scale: f64,
    /// Latent channels guidance applies to, `None` for all of them (learned-variance channels
    /// are never guided); the official DiT guides the first 3, diffusers' `DiTPipeline` every
    /// latent channel. Default: `Some(3)`.
    #[config(default = "Some(3)")]
    pub guided_channels: Option<usize>,
    /// Steps of the training process. Default: 1000.
    #[config(default = 1000)]
    pub diffusion_steps: usize,
    /// Training beta schedule. Default: DiT's linear schedule.
    #[config(default = "BetaSchedule::Linear")]
    pub noise_schedule: BetaSchedule,
    /// Latents decoded per decoder call (bounds the decoder's activation memory). Default: 4.
    #[config(default = 4)]
    pub decode_batch_size: usize,
    /// Decode tile by tile (`(tile_size, overlap)` in latent pixels) instead of whole latents.
    /// Default: none.
    #[config(default = "None")]
    pub decode_tiling: Option<(usize, usize)>,
}

/// What a [`LatentDiffusionPipeline`] needs to know about its denoiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatentSpec {
    /// Latent channels `C` the model denoises.
    pub channels: usize,
    /// Latent height = width.
    pub size: usize,
    /// Number of classes; the null class of guidance is `num_classes`.
    pub num_classes: usize,
    /// Whether the model also outputs `C` variance channels (DiT's `learn_sigma`).
    pub learned_variance: bool,
}

/// Class labels -> latent noise -> sampler with classifier-free guidance -> VAE decode ->
/// 8-bit RGB images, for any class-conditional [`Denoiser`] (labels as DiT takes them), and
/// images -> latents with the same autoencoder.
///
/// ```no_run
/// use burn::prelude::*;
/// use diffusion_transformers::models::DiTConfig;
/// use diffusion_transformers::pipeline::{LatentDiffusionPipeline, PipelineConfig, SamplerKind};
/// use diffusion_transformers::sampling::NoProgress;
/// use diffusion_transformers::vae::AutoencoderKl;
/// use diffusion_transformers::weights::LoadWeights;
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let device = Device::flex();
/// let mut dit = DiTConfig::from_name("DiT-XL/2")?.init(&device)?;
/// dit.load_weights("DiT-XL-2-256x256.pt")?;
/// let vae = AutoencoderKl::from_pretrained("sd-vae-ft-ema", &device)?;
/// let config = PipelineConfig::new().with_sampler(SamplerKind::Ddim { eta: 0.0 }).with_num_steps(50);
/// let pipeline = LatentDiffusionPipeline::from_dit(dit, vae, config)?;
/// let images = pipeline.generate(&[207, 360], 0, &mut NoProgress)?; // two 256x256 images
/// # Ok(()) }
/// ```
pub struct LatentDiffusionPipeline<M: Denoiser<Cond = Option<Tensor<1, Int>>>> {
    model: M,
    vae: AutoencoderKl,
    spec: LatentSpec,
    config: PipelineConfig,
    diffusion: GaussianDiffusion,
}

impl LatentDiffusionPipeline<DiT> {
    /// A pipeline around a class-conditional DiT (latent shape, classes and variance
    /// channels read from the model).
    pub fn from_dit(dit: DiT, vae: AutoencoderKl, config: PipelineConfig) -> Result<Self> {
        let num_classes = dit.y_embedder.as_ref().map(|e| e.num_classes).ok_or_else(|| {
            Error::InvalidConfig("the pipeline needs a class-conditional DiT (num_classes > 0)".into())
        })?;
        let spec = LatentSpec {
            channels: dit.in_channels,
            size: dit.input_size,
            num_classes,
            learned_variance: dit.out_channels == 2 * dit.in_channels,
        };
        Self::new(dit, vae, spec, config)
    }
}

impl<M: Denoiser<Cond = Option<Tensor<1, Int>>>> LatentDiffusionPipeline<M> {
    /// A pipeline from a denoiser described by `spec`, an autoencoder with `spec.channels`
    /// latent channels and the sampling settings.
    pub fn new(model: M, vae: AutoencoderKl, spec: LatentSpec, config: PipelineConfig) -> Result<Self> {
        ensure_config(spec.channels == vae.latent_channels(), || {
            format!("the denoiser works on {} latent channels, the VAE has {}", spec.channels, vae.latent_channels())
        })?;
        ensure_config(spec.size > 0 && spec.num_classes > 0, || "latent size and number of classes must be positive".into())?;
        ensure_config(config.num_steps > 0 && config.num_steps <= config.diffusion_steps, || {
            format!("num_steps must lie in 1..={}, got {}", config.diffusion_steps, config.num_steps)
        })?;
        ensure_config(config.cfg_scale.is_finite(), || format!("cfg_scale must be finite, got {}", config.cfg_scale))?;
        ensure_config(config.guided_channels.is_none_or(|n| n >= 1 && n <= spec.channels), || {
            format!("guided_channels must lie in 1..={} (the latent channels)", spec.channels)
        })?;
        ensure_config(config.decode_batch_size > 0, || "decode_batch_size must be positive".into())?;
        if let Some((tile, overlap)) = config.decode_tiling {
            DecodeTiling::new(tile, overlap).validate()?;
        }
        config.sampler.sampler()?;
        let diffusion = GaussianDiffusionConfig::new()
            .with_diffusion_steps(config.diffusion_steps)
            .with_noise_schedule(config.noise_schedule.clone())
            .with_timestep_respacing(config.sampler.respacing(config.num_steps, config.diffusion_steps))
            // As DiT's `create_diffusion`: learned range with `learn_sigma`, else fixed large.
            .with_variance_type(if spec.learned_variance { VarianceType::LearnedRange } else { VarianceType::FixedLarge })
            .init()?;
        Ok(Self { model, vae, spec, config, diffusion })
    }

    /// The denoiser.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The autoencoder.
    pub fn vae(&self) -> &AutoencoderKl {
        &self.vae
    }

    /// The sampling settings.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The latent description.
    pub fn spec(&self) -> LatentSpec {
        self.spec
    }

    /// The (respaced) diffusion the sampler runs.
    pub fn diffusion(&self) -> &GaussianDiffusion {
        &self.diffusion
    }

    /// Shape of the latents of `batch` images, `[batch, C, s, s]`.
    pub fn latent_shape(&self, batch: usize) -> [usize; 4] {
        [batch, self.spec.channels, self.spec.size, self.spec.size]
    }

    fn labels(&self, labels: &[usize], device: &Device) -> Result<Tensor<1, Int>> {
        if labels.is_empty() {
            return Err(Error::InvalidArgument("give at least one class label".into()));
        }
        if let Some(bad) = labels.iter().find(|&&l| l >= self.spec.num_classes) {
            return Err(Error::InvalidArgument(format!(
                "class label {bad} is out of range for {} classes",
                self.spec.num_classes
            )));
        }
        let v: Vec<i64> = labels.iter().map(|&l| crate::validate::label_value("class label", l)).collect::<Result<_>>()?;
        Ok(Tensor::from_data(TensorData::new(v, [labels.len()]), device))
    }

    /// Run the sampler from the initial latents `noise` (`x_T`), guided towards `labels`,
    /// drawing any step noise from `rng`; returns the final *scaled* latents.
    ///
    /// # Shapes
    /// - `noise`: `[B, C, s, s]` with `B = labels.len()` -> `[B, C, s, s]`
    pub fn sample_latents_from(
        &self,
        labels: &[usize],
        noise: Tensor<4>,
        rng: &mut StdRng,
        progress: &mut dyn ProgressCallback,
    ) -> Result<Tensor<4>> {
        crate::error::ensure_dims("noise", noise.dims(), self.latent_shape(labels.len()).map(Some))?;
        let y = Some(self.labels(labels, &noise.device())?);
        let channels = match self.config.guided_channels {
            Some(n) => GuidedChannels::First(n),
            None if self.spec.learned_variance => GuidedChannels::First(self.spec.channels),
            None => GuidedChannels::All,
        };
        let guided = ClassifierFreeGuidance::new(&self.model, self.spec.num_classes, self.config.cfg_scale)?.with_channels(channels);
        let plan = self.diffusion.plan(self.diffusion.num_timesteps(), &TimestepSchedule::new())?;
        self.config.sampler.sampler()?.sample_from(&plan, &guided, &y, noise, rng, Some(progress))
    }

    /// Draw the initial noise from `rng`, then [`sample_latents_from`](Self::sample_latents_from).
    pub fn sample_latents(
        &self,
        labels: &[usize],
        rng: &mut StdRng,
        device: &Device,
        progress: &mut dyn ProgressCallback,
    ) -> Result<Tensor<4>> {
        let noise = randn(self.latent_shape(labels.len()), rng, device);
        self.sample_latents_from(labels, noise, rng, progress)
    }

    /// Scaled latents to images in about `[-1, 1]`: unscale, then decode in batches of
    /// `decode_batch_size` (tile by tile with `decode_tiling`).
    ///
    /// # Shapes
    /// - `latents`: `[B, C, h, w]` -> `[B, C_img, f h, f w]`
    pub fn decode_latents(&self, latents: Tensor<4>) -> Result<Tensor<4>> {
        let latents = self.vae.check_latents(latents)?;
        let z = self.vae.unscale(latents);
        let tiling = self.config.decode_tiling.map(|(t, o)| DecodeTiling::new(t, o));
        let parts = z
            .split(self.config.decode_batch_size, 0)
            .into_iter()
            .map(|part| match &tiling {
                Some(t) => self.vae.decode_tiled(part, t),
                None => self.vae.decode(part),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(parts, 0))
    }

    /// Sample one image per label with the initial noise drawn from `seed`.
    pub fn generate(&self, labels: &[usize], seed: u64, progress: &mut dyn ProgressCallback) -> Result<Vec<RgbImage>> {
        let device = self.vae.device();
        let mut rng = StdRng::seed_from_u64(seed);
        let latents = self.sample_latents(labels, &mut rng, &device, progress)?;
        tensor_to_images(self.decode_latents(latents)?)
    }

    /// Images to scaled latents with this pipeline's autoencoder (see
    /// [`encode_images`]).
    pub fn encode_images(&self, images: &[RgbImage], draw: &mut LatentDraw<'_>) -> Result<Tensor<4>> {
        encode_images(&self.vae, images, draw, &self.vae.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::DiTConfig;
    use crate::sampling::{NoProgress, Progress};
    use crate::vae::AutoencoderKlConfig;
    use burn::tensor::Tolerance;

    fn parts(device: &Device) -> (DiT, AutoencoderKl) {
        let dit = DiTConfig::new()
            .with_input_size(4)
            .with_hidden_size(16)
            .with_depth(1)
            .with_num_heads(2)
            .with_num_classes(5)
            .init(device)
            .unwrap();
        let vae = AutoencoderKlConfig::new().with_block_out_channels(vec![4, 8]).with_norm_num_groups(2).init(device).unwrap();
        (dit, vae)
    }

    #[test]
    fn generates_deterministic_images() {
        let device = Device::flex();
        let (dit, vae) = parts(&device);
        let config = PipelineConfig::new().with_sampler(SamplerKind::Ddim { eta: 0.0 }).with_num_steps(4).with_decode_batch_size(1);
        let p = LatentDiffusionPipeline::from_dit(dit, vae, config).unwrap();
        assert_eq!(p.diffusion().timestep_map(), &[0, 250, 500, 750]);
        let mut steps = Vec::new();
        let mut record = |s: &Progress| steps.push(s.step);
        let a = p.generate(&[1, 4, 0], 7, &mut record).unwrap();
        assert_eq!(steps, vec![1, 2, 3, 4]);
        assert_eq!(a.len(), 3);
        assert_eq!((a[0].width(), a[0].height()), (8, 8));
        assert_eq!(a, p.generate(&[1, 4, 0], 7, &mut NoProgress).unwrap());
        assert_ne!(a, p.generate(&[1, 4, 0], 8, &mut NoProgress).unwrap());
    }

    #[test]
    fn every_sampler_and_decode_settings() {
        let device = Device::flex();
        let (dit, vae) = parts(&device);
        let mut rng = StdRng::seed_from_u64(0);
        let noise = randn([2, 4, 4, 4], &mut rng, &device);
        for sampler in [SamplerKind::Ddpm, SamplerKind::Ddim { eta: 1.0 }, SamplerKind::DpmSolverPp] {
            let p = LatentDiffusionPipeline::from_dit(dit.clone(), vae.clone(), PipelineConfig::new().with_sampler(sampler).with_num_steps(3))
                .unwrap();
            let z = p.sample_latents_from(&[0, 1], noise.clone(), &mut StdRng::seed_from_u64(1), &mut NoProgress).unwrap();
            assert_eq!(z.dims(), [2, 4, 4, 4]);
            assert!(!z.is_nan().any().into_scalar::<bool>());
        }
        // decoding in batches of one, or tiled with one tile, equals decoding at once
        let z = randn([3, 4, 4, 4], &mut rng, &device);
        let whole = vae.decode(vae.unscale(z.clone())).unwrap();
        for cfg in [PipelineConfig::new().with_decode_batch_size(1), PipelineConfig::new().with_decode_tiling(Some((4, 1)))] {
            let p = LatentDiffusionPipeline::from_dit(dit.clone(), vae.clone(), cfg).unwrap();
            p.decode_latents(z.clone()).unwrap().into_data().assert_approx_eq::<f32>(&whole.clone().into_data(), Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn bad_settings_and_inputs_are_errors() {
        let device = Device::flex();
        let (dit, vae) = parts(&device);
        let bad = [
            PipelineConfig::new().with_num_steps(0),
            PipelineConfig::new().with_num_steps(1001),
            PipelineConfig::new().with_cfg_scale(f64::NAN),
            PipelineConfig::new().with_guided_channels(Some(5)),
            PipelineConfig::new().with_decode_batch_size(0),
            PipelineConfig::new().with_decode_tiling(Some((2, 2))),
            PipelineConfig::new().with_sampler(SamplerKind::Ddim { eta: -1.0 }),
        ];
        for cfg in bad {
            assert!(LatentDiffusionPipeline::from_dit(dit.clone(), vae.clone(), cfg).is_err());
        }
        let other_vae = AutoencoderKlConfig::new().with_block_out_channels(vec![4]).with_norm_num_groups(2).with_latent_channels(3);
        assert!(LatentDiffusionPipeline::from_dit(dit.clone(), other_vae.init(&device).unwrap(), PipelineConfig::new()).is_err());
        let uncond = DiTConfig::new().with_input_size(4).with_hidden_size(16).with_depth(1).with_num_heads(2).with_num_classes(0);
        assert!(LatentDiffusionPipeline::from_dit(uncond.init(&device).unwrap(), vae.clone(), PipelineConfig::new()).is_err());

        let p = LatentDiffusionPipeline::from_dit(dit, vae, PipelineConfig::new().with_num_steps(2)).unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        assert!(p.generate(&[], 0, &mut NoProgress).is_err());
        assert!(p.generate(&[5], 0, &mut NoProgress).is_err());
        let wrong = Tensor::<4>::zeros([1, 4, 8, 8], &device);
        assert!(matches!(p.sample_latents_from(&[1], wrong, &mut rng, &mut NoProgress), Err(Error::Shape { .. })));
        assert!(p.decode_latents(Tensor::zeros([1, 3, 4, 4], &device)).is_err());
        assert!(SamplerKind::from_name("nonsense").is_err());
        assert_eq!(SamplerKind::from_name("DDIM").unwrap(), SamplerKind::Ddim { eta: 0.0 });
        assert_eq!(SamplerKind::Ddim { eta: 0.0 }.respacing(50, 1000), "ddim50");
        assert_eq!(SamplerKind::Ddim { eta: 0.0 }.respacing(999, 1000), "999");
        assert_eq!(SamplerKind::Ddpm.respacing(250, 1000), "250");
    }
}

//! Class labels to images with a class-conditional DiT, as DiT's `sample.py`: a thin layer
//! over the generic [`LatentDiffusionPipeline`] that builds the official (respaced) Gaussian
//! diffusion's plan, classifier-free guidance with the model's null class, and the labels.

use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::contracts::{GuidedChannels, NoiseSource};
use crate::diffusion::gaussian::{GaussianDiffusion, GaussianDiffusionConfig, VarianceType};
use crate::diffusion::process::Process;
use crate::diffusion::respace::space_timesteps;
use crate::diffusion::schedule::BetaSchedule;
use crate::diffusion::timesteps::TimestepSchedule;
use crate::error::{Error, Result, ensure_config};
use crate::models::DiT;
use crate::pipeline::generate::LatentDiffusionPipeline;
use crate::pipeline::image::RgbImage;
use crate::sampling::{ClassifierFreeGuidance, Ddpm, ProgressCallback, SamplerKind};
use crate::vae::DecodeTiling;

/// Sampling settings of a [`DitPipeline`]; the defaults are DiT's `sample.py` (DDPM, 250
/// steps, guidance 4 on the first 3 channels, linear 1000-step schedule).
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Sampler (any of [`SamplerKind`]). DDIM runs the DDIM paper's integer-stride timesteps
    /// (`"ddimN"` respacing, evenly respaced when no integer stride gives `N`); DPM-Solver++
    /// takes its last 2 steps at first order (`first_order_final >= 2`: a respaced schedule
    /// ends with a large log-SNR jump). Default: DDPM.
    pub sampler: SamplerKind,
    /// Model evaluations (respaced timesteps). Default: 250.
    pub num_steps: usize,
    /// Classifier-free guidance scale (1 disables guidance). Default: 4.0.
    pub cfg_scale: f64,
    /// Latent channels guidance applies to, `None` for all of them (learned-variance channels
    /// are never guided); the official DiT guides the first 3, diffusers' `DiTPipeline` every
    /// latent channel. Default: `Some(3)`.
    pub guided_channels: Option<usize>,
    /// Steps of the training process. Default: 1000.
    pub diffusion_steps: usize,
    /// Training beta schedule. Default: DiT's linear schedule.
    pub noise_schedule: BetaSchedule,
    /// Latents decoded per decoder call (bounds the decoder's activation memory). Default: 4.
    pub decode_batch_size: usize,
    /// Decode tile by tile (`(tile_size, overlap)` in latent pixels) instead of whole latents.
    /// Default: none.
    pub decode_tiling: Option<(usize, usize)>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            sampler: SamplerKind::Ddpm(Ddpm),
            num_steps: 250,
            cfg_scale: 4.0,
            guided_channels: Some(3),
            diffusion_steps: 1000,
            noise_schedule: BetaSchedule::Linear,
            decode_batch_size: 4,
            decode_tiling: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $field:ident: $ty:ty;)*) => {
        $($(#[$doc])* pub fn $name(mut self, $field: $ty) -> Self {
            self.$field = $field;
            self
        })*
    };
}

impl PipelineConfig {
    /// The defaults (DiT's `sample.py`).
    pub fn new() -> Self {
        Self::default()
    }

    setters! {
        /// Sets the sampler.
        with_sampler: sampler: SamplerKind;
        /// Sets the number of steps.
        with_num_steps: num_steps: usize;
        /// Sets the guidance scale.
        with_cfg_scale: cfg_scale: f64;
        /// Sets the guided channels.
        with_guided_channels: guided_channels: Option<usize>;
        /// Sets the training steps.
        with_diffusion_steps: diffusion_steps: usize;
        /// Sets the training beta schedule.
        with_noise_schedule: noise_schedule: BetaSchedule;
        /// Sets the decode batch size.
        with_decode_batch_size: decode_batch_size: usize;
        /// Sets the decode tiling.
        with_decode_tiling: decode_tiling: Option<(usize, usize)>;
    }
}

/// The guided DiT a [`DitPipeline`] samples.
pub type GuidedDiT = ClassifierFreeGuidance<DiT>;

/// Class labels -> latent noise -> sampler with classifier-free guidance (null class =
/// `num_classes`) -> VAE decode -> 8-bit RGB images, for a class-conditional [`DiT`].
///
/// ```no_run
/// use burn::prelude::*;
/// use diffusion_transformers::models::DiTConfig;
/// use diffusion_transformers::pipeline::{DitPipeline, PipelineConfig};
/// use diffusion_transformers::sampling::{NoProgress, SamplerKind};
/// use diffusion_transformers::vae::AutoencoderKl;
/// use diffusion_transformers::weights::LoadWeights;
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let device = Device::flex();
/// let mut dit = DiTConfig::from_name("DiT-XL/2")?.init(&device)?;
/// dit.load_weights("DiT-XL-2-256x256.pt")?;
/// let vae = AutoencoderKl::from_pretrained("sd-vae-ft-ema", &device)?;
/// let config = PipelineConfig::new().with_sampler(SamplerKind::from_name("ddim")?).with_num_steps(50);
/// let pipeline = DitPipeline::new(dit, vae, config)?;
/// let images = pipeline.generate(&[207, 360], 0, &mut NoProgress)?; // two 256x256 images
/// # Ok(()) }
/// ```
pub struct DitPipeline {
    pipeline: LatentDiffusionPipeline<GuidedDiT>,
    diffusion: GaussianDiffusion,
    num_classes: usize,
}

impl DitPipeline {
    /// A pipeline around a class-conditional DiT (latent shape, classes and variance channels
    /// read from the model) and an autoencoder with the DiT's latent channels.
    ///
    /// # Errors
    /// An unconditional DiT, a DiT without the null class row, settings out of range, or
    /// latent channels that differ from the autoencoder's.
    pub fn new(dit: DiT, vae: crate::vae::AutoencoderKl, config: PipelineConfig) -> Result<Self> {
        let num_classes = dit.cond_embedders[0].labels().map(|e| e.num_classes).ok_or_else(|| {
            Error::InvalidConfig("the pipeline needs a class-conditional DiT (num_classes > 0)".into())
        })?;
        let (c, size) = (dit.in_channels, dit.input_size);
        let learned_variance = dit.out_channels == 2 * c;
        ensure_config(config.num_steps > 0 && config.num_steps <= config.diffusion_steps, || {
            format!("num_steps must lie in 1..={}, got {}", config.diffusion_steps, config.num_steps)
        })?;
        ensure_config(config.guided_channels.is_none_or(|n| n >= 1 && n <= c), || {
            format!("guided_channels must lie in 1..={c} (the latent channels)")
        })?;
        let ddim = format!("ddim{}", config.num_steps);
        let respacing = match config.sampler {
            SamplerKind::Ddim(_) if space_timesteps(config.diffusion_steps, &ddim).is_ok() => ddim,
            _ => config.num_steps.to_string(),
        };
        let sampler = match config.sampler {
            SamplerKind::DpmSolverPp(mut s) => {
                s.first_order_final = s.first_order_final.max(2);
                SamplerKind::DpmSolverPp(s)
            }
            other => other,
        };
        let diffusion = GaussianDiffusionConfig::new()
            .with_diffusion_steps(config.diffusion_steps)
            .with_noise_schedule(config.noise_schedule.clone())
            .with_timestep_respacing(respacing)
            // As DiT's `create_diffusion`: learned range with `learn_sigma`, else fixed large.
            .with_variance_type(if learned_variance { VarianceType::LearnedRange } else { VarianceType::FixedLarge })
            .init()?;
        let plan = diffusion.plan(diffusion.num_timesteps(), &TimestepSchedule::new())?;
        let channels = match config.guided_channels {
            Some(n) => GuidedChannels::First(n),
            None if learned_variance => GuidedChannels::First(c),
            None => GuidedChannels::All,
        };
        let guided = ClassifierFreeGuidance::for_model(dit, num_classes, config.cfg_scale)?.with_channels(channels);
        let tiling = config.decode_tiling.map(|(t, o)| DecodeTiling::new(t, o));
        let pipeline = LatentDiffusionPipeline::new(guided, plan, sampler, vae, [c, size, size])?
            .with_decode_batch_size(config.decode_batch_size)?
            .with_decode_tiling(tiling)?;
        Ok(Self { pipeline, diffusion, num_classes })
    }

    /// The generic pipeline underneath (guided model, plan, sampler, autoencoder, decoding).
    pub fn pipeline(&self) -> &LatentDiffusionPipeline<GuidedDiT> {
        &self.pipeline
    }

    /// The (respaced) diffusion the plan comes from.
    pub fn diffusion(&self) -> &GaussianDiffusion {
        &self.diffusion
    }

    /// Number of classes; the null class is `num_classes`.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The DiT's conditioning for `labels`.
    ///
    /// # Errors
    /// No labels, or a label `>= num_classes`.
    pub fn labels(&self, labels: &[usize], device: &Device) -> Result<Option<Tensor<1, Int>>> {
        if labels.is_empty() {
            return Err(Error::InvalidArgument("give at least one class label".into()));
        }
        if let Some(bad) = labels.iter().find(|&&l| l >= self.num_classes) {
            return Err(Error::InvalidArgument(format!("class label {bad} is out of range for {} classes", self.num_classes)));
        }
        let v: Vec<i64> = labels.iter().map(|&l| crate::validate::label_value("class label", l)).collect::<Result<_>>()?;
        Ok(Some(Tensor::from_data(TensorData::new(v, [labels.len()]), device)))
    }

    /// Runs the sampler from the initial latents `noise` (`x_T`), guided towards `labels`,
    /// step noise drawn from `noise_source`; returns the final *scaled* latents.
    ///
    /// # Shapes
    /// - `noise`: `[B, C, s, s]` with `B = labels.len()` -> `[B, C, s, s]`
    ///
    /// # Errors
    /// Bad labels, noise of another shape, the sampler's and the model's errors.
    pub fn sample_latents_from(
        &self,
        labels: &[usize],
        noise: Tensor<4>,
        noise_source: &mut dyn NoiseSource,
        progress: &mut dyn ProgressCallback,
    ) -> Result<Tensor<4>> {
        crate::error::ensure_dims("noise", noise.dims(), self.pipeline.latent_shape(labels.len()).map(Some))?;
        let y = self.labels(labels, &noise.device())?;
        self.pipeline.sample_latents_from(&y, noise, noise_source, Some(progress))
    }

    /// One image per label, all noise drawn from `StdRng::seed_from_u64(seed)`.
    ///
    /// # Errors
    /// As [`sample_latents_from`](Self::sample_latents_from) and decoding.
    pub fn generate(&self, labels: &[usize], seed: u64, progress: &mut dyn ProgressCallback) -> Result<Vec<RgbImage>> {
        let y = self.labels(labels, &self.pipeline.vae().device())?;
        self.pipeline.generate(&y, labels.len(), &mut StdRng::seed_from_u64(seed), Some(progress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::randn;
    use crate::models::DiTConfig;
    use crate::sampling::{Ddim, NoProgress, Progress};
    use crate::vae::{AutoencoderKl, AutoencoderKlConfig};
    use burn::tensor::Tolerance;

    fn parts(device: &Device) -> (DiT, AutoencoderKl) {
        let dit = DiTConfig::new().with_input_size(4).with_hidden_size(16).with_depth(1).with_num_heads(2).with_num_classes(5).init(device).unwrap();
        let vae = AutoencoderKlConfig::new().with_block_out_channels(vec![4, 8]).with_norm_num_groups(2).init(device).unwrap();
        (dit, vae)
    }

    #[test]
    fn generates_deterministic_images() {
        let device = Device::flex();
        let (dit, vae) = parts(&device);
        let config = PipelineConfig::new().with_sampler(SamplerKind::Ddim(Ddim::new(0.0).unwrap())).with_num_steps(4).with_decode_batch_size(1);
        let p = DitPipeline::new(dit, vae, config).unwrap();
        assert_eq!(p.diffusion().timestep_map(), &[0, 250, 500, 750]);
        let mut steps = Vec::new();
        let mut record = |s: &Progress| steps.push(s.step);
        let a = p.generate(&[1, 4, 0], 7, &mut record).unwrap();
        assert_eq!(steps, vec![1, 2, 3, 4]);
        assert_eq!((a.len(), a[0].width(), a[0].height()), (3, 8, 8));
        assert_eq!(a, p.generate(&[1, 4, 0], 7, &mut NoProgress).unwrap());
        assert_ne!(a, p.generate(&[1, 4, 0], 8, &mut NoProgress).unwrap());
    }

    #[test]
    fn every_sampler_and_decode_settings() {
        let device = Device::flex();
        let (dit, vae) = parts(&device);
        let mut rng = StdRng::seed_from_u64(0);
        let noise = randn([2, 4, 4, 4], &mut rng, &device);
        for name in crate::sampling::SAMPLER_NAMES.into_iter().filter(|&n| n != "edm") {
            let config = PipelineConfig::new().with_sampler(SamplerKind::from_name(name).unwrap()).with_num_steps(3);
            let p = DitPipeline::new(dit.clone(), vae.clone(), config).unwrap();
            let z = p.sample_latents_from(&[0, 1], noise.clone(), &mut StdRng::seed_from_u64(1), &mut NoProgress).unwrap();
            assert_eq!(z.dims(), [2, 4, 4, 4]);
            assert!(!z.is_nan().any().into_scalar::<bool>(), "{name}");
        }
        // decoding in batches of one, or tiled with one tile, equals decoding at once
        let z = randn([3, 4, 4, 4], &mut rng, &device);
        let whole = vae.decode(vae.unscale(z.clone())).unwrap();
        for cfg in [PipelineConfig::new().with_decode_batch_size(1), PipelineConfig::new().with_decode_tiling(Some((4, 1)))] {
            let p = DitPipeline::new(dit.clone(), vae.clone(), cfg).unwrap();
            p.pipeline().decode_latents(z.clone()).unwrap().into_data().assert_approx_eq::<f32>(&whole.clone().into_data(), Tolerance::absolute(1e-5));
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
            PipelineConfig::new().with_sampler(SamplerKind::from_name("edm").unwrap()), // churn needs a continuous process
        ];
        for cfg in bad {
            assert!(DitPipeline::new(dit.clone(), vae.clone(), cfg).is_err());
        }
        let other_vae = AutoencoderKlConfig::new().with_block_out_channels(vec![4]).with_norm_num_groups(2).with_latent_channels(3);
        assert!(DitPipeline::new(dit.clone(), other_vae.init(&device).unwrap(), PipelineConfig::new()).is_err());
        let uncond = DiTConfig::new().with_input_size(4).with_hidden_size(16).with_depth(1).with_num_heads(2).with_num_classes(0);
        assert!(DitPipeline::new(uncond.init(&device).unwrap(), vae.clone(), PipelineConfig::new()).is_err());

        let ddim = PipelineConfig::new().with_sampler(SamplerKind::from_name("ddim").unwrap());
        assert_eq!(DitPipeline::new(dit.clone(), vae.clone(), ddim.clone().with_num_steps(50)).unwrap().diffusion().num_timesteps(), 50);
        assert_eq!(DitPipeline::new(dit.clone(), vae.clone(), ddim.with_num_steps(999)).unwrap().diffusion().num_timesteps(), 999);

        let p = DitPipeline::new(dit, vae, PipelineConfig::new().with_num_steps(2)).unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        assert!(p.generate(&[], 0, &mut NoProgress).is_err());
        assert!(p.generate(&[5], 0, &mut NoProgress).is_err());
        let wrong = Tensor::<4>::zeros([1, 4, 8, 8], &device);
        assert!(matches!(p.sample_latents_from(&[1], wrong, &mut rng, &mut NoProgress), Err(Error::Shape { .. })));
    }
}

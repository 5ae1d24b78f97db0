//! The generic latent-diffusion pipeline: any [`Denoiser`] (wrapped in any guidance, e.g.
//! [`ClassifierFreeGuidance`](crate::sampling::ClassifierFreeGuidance), which is itself a
//! denoiser), the [`Plan`] of any [`Process`](crate::diffusion::process::Process), any
//! [`Sampler`] and the model's own conditioning, to latents, then through the autoencoder's
//! decoder to images.
//!
//! ```text
//! x_T ~ N(0, I) --sampler(plan, guided model, cond)--> z_0 --unscale, VAE decode--> images
//! ```

use burn::prelude::*;

use crate::contracts::{Denoiser, NoiseSource};
use crate::diffusion::process::Plan;
use crate::error::{Error, Result, ensure_config};
use crate::pipeline::encode::{LatentDraw, encode_images};
use crate::pipeline::image::{RgbImage, tensor_to_images};
use crate::sampling::{ProgressCallback, Sampler, SamplerKind};
use crate::vae::{AutoencoderKl, DecodeTiling};

/// Noise -> sampler over a plan with a (guided) denoiser -> VAE decode -> 8-bit RGB images,
/// and images -> latents with the same autoencoder.
///
/// ```no_run
/// use burn::prelude::*;
/// use rand::SeedableRng;
/// use diffusion_transformers::diffusion::process::{Process, RectifiedFlowProcess};
/// use diffusion_transformers::diffusion::timesteps::TimestepSchedule;
/// use diffusion_transformers::contracts::NullEmbedding;
/// use diffusion_transformers::models::MMDiTConfig;
/// use diffusion_transformers::pipeline::LatentDiffusionPipeline;
/// use diffusion_transformers::sampling::{ClassifierFreeGuidance, SamplerKind};
/// use diffusion_transformers::vae::AutoencoderKl;
/// use diffusion_transformers::weights::LoadWeights;
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let device = Device::flex();
/// let model = MMDiTConfig::sd3_medium().init(&device)?; // then load its weights
/// let vae = AutoencoderKl::from_pretrained("sd3-vae", &device)?;
/// let guided = ClassifierFreeGuidance::new(model, (NullEmbedding::Zeros, NullEmbedding::Zeros), 7.0)?;
/// let plan = RectifiedFlowProcess::new(1000, 3.0)?.plan(28, &TimestepSchedule::new())?;
/// let pipeline = LatentDiffusionPipeline::new(guided, plan, SamplerKind::from_name("euler")?, vae, [16, 128, 128])?;
/// # let (tokens, pooled) = (Tensor::<3>::zeros([1, 77, 4096], &device), Tensor::<2>::zeros([1, 2048], &device));
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let images = pipeline.generate(&(tokens, pooled), 1, &mut rng, None)?; // one 1024x1024 image
/// # Ok(()) }
/// ```
pub struct LatentDiffusionPipeline<M: Denoiser, S: Sampler = SamplerKind> {
    model: M,
    plan: Plan,
    sampler: S,
    vae: AutoencoderKl,
    latent: [usize; 3],
    decode_batch_size: usize,
    decode_tiling: Option<DecodeTiling>,
}

impl<M: Denoiser, S: Sampler> LatentDiffusionPipeline<M, S> {
    /// A pipeline sampling latents of shape `latent = [C, H, W]` with `sampler` over `plan`
    /// and `model` (guidance included), decoded by `vae` one latent at a time by default.
    ///
    /// # Errors
    /// An invalid plan, a sampler that cannot run it, an empty latent shape, or latent
    /// channels that differ from the autoencoder's.
    pub fn new(model: M, plan: Plan, sampler: S, vae: AutoencoderKl, latent: [usize; 3]) -> Result<Self> {
        plan.validate()?;
        sampler.check(&plan)?;
        ensure_config(!latent.contains(&0), || format!("latent shape {latent:?} must have every dimension > 0"))?;
        ensure_config(latent[0] == vae.latent_channels(), || {
            format!("the denoiser works on {} latent channels, the VAE has {}", latent[0], vae.latent_channels())
        })?;
        Ok(Self { model, plan, sampler, vae, latent, decode_batch_size: 1, decode_tiling: None })
    }

    /// Decodes `n` latents per decoder call (bounds the decoder's activation memory).
    ///
    /// # Errors
    /// `n = 0`.
    pub fn with_decode_batch_size(mut self, n: usize) -> Result<Self> {
        ensure_config(n > 0, || "decode batch size must be positive".into())?;
        self.decode_batch_size = n;
        Ok(self)
    }

    /// Decodes tile by tile (`None`: whole latents).
    ///
    /// # Errors
    /// An invalid tiling.
    pub fn with_decode_tiling(mut self, tiling: Option<DecodeTiling>) -> Result<Self> {
        if let Some(t) = &tiling {
            t.validate()?;
        }
        self.decode_tiling = tiling;
        Ok(self)
    }

    /// The (guided) denoiser.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The sampling plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The sampler.
    pub fn sampler(&self) -> &S {
        &self.sampler
    }

    /// The autoencoder.
    pub fn vae(&self) -> &AutoencoderKl {
        &self.vae
    }

    /// Shape of the latents of `batch` images, `[batch, C, H, W]`.
    pub fn latent_shape(&self, batch: usize) -> [usize; 4] {
        let [c, h, w] = self.latent;
        [batch, c, h, w]
    }

    /// Runs the sampler from the initial latents `noise` (`x_T`, standard normal; the plan's
    /// initial noise scale is applied) for `cond`, step noise drawn from `noise_source`;
    /// returns the final *scaled* latents.
    ///
    /// # Shapes
    /// - `noise`: `[B, C, H, W]` -> `[B, C, H, W]`
    ///
    /// # Errors
    /// Noise of another latent shape, the sampler's and the model's errors.
    pub fn sample_latents_from(
        &self,
        cond: &M::Cond,
        noise: Tensor<4>,
        noise_source: &mut dyn NoiseSource,
        progress: Option<&mut dyn ProgressCallback>,
    ) -> Result<Tensor<4>> {
        let [_, c, h, w] = self.latent_shape(0);
        crate::error::ensure_dims("noise", noise.dims(), [None, Some(c), Some(h), Some(w)])?;
        self.sampler.sample_from(&self.plan, &self.model, cond, noise, noise_source, progress)
    }

    /// Draws the initial noise of `batch` latents from `noise_source` on `device`, then
    /// [`sample_latents_from`](Self::sample_latents_from).
    ///
    /// # Errors
    /// As [`sample_latents_from`](Self::sample_latents_from); a zero batch.
    pub fn sample_latents(
        &self,
        cond: &M::Cond,
        batch: usize,
        device: &Device,
        noise_source: &mut dyn NoiseSource,
        progress: Option<&mut dyn ProgressCallback>,
    ) -> Result<Tensor<4>> {
        self.sampler.sample(&self.plan, &self.model, cond, self.latent_shape(batch), device, noise_source, progress)
    }

    /// Scaled latents to images in about `[-1, 1]`: unscale, then decode in batches of the
    /// decode batch size (tile by tile with a decode tiling).
    ///
    /// # Shapes
    /// - `latents`: `[B, C, h, w]` -> `[B, C_img, f h, f w]`
    ///
    /// # Errors
    /// Latents the autoencoder cannot decode.
    pub fn decode_latents(&self, latents: Tensor<4>) -> Result<Tensor<4>> {
        let latents = self.vae.check_latents(latents)?;
        let z = self.vae.unscale(latents);
        let parts = z
            .split(self.decode_batch_size, 0)
            .into_iter()
            .map(|part| match &self.decode_tiling {
                Some(t) => self.vae.decode_tiled(part, t),
                None => self.vae.decode(part),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(parts, 0))
    }

    /// Samples `batch` images for `cond` (initial and step noise from `noise_source`) on the
    /// autoencoder's device and decodes them.
    ///
    /// # Errors
    /// As [`sample_latents`](Self::sample_latents) and [`decode_latents`](Self::decode_latents).
    pub fn generate(
        &self,
        cond: &M::Cond,
        batch: usize,
        noise_source: &mut dyn NoiseSource,
        progress: Option<&mut dyn ProgressCallback>,
    ) -> Result<Vec<RgbImage>> {
        if batch == 0 {
            return Err(Error::InvalidArgument("generate at least one image".into()));
        }
        let latents = self.sample_latents(cond, batch, &self.vae.device(), noise_source, progress)?;
        tensor_to_images(self.decode_latents(latents)?)
    }

    /// Images to scaled latents with this pipeline's autoencoder (see [`encode_images`]).
    ///
    /// # Errors
    /// Images the autoencoder cannot encode.
    pub fn encode_images(&self, images: &[RgbImage], draw: &mut LatentDraw<'_>) -> Result<Tensor<4>> {
        encode_images(&self.vae, images, draw, &self.vae.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::{NullEmbedding, randn};
    use crate::diffusion::process::{EdmProcess, Process, RectifiedFlowProcess};
    use crate::diffusion::timesteps::TimestepSchedule;
    use crate::sampling::{ClassifierFreeGuidance, Euler};
    use crate::vae::AutoencoderKlConfig;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// A text-like model: output = x * (1 + mean(cond)).
    struct Tokens;
    impl Denoiser for Tokens {
        type Cond = Tensor<3>;
        fn denoise(&self, x: Tensor<4>, _t: Tensor<1>, cond: &Tensor<3>) -> Result<Tensor<4>> {
            let b = x.dims()[0];
            Ok(x.clone() * (cond.clone().mean_dim(2).mean_dim(1).reshape([b, 1, 1, 1]) + 1.0))
        }
    }

    fn vae(device: &Device) -> AutoencoderKl {
        AutoencoderKlConfig::new().with_block_out_channels(vec![4, 8]).with_norm_num_groups(2).init(device).unwrap()
    }

    #[test]
    fn any_model_process_sampler_and_guidance_to_images() {
        let device = Device::flex();
        let cond = randn([2, 3, 5], &mut StdRng::seed_from_u64(3), &device);
        let plans = [
            RectifiedFlowProcess::new(1000, 3.0).unwrap().plan(3, &TimestepSchedule::new()).unwrap(),
            EdmProcess::new(0.002, 80.0, 7.0, 0.5).unwrap().plan(3, &TimestepSchedule::new()).unwrap(),
        ];
        for plan in plans {
            for name in ["euler", "dpm++2m", "unipc", "euler-a"] {
                let guided = ClassifierFreeGuidance::new(Tokens, NullEmbedding::Zeros, 3.0).unwrap();
                let p = LatentDiffusionPipeline::new(guided, plan.clone(), SamplerKind::from_name(name).unwrap(), vae(&device), [4, 4, 4])
                    .unwrap()
                    .with_decode_batch_size(2)
                    .unwrap();
                let a = p.generate(&cond, 2, &mut StdRng::seed_from_u64(7), None).unwrap();
                assert_eq!((a.len(), a[0].width(), a[0].height()), (2, 8, 8));
                assert_eq!(a, p.generate(&cond, 2, &mut StdRng::seed_from_u64(7), None).unwrap(), "{name}");
            }
        }
    }

    #[test]
    fn bad_settings_and_inputs_are_errors() {
        let device = Device::flex();
        let plan = RectifiedFlowProcess::new(1000, 1.0).unwrap().plan(2, &TimestepSchedule::new()).unwrap();
        let new = |latent| LatentDiffusionPipeline::new(Tokens, plan.clone(), Euler, vae(&device), latent);
        assert!(new([3, 4, 4]).is_err()); // the VAE has 4 latent channels
        assert!(new([4, 0, 4]).is_err());
        let p = new([4, 4, 4]).unwrap();
        let cond = Tensor::<3>::zeros([1, 2, 2], &device);
        assert!(p.generate(&cond, 0, &mut StdRng::seed_from_u64(0), None).is_err());
        let wrong = Tensor::<4>::zeros([1, 4, 8, 8], &device);
        assert!(matches!(p.sample_latents_from(&cond, wrong, &mut StdRng::seed_from_u64(0), None), Err(Error::Shape { .. })));
        assert!(p.decode_latents(Tensor::zeros([1, 3, 4, 4], &device)).is_err());
        let p = new([4, 4, 4]).unwrap();
        assert!(p.with_decode_batch_size(0).is_err());
        assert!(new([4, 4, 4]).unwrap().with_decode_tiling(Some(DecodeTiling::new(2, 2))).is_err());
        let churn = SamplerKind::from_name("edm").unwrap();
        let vp = crate::diffusion::GaussianDiffusionConfig::dit("4").init().unwrap();
        let vp_plan = vp.plan(4, &TimestepSchedule::new()).unwrap();
        assert!(LatentDiffusionPipeline::new(Tokens, vp_plan, churn, vae(&device), [4, 4, 4]).is_err());
    }
}

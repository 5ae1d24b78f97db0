//! Prompts to images with a text-conditioned transformer, as diffusers'
//! `StableDiffusion3Pipeline.__call__` (flow matching) or micro_diffusion's
//! `LatentDiffusion.generate` (EDM):
//!
//! ```text
//! (cond, null) = encoder.encode_prompts(prompts, negative_prompts, guidance_scale > 1)
//! x_1 ~ N(0, I)  [B, C, H / f, W / f]                      (f: the VAE's downsampling factor)
//! for each of the N flow-match timesteps t_i (shift s, or e^mu with dynamic shifting):
//!     v = uncond + g (cond - uncond)                        (classifier-free guidance, g > 1)
//!       [+ slg_scale (cond - cond_skipping_layers)]         (skip-layer guidance, start < i/N < stop)
//!     x <- x + (sigma_{i+1} - sigma_i) v                    (flow Euler)
//! images = VAE.decode(x / scaling_factor + shift_factor)
//! ```
//!
//! With an [`EdmScheduler`](crate::pipeline::EdmScheduler) the loop is EDM's instead: `x_N =
//! sigma_max z`, Karras sigmas, the guided network output preconditioned into `x_0` and
//! (with [`TextToImageSettings::microdit`]) Heun's second-order steps.
//!
//! [`TextToImagePipeline`] is generic over the denoiser (skip-layer guidance needs a
//! [`SkipLayerDenoiser`]), the [`PromptEncoder`] and the [`TextToImageScheduler`];
//! [`Sd3Pipeline`](crate::pipeline::Sd3Pipeline) is SD3 / SD3.5's (MM-DiT, CLIP-L + CLIP-G +
//! optional T5), loaded from a diffusers folder, and
//! [`MicroDiTPipeline`](crate::pipeline::MicroDiTPipeline) MicroDiT's (OpenCLIP ViT-H/14
//! captions, zero-caption guidance, EDM). The conformance kind `sd3_pipeline_diffusers` checks
//! every stage (token ids, prompt embeddings, the latents after each step, the decoded images)
//! against diffusers.

use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::contracts::{Conditioning, Denoiser, EncodedPrompts, NoiseSource, PromptEncoder, SkipLayerDenoiser, randn};
use crate::diffusion::process::Plan;
use crate::error::{Error, Result, ensure_config};
use crate::pipeline::image::{RgbImage, tensor_to_images};
use crate::pipeline::scheduler::TextToImageScheduler;
use crate::sampling::{ClassifierFreeGuidance, Euler, Heun, ProgressCallback, Sampler, SamplerKind, SkipLayerGuidance};
use crate::sampling::{SLG_DEFAULT_SCALE, SLG_DEFAULT_START, SLG_DEFAULT_STOP};
use crate::vae::AutoencoderKl;

/// Skip-layer guidance settings (diffusers' `skip_guidance_layers`, `skip_layer_guidance_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct SkipLayerSettings {
    /// The blocks skipped in the extra conditional pass.
    pub layers: Vec<usize>,
    /// `skip_layer_guidance_scale`. Default: 2.8.
    pub scale: f64,
    /// `skip_layer_guidance_start` (fraction of the steps). Default: 0.01.
    pub start: f64,
    /// `skip_layer_guidance_stop`. Default: 0.2.
    pub stop: f64,
}

impl SkipLayerSettings {
    /// Skipping `layers` with diffusers' default scale and window.
    pub fn new(layers: Vec<usize>) -> Self {
        Self { layers, scale: SLG_DEFAULT_SCALE, start: SLG_DEFAULT_START, stop: SLG_DEFAULT_STOP }
    }
}

/// The settings of one text-to-image run, named after the pipeline's arguments.
#[derive(Debug, Clone)]
pub struct TextToImageSettings {
    /// `num_inference_steps`. Default: 28.
    pub num_inference_steps: usize,
    /// `guidance_scale`; classifier-free guidance runs when it is above 1. Default: 7.0.
    pub guidance_scale: f64,
    /// Image `[height, width]` in pixels (`None`: the pipeline's default size).
    pub size: Option<[usize; 2]>,
    /// Skip-layer guidance (with classifier-free guidance only, as diffusers). Default: none.
    pub skip_layer_guidance: Option<SkipLayerSettings>,
    /// The sampler. Default: flow Euler (diffusers' `FlowMatchEulerDiscreteScheduler`).
    pub sampler: SamplerKind,
}

impl Default for TextToImageSettings {
    fn default() -> Self {
        Self { num_inference_steps: 28, guidance_scale: 7.0, size: None, skip_layer_guidance: None, sampler: SamplerKind::Euler(Euler) }
    }
}

impl TextToImageSettings {
    /// micro_diffusion's `LatentDiffusion.generate` defaults: 30 steps, guidance 5, the
    /// deterministic Heun sampler (`S_churn = 0`), the model's size.
    pub fn microdit() -> Self {
        Self { num_inference_steps: 30, guidance_scale: 5.0, sampler: SamplerKind::Heun(Heun::new()), ..Self::default() }
    }
}

/// How a pipeline runs its model with some blocks left out (skip-layer guidance), taken from
/// the model's [`SkipLayerDenoiser`] impl when it has one.
struct SkipOps<M: Denoiser> {
    num_layers: fn(&M) -> usize,
    denoise_skipping: fn(&M, Tensor<4>, Tensor<1>, &M::Cond, &[usize]) -> Result<Tensor<4>>,
}

impl<M: Denoiser> std::fmt::Debug for SkipOps<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SkipOps")
    }
}

/// A borrowed model seen as a [`SkipLayerDenoiser`] through its [`SkipOps`].
struct Skipping<'a, M: Denoiser> {
    model: &'a M,
    ops: &'a SkipOps<M>,
}

impl<M: Denoiser> Denoiser for Skipping<'_, M> {
    type Cond = M::Cond;

    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &M::Cond) -> Result<Tensor<4>> {
        self.model.denoise(x, t, cond)
    }
}

impl<M: Denoiser> SkipLayerDenoiser for Skipping<'_, M> {
    fn num_layers(&self) -> usize {
        (self.ops.num_layers)(self.model)
    }

    fn denoise_skipping(&self, x: Tensor<4>, t: Tensor<1>, cond: &M::Cond, skip_layers: &[usize]) -> Result<Tensor<4>> {
        (self.ops.denoise_skipping)(self.model, x, t, cond, skip_layers)
    }
}

/// Prompts -> [`PromptEncoder`] -> sampler with classifier-free (and skip-layer) guidance
/// -> VAE decode -> images (see the [module docs](self)).
#[derive(Debug)]
pub struct TextToImagePipeline<M: Denoiser, E> {
    model: M,
    encoder: E,
    vae: AutoencoderKl,
    scheduler: TextToImageScheduler,
    patch_size: usize,
    default_size: [usize; 2],
    skip: Option<SkipOps<M>>,
}

impl<M, E> TextToImagePipeline<M, E>
where
    E: PromptEncoder,
    M: SkipLayerDenoiser<Cond = E::Cond>,
{
    /// A pipeline over `model` (its `patch_size`, its default image `[height, width]`),
    /// `encoder`, `vae` and `scheduler` ([`FlowMatchScheduler`](crate::pipeline::FlowMatchScheduler)
    /// or [`EdmScheduler`](crate::pipeline::EdmScheduler)), with skip-layer guidance available.
    ///
    /// # Errors
    /// A zero patch size or default size.
    pub fn new(model: M, encoder: E, vae: AutoencoderKl, scheduler: impl Into<TextToImageScheduler>, patch_size: usize, default_size: [usize; 2]) -> Result<Self> {
        let ops = SkipOps { num_layers: M::num_layers, denoise_skipping: M::denoise_skipping };
        Ok(Self { skip: Some(ops), ..Self::without_skip_layers(model, encoder, vae, scheduler, patch_size, default_size)? })
    }
}

impl<M, E> TextToImagePipeline<M, E>
where
    E: PromptEncoder,
    M: Denoiser<Cond = E::Cond>,
{
    /// As [`new`](Self::new) for a model that cannot leave blocks out: settings with
    /// skip-layer guidance are then an error.
    ///
    /// # Errors
    /// A zero patch size or default size.
    pub fn without_skip_layers(model: M, encoder: E, vae: AutoencoderKl, scheduler: impl Into<TextToImageScheduler>, patch_size: usize, default_size: [usize; 2]) -> Result<Self> {
        ensure_config(patch_size > 0 && !default_size.contains(&0), || "patch size and default size must be positive".into())?;
        Ok(Self { model, encoder, vae, scheduler: scheduler.into(), patch_size, default_size, skip: None })
    }

    /// The denoiser.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The prompt encoder.
    pub fn encoder(&self) -> &E {
        &self.encoder
    }

    /// The autoencoder.
    pub fn vae(&self) -> &AutoencoderKl {
        &self.vae
    }

    /// The scheduler settings.
    pub fn scheduler(&self) -> &TextToImageScheduler {
        &self.scheduler
    }

    /// Pixels per latent pixel times the patch size: image sides must be multiples of it.
    pub fn size_multiple(&self) -> usize {
        self.vae.downsample_factor() * self.patch_size
    }

    /// The latent shape `[B, C, H / f, W / f]` of `batch` images of `settings`' size.
    ///
    /// # Errors
    /// A side that is zero or not a multiple of [`size_multiple`](Self::size_multiple).
    pub fn latent_shape(&self, batch: usize, settings: &TextToImageSettings) -> Result<[usize; 4]> {
        let [h, w] = settings.size.unwrap_or(self.default_size);
        let m = self.size_multiple();
        if h == 0 || w == 0 || h % m != 0 || w % m != 0 {
            return Err(Error::InvalidArgument(format!("image height and width must be positive multiples of {m}, got {h}x{w}")));
        }
        let f = self.vae.downsample_factor();
        Ok([batch, self.vae.latent_channels(), h / f, w / f])
    }

    /// The sampling plan of a run of `settings` (flow matching's dynamic shifting sees the
    /// image size).
    ///
    /// # Errors
    /// Zero steps, a bad size.
    pub fn plan(&self, settings: &TextToImageSettings) -> Result<Plan> {
        let [_, _, h, w] = self.latent_shape(1, settings)?;
        self.scheduler.plan(settings.num_inference_steps, (h / self.patch_size) * (w / self.patch_size))
    }

    /// Encodes prompts (and, when `guidance_scale > 1`, negative prompts; `None`: `""`).
    ///
    /// # Errors
    /// As [`PromptEncoder::encode_prompts`].
    pub fn encode(&self, prompts: &[&str], negative_prompts: Option<&[&str]>, settings: &TextToImageSettings) -> Result<EncodedPrompts<E::Cond>> {
        self.encoder.encode_prompts(prompts, negative_prompts, settings.guidance_scale > 1.0)
    }

    /// Samples from the initial latents `noise` (standard normal, scaled by the plan's initial
    /// noise scale, cast to the models' float dtype) for encoded prompts; returns the final *scaled* latents. Skip-layer guidance, if set, runs only with
    /// classifier-free guidance (as diffusers).
    ///
    /// # Shapes
    /// - `noise`: [`latent_shape`](Self::latent_shape) -> the same
    ///
    /// # Errors
    /// Noise of another shape, `guidance_scale > 1` without a null conditioning, bad skip
    /// layers, the sampler's and the model's errors.
    pub fn sample_latents_from(
        &self,
        prompts: &EncodedPrompts<E::Cond>,
        settings: &TextToImageSettings,
        noise: Tensor<4>,
        noise_source: &mut dyn NoiseSource,
        progress: Option<&mut dyn ProgressCallback>,
    ) -> Result<Tensor<4>> {
        let (cond, null) = prompts;
        let b = cond.batch_size().unwrap_or(0);
        crate::error::ensure_dims("noise", noise.dims(), self.latent_shape(b, settings)?.map(Some))?;
        // The latents take the models' float dtype (diffusers: the text encoders').
        let noise = noise.cast(self.vae.decoder.conv_in.weight.val().dtype());
        let plan = self.plan(settings)?;
        let sampler = &settings.sampler;
        if settings.guidance_scale <= 1.0 {
            return sampler.sample_from(&plan, &self.model, cond, noise, noise_source, progress);
        }
        let null = null.clone().ok_or_else(|| {
            Error::InvalidArgument("guidance_scale > 1 needs the null conditioning: encode with guidance".into())
        })?;
        let cfg = ClassifierFreeGuidance::new(&self.model, null, settings.guidance_scale)?;
        match &settings.skip_layer_guidance {
            None => sampler.sample_from(&plan, &cfg, cond, noise, noise_source, progress),
            Some(slg) => {
                let ops = self.skip.as_ref().ok_or_else(|| {
                    Error::InvalidArgument("this pipeline's model cannot skip layers (skip-layer guidance)".into())
                })?;
                let timesteps: Vec<f32> = plan.levels.iter().map(|l| l.timestep as f32).collect();
                let skipping = Skipping { model: &self.model, ops };
                let guided = SkipLayerGuidance::new(cfg, skipping, slg.layers.clone(), slg.scale)?
                    .with_step_window(&timesteps, slg.start, slg.stop)?;
                sampler.sample_from(&plan, &guided, cond, noise, noise_source, progress)
            }
        }
    }

    /// Scaled latents to images in about `[-1, 1]` (`VAE.decode(x / scaling + shift)`), one
    /// latent at a time.
    ///
    /// # Shapes
    /// - `latents`: `[B, C, h, w]` -> `[B, 3, f h, f w]`
    ///
    /// # Errors
    /// Latents the autoencoder cannot decode.
    pub fn decode_latents(&self, latents: Tensor<4>) -> Result<Tensor<4>> {
        let parts = latents.split(1, 0).into_iter().map(|z| self.vae.decode(self.vae.unscale(z))).collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(parts, 0))
    }

    /// One image per prompt: encode, sample (all noise from `StdRng::seed_from_u64(seed)`, on
    /// the VAE's device), decode.
    ///
    /// # Errors
    /// As [`encode`](Self::encode), [`sample_latents_from`](Self::sample_latents_from) and
    /// [`decode_latents`](Self::decode_latents).
    pub fn generate(
        &self,
        prompts: &[&str],
        negative_prompts: Option<&[&str]>,
        settings: &TextToImageSettings,
        seed: u64,
        progress: Option<&mut dyn ProgressCallback>,
    ) -> Result<Vec<RgbImage>> {
        let shape = self.latent_shape(prompts.len(), settings)?;
        let encoded = self.encode(prompts, negative_prompts, settings)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let noise = randn(shape, &mut rng, &self.vae.device());
        let latents = self.sample_latents_from(&encoded, settings, noise, &mut rng, progress)?;
        tensor_to_images(self.decode_latents(latents)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::NullEmbedding;
    use crate::models::MMDiT;
    use crate::models::mmdit_config::tiny_test_config;
    use crate::pipeline::scheduler::FlowMatchScheduler;
    use crate::sampling::NoProgress;
    use crate::vae::AutoencoderKlConfig;

    /// Prompt `i` -> tokens and pooled filled with its length / 10; null: zeros (or none).
    struct Lengths {
        null: bool,
    }

    impl PromptEncoder for Lengths {
        type Cond = (Tensor<3>, Tensor<2>);

        fn encode_prompts(&self, prompts: &[&str], _neg: Option<&[&str]>, guidance: bool) -> Result<EncodedPrompts<Self::Cond>> {
            let device = Device::flex();
            let v: Vec<f32> = prompts.iter().map(|p| p.len() as f32 / 10.0).collect();
            let col = Tensor::<1>::from_floats(v.as_slice(), &device);
            let tokens = col.clone().reshape([prompts.len(), 1, 1]).expand([prompts.len(), 3, 12]);
            let pooled = col.reshape([prompts.len(), 1]).expand([prompts.len(), 10]);
            let null = (guidance && self.null).then_some((NullEmbedding::Zeros, NullEmbedding::Zeros));
            Ok(((tokens, pooled), null))
        }
    }

    /// A model without skip-layer support.
    struct Plain(MMDiT);

    impl Denoiser for Plain {
        type Cond = (Tensor<3>, Tensor<2>);

        fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
            self.0.denoise(x, t, cond)
        }
    }

    #[test]
    fn models_without_skip_layers_plug_in() {
        let p = pipeline(true, FlowMatchScheduler::default());
        let plain = TextToImagePipeline::without_skip_layers(Plain(p.model.clone()), Lengths { null: true }, p.vae.clone(), FlowMatchScheduler::default(), 2, [16, 16]).unwrap();
        let s = TextToImageSettings { num_inference_steps: 2, size: Some([16, 16]), ..TextToImageSettings::default() };
        let a = plain.generate(&["ab"], None, &s, 1, None).unwrap();
        assert_eq!(a, p.generate(&["ab"], None, &s, 1, None).unwrap());
        let slg = TextToImageSettings { skip_layer_guidance: Some(SkipLayerSettings::new(vec![0])), ..s };
        assert!(matches!(plain.generate(&["ab"], None, &slg, 1, None), Err(Error::InvalidArgument(_))));
        assert!(TextToImagePipeline::without_skip_layers(Plain(p.model.clone()), Lengths { null: true }, p.vae.clone(), FlowMatchScheduler::default(), 0, [16, 16]).is_err());
    }

    fn pipeline(null: bool, scheduler: FlowMatchScheduler) -> TextToImagePipeline<MMDiT, Lengths> {
        let device = Device::flex();
        let model = tiny_test_config().init(&device).unwrap();
        let vae = AutoencoderKlConfig::new().with_block_out_channels(vec![4, 8]).with_norm_num_groups(2).init(&device).unwrap();
        TextToImagePipeline::new(model, Lengths { null }, vae, scheduler, 2, [16, 16]).unwrap()
    }

    #[test]
    fn sizes_guidance_and_determinism() {
        let p = pipeline(true, FlowMatchScheduler { shift: 3.0, ..FlowMatchScheduler::default() });
        assert_eq!(p.size_multiple(), 4);
        let mut s = TextToImageSettings { num_inference_steps: 2, guidance_scale: 4.0, size: Some([16, 24]), ..TextToImageSettings::default() };
        assert_eq!(p.latent_shape(2, &s).unwrap(), [2, 4, 8, 12]);
        for bad in [[16, 22], [0, 16], [18, 16]] {
            assert!(p.latent_shape(1, &TextToImageSettings { size: Some(bad), ..s.clone() }).is_err(), "{bad:?}");
        }
        let a = p.generate(&["a", "bcd"], None, &s, 5, None).unwrap();
        assert_eq!((a.len(), a[0].width(), a[0].height()), (2, 24, 16));
        assert_eq!(a, p.generate(&["a", "bcd"], None, &s, 5, Some(&mut NoProgress)).unwrap());
        s.skip_layer_guidance = Some(SkipLayerSettings { layers: vec![1], scale: 2.8, start: 0.0, stop: 1.0 });
        assert_eq!(p.generate(&["a"], None, &s, 5, None).unwrap().len(), 1);
        s.skip_layer_guidance = Some(SkipLayerSettings::new(vec![2])); // the model has 2 blocks
        assert!(p.generate(&["a"], None, &s, 5, None).is_err());
        // guidance needs a null conditioning; without guidance none is asked for
        let no_null = pipeline(false, FlowMatchScheduler::default());
        let s = TextToImageSettings { num_inference_steps: 2, size: Some([16, 16]), ..TextToImageSettings::default() };
        assert!(matches!(no_null.generate(&["a"], None, &s, 0, None), Err(Error::InvalidArgument(_))));
        let unguided = TextToImageSettings { guidance_scale: 1.0, ..s };
        assert_eq!(no_null.generate(&["a"], None, &unguided, 0, None).unwrap().len(), 1);
        let wrong = Tensor::<4>::zeros([1, 4, 4, 4], &Device::flex());
        let enc = no_null.encode(&["a"], None, &unguided).unwrap();
        assert!(matches!(no_null.sample_latents_from(&enc, &unguided, wrong, &mut StdRng::seed_from_u64(0), None), Err(Error::Shape { .. })));
    }
}

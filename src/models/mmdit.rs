//! MM-DiT, the multimodal diffusion transformer of Stable Diffusion 3 (Esser et al. 2024,
//! "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"), matching
//! diffusers' `SD3Transformer2DModel`.
//!
//! ```text
//! x [B, C, H, W] --patchify conv--> + cropped sin-cos table --> image tokens [B, N, D]
//! text [B, L, joint_dim] --context_embedder (Linear)-------> text tokens  [B, L, D]
//! c = TimestepEmbedder(t) + MLP_silu(pooled)                              [B, D]
//! num_layers x Block(image, text | c)   (JointBlockConfig presets; text stream pre-only in the last block)
//!                                       (the shell's stage loop, `ComposedDiT::forward_context`)
//! final adaLN LayerNorm + Linear --> unpatchify --> [B, C_out, H, W]
//! ```
//!
//! `D = num_attention_heads * attention_head_dim`. The depth parametrisation of the paper
//! ([`MMDiTConfig::from_depth`]) sets width `64 d`, `d` heads of 64 channels and `d` blocks.
//!
//! **SD3.5** adds QK RMSNorm and, in SD3.5-medium's **MMDiT-X**, a second image-only
//! self-attention in the first blocks (`dual_attention_layers`, see
//! [`crate::blocks::joint_block`]). **Skip-layer guidance** needs the prediction of the model
//! with some blocks left out: [`MMDiT::forward_skipping`] (diffusers' `skip_layers`) passes
//! both streams of those blocks through unchanged; the guidance itself is
//! the sampling module's `SkipLayerGuidance`.

use std::ops::Deref;

use burn::prelude::*;

use crate::blocks::ConditionInput;
use crate::contracts::{Conditioning, Denoiser, NullConditioned, SkipLayerDenoiser, check_null_embedding};
use crate::error::Result;
use crate::models::ComposedDiT;

pub use super::mmdit_config::{MMDiTConfig, PAPER_TEXT_TOKENS};

/// The MM-DiT of Stable Diffusion 3 (diffusers `SD3Transformer2DModel`): the model shell
/// [`ComposedDiT`] built by [`MMDiTConfig::shell`], called with `(text, pooled)`. The wrapper
/// holds only the conditioning type of its contracts (text tokens and a pooled vector); every
/// forward is the shell's [`forward_context`](ComposedDiT::forward_context). It dereferences
/// to the shell.
///
/// Module paths (`shell.*`) and diffusers keys: `x_embedder.proj` = `pos_embed.proj`,
/// `pos_embed` = `pos_embed.pos_embed`, `cond_embedders.0.t_embedder` =
/// `time_text_embed.timestep_embedder`, `cond_embedders.0.y_embedder.fc{1,2}` =
/// `time_text_embed.text_embedder.linear_{1,2}`, `context_embedder`, `stages.0.{i}` =
/// `transformer_blocks.{i}` (with `attn2` in MMDiT-X blocks), `final_layer` = `norm_out` +
/// `proj_out` (see the `weights::mmdit` module).
#[derive(Module, Debug)]
pub struct MMDiT {
    /// The shell (every module).
    pub shell: ComposedDiT,
}

impl Deref for MMDiT {
    type Target = ComposedDiT;

    fn deref(&self) -> &ComposedDiT {
        &self.shell
    }
}

impl MMDiT {
    /// Width `D`.
    pub fn hidden_size(&self) -> usize {
        self.final_layer.d_model()
    }

    /// Width of the per-token text embeddings the model takes.
    pub fn joint_attention_dim(&self) -> usize {
        self.context_embedder.as_ref().map_or(0, |e| e.weight.dims()[0])
    }

    /// Width of the pooled text vector the model takes.
    pub fn pooled_projection_dim(&self) -> usize {
        self.cond_embedders[0].input_width().unwrap_or(0)
    }

    /// Side of the position table: the most patches per side an input may have.
    pub fn pos_embed_max_size(&self) -> usize {
        self.shell.pos_embed_max_size.unwrap_or(0)
    }

    /// The denoiser forward (diffusers' `SD3Transformer2DModel.forward(...).sample`).
    ///
    /// # Shapes
    /// - `x`: `[B, in_channels, H, W]`; `H`, `W` multiples of `p` and at most
    ///   `pos_embed_max_size * p` (any aspect ratio)
    /// - `t`: `[B]` float timesteps (SD3 uses `1000 * sigma`, sigma in `[0, 1]`)
    /// - `text`: `[B, L, joint_attention_dim]` per-token text embeddings
    /// - `pooled`: `[B, pooled_projection_dim]` pooled text embedding
    /// - output: `[B, out_channels, H, W]` (SD3: the flow velocity `noise - x0`)
    ///
    /// # Errors
    /// [`Error::Shape`](crate::Error::Shape) for inputs of the wrong shape, a latent not
    /// divisible by the patch size, or a patch grid larger than the position table;
    /// [`Error::Numerical`](crate::Error::Numerical) for NaN/inf in any input;
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for `|t| > 1e5` (continuous
    /// time; see [`crate::validate`]). Float64 inputs are cast to the model's dtype.
    pub fn forward(&self, x: Tensor<4>, t: Tensor<1>, text: Tensor<3>, pooled: Tensor<2>) -> Result<Tensor<4>> {
        self.forward_skipping(x, t, text, pooled, &[])
    }

    /// The forward with the blocks in `skip_layers` left out (diffusers'
    /// `SD3Transformer2DModel.forward(..., skip_layers=...)`, the skipped branch of skip-layer
    /// guidance): a skipped block passes the image and text tokens through unchanged.
    ///
    /// # Shapes
    /// As [`forward`](Self::forward).
    ///
    /// # Errors
    /// As [`forward`](Self::forward), and [`Error::InvalidArgument`](crate::Error::InvalidArgument)
    /// for a block index `>= num_layers` in `skip_layers` (diffusers ignores those silently).
    pub fn forward_skipping(
        &self,
        x: Tensor<4>,
        t: Tensor<1>,
        text: Tensor<3>,
        pooled: Tensor<2>,
        skip_layers: &[usize],
    ) -> Result<Tensor<4>> {
        self.shell.forward_context(x, t, ConditionInput::Pooled(&pooled), text, skip_layers)
    }

    /// Number of joint blocks.
    pub fn num_layers(&self) -> usize {
        self.depth()
    }
}

impl Denoiser for MMDiT {
    /// `(text tokens [B, L, joint_attention_dim], pooled [B, pooled_projection_dim])`.
    type Cond = (Tensor<3>, Tensor<2>);

    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
        self.forward(x, t, cond.0.clone(), cond.1.clone())
    }
}

/// A given null (negative-prompt) embedding must have the model's text widths.
impl NullConditioned for MMDiT {
    fn check_null(&self, null: &<Self::Cond as Conditioning>::Null) -> Result<()> {
        check_null_embedding("text", &null.0, [None, None, Some(self.joint_attention_dim())])?;
        check_null_embedding("pooled", &null.1, [None, Some(self.pooled_projection_dim())])
    }
}

impl SkipLayerDenoiser for MMDiT {
    fn num_layers(&self) -> usize {
        self.depth()
    }

    fn denoise_skipping(
        &self,
        x: Tensor<4>,
        t: Tensor<1>,
        cond: &Self::Cond,
        skip_layers: &[usize],
    ) -> Result<Tensor<4>> {
        self.forward_skipping(x, t, cond.0.clone(), cond.1.clone(), skip_layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::attention::QkNorm;
    use crate::contracts::randn;
    use crate::Error;
    use crate::models::mmdit_config::tiny_test_config as tiny;
    use rand::{Rng, SeedableRng};

    /// Seeded inputs of batch `b` for an `h x w` latent.
    fn inputs(device: &Device, b: usize, h: usize, w: usize) -> (Tensor<4>, Tensor<1>, Tensor<3>, Tensor<2>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64((100 * b + 10 * h + w) as u64);
        (
            randn([b, 4, h, w], &mut rng, device),
            Tensor::from_data(TensorData::new(vec![250.0f32, 900.0, 40.0][..b].to_vec(), [b]), device),
            randn([b, 3, 12], &mut rng, device),
            randn([b, 10], &mut rng, device),
        )
    }

    #[test]
    fn forward_shapes_any_aspect_ratio_and_zero_init() {
        let device = Device::flex();
        let m = tiny().init(&device).unwrap();
        for (h, w) in [(8, 8), (4, 12), (12, 2)] {
            let (x, t, text, pooled) = inputs(&device, 2, h, w);
            let out = m.forward(x, t, text, pooled).unwrap();
            assert_eq!(out.dims(), [2, 4, h, w]);
            // the final layer is zero-initialised
            assert!(out.equal_elem(0.0).all().into_scalar::<bool>());
        }
    }

    #[test]
    fn denoiser_is_the_forward() {
        let device = Device::flex();
        let mut m = tiny().init(&device).unwrap();
        // a non-zero final layer so the comparison means something
        if let crate::blocks::FinalProjection::Linear(l) = &mut m.shell.final_layer.linear {
            let w = l.weight.dims();
            l.weight = burn::module::Param::from_tensor(crate::test_util::randn(w, 104, &device) * 0.5);
        }
        let (x, t, text, pooled) = inputs(&device, 2, 8, 4);
        let a = m.forward(x.clone(), t.clone(), text.clone(), pooled.clone()).unwrap();
        let b = m.denoise(x, t, &(text, pooled)).unwrap();
        assert!(a.clone().abs().sum().into_scalar::<f32>() > 0.0);
        assert!(a.equal(b).all().into_scalar::<bool>());
    }

    /// Lists the trainable parameters without a gradient (paths tracked through
    /// `enter_module`/`exit_module`: Burn's traversal does not call `visit_float_with_path`).
    struct MissingGrads<'a> {
        grads: &'a burn::tensor::Gradients,
        path: Vec<String>,
        visited: usize,
        missing: Vec<String>,
    }

    impl burn::module::ModuleVisitor for MissingGrads<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }

        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }

        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let t = param.val();
            self.visited += 1;
            if t.is_require_grad() && t.grad(self.grads).is_none() {
                self.missing.push(self.path.join("."));
            }
        }
    }

    #[test]
    fn gradients_reach_every_used_parameter_and_adamw_fits() {
        use burn::optim::{AdamWConfig, GradientsParams};
        let device = Device::flex().autodiff();
        let mut model = tiny().with_qk_norm(QkNorm::RmsNorm).init(&device).unwrap();
        let data = |n: usize, k: usize| -> Vec<f32> { (0..n).map(|i| ((i * k % 97) as f32 / 48.0) - 1.0).collect() };
        let x = Tensor::<4>::from_data(TensorData::new(data(2 * 4 * 8 * 4, 53), [2, 4, 8, 4]), &device);
        let text = Tensor::<3>::from_data(TensorData::new(data(2 * 3 * 12, 31), [2, 3, 12]), &device);
        let pooled = Tensor::<2>::from_data(TensorData::new(data(2 * 10, 17), [2, 10]), &device);
        let t = Tensor::<1>::from_floats([100.0, 800.0], &device);
        let target = x.clone().flip([3]) * 0.5;
        let mut optim = AdamWConfig::new().with_weight_decay(0.0).with_epsilon(1e-8).init();
        let mut losses = Vec::new();
        for step in 0..30 {
            let out = model.forward(x.clone(), t.clone(), text.clone(), pooled.clone()).unwrap();
            let loss = (out - target.clone()).square().mean();
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = loss.backward();
            if step == 1 {
                // After one update the zero-initialised layers are non-zero. Only the query
                // norm of the last block's pre-only text stream is off the gradient path: its
                // queries are never evaluated (in diffusers they are, and their gradient is 0).
                let mut v = MissingGrads { grads: &grads, path: vec![], visited: 0, missing: vec![] };
                model.visit(&mut v);
                assert!(v.visited > 50, "the visitor saw only {} parameters", v.visited);
                assert_eq!(v.missing, vec!["shell.stages.0.1.attn.TwoStream.joint.streams.1.q_norm.weight".to_string()]);
            }
            let grads = GradientsParams::from_grads(grads, &model);
            model = optim.step(1e-3, model, grads);
        }
        assert!(losses[29] < 0.5 * losses[0], "loss {} -> {}", losses[0], losses[29]);
    }

    /// Random final layer and modulations, so that every block changes the output.
    fn randomized(cfg: MMDiTConfig, device: &Device) -> MMDiT {
        let mut m = cfg.init(device).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut rand = |dims: [usize; 2]| {
            let n = dims[0] * dims[1];
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-0.3..0.3)).collect();
            burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(v, dims), device))
        };
        if let crate::blocks::FinalProjection::Linear(l) = &mut m.shell.final_layer.linear {
            l.weight = rand(l.weight.dims());
        }
        use crate::blocks::parts::{AttentionPart, ConditioningPart};
        for block in &mut m.shell.stages[0] {
            let image = match &mut block.conditioning {
                ConditioningPart::AdaLnZero(a) => a,
                ConditioningPart::AdaLnZeroDual(d) => &mut d.ada_ln_modulation,
                _ => unreachable!("MM-DiT blocks are adaLN-Zero"),
            };
            image.linear.weight = rand(image.linear.weight.dims());
            if let AttentionPart::TwoStream(t) = &mut block.attn {
                t.context_modulation.linear.weight = rand(t.context_modulation.linear.weight.dims());
            }
        }
        m
    }

    #[test]
    fn skipping_layers_passes_their_streams_through() {
        let device = Device::flex();
        let cfg = tiny().with_num_layers(3).with_qk_norm(QkNorm::RmsNorm).with_dual_attention_layers(vec![0, 1]);
        let m = randomized(cfg, &device);
        let (x, t, text, pooled) = inputs(&device, 2, 8, 4);
        let run = |skip: &[usize]| m.forward_skipping(x.clone(), t.clone(), text.clone(), pooled.clone(), skip);
        let full = run(&[]).unwrap();
        let plain = m.forward(x.clone(), t.clone(), text.clone(), pooled.clone()).unwrap();
        assert!(full.clone().equal(plain).all().into_scalar::<bool>());
        // skipping block 1 = the model without it (blocks 0 and 2 only)
        let mut without = m.clone();
        without.shell.stages[0].remove(1);
        let expected = without.forward(x.clone(), t.clone(), text.clone(), pooled.clone()).unwrap();
        let skipped = run(&[1]).unwrap();
        let tol = burn::tensor::Tolerance::absolute(1e-6);
        skipped.clone().into_data().assert_approx_eq::<f32>(&expected.into_data(), tol);
        assert!((skipped - full).abs().max().into_scalar::<f32>() > 1e-3);
        // the last (pre-only) block and every block can be skipped too
        assert_eq!(run(&[2]).unwrap().dims(), [2, 4, 8, 4]);
        assert_eq!(run(&[0, 1, 2]).unwrap().dims(), [2, 4, 8, 4]);
        assert!(matches!(run(&[3]), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn skip_layer_guidance_on_cfg_is_the_diffusers_combination() {
        use crate::contracts::{GuidedChannels, NullEmbedding};
        use crate::sampling::{ClassifierFreeGuidance, SkipLayerGuidance};
        let device = Device::flex();
        let m = randomized(tiny().with_num_layers(3).with_dual_attention_layers(vec![0]), &device);
        let (x, t, text, pooled) = inputs(&device, 2, 4, 8);
        let cfg = ClassifierFreeGuidance::new(&m, (NullEmbedding::Zeros, NullEmbedding::Zeros), 4.5)
            .unwrap()
            .with_channels(GuidedChannels::All);
        let slg = SkipLayerGuidance::new(cfg, &m, vec![1], 2.8).unwrap();
        let guided = slg.denoise(x.clone(), t.clone(), &(text.clone(), pooled.clone())).unwrap();
        // StableDiffusion3Pipeline: noise_pred = uncond + s (text - uncond), then
        // noise_pred + (text - skip) * slg_scale, with skip the conditional branch minus block 1
        let cond = m.forward(x.clone(), t.clone(), text.clone(), pooled.clone()).unwrap();
        let uncond = m.forward(x.clone(), t.clone(), text.zeros_like(), pooled.zeros_like()).unwrap();
        let skip = m.forward_skipping(x, t, text, pooled, &[1]).unwrap();
        let expected = uncond.clone() + (cond.clone() - uncond) * 4.5 + (cond - skip) * 2.8;
        guided.into_data().assert_approx_eq::<f32>(&expected.into_data(), burn::tensor::Tolerance::absolute(1e-4));
        assert!(SkipLayerGuidance::new(&m, &m, vec![3], 2.8).is_err());
    }

    #[test]
    fn classifier_free_guidance_wraps_the_text_conditioning() {
        use crate::contracts::{GuidedChannels, NullEmbedding};
        use crate::sampling::ClassifierFreeGuidance;
        let device = Device::flex();
        // Random weights everywhere: a fresh model's zero gates make cond == uncond.
        let m = tiny().init(&device).unwrap().map(&mut crate::layers::init::Randomize::seeded(6));
        let (x, t, text, pooled) = inputs(&device, 2, 4, 8);
        let cfg = ClassifierFreeGuidance::new(&m, (NullEmbedding::Zeros, NullEmbedding::Zeros), 3.0)
            .unwrap()
            .with_channels(GuidedChannels::All);
        let guided = cfg.denoise(x.clone(), t.clone(), &(text.clone(), pooled.clone())).unwrap();
        let cond = m.forward(x.clone(), t.clone(), text.clone(), pooled.clone()).unwrap();
        let uncond = m.forward(x, t, text.zeros_like(), pooled.zeros_like()).unwrap();
        let gap = (cond.clone() - uncond.clone()).abs().max().into_scalar::<f32>();
        assert!(gap > 1e-3, "the text must change the output: {gap}");
        let expected = uncond.clone() + (cond - uncond) * 3.0;
        guided.into_data().assert_approx_eq::<f32>(&expected.into_data(), burn::tensor::Tolerance::absolute(1e-5));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let device = Device::flex();
        let m = tiny().init(&device).unwrap();
        let (x, t, text, pooled) = inputs(&device, 2, 8, 8);
        let shape_err = |r: Result<Tensor<4>>| assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
        // latent channels, latent not divisible by the patch, grid larger than the table (6 x 2 = 12)
        shape_err(m.forward(Tensor::zeros([2, 3, 8, 8], &device), t.clone(), text.clone(), pooled.clone()));
        shape_err(m.forward(Tensor::zeros([2, 4, 7, 8], &device), t.clone(), text.clone(), pooled.clone()));
        shape_err(m.forward(Tensor::zeros([2, 4, 14, 8], &device), t.clone(), text.clone(), pooled.clone()));
        shape_err(m.forward(Tensor::zeros([2, 4, 8, 14], &device), t.clone(), text.clone(), pooled.clone()));
        // text and pooled widths that do not match the config, batch mismatches, empty text
        shape_err(m.forward(x.clone(), t.clone(), Tensor::zeros([2, 3, 11], &device), pooled.clone()));
        shape_err(m.forward(x.clone(), t.clone(), Tensor::zeros([2, 0, 12], &device), pooled.clone()));
        shape_err(m.forward(x.clone(), t.clone(), text.clone(), Tensor::zeros([2, 9], &device)));
        shape_err(m.forward(x.clone(), t.clone(), Tensor::zeros([1, 3, 12], &device), pooled.clone()));
        shape_err(m.forward(x.clone(), t.clone(), text.clone(), Tensor::zeros([1, 10], &device)));
        shape_err(m.forward(x, Tensor::zeros([3], &device), text, pooled));
    }
}

//! MM-DiT, the multimodal diffusion transformer of Stable Diffusion 3 (Esser et al. 2024,
//! "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"), matching
//! diffusers' `SD3Transformer2DModel`.
//!
//! ```text
//! x [B, C, H, W] --patchify conv--> + cropped sin-cos table --> image tokens [B, N, D]
//! text [B, L, joint_dim] --context_embedder (Linear)-------> text tokens  [B, L, D]
//! c = TimestepEmbedder(t) + MLP_silu(pooled)                              [B, D]
//! num_layers x Block(image, text | c)   (JointBlockConfig presets; text stream pre-only in the last block)
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

use burn::nn::Linear;
use burn::prelude::*;

use crate::blocks::parts::BlockCondition;
use crate::blocks::{Block, ConditionEmbedder, ConditionInput, FinalLayer};
use crate::error::{Error, Result, ensure_dims};
use crate::layers::patch_embed::unpatchify;
use crate::layers::pos_embed_cropped::CroppedPosEmbed;
use crate::layers::PatchEmbed;
use crate::contracts::{Conditioning, Denoiser, NullConditioned, SkipLayerDenoiser, check_null_embedding};

pub use super::mmdit_config::{MMDiTConfig, PAPER_TEXT_TOKENS};

/// The MM-DiT of Stable Diffusion 3 (diffusers `SD3Transformer2DModel`).
///
/// Module paths and diffusers keys: `x_embedder.proj` = `pos_embed.proj`, `pos_embed.table` =
/// `pos_embed.pos_embed`, `cond_embedder.t_embedder` = `time_text_embed.timestep_embedder`,
/// `cond_embedder.y_embedder.fc{1,2}` = `time_text_embed.text_embedder.linear_{1,2}`,
/// `context_embedder`, `blocks.{i}` = `transformer_blocks.{i}` (with `attn2` in MMDiT-X
/// blocks), `final_layer` = `norm_out` + `proj_out` (see the `weights::mmdit` module).
#[derive(Module, Debug)]
pub struct MMDiT {
    /// Patch embedding (conv `[D, C, p, p]`, stride `p`).
    pub x_embedder: PatchEmbed,
    /// The fixed `M x M` sin-cos table, centre-cropped to each input's grid.
    pub pos_embed: CroppedPosEmbed,
    /// Timestep embedder (sinusoids cos-first, 256 wide; Linear, SiLU, Linear)
    /// and the pooled-text projection (Linear, SiLU, Linear), added to it.
    pub cond_embedder: ConditionEmbedder,
    /// Caption projection `[joint_attention_dim, D]` of the per-token text embeddings.
    pub context_embedder: Linear,
    /// Joint blocks over (image, text) ([`MMDiTConfig::block_config`] presets); the last one has
    /// a pre-only text stream.
    pub blocks: Vec<Block>,
    /// Final adaLN LayerNorm (eps 1e-6) + linear to `p*p*C_out` per token.
    pub final_layer: FinalLayer,
    /// Patch size.
    pub patch_size: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
}

impl MMDiT {
    /// Width `D`.
    pub fn hidden_size(&self) -> usize {
        self.context_embedder.weight.dims()[1]
    }

    /// Width of the per-token text embeddings the model takes.
    pub fn joint_attention_dim(&self) -> usize {
        self.context_embedder.weight.dims()[0]
    }

    /// Width of the pooled text vector the model takes.
    pub fn pooled_projection_dim(&self) -> usize {
        self.cond_embedder.input_width().unwrap_or(0)
    }

    /// Side of the position table: the most patches per side an input may have.
    pub fn pos_embed_max_size(&self) -> usize {
        self.pos_embed.max_size
    }

    /// Patch embedding plus the centre crop of the position table.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]`, `H` and `W` multiples of `p`, at most `M * p`
    /// - output: `[B, (H/p)*(W/p), D]`
    pub fn embed(&self, x: Tensor<4>) -> Result<Tensor<3>> {
        let [_, _, h, w] = x.dims();
        let p = self.patch_size;
        let m = self.pos_embed.max_size;
        // checks the channels and that H, W are positive multiples of p
        let tokens = self.x_embedder.forward(x)?;
        let pos = self.pos_embed.crop([h / p, w / p]).map_err(|_| Error::Shape {
            name: "x".into(),
            expected: format!("a latent of at most {0}x{0} (pos_embed_max_size {m} patches of {p})", m * p),
            got: format!("[_, {}, {h}, {w}]", self.in_channels),
        })?;
        Ok(tokens + pos)
    }

    /// The conditioning vector `TimestepEmbedder(t) + MLP(pooled)`.
    ///
    /// # Shapes
    /// - `t`: `[B]` float timesteps (SD3: `1000 * sigma`), `pooled`: `[B, pooled_dim]`
    /// - output: `[B, D]`
    pub fn embed_condition(&self, t: Tensor<1>, pooled: Tensor<2>) -> Result<Tensor<2>> {
        Ok(self.cond_embedder.forward(t, ConditionInput::Pooled(&pooled), None)?.vector())
    }

    /// The caption projection of the per-token text embeddings.
    ///
    /// # Shapes
    /// - `text`: `[B, L, joint_attention_dim]`, `L >= 1` -> `[B, L, D]`
    pub fn embed_text(&self, text: Tensor<3>) -> Result<Tensor<3>> {
        let [_, l, j] = text.dims();
        if l == 0 || j != self.joint_attention_dim() {
            return Err(Error::Shape {
                name: "text".into(),
                expected: format!("[B, L >= 1, {}]", self.joint_attention_dim()),
                got: format!("{:?}", text.dims()),
            });
        }
        Ok(self.context_embedder.forward(text))
    }

    /// Runs the joint blocks, except those in `skip_layers`, and the final layer on embedded
    /// tokens. A skipped block passes both streams through unchanged (diffusers' `skip_layers`).
    ///
    /// # Shapes
    /// - `image`: `[B, gh*gw, D]`, `text`: `[B, L, D]`, `c`: `[B, D]`, `grid`: `[gh, gw]`
    /// - output: `[B, C_out, gh*p, gw*p]`
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a skipped block index `>= num_layers`, the blocks' shape
    /// errors.
    pub fn forward_tokens(
        &self,
        image: Tensor<3>,
        text: Tensor<3>,
        c: Tensor<2>,
        grid: [usize; 2],
        skip_layers: &[usize],
    ) -> Result<Tensor<4>> {
        self.check_skip_layers(skip_layers)?;
        let mut image = image;
        let mut text = Some(text);
        for (i, block) in self.blocks.iter().enumerate() {
            if skip_layers.contains(&i) {
                continue;
            }
            let t = text.ok_or_else(|| {
                Error::InvalidArgument(format!("block {i} follows a block whose text stream is pre-only"))
            })?;
            let cond = BlockCondition { c: c.clone(), shared: None, context: Some(t) };
            (image, text) = block.forward_joint(image, None, &cond)?;
        }
        let out = self.final_layer.forward(image, c)?;
        Ok(unpatchify(out, self.patch_size, self.out_channels, grid))
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
    /// [`Error::Shape`] for inputs of the wrong shape, a latent not divisible by the patch
    /// size, or a patch grid larger than the position table; [`Error::Numerical`] for NaN/inf
    /// in any input; [`Error::InvalidArgument`] for `|t| > 1e5` (continuous time; see
    /// [`crate::validate`]). Float64 inputs are cast to the model's dtype.
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
    /// As [`forward`](Self::forward), and [`Error::InvalidArgument`] for a block index
    /// `>= num_layers` in `skip_layers` (diffusers ignores those silently).
    pub fn forward_skipping(
        &self,
        x: Tensor<4>,
        t: Tensor<1>,
        text: Tensor<3>,
        pooled: Tensor<2>,
        skip_layers: &[usize],
    ) -> Result<Tensor<4>> {
        let (x, t, text, pooled) = crate::validate::mmdit_inputs(x, t, text, pooled, self.x_embedder.proj.weight.dtype())?;
        let [b, _, h, w] = x.dims();
        ensure_dims("t", t.dims(), [Some(b)])?;
        ensure_dims("text", [text.dims()[0]], [Some(b)])?;
        let tokens = self.embed(x)?;
        let c = self.embed_condition(t, pooled)?;
        let text = self.embed_text(text)?;
        self.forward_tokens(tokens, text, c, [h / self.patch_size, w / self.patch_size], skip_layers)
    }

    /// Number of joint blocks.
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    fn check_skip_layers(&self, skip_layers: &[usize]) -> Result<()> {
        match skip_layers.iter().find(|&&i| i >= self.num_layers()) {
            Some(i) => Err(Error::InvalidArgument(format!(
                "skip_layers {skip_layers:?}: block {i} does not exist (the model has {} blocks)",
                self.num_layers()
            ))),
            None => Ok(()),
        }
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
        self.blocks.len()
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
        if let crate::blocks::FinalProjection::Linear(l) = &mut m.final_layer.linear {
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
                assert_eq!(v.missing, vec!["blocks.1.attn.TwoStream.joint.streams.1.q_norm.weight".to_string()]);
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
        if let crate::blocks::FinalProjection::Linear(l) = &mut m.final_layer.linear {
            l.weight = rand(l.weight.dims());
        }
        use crate::blocks::parts::{AttentionPart, ConditioningPart};
        for block in &mut m.blocks {
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
        without.blocks.remove(1);
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

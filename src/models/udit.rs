//! U-DiT (Tian et al., "U-DiTs: Downsample Tokens in U-Shaped Diffusion Transformers",
//! arXiv:2405.02730), matching YuchuanTian/U-DiT `udit_models.py`.
//!
//! A U-Net of transformer blocks on NCHW latents: a 3x3 conv embeds the latent at width `C`
//! (no patchify), three encoder levels run at `C`, `2C`, `4C` on grids `H`, `H/2`, `H/4`
//! (2x conv + pixel-unshuffle downsampling), two decoder levels at `2C` on `H/2` and `H`
//! (conv + pixel-shuffle upsampling, skip concatenation fused by a 1x1 conv), then a 3x3 conv
//! and the adaLN final layer. Every official block is two [`Block`](crate::blocks::Block)s
//! of downsampled-token attention, depthwise-conv FFN and adaLN-Zero; each level width has
//! its own timestep and label embedder (`c1`, `c2`, `c3`; the decoder levels and the final
//! layer use `c2`).
//!
//! U-DiT is a preset of the model shell ([`ComposedDiT`]): [`UDiTConfig::shell`] names the
//! stem, head, layout and parts, and the shell's forward, contracts and checkpoint loader
//! serve it.

use crate::models::composed::ComposedDiT;

pub use super::udit_config::{UDIT_LEVELS, UDiTConfig, UDiTSize};

/// U-DiT is the [`ComposedDiT`] shell built by a [`UDiTConfig`].
pub type UDiT = ComposedDiT;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::Denoiser;
    use crate::layers::downsampled_attention::AttentionScore;
    use crate::layers::dwconv_ffn::FfnForm;
    use crate::layers::dwconv_ffn::test_support::{Randomize, uniform};
    use burn::module::{ModuleVisitor, ParamId};
    use burn::prelude::*;
    use burn::tensor::Tolerance;
    use rand::SeedableRng;

    fn tiny() -> UDiTConfig {
        UDiTConfig::new()
            .with_input_size(8)
            .with_hidden_size(8)
            .with_num_heads(2)
            .with_depth(vec![1, 1, 1, 1, 1])
            .with_mlp_ratio(2.0)
            .with_num_classes(5)
    }

    fn inputs(device: &Device) -> (Tensor<4>, Tensor<1>, Tensor<1, Int>) {
        (
            uniform([2, 4, 8, 8], 1, device),
            Tensor::from_floats([10.0, 700.0], device),
            Tensor::from_ints([1, 5], device),
        )
    }

    #[test]
    fn analytic_params_match_the_module_for_every_variant() {
        let device = Device::flex();
        let variants = [
            tiny(),
            tiny().with_ffn(FfnForm::Plain).with_num_classes(0),
            tiny().with_ffn(FfnForm::Pointwise).with_attention_score(AttentionScore::DotProduct),
            tiny().with_ffn(FfnForm::Fused).with_downsampler_kernel(3).with_class_dropout_prob(0.0),
            tiny().with_depth(vec![0, 2, 1, 0, 1]).with_learn_sigma(false).with_down_factor(vec![1, 2, 1, 2, 4]),
        ];
        for cfg in variants {
            let m = cfg.init(&device).unwrap();
            assert_eq!(m.num_params(), cfg.num_params(), "{cfg:?}");
        }
        let cfg = tiny();
        let fused = cfg.init(&device).unwrap().reparameterize();
        assert_eq!(fused.num_params(), cfg.clone().with_ffn(FfnForm::Fused).num_params());
    }

    #[test]
    fn paper_flops_within_five_percent() {
        // Paper Table 3 (ImageNet 256x256, latent 32x32): GFLOPs 6.04, 22.22, 85.00.
        for (size, paper) in [(UDiTSize::S, 6.04), (UDiTSize::B, 22.22), (UDiTSize::L, 85.00)] {
            let g = UDiTConfig::preset(size).flops() / 1e9;
            // the issue asks for 5%; the count is within 1%
            assert!((g / paper - 1.0).abs() < 0.01, "{size:?}: {g} vs {paper}");
        }
    }

    #[test]
    fn presets_validate_and_count_parameters() {
        for name in ["U-DiT-S", "U-DiT-B", "U-DiT-L"] {
            UDiTConfig::from_name(name).unwrap().validate().unwrap();
        }
        assert!(UDiTConfig::from_name("U-DiT-XL").is_err());
        // the paper reports the inference form: U-DiT-B 204.42M, U-DiT-L 810.19M
        let b = UDiTConfig::from_name("U-DiT-B").unwrap();
        let l = UDiTConfig::preset(UDiTSize::L);
        assert_eq!(b.num_params_inference(), 204_425_064);
        assert_eq!(l.num_params_inference(), 810_188_488);
        // the training-form state dicts hold the re-parametrisation branches on top
        assert_eq!(b.num_params(), 231_251_304);
        assert_eq!(l.num_params(), 916_335_304);
        assert_eq!(UDiTConfig::preset(UDiTSize::S).num_params_inference(), 52_045_240);
        let plain = b.with_ffn(FfnForm::Plain);
        assert_eq!(plain.num_params_inference(), plain.num_params());
    }

    #[test]
    fn invalid_configs_are_errors() {
        let device = Device::flex();
        let bad = [
            tiny().with_input_size(10),
            tiny().with_input_size(12), // level grids 12, 6, 3: 3 is not divisible by 2
            tiny().with_hidden_size(9),
            tiny().with_num_heads(3),
            tiny().with_hidden_size(12).with_num_heads(2), // RoPE head width 6
            tiny().with_depth(vec![1, 1, 1]),
            tiny().with_down_factor(vec![2, 2, 2, 2]),
            tiny().with_down_factor(vec![0, 2, 2, 2, 2]),
            tiny().with_downsampler_kernel(4),
            tiny().with_class_dropout_prob(1.0),
            tiny().with_mlp_ratio(0.0),
        ];
        for cfg in bad {
            assert!(cfg.init(&device).is_err(), "{cfg:?}");
        }
    }

    #[test]
    fn zero_init_output_and_shapes() {
        let device = Device::flex();
        let m = tiny().init(&device).unwrap();
        let (x, t, y) = inputs(&device);
        let out = m.forward(x, t, Some(y)).unwrap();
        assert_eq!(out.dims(), [2, 8, 8, 8]);
        assert!(out.equal_elem(0.0).all().into_scalar::<bool>());
    }

    #[test]
    fn reparameterized_model_gives_the_same_outputs() {
        let device = Device::flex();
        let m = tiny().init(&device).unwrap().map(&mut Randomize::seeded(9));
        let (x, t, y) = inputs(&device);
        let train = m.forward(x.clone(), t.clone(), Some(y.clone())).unwrap();
        let eval = m.reparameterize();
        assert_eq!(eval.ffn_form(), Some(FfnForm::Fused));
        assert!(eval.num_params() < m.num_params());
        let out = eval.forward(x, t, Some(y)).unwrap();
        out.into_data().assert_approx_eq::<f32>(&train.into_data(), Tolerance::absolute(1e-4));
    }

    #[test]
    fn cfg_guides_the_first_channels_and_denoiser_matches_forward() {
        let device = Device::flex();
        let m = tiny().init(&device).unwrap().map(&mut Randomize::seeded(2));
        let (x, t, _) = inputs(&device);
        let x = Tensor::cat(vec![x.clone().narrow(0, 0, 1), x.narrow(0, 1, 1)], 0);
        let y = Tensor::<1, Int>::from_ints([3, 5], &device);
        let out = m.forward_with_cfg(x.clone(), t.clone(), y.clone(), 4.0, 3).unwrap();
        let half = x.narrow(0, 0, 1);
        let both = m.denoise(Tensor::cat(vec![half.clone(), half], 0), t, &Some(y)).unwrap();
        let (c, u) = (both.clone().narrow(0, 0, 1), both.narrow(0, 1, 1));
        let guided = u.clone().narrow(1, 0, 3) + (c.clone().narrow(1, 0, 3) - u.clone().narrow(1, 0, 3)) * 4.0;
        for (i, rest) in [(0, c), (1, u)] {
            let row = out.clone().narrow(0, i, 1);
            row.clone()
                .narrow(1, 0, 3)
                .into_data()
                .assert_approx_eq::<f32>(&guided.clone().into_data(), Tolerance::absolute(1e-5));
            row.narrow(1, 3, 5)
                .into_data()
                .assert_approx_eq::<f32>(&rest.narrow(1, 3, 5).into_data(), Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let device = Device::flex();
        let m = tiny().init(&device).unwrap();
        let t = Tensor::<1>::zeros([2], &device);
        let labels = Tensor::<1, Int>::from_ints([0, 1], &device);
        let y = Some(labels.clone());
        assert!(m.forward(Tensor::zeros([2, 3, 8, 8], &device), t.clone(), y.clone()).is_err());
        assert!(m.forward(Tensor::zeros([2, 4, 7, 8], &device), t.clone(), y.clone()).is_err());
        assert!(m.forward(Tensor::zeros([2, 4, 8, 8], &device), Tensor::zeros([3], &device), y.clone()).is_err());
        assert!(m.forward(Tensor::zeros([2, 4, 8, 8], &device), t.clone(), None).is_err());
        let big = Some(Tensor::<1, Int>::from_ints([0, 6], &device));
        assert!(m.forward(Tensor::zeros([2, 4, 8, 8], &device), t.clone(), big).is_err());
        let y3 = Tensor::<1, Int>::from_ints([0, 1, 5], &device);
        assert!(
            m.forward_with_cfg(Tensor::zeros([3, 4, 8, 8], &device), Tensor::zeros([3], &device), y3, 4.0, 3).is_err()
        );
        for channels in [0, 9] {
            let out =
                m.forward_with_cfg(Tensor::zeros([2, 4, 8, 8], &device), t.clone(), labels.clone(), 4.0, channels);
            assert!(out.is_err());
        }
        // invalid configs do not make the analytic counts panic
        let bad = tiny().with_depth(vec![1; 7]).with_down_factor(vec![]);
        assert!(bad.validate().is_err() && bad.flops() > 0.0 && bad.num_params() > 0);
    }

    #[test]
    fn label_dropout_is_seeded_and_independent_per_level() {
        let device = Device::flex();
        let m = tiny().with_class_dropout_prob(0.5).init(&device).unwrap().map(&mut Randomize::seeded(4));
        let (x, t, y) = inputs(&device);
        let run = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            m.forward_train(x.clone(), t.clone(), Some(y.clone()), &mut rng).unwrap()
        };
        run(1).into_data().assert_approx_eq::<f32>(&run(1).into_data(), Tolerance::absolute(0.0));
        let outs: Vec<Vec<f32>> = (0..8).map(|s| run(s).into_data().try_to_vec::<f32>().unwrap()).collect();
        assert!(outs.iter().any(|o| o != &outs[0]), "dropout never changed the output");
    }

    struct MissingGrads<'a> {
        grads: &'a burn::tensor::Gradients,
        missing: Vec<String>,
    }

    impl ModuleVisitor for MissingGrads<'_> {
        fn visit_float_with_path<const D: usize>(&mut self, path: &[String], _id: ParamId, tensor: &Tensor<D>) {
            if tensor.is_require_grad() && tensor.grad(self.grads).is_none() {
                self.missing.push(path.join("."));
            }
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient_in_the_training_form() {
        let device = Device::flex().autodiff();
        let m = tiny().init(&device).unwrap().map(&mut Randomize::seeded(6));
        let (x, t, y) = inputs(&device);
        let loss = m.forward(x, t, Some(y)).unwrap().square().mean();
        let grads = loss.backward();
        let mut v = MissingGrads { grads: &grads, missing: vec![] };
        m.visit(&mut v);
        // the null-label rows only get gradients from dropped labels; label 5 is the null row
        assert!(v.missing.is_empty(), "no gradient for {:?}", v.missing);
    }
}

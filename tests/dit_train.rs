//! DiT under autodiff: every trainable parameter gets a gradient, and AdamW fits a batch.

use burn::module::{ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::TensorData;
use diffusion_transformers::blocks::BlockKind;
use diffusion_transformers::layers::init::Randomize;
use diffusion_transformers::models::DiTConfig;
use rand::SeedableRng;

fn config(kind: BlockKind) -> DiTConfig {
    DiTConfig::new()
        .with_input_size(8)
        .with_patch_size(4)
        .with_hidden_size(32)
        .with_depth(2)
        .with_num_heads(2)
        .with_num_classes(3)
        .with_block_kind(kind)
}

fn batch(device: &Device) -> (Tensor<4>, Tensor<1>, Tensor<1, Int>) {
    let x: Vec<f32> = (0..2 * 4 * 64).map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0).collect();
    (
        Tensor::from_data(TensorData::new(x, [2, 4, 8, 8]), device),
        Tensor::from_floats([10.0, 900.0], device),
        Tensor::from_ints([0, 2], device),
    )
}

/// Lists trainable parameters without a gradient. Paths are tracked with
/// `enter_module`/`exit_module` (Burn's traversal calls `visit_float`, not the `_with_path`
/// variant), and the visit count guards against a visitor that sees nothing.
struct MissingGrads<'a> {
    grads: &'a burn::tensor::Gradients,
    path: Vec<String>,
    visited: usize,
    missing: Vec<String>,
}

impl ModuleVisitor for MissingGrads<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        if tensor.is_require_grad() {
            self.visited += 1;
            if tensor.grad(self.grads).is_none() {
                self.missing.push(self.path.join("."));
            }
        }
    }
}

#[test]
fn every_trainable_parameter_gets_a_gradient_and_adamw_fits() {
    let device = Device::flex().autodiff();
    for kind in [BlockKind::AdaLnZero, BlockKind::AdaLn, BlockKind::CrossAttention, BlockKind::InContext] {
        let mut model = config(kind).init(&device).unwrap();
        let (x, t, y) = batch(&device);
        let target = x.clone().repeat_dim(1, 2) * 0.5;
        let mut optim = AdamWConfig::new().with_weight_decay(0.0).with_epsilon(1e-8).init();
        let mut losses = Vec::new();
        for step in 0..30 {
            let out = model.forward(x.clone(), t.clone(), Some(y.clone())).unwrap();
            let loss = (out - target.clone()).square().mean();
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = loss.backward();
            if step == 1 {
                // After one update the zero-initialised layers are non-zero, so every
                // trainable parameter is on the gradient path.
                let mut v = MissingGrads { grads: &grads, path: vec![], visited: 0, missing: vec![] };
                model.visit(&mut v);
                // 2 blocks of at least 8 trainable tensors plus embedders and final layer
                assert!(v.visited >= 20, "{kind:?}: the visitor saw only {} parameters", v.visited);
                assert!(v.missing.is_empty(), "{kind:?}: no gradient for {:?}", v.missing);
            }
            let grads = GradientsParams::from_grads(grads, &model);
            model = optim.step(1e-3, model, grads);
        }
        assert!(losses[29] < 0.5 * losses[0], "{kind:?}: loss {} -> {}", losses[0], losses[29]);
    }
}

#[test]
fn label_dropout_is_seeded() {
    let device = Device::flex();
    // Random weights: a fresh DiT outputs zeros whatever the labels.
    let model = config(BlockKind::AdaLnZero).with_class_dropout_prob(0.5).init(&device).unwrap().map(&mut Randomize::seeded(3));
    let (x, t, y) = batch(&device);
    let run = |seed| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        model.forward_train(x.clone(), t.clone(), Some(y.clone()), &mut rng).unwrap().into_data()
    };
    assert_eq!(run(7).as_bytes(), run(7).as_bytes());
    // Some seed drops other labels than seed 7 does (each label is dropped with p = 0.5).
    assert!((0..8).any(|s| run(s).as_bytes() != run(7).as_bytes()), "label dropout ignores the seed");
}

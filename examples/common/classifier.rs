//! A small CNN classifier for the shapes dataset, used to judge generated samples: the class
//! accuracy of samples (against the label they were generated for) is the quickstart's
//! sample-quality figure, the accuracy on held-out real images its ceiling.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::relu;
use diffusion_transformers::data::ShapesDataset;
use diffusion_transformers::contracts::TrainRng;
use rand::SeedableRng;

#[derive(Module, Debug)]
pub struct Classifier {
    convs: Vec<Conv2d>,
    head: Linear,
}

impl Classifier {
    pub fn new(classes: usize, device: &Device) -> Self {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Self { convs: vec![conv(3, 16), conv(16, 32), conv(32, 64)], head: LinearConfig::new(64, classes).init(device) }
    }

    /// `[B, 3, H, W]` in `[-1, 1]` -> logits `[B, classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = x;
        for c in &self.convs {
            h = relu(c.forward(h));
        }
        let [b, c, _, _] = h.dims();
        self.head.forward(h.mean_dim(3).mean_dim(2).reshape([b, c]))
    }

    /// Fraction of `images` classified as `labels`.
    pub fn accuracy(&self, images: Tensor<4>, labels: Tensor<1, Int>) -> f64 {
        let [b] = labels.dims();
        let pred = self.forward(images).argmax(1).reshape([b]);
        pred.equal(labels).int().sum().into_scalar::<i64>() as f64 / b as f64
    }
}

/// Train on random images of `data` (`steps` Adam steps of batch 64), seeded.
pub fn train_classifier(data: &ShapesDataset, steps: usize, device: &Device) -> Classifier {
    let ad = device.clone().autodiff();
    ad.seed(4321); // a reproducible judge
    let mut model = Classifier::new(data.num_classes(), &ad);
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).with_epsilon(1e-8).init();
    let mut rng = TrainRng::seed_from_u64(1234);
    for _ in 0..steps {
        let (x, y) = data.sample_batch(64, &mut rng, &ad);
        let logits = model.forward(x);
        let loss = burn::nn::loss::CrossEntropyLossConfig::new().init(&ad).forward(logits, y);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(2e-3, model, grads);
    }
    model.valid()
}

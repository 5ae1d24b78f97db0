//! Small CNN classifiers for the shapes dataset, used to judge generated samples: the fraction
//! of samples classified as the label they were generated for.
//!
//! Two judges: the *colour-aware* one trains on the dataset as it is (each class has its own
//! colour, so it may decide by colour alone); the *shape-only* one trains on the same images
//! with random shape and background colours ([`ShapesDataset::with_random_colours`]), so only
//! the silhouette can tell the classes apart; it also sees each image only through its
//! foreground map ([`foreground`]: each pixel's colour distance from the image's border colour,
//! scaled to a maximum of 1), which no colour survives. Both train on image indices below
//! [`JUDGE_TRAIN_LEN`]; [`held_out`] lists real images past that range, which neither judge
//! ever sees, for their real-image accuracy.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::relu;
use diffusion_transformers::contracts::TrainRng;
use diffusion_transformers::data::ShapesDataset;
use rand::SeedableRng;

/// The judges train on image indices `0..JUDGE_TRAIN_LEN` of the dataset.
pub const JUDGE_TRAIN_LEN: usize = 40_000;

/// `n` real image indices (past [`JUDGE_TRAIN_LEN`]) that no judge trains on.
pub fn held_out(n: usize) -> Vec<usize> {
    (JUDGE_TRAIN_LEN + 5_000..JUDGE_TRAIN_LEN + 5_000 + n).collect()
}

/// The foreground map of `[B, 3, H, W]` images: the colour distance of each pixel from the
/// mean colour of the image's one-pixel border (the background), divided by the image's
/// largest distance, as `[B, 1, H, W]` in `[0, 1]`: the silhouette, whatever its colours.
pub fn foreground(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let rows = Tensor::cat(vec![x.clone().narrow(2, 0, 1), x.clone().narrow(2, h - 1, 1)], 3); // [B, C, 1, 2W]
    let cols = Tensor::cat(vec![x.clone().narrow(3, 0, 1), x.clone().narrow(3, w - 1, 1)], 2); // [B, C, 2H, 1]
    let border = (rows.sum_dim(3).reshape([b, c, 1, 1]) + cols.sum_dim(2).reshape([b, c, 1, 1])) / (2 * (h + w)) as f64;
    let dist = (x - border).square().sum_dim(1).sqrt(); // [B, 1, H, W]
    let max = dist.clone().reshape([b, h * w]).max_dim(1).reshape([b, 1, 1, 1]);
    dist / (max + 1e-3)
}

#[derive(Module, Debug)]
pub struct Classifier {
    convs: Vec<Conv2d>,
    norms: Vec<BatchNorm>,
    head: Linear,
    /// Sees only the [`foreground`] map of its inputs.
    shape_only: bool,
}

impl Classifier {
    /// A judge for `size x size` images (the first convolution strides down to about 16x16).
    pub fn new(classes: usize, shape_only: bool, size: usize, device: &Device) -> Self {
        let conv = |i, o, stride| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        let inputs = if shape_only { 1 } else { 3 };
        let first = (size / 16).max(1);
        let convs = vec![conv(inputs, 32, first), conv(32, 32, 2), conv(32, 64, 2), conv(64, 64, 2)];
        let norms = [32, 32, 64, 64].map(|c| BatchNormConfig::new(c).init(device)).to_vec();
        Self { convs, norms, head: LinearConfig::new(64, classes).init(device), shape_only }
    }

    /// `[B, 3, H, W]` in `[-1, 1]` -> logits `[B, classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = if self.shape_only { foreground(x) } else { x };
        for (c, n) in self.convs.iter().zip(&self.norms) {
            h = relu(n.forward(c.forward(h)));
        }
        let [b, c, _, _] = h.dims();
        self.head.forward(h.mean_dim(3).mean_dim(2).reshape([b, c]))
    }

    /// The predicted class of each image (`[B, 3, H, W]`, batched by 500).
    pub fn predict(&self, images: Tensor<4>) -> Vec<i64> {
        let b = images.dims()[0];
        let mut out = Vec::with_capacity(b);
        for start in (0..b).step_by(500) {
            let chunk = images.clone().narrow(0, start, 500.min(b - start));
            let n = chunk.dims()[0];
            out.extend(self.forward(chunk).argmax(1).reshape([n]).into_data().convert::<i64>().try_to_vec::<i64>().expect("integer predictions"));
        }
        out
    }
}

/// Accuracy of `predictions` against `labels`: overall and per class (`classes` entries).
pub fn accuracy(predictions: &[i64], labels: &[i64], classes: usize) -> (f64, Vec<f64>) {
    let mut right = vec![0usize; classes];
    let mut total = vec![0usize; classes];
    for (&p, &l) in predictions.iter().zip(labels) {
        total[l as usize] += 1;
        right[l as usize] += usize::from(p == l);
    }
    let overall = right.iter().sum::<usize>() as f64 / labels.len().max(1) as f64;
    (overall, right.iter().zip(&total).map(|(&r, &t)| r as f64 / t.max(1) as f64).collect())
}

/// Trains a judge on images `0..JUDGE_TRAIN_LEN` of `data` (`steps` AdamW steps of batch 64),
/// seeded by `seed`: the same seed gives the same judge. `shape_only`: the shape-only judge,
/// on randomly coloured images seen through their [`foreground`] map.
pub fn train_classifier(data: &ShapesDataset, shape_only: bool, steps: usize, seed: u64, device: &Device) -> Classifier {
    let data = ShapesDataset { len: JUDGE_TRAIN_LEN.min(data.len), ..data.clone() }.with_random_colours(shape_only);
    let ad = device.clone().autodiff();
    ad.seed(seed);
    let mut model = Classifier::new(data.num_classes(), shape_only, data.size, &ad);
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).with_epsilon(1e-8).init();
    let mut rng = TrainRng::seed_from_u64(seed);
    let loss_fn = burn::nn::loss::CrossEntropyLossConfig::new().init(&ad);
    for step in 0..steps {
        let (x, y) = data.sample_batch(64, &mut rng, &ad);
        let loss = loss_fn.forward(model.forward(x), y);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = 2e-3 * (1.0 - step as f64 / steps as f64).max(0.05); // linear decay
        model = optim.step(lr, model, grads);
    }
    model.valid()
}

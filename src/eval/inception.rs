//! The Inception-v3 network in its FID variant: pytorch-fid's `InceptionV3` with
//! `use_fid_inception=True`, the `pt_inception-2015-12-05` architecture (1008 classes) ported
//! from the TensorFlow graph that FID, sFID and the Inception Score were defined on.
//!
//! Input images in `[0, 1]` are resized to 299x299 (bilinear, `align_corners=False`) and mapped
//! to `2x - 1`, as pytorch-fid does by default. The outputs are the 2048-d pool features (FID,
//! precision/recall), the 1008 logits of `fc` (Inception Score), the 768-channel Mixed_6e map
//! (pytorch-fid's block 2) and the spatial features of sFID: the first 7 channels of Mixed_6d's
//! 1x1 branch (TensorFlow's `mixed_6/conv`, as the ADM evaluator takes them), flattened in
//! height-width-channel order (`17 * 17 * 7 = 2023` values).
//!
//! Burn's own FID metric (burn-train `metric::vision::fid`) normalises with ImageNet's mean and
//! standard deviation by default, takes a Newton-Schulz matrix square root in float32 and exposes
//! neither the logits nor the spatial map, so it does not reproduce pytorch-fid; this module and
//! [`frechet`](super::frechet) do.

use std::path::Path;

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::module::{adaptive_avg_pool2d, interpolate};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::inception_blocks::{BasicConv2d, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE, max_pool_3x3};
use crate::error::{Error, Result};
use crate::weights::{CheckpointFormat, KeyMap, LazyCheckpoint, LoadWeights};

/// Channels of the sFID spatial features taken from `mixed_6/conv` (ADM evaluator).
pub const SPATIAL_CHANNELS: usize = 7;

/// Settings of [`InceptionV3`]; the defaults are pytorch-fid's.
#[derive(Config, Debug)]
pub struct InceptionV3Config {
    /// Resize inputs to 299x299 (bilinear, `align_corners=False`). Default: true.
    #[config(default = true)]
    pub resize_input: bool,
    /// Map inputs from `[0, 1]` to `[-1, 1]` (`2x - 1`). Default: true.
    #[config(default = true)]
    pub normalize_input: bool,
    /// Classes of the `fc` layer (1008 in the TensorFlow graph). Default: 1008.
    #[config(default = 1008)]
    pub num_classes: usize,
}

impl InceptionV3Config {
    /// Build the network with random weights (load real ones with [`LoadWeights`], e.g.
    /// [`InceptionV3::from_file`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for zero classes.
    pub fn init(&self, device: &Device) -> Result<InceptionV3> {
        crate::error::ensure_positive(&[("num_classes", self.num_classes)])?;
        let d = device;
        Ok(InceptionV3 {
            conv2d_1a_3x3: BasicConv2d::new([3, 32], [3, 3], 2, [0, 0], d),
            conv2d_2a_3x3: BasicConv2d::new([32, 32], [3, 3], 1, [0, 0], d),
            conv2d_2b_3x3: BasicConv2d::new([32, 64], [3, 3], 1, [1, 1], d),
            conv2d_3b_1x1: BasicConv2d::new([64, 80], [1, 1], 1, [0, 0], d),
            conv2d_4a_3x3: BasicConv2d::new([80, 192], [3, 3], 1, [0, 0], d),
            mixed_5b: InceptionA::new(192, 32, d),
            mixed_5c: InceptionA::new(256, 64, d),
            mixed_5d: InceptionA::new(288, 64, d),
            mixed_6a: InceptionB::new(288, d),
            mixed_6b: InceptionC::new(768, 128, d),
            mixed_6c: InceptionC::new(768, 160, d),
            mixed_6d: InceptionC::new(768, 160, d),
            mixed_6e: InceptionC::new(768, 192, d),
            mixed_7a: InceptionD::new(768, d),
            mixed_7b: InceptionE::new(1280, false, d),
            mixed_7c: InceptionE::new(2048, true, d),
            fc: LinearConfig::new(2048, self.num_classes).init(d),
            resize_input: self.resize_input,
            normalize_input: self.normalize_input,
        })
    }
}

/// What one forward pass of [`InceptionV3`] yields for a batch of `B` images.
#[derive(Debug, Clone)]
pub struct InceptionFeatures {
    /// `[B, 2048]` average-pooled output of Mixed_7c (TensorFlow `pool_3`): FID, precision/recall.
    pub pool: Tensor<2>,
    /// `[B, num_classes]` logits of `fc` on `pool`: the Inception Score.
    pub logits: Tensor<2>,
    /// `[B, 2023]` sFID features: Mixed_6d's 1x1 branch, first 7 channels, `(h, w, c)` order.
    pub spatial: Tensor<2>,
    /// `[B, 768, 17, 17]` output of Mixed_6e (pytorch-fid's block 2).
    pub mixed_6e: Tensor<4>,
}

/// The FID Inception-v3 (see the [module docs](self)).
#[derive(Module, Debug)]
pub struct InceptionV3 {
    conv2d_1a_3x3: BasicConv2d,
    conv2d_2a_3x3: BasicConv2d,
    conv2d_2b_3x3: BasicConv2d,
    conv2d_3b_1x1: BasicConv2d,
    conv2d_4a_3x3: BasicConv2d,
    mixed_5b: InceptionA,
    mixed_5c: InceptionA,
    mixed_5d: InceptionA,
    mixed_6a: InceptionB,
    mixed_6b: InceptionC,
    mixed_6c: InceptionC,
    mixed_6d: InceptionC,
    mixed_6e: InceptionC,
    mixed_7a: InceptionD,
    mixed_7b: InceptionE,
    mixed_7c: InceptionE,
    fc: Linear,
    resize_input: bool,
    normalize_input: bool,
}

/// Module path -> torchvision / pytorch-fid key (`Conv2d_1a_3x3.conv.weight`, ...).
fn key_map() -> KeyMap {
    let names = [
        "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "Mixed_5b", "Mixed_5c",
        "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
    ];
    KeyMap::new(names.iter().map(|n| (n.to_ascii_lowercase(), n.to_string())))
}

/// pytorch-fid's (torchvision's) state-dict names: the FID Inception's [`CheckpointFormat`].
/// BatchNorm `num_batches_tracked` counters are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InceptionPytorchFid;

impl CheckpointFormat<InceptionV3> for InceptionPytorchFid {
    fn key(&self, module_path: &str) -> String {
        key_map().checkpoint_key(module_path)
    }

    fn prepare(&self, _model: &InceptionV3, checkpoint: &mut LazyCheckpoint<'_>) -> Result<()> {
        let counters: Vec<String> = checkpoint.keys().filter(|k| k.ends_with("num_batches_tracked")).map(str::to_string).collect();
        for k in counters {
            checkpoint.remove(&k);
        }
        Ok(())
    }
}

impl LoadWeights for InceptionV3 {
    type Format = InceptionPytorchFid;

    fn format_of(&self, _checkpoint: &LazyCheckpoint<'_>) -> InceptionPytorchFid {
        InceptionPytorchFid
    }

    fn export_format(&self) -> InceptionPytorchFid {
        InceptionPytorchFid
    }
}

impl InceptionV3 {
    /// pytorch-fid's network (default config) with the weights of `path`, streamed in with
    /// the one loader ([`LoadWeights`]): the `pt_inception-2015-12-05-6726825d.pth` file
    /// pytorch-fid downloads (`pytorch` feature), or the same state dict as `.safetensors`.
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable file, [`Error::CheckpointMismatch`] for other weights.
    pub fn from_file(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let mut net = InceptionV3Config::new().init(device)?;
        net.load_weights(path)?;
        Ok(net)
    }

    /// Number of classes of the `fc` layer.
    pub fn num_classes(&self) -> usize {
        self.fc.weight.dims()[1]
    }

    /// Features of a batch of images.
    ///
    /// # Shapes
    /// - `images`: `[B, 3, H, W]`, values in `[0, 1]`; `H = W = 299` unless `resize_input`
    ///   (at least 75x75 otherwise).
    /// - returns [`InceptionFeatures`] (`pool` `[B, 2048]`, `logits` `[B, num_classes]`,
    ///   `spatial` `[B, 2023]`, `mixed_6e` `[B, 768, 17, 17]`).
    ///
    /// # Errors
    /// [`Error::Shape`] for another channel count or a size the network cannot take.
    pub fn forward(&self, images: Tensor<4>) -> Result<InceptionFeatures> {
        let [_, c, h, w] = images.dims();
        let ok_size = if self.resize_input { h > 0 && w > 0 } else { h == 299 && w == 299 };
        if c != 3 || !ok_size {
            let size = if self.resize_input { "H, W" } else { "299, 299" };
            return Err(Error::Shape {
                name: "images".into(),
                expected: format!("[B, 3, {size}]"),
                got: format!("{:?}", images.dims()),
            });
        }
        let mut x = images;
        if self.resize_input && (h, w) != (299, 299) {
            let opts = InterpolateOptions::new(InterpolateMode::Bilinear)
                .with_align_corners(false)
                .with_output_size([299, 299]);
            x = interpolate(x, opts);
        }
        if self.normalize_input {
            x = x * 2.0 - 1.0;
        }
        let x = self.conv2d_2a_3x3.forward(self.conv2d_1a_3x3.forward(x));
        let x = max_pool_3x3(self.conv2d_2b_3x3.forward(x), 2, 0);
        let x = max_pool_3x3(self.conv2d_4a_3x3.forward(self.conv2d_3b_1x1.forward(x)), 2, 0);
        let x = self.mixed_5d.forward(self.mixed_5c.forward(self.mixed_5b.forward(x)));
        let x = self.mixed_6a.forward(x);
        let (x, _) = self.mixed_6b.forward_with_branch1x1(x);
        let (x, _) = self.mixed_6c.forward_with_branch1x1(x);
        let (x, mixed_6_conv) = self.mixed_6d.forward_with_branch1x1(x);
        let (mixed_6e, _) = self.mixed_6e.forward_with_branch1x1(x);
        let x = self.mixed_7c.forward(self.mixed_7b.forward(self.mixed_7a.forward(mixed_6e.clone())));
        let pool: Tensor<2> = adaptive_avg_pool2d(x, [1, 1]).flatten(1, 3);
        let logits = self.fc.forward(pool.clone());
        let spatial = mixed_6_conv.narrow(1, 0, SPATIAL_CHANNELS).permute([0, 2, 3, 1]).flatten(1, 3);
        Ok(InceptionFeatures { pool, logits, spatial, mixed_6e })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_torchvision_names() {
        let m = key_map();
        assert_eq!(m.checkpoint_key("mixed_6e.branch7x7dbl_5.bn.running_var"), "Mixed_6e.branch7x7dbl_5.bn.running_var");
        assert_eq!(m.checkpoint_key("conv2d_1a_3x3.conv.weight"), "Conv2d_1a_3x3.conv.weight");
        assert_eq!(m.checkpoint_key("fc.bias"), "fc.bias");
    }

    #[test]
    fn rejects_bad_images_and_configs() {
        let device = Device::flex();
        assert!(InceptionV3Config::new().with_num_classes(0).init(&device).is_err());
        let net = InceptionV3Config::new().with_resize_input(false).init(&device).unwrap();
        let e = net.forward(Tensor::zeros([1, 3, 64, 64], &device)).unwrap_err().to_string();
        assert!(e.contains("[B, 3, 299, 299]"), "{e}");
        assert!(net.forward(Tensor::zeros([1, 1, 299, 299], &device)).is_err());
    }
}

//! The building blocks of the FID Inception-v3 (torchvision's `Inception3` as pytorch-fid
//! patches it): `BasicConv2d` (convolution without bias, batch norm with eps 1e-3, ReLU) and
//! the five mixed blocks A-E.
//!
//! pytorch-fid's `FIDInceptionA`, `FIDInceptionC` and `FIDInceptionE_1` average-pool without
//! counting the padding (`count_include_pad=False`, as the TensorFlow graph the weights come
//! from), and `FIDInceptionE_2` (Mixed_7c) max-pools its pooling branch instead. Field names
//! are torchvision's, so checkpoints load under their own keys.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{avg_pool2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};

/// Convolution (no bias) + batch norm (eps 1e-3) + ReLU.
#[derive(Module, Debug)]
pub struct BasicConv2d {
    conv: Conv2d,
    bn: BatchNorm,
}

impl BasicConv2d {
    /// `channels` `[in, out]`, `kernel` `[kh, kw]`, `stride`, `padding` `[ph, pw]`.
    pub fn new(channels: [usize; 2], kernel: [usize; 2], stride: usize, padding: [usize; 2], device: &Device) -> Self {
        let [ph, pw] = padding;
        let conv = Conv2dConfig::new(channels, kernel)
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(ph, pw, ph, pw))
            .with_bias(false)
            .init(device);
        Self { conv, bn: BatchNormConfig::new(channels[1]).with_epsilon(1e-3).init(device) }
    }

    /// `[B, in, H, W] -> [B, out, H', W']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.bn.forward(self.conv.forward(x)))
    }
}

fn conv(cin: usize, cout: usize, k: [usize; 2], pad: [usize; 2], device: &Device) -> BasicConv2d {
    BasicConv2d::new([cin, cout], k, 1, pad, device)
}

/// 3x3 average pool, stride 1, padding 1, padding not counted (TensorFlow's average pool).
fn avg_pool_3x3(x: Tensor<4>) -> Tensor<4> {
    avg_pool2d(x, AvgPoolOptions::new([3, 3]).with_stride([1, 1]).with_padding([1, 1]).with_count_include_pad(false))
}

/// 3x3 max pool with stride `stride` and padding `pad`.
pub fn max_pool_3x3(x: Tensor<4>, stride: usize, pad: usize) -> Tensor<4> {
    max_pool2d(x, MaxPoolOptions::new([3, 3]).with_stride([stride, stride]).with_padding([pad, pad]))
}

/// Mixed_5b/5c/5d (35x35): 1x1, 5x5, double 3x3 and pooling branches.
#[derive(Module, Debug)]
pub struct InceptionA {
    branch1x1: BasicConv2d,
    branch5x5_1: BasicConv2d,
    branch5x5_2: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
    branch_pool: BasicConv2d,
}

impl InceptionA {
    /// `[B, cin, 35, 35] -> [B, 224 + pool_features, 35, 35]`.
    pub fn new(cin: usize, pool_features: usize, device: &Device) -> Self {
        Self {
            branch1x1: conv(cin, 64, [1, 1], [0, 0], device),
            branch5x5_1: conv(cin, 48, [1, 1], [0, 0], device),
            branch5x5_2: conv(48, 64, [5, 5], [2, 2], device),
            branch3x3dbl_1: conv(cin, 64, [1, 1], [0, 0], device),
            branch3x3dbl_2: conv(64, 96, [3, 3], [1, 1], device),
            branch3x3dbl_3: conv(96, 96, [3, 3], [1, 1], device),
            branch_pool: conv(cin, pool_features, [1, 1], [0, 0], device),
        }
    }

    /// The four branches concatenated on channels.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b5 = self.branch5x5_2.forward(self.branch5x5_1.forward(x.clone()));
        let b3 = self.branch3x3dbl_1.forward(x.clone());
        let b3 = self.branch3x3dbl_3.forward(self.branch3x3dbl_2.forward(b3));
        let bp = self.branch_pool.forward(avg_pool_3x3(x));
        Tensor::cat(vec![b1, b5, b3, bp], 1)
    }
}

/// Mixed_6a (35x35 -> 17x17): strided 3x3, strided double 3x3 and max pool.
#[derive(Module, Debug)]
pub struct InceptionB {
    branch3x3: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
}

impl InceptionB {
    /// `[B, cin, 35, 35] -> [B, cin + 480, 17, 17]`.
    pub fn new(cin: usize, device: &Device) -> Self {
        Self {
            branch3x3: BasicConv2d::new([cin, 384], [3, 3], 2, [0, 0], device),
            branch3x3dbl_1: conv(cin, 64, [1, 1], [0, 0], device),
            branch3x3dbl_2: conv(64, 96, [3, 3], [1, 1], device),
            branch3x3dbl_3: BasicConv2d::new([96, 96], [3, 3], 2, [0, 0], device),
        }
    }

    /// The three branches concatenated on channels.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self.branch3x3.forward(x.clone());
        let bd = self.branch3x3dbl_1.forward(x.clone());
        let bd = self.branch3x3dbl_3.forward(self.branch3x3dbl_2.forward(bd));
        Tensor::cat(vec![b3, bd, max_pool_3x3(x, 2, 0)], 1)
    }
}

/// Mixed_6b-6e (17x17): 1x1, factorised 7x7, double factorised 7x7 and pooling branches.
#[derive(Module, Debug)]
pub struct InceptionC {
    branch1x1: BasicConv2d,
    branch7x7_1: BasicConv2d,
    branch7x7_2: BasicConv2d,
    branch7x7_3: BasicConv2d,
    branch7x7dbl_1: BasicConv2d,
    branch7x7dbl_2: BasicConv2d,
    branch7x7dbl_3: BasicConv2d,
    branch7x7dbl_4: BasicConv2d,
    branch7x7dbl_5: BasicConv2d,
    branch_pool: BasicConv2d,
}

impl InceptionC {
    /// `[B, cin, 17, 17] -> [B, 768, 17, 17]` with `c7` channels inside the 7x7 branches.
    pub fn new(cin: usize, c7: usize, device: &Device) -> Self {
        let (row, col) = (([1, 7], [0, 3]), ([7, 1], [3, 0]));
        Self {
            branch1x1: conv(cin, 192, [1, 1], [0, 0], device),
            branch7x7_1: conv(cin, c7, [1, 1], [0, 0], device),
            branch7x7_2: conv(c7, c7, row.0, row.1, device),
            branch7x7_3: conv(c7, 192, col.0, col.1, device),
            branch7x7dbl_1: conv(cin, c7, [1, 1], [0, 0], device),
            branch7x7dbl_2: conv(c7, c7, col.0, col.1, device),
            branch7x7dbl_3: conv(c7, c7, row.0, row.1, device),
            branch7x7dbl_4: conv(c7, c7, col.0, col.1, device),
            branch7x7dbl_5: conv(c7, 192, row.0, row.1, device),
            branch_pool: conv(cin, 192, [1, 1], [0, 0], device),
        }
    }

    /// The block's output and the output of its 1x1 branch (`[B, 192, 17, 17]`: in Mixed_6d it
    /// is TensorFlow's `mixed_6/conv`, the spatial features of sFID).
    pub fn forward_with_branch1x1(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let b1 = self.branch1x1.forward(x.clone());
        let b7 = self.branch7x7_1.forward(x.clone());
        let b7 = self.branch7x7_3.forward(self.branch7x7_2.forward(b7));
        let bd = self.branch7x7dbl_1.forward(x.clone());
        let bd = self.branch7x7dbl_3.forward(self.branch7x7dbl_2.forward(bd));
        let bd = self.branch7x7dbl_5.forward(self.branch7x7dbl_4.forward(bd));
        let bp = self.branch_pool.forward(avg_pool_3x3(x));
        (Tensor::cat(vec![b1.clone(), b7, bd, bp], 1), b1)
    }
}

/// Mixed_7a (17x17 -> 8x8): strided 3x3, strided factorised 7x7 and max pool.
#[derive(Module, Debug)]
pub struct InceptionD {
    branch3x3_1: BasicConv2d,
    branch3x3_2: BasicConv2d,
    branch7x7x3_1: BasicConv2d,
    branch7x7x3_2: BasicConv2d,
    branch7x7x3_3: BasicConv2d,
    branch7x7x3_4: BasicConv2d,
}

impl InceptionD {
    /// `[B, cin, 17, 17] -> [B, cin + 512, 8, 8]`.
    pub fn new(cin: usize, device: &Device) -> Self {
        Self {
            branch3x3_1: conv(cin, 192, [1, 1], [0, 0], device),
            branch3x3_2: BasicConv2d::new([192, 320], [3, 3], 2, [0, 0], device),
            branch7x7x3_1: conv(cin, 192, [1, 1], [0, 0], device),
            branch7x7x3_2: conv(192, 192, [1, 7], [0, 3], device),
            branch7x7x3_3: conv(192, 192, [7, 1], [3, 0], device),
            branch7x7x3_4: BasicConv2d::new([192, 192], [3, 3], 2, [0, 0], device),
        }
    }

    /// The three branches concatenated on channels.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self.branch3x3_2.forward(self.branch3x3_1.forward(x.clone()));
        let b7 = self.branch7x7x3_2.forward(self.branch7x7x3_1.forward(x.clone()));
        let b7 = self.branch7x7x3_4.forward(self.branch7x7x3_3.forward(b7));
        Tensor::cat(vec![b3, b7, max_pool_3x3(x, 2, 0)], 1)
    }
}

/// Mixed_7b/7c (8x8): 1x1, split 3x3, double split 3x3 and pooling branches.
#[derive(Module, Debug)]
pub struct InceptionE {
    branch1x1: BasicConv2d,
    branch3x3_1: BasicConv2d,
    branch3x3_2a: BasicConv2d,
    branch3x3_2b: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3a: BasicConv2d,
    branch3x3dbl_3b: BasicConv2d,
    branch_pool: BasicConv2d,
    /// Max pool in the pooling branch (`FIDInceptionE_2`, Mixed_7c) instead of average pool.
    max_pool: bool,
}

impl InceptionE {
    /// `[B, cin, 8, 8] -> [B, 2048, 8, 8]`.
    pub fn new(cin: usize, max_pool: bool, device: &Device) -> Self {
        Self {
            branch1x1: conv(cin, 320, [1, 1], [0, 0], device),
            branch3x3_1: conv(cin, 384, [1, 1], [0, 0], device),
            branch3x3_2a: conv(384, 384, [1, 3], [0, 1], device),
            branch3x3_2b: conv(384, 384, [3, 1], [1, 0], device),
            branch3x3dbl_1: conv(cin, 448, [1, 1], [0, 0], device),
            branch3x3dbl_2: conv(448, 384, [3, 3], [1, 1], device),
            branch3x3dbl_3a: conv(384, 384, [1, 3], [0, 1], device),
            branch3x3dbl_3b: conv(384, 384, [3, 1], [1, 0], device),
            branch_pool: conv(cin, 192, [1, 1], [0, 0], device),
            max_pool,
        }
    }

    /// The four branches (two of them split in two) concatenated on channels.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b3 = self.branch3x3_1.forward(x.clone());
        let b3 = Tensor::cat(vec![self.branch3x3_2a.forward(b3.clone()), self.branch3x3_2b.forward(b3)], 1);
        let bd = self.branch3x3dbl_2.forward(self.branch3x3dbl_1.forward(x.clone()));
        let bd = Tensor::cat(vec![self.branch3x3dbl_3a.forward(bd.clone()), self.branch3x3dbl_3b.forward(bd)], 1);
        let pooled = if self.max_pool { max_pool_3x3(x, 1, 1) } else { avg_pool_3x3(x) };
        Tensor::cat(vec![b1, b3, bd, self.branch_pool.forward(pooled)], 1)
    }
}

//! Parameter initialisation helpers shared by every model (the reference inits of DiT & co).

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, PaddingConfig2d};
use burn::prelude::*;

/// How a weight matrix is initialised; biases are always zero.
#[derive(Config, Debug, Copy, PartialEq)]
pub enum WeightInit {
    /// Xavier (Glorot) uniform, as `torch.nn.init.xavier_uniform_` (DiT's `_basic_init`).
    XavierUniform,
    /// Normal with mean 0 and the given standard deviation.
    Normal(f64),
    /// All zeros (adaLN-Zero modulations and final layers).
    Zeros,
}

impl WeightInit {
    fn initializer(self, fan_in: usize, fan_out: usize) -> Initializer {
        match self {
            // Explicit bound so the fans are PyTorch's whatever the tensor layout.
            WeightInit::XavierUniform => {
                let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
                Initializer::Uniform { min: -a, max: a }
            }
            WeightInit::Normal(std) => Initializer::Normal { mean: 0.0, std },
            WeightInit::Zeros => Initializer::Zeros,
        }
    }
}

/// A [`Linear`] `d_input -> d_output` with weight init `init` and a zero bias (if `bias`).
///
/// The weight is stored `[d_input, d_output]` (Burn's layout, the transpose of PyTorch's).
pub fn linear(d_input: usize, d_output: usize, bias: bool, init: WeightInit, device: &Device) -> Linear {
    Linear {
        weight: init.initializer(d_input, d_output).init([d_input, d_output], device),
        bias: bias.then(|| Initializer::Zeros.init([d_output], device)),
    }
}

/// A 2-D convolution whose weight is initialised like a linear layer over its flattened
/// `[C_out, C_in/groups * k * k]` view (DiT's patch-embedding init), with a zero bias.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    channels: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    groups: usize,
    bias: bool,
    init: WeightInit,
    device: &Device,
) -> Conv2d {
    let fan_in = channels[0] / groups * kernel[0] * kernel[1];
    let mut conv = Conv2dConfig::new(channels, kernel)
        .with_stride(stride)
        .with_padding(PaddingConfig2d::Explicit(padding[0], padding[1], padding[0], padding[1]))
        .with_groups(groups)
        .with_bias(false)
        .with_initializer(init.initializer(fan_in, channels[1]))
        .init(device);
    conv.bias = bias.then(|| Initializer::Zeros.init([channels[1]], device));
    conv
}

/// A parameter that is persisted and counted but never trained (e.g. DiT's fixed `pos_embed`).
pub fn frozen_param<const D: usize>(value: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(value).set_require_grad(false)
}

/// Overwrites every float parameter with seeded uniform values in `[-0.5, 0.5)`: a freshly
/// built DiT-style model outputs zeros (zero-initialised adaLN gates and final layer), which
/// hides wiring mistakes in tests. Use as `model.map(&mut Randomize::seeded(seed))`.
pub struct Randomize(rand::rngs::StdRng);

impl Randomize {
    /// A mapper drawing from `StdRng::seed_from_u64(seed)`.
    pub fn seeded(seed: u64) -> Self {
        Self(<rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed))
    }
}

impl burn::module::ModuleMapper for Randomize {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        use rand::Rng;
        let rng = &mut self.0;
        p.map(|t| {
            let shape = t.shape();
            let v: Vec<f32> = (0..shape.num_elements()).map(|_| rng.random_range(-0.5..0.5)).collect();
            let out = Tensor::from_data(TensorData::new(v, shape), (&t.device(), t.dtype()));
            if t.is_require_grad() { out.require_grad() } else { out }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xavier_bound_and_zero_bias() {
        let device = Device::flex();
        let l = linear(64, 256, true, WeightInit::XavierUniform, &device);
        assert_eq!(l.weight.dims(), [64, 256]);
        let bound = (6.0f32 / 320.0).sqrt();
        let w = l.weight.val().into_data().try_to_vec::<f32>().unwrap();
        assert!(w.iter().all(|v| v.abs() <= bound));
        assert!(w.iter().any(|v| v.abs() > bound * 0.9));
        let b = l.bias.unwrap().val().into_data().try_to_vec::<f32>().unwrap();
        assert!(b.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn conv_like_linear() {
        let device = Device::flex();
        let c = conv2d([4, 32], [2, 2], [2, 2], [0, 0], 1, true, WeightInit::XavierUniform, &device);
        assert_eq!(c.weight.dims(), [32, 4, 2, 2]);
        let bound = (6.0f32 / (16.0 + 32.0)).sqrt();
        let w = c.weight.val().into_data().try_to_vec::<f32>().unwrap();
        assert!(w.iter().all(|v| v.abs() <= bound));
    }
}

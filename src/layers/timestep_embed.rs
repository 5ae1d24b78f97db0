//! Timestep embedder: sinusoidal frequency embedding then a two-layer MLP.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::DType;

use crate::cpu;
use crate::error::{Result, ensure_config};
use crate::layers::activation::Activation;
use crate::layers::init::{WeightInit, linear};

/// Sinusoidal embedding of (possibly fractional) timesteps.
///
/// `freqs[i] = exp(-ln(max_period) * i / (half - downscale_freq_shift))`, `i < half = dim/2`;
/// the output is `[cos | sin]` when `cos_first` (official DiT, diffusers' `flip_sin_to_cos`),
/// else `[sin | cos]`; an odd `dim` gets one trailing zero column. Frequencies are computed
/// in f32 with PyTorch's operation order so large timesteps round identically. The embedding
/// is computed in f32 whatever the dtype of `t` and the device (as diffusers' `Timesteps`
/// does): in bf16, `sin(t f)` of a large `t` would be noise. The output is f32.
///
/// # Shapes
/// - `t`: `[B]` -> `[B, dim]`
pub fn timestep_embedding(
    t: Tensor<1>,
    dim: usize,
    max_period: f64,
    downscale_freq_shift: f64,
    cos_first: bool,
) -> Tensor<2> {
    let half = dim / 2;
    let device = t.device();
    let t = t.cast(DType::F32);
    let neg_log = -(max_period.ln()) as f32;
    let denom = (half as f64 - downscale_freq_shift) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (neg_log * i as f32 / denom).exp()).collect();
    let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), (&device, DType::F32));
    let args = t.unsqueeze_dim::<2>(1) * freqs.unsqueeze_dim::<2>(0);
    let (a, b) = if cos_first {
        (args.clone().cos(), args.sin())
    } else {
        (args.clone().sin(), args.cos())
    };
    let mut parts = vec![a, b];
    if dim % 2 == 1 {
        let [n, _] = parts[0].dims();
        parts.push(Tensor::zeros([n, 1], (&device, DType::F32)));
    }
    Tensor::cat(parts, 1)
}

/// Configuration of a [`TimestepEmbedder`].
#[derive(Config, Debug)]
pub struct TimestepEmbedderConfig {
    /// Output width.
    pub d_model: usize,
    /// Width of the sinusoidal embedding. Default: 256.
    #[config(default = 256)]
    pub frequency_embedding_size: usize,
    /// Longest period of the sinusoids. Default: 10000.
    #[config(default = 10000.0)]
    pub max_period: f64,
    /// diffusers' `downscale_freq_shift` (0 in the official DiT, 1 in diffusers' DiT). Default: 0.
    #[config(default = 0.0)]
    pub downscale_freq_shift: f64,
    /// Cosines first (official DiT). Default: true.
    #[config(default = true)]
    pub cos_first: bool,
    /// Activation between the two linears (SiLU in DiT, tanh-GELU in MicroDiT). Default: SiLU.
    #[config(default = "Activation::Silu")]
    pub activation: Activation,
    /// Std of the normal init of both linears (DiT: 0.02). Default: 0.02.
    #[config(default = 0.02)]
    pub init_std: f64,
}

impl TimestepEmbedderConfig {
    /// Initialise a [`TimestepEmbedder`].
    pub fn init(&self, device: &Device) -> Result<TimestepEmbedder> {
        ensure_config(self.d_model > 0 && self.frequency_embedding_size > 0, || {
            format!("timestep embedder sizes must be positive: {self:?}")
        })?;
        let init = WeightInit::Normal(self.init_std);
        Ok(TimestepEmbedder {
            linear_1: linear(self.frequency_embedding_size, self.d_model, true, init, device),
            linear_2: linear(self.d_model, self.d_model, true, init, device),
            frequency_embedding_size: self.frequency_embedding_size,
            max_period: self.max_period,
            downscale_freq_shift: self.downscale_freq_shift,
            cos_first: self.cos_first,
            activation: self.activation,
        })
    }
}

/// Maps scalar timesteps to vectors (official keys `t_embedder.mlp.0` / `mlp.2`).
#[derive(Module, Debug)]
pub struct TimestepEmbedder {
    /// `[freq, D]`.
    pub linear_1: Linear,
    /// `[D, D]`.
    pub linear_2: Linear,
    /// Width of the sinusoidal embedding.
    pub frequency_embedding_size: usize,
    /// Longest period.
    pub max_period: f64,
    /// Frequency denominator shift.
    pub downscale_freq_shift: f64,
    /// Cosines first.
    pub cos_first: bool,
    /// Hidden activation.
    #[module(skip)]
    pub activation: Activation,
}

impl TimestepEmbedder {
    /// # Shapes
    /// - `t`: `[B]` (float timesteps) -> `[B, D]`
    pub fn forward(&self, t: Tensor<1>) -> Tensor<2> {
        let f = timestep_embedding(
            t,
            self.frequency_embedding_size,
            self.max_period,
            self.downscale_freq_shift,
            self.cos_first,
        )
        .cast(self.linear_1.weight.val().dtype());
        cpu::linear(&self.linear_2, self.activation.forward(cpu::linear(&self.linear_1, f)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_values() {
        let device = Device::flex();
        let t = Tensor::<1>::from_floats([0.0, 3.0], &device);
        let e = timestep_embedding(t, 4, 10000.0, 0.0, true);
        let v = e.into_data().try_to_vec::<f32>().unwrap();
        // freqs = [1, 1/100]; t=3 -> [cos 3, cos .03, sin 3, sin .03]
        let exp = [1.0, 1.0, 0.0, 0.0, 3f32.cos(), 0.03f32.cos(), 3f32.sin(), 0.03f32.sin()];
        for (a, b) in v.iter().zip(exp) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
        let odd = timestep_embedding(Tensor::<1>::from_floats([5.0], &device), 5, 10000.0, 0.0, false);
        assert_eq!(odd.dims(), [1, 5]);
    }

    #[test]
    fn embedder_shape() {
        let device = Device::flex();
        let emb = TimestepEmbedderConfig::new(32).init(&device).unwrap();
        let out = emb.forward(Tensor::<1>::from_floats([1.0, 500.0, 999.0], &device));
        assert_eq!(out.dims(), [3, 32]);
    }
}

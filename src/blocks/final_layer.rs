//! The final layer of every model: a LayerNorm, adaLN shift/scale regressed from the
//! conditioning vector, then a projection to the output (patch pixels of tokens, or output
//! channels of a feature map). Its options cover every model of the crate:
//!
//! ```text
//! shift, scale = AdaLnModulation(c)                          (2 chunks, zero-initialised)
//! out = proj(norm(x) * (1 + scale) + shift)
//! ```
//!
//! | model | norm | activation in the modulation | projection |
//! |---|---|---|---|
//! | DiT, MM-DiT | parameter-free LayerNorm, eps 1e-6 | SiLU | zero `Linear(D, p^2 C_out)` |
//! | MicroDiT | LayerNorm with a weight, no bias (`norm_final`) | tanh-GELU | zero `Linear(D, p^2 C_out)` |
//! | U-DiT | parameter-free channel LayerNorm of the map | SiLU | zero 3x3 conv `D -> C_out` (`out_proj`) |

use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;

use crate::cpu;
use crate::error::{Error, Result, ensure_config, ensure_dims};
use crate::layers::activation::Activation;
use crate::layers::adaln::AdaLnModulation;
use crate::layers::dwconv_ffn::same_conv2d;
use crate::layers::init::{WeightInit, linear};
use crate::layers::norm::{apply_layer_norm, layer_norm, modulate};

/// What the final layer projects with.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum FinalProjectionKind {
    /// A linear map per token, `D -> out_features` (`p^2 C_out` for patch tokens).
    Linear,
    /// A 3x3 "same" convolution of a feature map, `D -> out_features` channels (U-DiT).
    Conv3x3,
}

/// The projection of a [`FinalLayer`] (zero-initialised).
#[derive(Module, Debug)]
pub enum FinalProjection {
    /// `[D, out_features]`.
    Linear(Linear),
    /// `[out_features, D, 3, 3]`.
    Conv(Conv2d),
}

/// Configuration of a [`FinalLayer`].
#[derive(Config, Debug)]
pub struct FinalLayerConfig {
    /// Width `D` of the tokens (or channels of the map).
    pub d_model: usize,
    /// Output features: `p^2 C_out` for a linear projection of patch tokens, `C_out` for a
    /// convolution.
    pub out_features: usize,
    /// Width of the conditioning vector; `None`: `d_model`. Default: None.
    #[config(default = "None")]
    pub d_cond: Option<usize>,
    /// LayerNorm with a learned weight and no bias (MicroDiT's `norm_final`); otherwise
    /// parameter-free. Default: false.
    #[config(default = false)]
    pub norm_weight: bool,
    /// LayerNorm epsilon. Default: 1e-6.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// Activation in front of the modulation's linear. Default: SiLU.
    #[config(default = "Activation::Silu")]
    pub activation: Activation,
    /// Projection. Default: linear.
    #[config(default = "FinalProjectionKind::Linear")]
    pub projection: FinalProjectionKind,
}

impl FinalLayerConfig {
    /// Initialise a [`FinalLayer`] with zero modulation and zero projection (so a fresh
    /// model outputs zeros, as every reference initialises it).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero width.
    pub fn init(&self, device: &Device) -> Result<FinalLayer> {
        let d = self.d_model;
        let d_cond = self.d_cond.unwrap_or(d);
        ensure_config(d > 0 && d_cond > 0 && self.out_features > 0, || format!("final layer sizes must be positive: {self:?}"))?;
        let proj = match self.projection {
            FinalProjectionKind::Linear => {
                FinalProjection::Linear(linear(d, self.out_features, true, WeightInit::Zeros, device))
            }
            FinalProjectionKind::Conv3x3 => FinalProjection::Conv(same_conv2d([d, self.out_features], 3, 1, true, true, device)),
        };
        Ok(FinalLayer {
            norm_final: self
                .norm_weight
                .then(|| LayerNormConfig::new(d).with_epsilon(self.norm_eps).with_bias(false).init(device)),
            ada_ln_modulation: AdaLnModulation::new(d_cond, d, 2, true, device).with_activation(self.activation),
            linear: proj,
            norm_eps: self.norm_eps,
        })
    }
}

/// The final layer (keys `final_layer.{norm_final, ada_ln_modulation.linear, linear}`; the
/// checkpoint key maps in `weights` give each model's names). See the [module docs](self).
#[derive(Module, Debug)]
pub struct FinalLayer {
    /// LayerNorm with a weight (MicroDiT); `None`: parameter-free.
    pub norm_final: Option<LayerNorm>,
    /// Regresses (shift, scale), zero-initialised.
    pub ada_ln_modulation: AdaLnModulation,
    /// Zero-initialised projection.
    pub linear: FinalProjection,
    /// LayerNorm epsilon.
    pub norm_eps: f64,
}

impl FinalLayer {
    /// Width `D`.
    pub fn d_model(&self) -> usize {
        match &self.linear {
            FinalProjection::Linear(l) => l.weight.dims()[0],
            FinalProjection::Conv(c) => c.weight.dims()[1],
        }
    }

    fn norm<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match &self.norm_final {
            Some(n) => apply_layer_norm(n, x, self.norm_eps),
            None => layer_norm(x, self.norm_eps),
        }
    }

    fn shift_scale(&self, c: Tensor<2>, batch: usize) -> Result<[Tensor<2>; 2]> {
        ensure_dims("c", c.dims(), [Some(batch), Some(self.ada_ln_modulation.linear.weight.dims()[0])])?;
        let [shift, scale]: [Tensor<2>; 2] = self.ada_ln_modulation.forward(c).try_into().expect("2 chunks");
        Ok([shift, scale])
    }

    /// Tokens to patch pixels.
    ///
    /// # Shapes
    /// - `x`: `[B, N, D]`, `c`: `[B, D_cond]` -> `[B, N, out_features]`
    ///
    /// # Errors
    /// [`Error::Shape`] for mismatched widths, [`Error::InvalidArgument`] for a layer with a
    /// convolution (it needs a feature map: [`forward_map`](Self::forward_map)).
    pub fn forward(&self, x: Tensor<3>, c: Tensor<2>) -> Result<Tensor<3>> {
        ensure_dims("x", x.dims(), [None, None, Some(self.d_model())])?;
        let [shift, scale] = self.shift_scale(c, x.dims()[0])?;
        let h = modulate(self.norm(x), shift, scale);
        match &self.linear {
            FinalProjection::Linear(l) => Ok(cpu::linear(l, h)),
            FinalProjection::Conv(_) => {
                Err(Error::InvalidArgument("a final layer with a convolution runs on feature maps (forward_map)".into()))
            }
        }
    }

    /// A feature map to output channels (the norm runs over the channel axis).
    ///
    /// # Shapes
    /// - `x`: `[B, D, H, W]`, `c`: `[B, D_cond]` -> `[B, out_features, H, W]`
    ///
    /// # Errors
    /// [`Error::Shape`] for mismatched widths.
    pub fn forward_map(&self, x: Tensor<4>, c: Tensor<2>) -> Result<Tensor<4>> {
        ensure_dims("x", x.dims(), [None, Some(self.d_model()), None, None])?;
        let [shift, scale] = self.shift_scale(c, x.dims()[0])?;
        let h = modulate(self.norm(x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2]), shift, scale);
        Ok(match &self.linear {
            FinalProjection::Conv(conv) => conv.forward(h),
            FinalProjection::Linear(l) => l.forward(h.permute([0, 2, 3, 1])).permute([0, 3, 1, 2]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    #[test]
    fn zero_init_outputs_zero_in_both_forms() {
        let device = Device::flex();
        let fin = FinalLayerConfig::new(8, 12).init(&device).unwrap();
        let out = fin.forward(crate::test_util::randn([2, 5, 8], 1, &device), Tensor::ones([2, 8], &device)).unwrap();
        assert_eq!(out.dims(), [2, 5, 12]);
        assert!(out.equal_elem(0.0).all().into_scalar::<bool>());
        let conv = FinalLayerConfig::new(8, 3).with_projection(FinalProjectionKind::Conv3x3).init(&device).unwrap();
        let x = crate::test_util::randn([1, 8, 4, 6], 2, &device);
        let out = conv.forward_map(x.clone(), Tensor::ones([1, 8], &device)).unwrap();
        assert_eq!(out.dims(), [1, 3, 4, 6]);
        assert!(conv.forward(Tensor::zeros([1, 4, 8], &device), Tensor::ones([1, 8], &device)).is_err());
        assert!(fin.forward(Tensor::zeros([1, 4, 7], &device), Tensor::ones([1, 8], &device)).is_err());
    }

    #[test]
    fn map_form_of_a_linear_layer_equals_its_token_form() {
        let device = Device::flex();
        let mut fin = FinalLayerConfig::new(8, 3).with_norm_weight(true).with_d_cond(Some(5)).init(&device).unwrap();
        fin.ada_ln_modulation.linear.weight = burn::module::Param::from_tensor(crate::test_util::randn([5, 16], 3, &device));
        if let FinalProjection::Linear(l) = &mut fin.linear {
            l.weight = burn::module::Param::from_tensor(crate::test_util::randn([8, 3], 4, &device));
        }
        let x = crate::test_util::randn([2, 8, 3, 4], 5, &device);
        let c = crate::test_util::randn([2, 5], 6, &device);
        let map = fin.forward_map(x.clone(), c.clone()).unwrap();
        let tokens = fin.forward(x.flatten::<3>(2, 3).swap_dims(1, 2), c).unwrap();
        let expected = tokens.swap_dims(1, 2).reshape([2, 3, 3, 4]);
        map.into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
    }
}

//! SwiGLU feed-forward network (MicroDiT's `FeedForward`: keys `w1`, `w2`, `w3`), with the
//! LLaMA-style hidden width rounding.

use burn::nn::Linear;
use burn::prelude::*;

use crate::error::{Result, ensure_config};
use crate::layers::init::{WeightInit, linear};

/// `multiple_of * ceil(width / multiple_of)`: round `width` up to a multiple of `multiple_of`.
pub fn round_up(width: usize, multiple_of: usize) -> usize {
    multiple_of * width.div_ceil(multiple_of)
}

/// The SwiGLU hidden width the reference derives from a nominal hidden width `h`:
/// `int(2 * h / 3)` rounded up to a multiple of `multiple_of` (so the three matrices hold about
/// as many parameters as a two-matrix MLP of width `h`).
pub fn swiglu_hidden(h: usize, multiple_of: usize) -> usize {
    round_up((2.0 * h as f64 / 3.0) as usize, multiple_of)
}

/// Configuration of a [`SwiGlu`].
#[derive(Config, Debug)]
pub struct SwiGluConfig {
    /// Input and output width.
    pub d_model: usize,
    /// Nominal hidden width `h` (e.g. `int(d_model * mlp_ratio)`); the actual hidden width is
    /// [`swiglu_hidden`]`(h, multiple_of)`.
    pub d_hidden: usize,
    /// Round the hidden width up to a multiple of this. Default: 1.
    #[config(default = 1)]
    pub multiple_of: usize,
    /// Biases on the three linears. Default: false.
    #[config(default = false)]
    pub bias: bool,
    /// Standard deviation of the `w1` weights (normal init). Default: 0.02.
    #[config(default = 0.02)]
    pub init_std_in: f64,
    /// Standard deviation of the `w2` and `w3` weights (normal init; MicroDiT uses a
    /// depth-dependent value). Default: 0.02.
    #[config(default = 0.02)]
    pub init_std_out: f64,
}

impl SwiGluConfig {
    /// The actual hidden width.
    pub fn hidden(&self) -> usize {
        swiglu_hidden(self.d_hidden, self.multiple_of.max(1))
    }

    /// Initialise a [`SwiGlu`] (normal weights as the reference's `custom_init`, zero biases).
    pub fn init(&self, device: &Device) -> Result<SwiGlu> {
        ensure_config(self.d_model > 0 && self.multiple_of > 0, || {
            format!("SwiGLU width and multiple_of must be positive: {self:?}")
        })?;
        let h = self.hidden();
        ensure_config(h > 0, || format!("SwiGLU hidden width is zero: {self:?}"))?;
        let (d, b) = (self.d_model, self.bias);
        Ok(SwiGlu {
            w1: linear(d, h, b, WeightInit::Normal(self.init_std_in), device),
            w2: linear(d, h, b, WeightInit::Normal(self.init_std_out), device),
            w3: linear(h, d, b, WeightInit::Normal(self.init_std_out), device),
        })
    }
}

/// `w3(silu(w1 x) * w2 x)`.
#[derive(Module, Debug)]
pub struct SwiGlu {
    /// Gate projection `[D, hidden]`.
    pub w1: Linear,
    /// Value projection `[D, hidden]`.
    pub w2: Linear,
    /// Output projection `[hidden, D]`.
    pub w3: Linear,
}

impl SwiGlu {
    /// Hidden width.
    pub fn hidden(&self) -> usize {
        self.w1.weight.dims()[1]
    }

    /// # Shapes
    /// - `x`: `[..., D]` -> `[..., D]`
    pub fn forward<const N: usize>(&self, x: Tensor<N>) -> Tensor<N> {
        use crate::cpu::linear;
        linear(&self.w3, crate::cpu::silu_mul(linear(&self.w1, x.clone()), linear(&self.w2, x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    #[test]
    fn hidden_width_rounding() {
        // the reference: int(2 * h / 3) rounded up to multiple_of
        assert_eq!(swiglu_hidden(16, 16), 16); // 10 -> 16
        assert_eq!(swiglu_hidden(4096, 256), 2816); // 2730 -> 2816 (LLaMA-7B-like)
        assert_eq!(swiglu_hidden(128, 16), 96); // 85 -> 96
        assert_eq!(swiglu_hidden(96, 1), 64);
        assert_eq!(round_up(53, 16), 64);
        assert_eq!(round_up(64, 16), 64);
        assert!(SwiGluConfig::new(8, 1).init(&Device::flex()).is_err()); // int(2/3) = 0
        assert!(SwiGluConfig::new(8, 8).with_multiple_of(0).init(&Device::flex()).is_err());
    }

    #[test]
    fn matches_definition() {
        let device = Device::flex();
        let m = SwiGluConfig::new(4, 12).with_multiple_of(4).init(&device).unwrap();
        assert_eq!(m.hidden(), 8);
        let x = Tensor::<2>::from_floats([[0.5, -1.0, 2.0, 0.1]], &device);
        let a = x.clone().matmul(m.w1.weight.val());
        let b = x.clone().matmul(m.w2.weight.val());
        let expected = (a.clone() * burn::tensor::activation::sigmoid(a) * b).matmul(m.w3.weight.val());
        m.forward(x).into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-6));
    }
}

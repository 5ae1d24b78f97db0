//! The one trait samplers and training objectives need from a model, and its masked variant
//! for models that can run on a subset of their patch tokens.

use burn::prelude::*;
use rand::Rng;

use crate::contracts::mask::TokenMask;
use crate::error::Result;

/// A network that maps a noisy sample, its timesteps and a conditioning to a prediction
/// (noise, velocity, x0, ... as the objective defines). Every model of the crate implements
/// it; users implement it for their own models to use the crate's samplers.
pub trait Denoiser {
    /// The conditioning the model takes (class labels, text embeddings, ...).
    type Cond: Clone;

    /// # Shapes
    /// - `x`: `[B, C, H, W]`, `t`: `[B]` timesteps in the model's own scale
    /// - output: `[B, C_out, H, W]`
    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>>;
}

/// A shared reference denoises like the model itself, so guidance wrappers can
/// borrow a model.
impl<M: Denoiser + ?Sized> Denoiser for &M {
    type Cond = M::Cond;

    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
        (**self).denoise(x, t, cond)
    }
}

/// A [`Denoiser`] that can predict from a subset of its patch tokens (masked training).
pub trait MaskedDenoiser: Denoiser {
    /// Patch size `p`: token `i` covers the `i`-th `p x p` pixel patch in row-major order.
    fn patch_size(&self) -> usize;

    /// Tokens per sample, `N`.
    fn num_tokens(&self) -> usize;

    /// Mask ratio used in training; 0 trains unmasked.
    fn train_mask_ratio(&self) -> f64;

    /// Prediction from the kept tokens of `mask` only; removed patches may hold anything.
    ///
    /// # Shapes
    /// - as [`Denoiser::denoise`]; `mask` over `B` samples and `N` tokens
    fn denoise_masked(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond, mask: &TokenMask) -> Result<Tensor<4>>;

    /// A random training mask at [`train_mask_ratio`](Self::train_mask_ratio) for `batch`
    /// samples, `None` when the ratio is 0.
    fn draw_train_mask<R: Rng + ?Sized>(&self, batch: usize, rng: &mut R, device: &Device) -> Result<Option<TokenMask>> {
        match self.train_mask_ratio() {
            0.0 => Ok(None),
            r => Ok(Some(TokenMask::random(batch, self.num_tokens(), r, rng, device)?)),
        }
    }
}

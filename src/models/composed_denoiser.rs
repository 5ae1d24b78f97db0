//! The contracts of the [`ComposedDiT`] (and so of its presets DiT and U-DiT): [`Denoiser`]
//! (class labels, or nothing for an unconditional model: `Option<Tensor<1, Int>>`), [`NullConditioned`] and
//! [`MaskedDenoiser`]. Models conditioned on a pooled vector or captions are called through
//! [`ComposedDiT::forward_with`].

use burn::prelude::*;

use crate::contracts::{Denoiser, MaskedDenoiser, NullConditioned, TokenMask, check_null_class};
use crate::error::Result;
use crate::models::ComposedDiT;
use crate::models::composed::labels;

impl Denoiser for ComposedDiT {
    /// Class labels (`None` for unconditional models); the null class is `num_classes`.
    type Cond = Option<Tensor<1, Int>>;

    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
        self.forward(x, t, cond.clone())
    }
}

/// The null class must be `num_classes`, the label table's extra row.
impl NullConditioned for ComposedDiT {
    fn check_null(&self, null: &usize) -> Result<()> {
        let e = self.cond_embedders[0].labels();
        check_null_class(*null, e.map_or(0, |e| e.num_classes), e.map_or(0, |e| e.num_rows()))
    }
}

impl MaskedDenoiser for ComposedDiT {
    fn patch_size(&self) -> usize {
        self.patch_size
    }

    fn num_tokens(&self) -> usize {
        ComposedDiT::num_tokens(self)
    }

    fn train_mask_ratio(&self) -> f64 {
        self.train_mask_ratio
    }

    fn denoise_masked(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond, mask: &TokenMask) -> Result<Tensor<4>> {
        self.forward_with(x, t, labels(cond), None, Some(mask))
    }
}

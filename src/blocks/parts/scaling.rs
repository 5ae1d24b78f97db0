//! Layer-wise scaling of the block widths (OpenELM; MicroDiT): block `i` of `n` gets the
//! attention-width multiplier `qkv[i]` and the FFN-width multiplier `ffn[i]`, linearly spaced
//! between the given ends.
//!
//! ```text
//! r_i = start + (end - start) * i / (n - 1)
//! attention width_i = D                                    if r_i = 1
//!                   = int(D r_i) rounded up to 2 * head width   otherwise (heads = width / head width)
//! FFN nominal width_i = int(D * ffn_i)
//! ```

use burn::prelude::*;

use crate::error::{Result, ensure_config};
use crate::layers::swiglu::round_up;

/// Width of the attention space at qkv multiplier `ratio`: `dim` itself when `ratio == 1`,
/// otherwise `int(dim * ratio)` rounded up to a multiple of `2 * head_dim` (MicroDiT's
/// reference).
pub fn qkv_hidden(dim: usize, head_dim: usize, ratio: f64) -> usize {
    if ratio == 1.0 { dim } else { round_up((dim as f64 * ratio) as usize, 2 * head_dim) }
}

/// Linearly spaced multipliers of the attention and FFN widths over the blocks of a stage.
#[derive(Config, Debug, PartialEq)]
pub struct LayerwiseScaling {
    /// Attention-width multipliers of the first and last block.
    pub qkv: [f64; 2],
    /// FFN-width multipliers of the first and last block (replace the block's `mlp_ratio`).
    pub ffn: [f64; 2],
}

impl LayerwiseScaling {
    /// Checks the multipliers are positive and finite.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] otherwise.
    pub fn validate(&self) -> Result<()> {
        let all = self.qkv.iter().chain(&self.ffn);
        ensure_config(all.clone().all(|r| r.is_finite() && *r > 0.0), || format!("width multipliers must be positive: {self:?}"))
    }

    fn at(ends: [f64; 2], i: usize, n: usize) -> f64 {
        if n <= 1 { ends[0] } else { ends[0] + (ends[1] - ends[0]) * i as f64 / (n - 1) as f64 }
    }

    /// `(attention width, heads, FFN ratio)` of block `i` of `n` at width `d` with
    /// `head_dim`-wide heads.
    pub fn block(&self, i: usize, n: usize, d: usize, head_dim: usize) -> (usize, usize, f64) {
        let hidden = qkv_hidden(d, head_dim, Self::at(self.qkv, i, n));
        (hidden, hidden / head_dim.max(1), Self::at(self.ffn, i, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layerwise_widths() {
        // qkv: dim itself at ratio 1, else int(dim * r) rounded up to 2 * head_dim
        assert_eq!(qkv_hidden(32, 8, 1.0), 32);
        assert_eq!(qkv_hidden(32, 8, 0.5), 16);
        assert_eq!(qkv_hidden(32, 8, 2.0 / 3.0), 32); // 21 -> 32
        assert_eq!(qkv_hidden(1024, 64, 0.5), 512);
        assert_eq!(qkv_hidden(1024, 64, 0.5 + 0.5 / 27.0), 640); // 530 -> 640
        let s = LayerwiseScaling::new([0.5, 1.0], [0.5, 4.0]);
        assert_eq!(s.block(0, 3, 32, 8), (16, 2, 0.5));
        assert_eq!(s.block(2, 3, 32, 8), (32, 4, 4.0));
    }
}

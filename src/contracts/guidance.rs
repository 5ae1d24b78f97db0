//! The guidance combination shared by every guided prediction (Ho & Salimans 2022,
//! arXiv:2207.12598):
//!
//! `out = uncond + scale * (cond - uncond)`
//!
//! on the guided channels ([`GuidedChannels`]); the other channels come from the conditional
//! prediction.

use burn::prelude::*;

use crate::error::{Error, Result};

/// Which output channels guidance applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuidedChannels {
    /// The first `n` channels (official DiT: 3); the rest come from the conditional half.
    First(usize),
    /// Every output channel.
    All,
}

impl Default for GuidedChannels {
    /// `First(3)`, as the official DiT `forward_with_cfg`.
    fn default() -> Self {
        GuidedChannels::First(3)
    }
}

/// Combines a conditional and an unconditional prediction:
/// `uncond + scale * (cond - uncond)` on the guided channels, `cond` on the others.
///
/// # Shapes
/// - `cond`, `uncond`: `[B, C, H, W]` -> `[B, C, H, W]`
///
/// # Errors
/// Mismatched shapes, `First(n)` with `n` zero or above `C`, or a non-finite scale.
pub fn guide(cond: Tensor<4>, uncond: Tensor<4>, scale: f64, channels: GuidedChannels) -> Result<Tensor<4>> {
    if cond.dims() != uncond.dims() {
        return Err(Error::Shape {
            name: "unconditional prediction".into(),
            expected: format!("{:?} (the conditional prediction's shape)", cond.dims()),
            got: format!("{:?}", uncond.dims()),
        });
    }
    check_scale(scale)?;
    let c = cond.dims()[1];
    let n = guided_count(channels, c)?;
    if n == c {
        return Ok(uncond.clone() + (cond - uncond) * scale);
    }
    let guided = {
        let (gc, gu) = (cond.clone().narrow(1, 0, n), uncond.narrow(1, 0, n));
        gu.clone() + (gc - gu) * scale
    };
    Ok(Tensor::cat(vec![guided, cond.narrow(1, n, c - n)], 1))
}

pub(crate) fn check_scale(scale: f64) -> Result<()> {
    if scale.is_finite() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("guidance scale must be finite, got {scale}")))
    }
}

fn guided_count(channels: GuidedChannels, c: usize) -> Result<usize> {
    match channels {
        GuidedChannels::All => Ok(c),
        GuidedChannels::First(n) if n >= 1 && n <= c => Ok(n),
        GuidedChannels::First(n) => Err(Error::InvalidArgument(format!(
            "guided channels First({n}) must be in 1..={c} (the model's output channels)"
        ))),
    }
}

//! The official DiT / U-DiT `forward_with_cfg` semantics, kept for parity with the reference
//! implementations (their fixtures pin it down). New code guides through the sampling module's
//! guidance wrapper.

use burn::prelude::*;

use crate::contracts::guidance::check_scale;
use crate::contracts::{GuidedChannels, guide};
use crate::error::{Error, Result};

/// The official DiT/U-DiT `forward_with_cfg` around any class-conditional forward: `x` holds
/// the conditional half then the null-label half of the batch; `forward` runs on the first
/// half's latents twice (so both halves see the same `x`), the first `guided_channels` output
/// channels are guided (`uncond + scale * (cond - uncond)`), and the guided half is returned
/// for both halves while the remaining channels (e.g. learned variances) pass through per half.
///
/// # Shapes
/// - `x`: `[2B, C, H, W]`; `forward`: `[2B, C, H, W] -> [2B, C_out, H, W]`; output as `forward`
///
/// # Errors
/// An odd batch, `guided_channels` outside `1..=C_out`, a non-finite scale, or `forward`'s error.
pub fn official_forward_with_cfg(
    x: Tensor<4>,
    cfg_scale: f64,
    guided_channels: usize,
    forward: impl FnOnce(Tensor<4>) -> Result<Tensor<4>>,
) -> Result<Tensor<4>> {
    let b2 = x.dims()[0];
    if b2 % 2 != 0 || b2 == 0 {
        return Err(Error::Shape {
            name: "x".into(),
            expected: "an even batch (conditional half, then null-label half)".into(),
            got: format!("{:?}", x.dims()),
        });
    }
    check_scale(cfg_scale)?;
    let half = x.narrow(0, 0, b2 / 2);
    let out = forward(Tensor::cat(vec![half.clone(), half], 0))?;
    let c = out.dims()[1];
    if guided_channels == 0 || guided_channels > c {
        return Err(Error::InvalidArgument(format!(
            "guided_channels {guided_channels} must be in 1..={c} (the output channels)"
        )));
    }
    let (cond, uncond) = (out.clone().narrow(0, 0, b2 / 2), out.narrow(0, b2 / 2, b2 / 2));
    let first = guide(cond, uncond.clone(), cfg_scale, GuidedChannels::First(guided_channels))?;
    let second = Tensor::cat(
        vec![first.clone().narrow(1, 0, guided_channels), uncond.narrow(1, guided_channels, c - guided_channels)],
        1,
    );
    Ok(Tensor::cat(vec![first, second], 0))
}

//! Cosine-similarity self-attention as a block part (U-DiT's `attn_type='v2'` without the
//! token downsampling): per-head L2-normalised queries and keys, a learned per-head
//! log-temperature `tau` (initialised to `ln 10`, clamped at `ln 100`).
//!
//! ```text
//! q, k, v = split_heads(qkv(x));   out = proj(softmax(exp(min(tau, ln 100)) * cos(q, k)) v)
//! ```

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;

use crate::cpu;
use crate::error::{Result, ensure_config, ensure_dims};
use crate::layers::attention::{merge_heads, split_heads};
use crate::layers::cosine_attention::{LOGIT_SCALE_INIT, cosine_attention};
use crate::layers::init::{WeightInit, linear};

/// Cosine-similarity multi-head self-attention (keys `qkv`, `proj`, `logit_scale`).
#[derive(Module, Debug)]
pub struct CosineAttention {
    /// `[D, 3 hidden]`, output ordered `(q, k, v)` then heads.
    pub qkv: Linear,
    /// `[hidden, D]`.
    pub proj: Linear,
    /// Per-head log-temperature `[H]`.
    pub logit_scale: Param<Tensor<1>>,
    /// Heads.
    pub n_heads: usize,
}

impl CosineAttention {
    /// `D -> hidden (n_heads heads) -> D`, Xavier-uniform linears, `tau = ln 10`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] when `hidden` is not a positive multiple of the heads.
    pub fn new(d_model: usize, hidden: usize, n_heads: usize, device: &Device) -> Result<Self> {
        ensure_config(n_heads > 0 && hidden > 0 && hidden.is_multiple_of(n_heads), || {
            format!("cosine attention width {hidden} must be a positive multiple of its {n_heads} heads")
        })?;
        Ok(Self {
            qkv: linear(d_model, 3 * hidden, true, WeightInit::XavierUniform, device),
            proj: linear(hidden, d_model, true, WeightInit::XavierUniform, device),
            logit_scale: Param::from_tensor(Tensor::full([n_heads], LOGIT_SCALE_INIT, device)),
            n_heads,
        })
    }

    /// # Shapes
    /// - `x`: `[B, N, D]` -> `[B, N, D]`
    ///
    /// # Errors
    /// [`crate::Error::Shape`] for a width other than `D`.
    pub fn forward(&self, x: Tensor<3>) -> Result<Tensor<3>> {
        ensure_dims("x", x.dims(), [None, None, Some(self.qkv.weight.dims()[0])])?;
        let h = self.n_heads;
        let mut it = cpu::linear(&self.qkv, x).chunk(3, 2).into_iter().map(|t| split_heads(t, h));
        let (q, k, v) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        Ok(cpu::linear(&self.proj, merge_heads(cosine_attention(q, k, v, self.logit_scale.val()))))
    }
}

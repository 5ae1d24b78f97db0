//! The DiT transformer block in the four conditioning designs the DiT paper compares.

use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;

use crate::error::{Result, ensure_config};
use crate::layers::adaln::AdaLnModulation;
use crate::layers::attention::{Attention, AttentionConfig, CrossAttention, CrossAttentionConfig};
use crate::layers::mlp::{Mlp, MlpConfig};
use crate::layers::norm::{gated_residual, layer_norm, modulate};

/// Epsilon of every LayerNorm in DiT.
pub const DIT_NORM_EPS: f64 = 1e-6;

/// How a block is conditioned on the timestep/class (DiT paper, Sec. 3.2).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// adaLN-Zero: adaptive LayerNorm shift/scale plus zero-initialised residual gates
    /// (the paper's best design and the official model).
    AdaLnZero,
    /// adaLN: adaptive LayerNorm shift/scale, no gates, no zero init.
    AdaLn,
    /// Cross-attention over the conditioning tokens `[t_emb, y_emb]` after self-attention.
    CrossAttention,
    /// In-context: conditioning tokens are appended to the sequence (handled by the model);
    /// the block is a plain pre-norm ViT block.
    InContext,
}

impl BlockKind {
    /// Number of vectors the adaLN modulation regresses (0 for the non-adaptive designs).
    pub fn modulation_chunks(self) -> usize {
        match self {
            BlockKind::AdaLnZero => 6,
            BlockKind::AdaLn => 4,
            BlockKind::CrossAttention | BlockKind::InContext => 0,
        }
    }
}

/// Configuration of a [`DiTBlock`].
#[derive(Config, Debug)]
pub struct DiTBlockConfig {
    /// Width `D`.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// MLP hidden width is `int(D * mlp_ratio)`. Default: 4.0.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Conditioning design. Default: adaLN-Zero.
    #[config(default = "BlockKind::AdaLnZero")]
    pub kind: BlockKind,
}

impl DiTBlockConfig {
    /// MLP hidden width, `int(D * mlp_ratio)` as the official code.
    pub fn mlp_hidden(&self) -> usize {
        (self.d_model as f64 * self.mlp_ratio) as usize
    }

    /// Initialise a [`DiTBlock`] (official init: Xavier linears, zero adaLN-Zero modulation).
    pub fn init(&self, device: &Device) -> Result<DiTBlock> {
        let d = self.d_model;
        ensure_config(self.mlp_ratio > 0.0 && self.mlp_hidden() > 0, || {
            format!("mlp_ratio must give a positive hidden width, got {}", self.mlp_ratio)
        })?;
        let affine_ln = || LayerNormConfig::new(d).with_epsilon(DIT_NORM_EPS).init(device);
        let adaptive = self.kind.modulation_chunks() > 0;
        Ok(DiTBlock {
            attn: AttentionConfig::new(d, self.n_heads).init(device)?,
            mlp: MlpConfig::new(d, self.mlp_hidden()).init(device)?,
            ada_ln_modulation: adaptive.then(|| {
                AdaLnModulation::new(
                    d,
                    d,
                    self.kind.modulation_chunks(),
                    self.kind == BlockKind::AdaLnZero,
                    device,
                )
            }),
            norm1: (!adaptive).then(affine_ln),
            norm2: (!adaptive).then(affine_ln),
            norm_cross: (self.kind == BlockKind::CrossAttention).then(affine_ln),
            cross_attn: match self.kind {
                BlockKind::CrossAttention => {
                    Some(CrossAttentionConfig::new(d, d, self.n_heads).init(device)?)
                }
                _ => None,
            },
            kind: self.kind,
        })
    }
}

/// A DiT block: self-attention and MLP, conditioned as its [`BlockKind`] says.
///
/// Official keys (adaLN-Zero): `attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`,
/// `adaLN_modulation.1` (chunk order shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp,
/// gate_mlp).
#[derive(Module, Debug)]
pub struct DiTBlock {
    /// Self-attention.
    pub attn: Attention,
    /// Feed-forward network (tanh-GELU).
    pub mlp: Mlp,
    /// adaLN(-Zero) modulation (adaptive designs only).
    pub ada_ln_modulation: Option<AdaLnModulation>,
    /// Affine pre-attention LayerNorm (non-adaptive designs only).
    pub norm1: Option<LayerNorm>,
    /// Affine pre-MLP LayerNorm (non-adaptive designs only).
    pub norm2: Option<LayerNorm>,
    /// Affine pre-cross-attention LayerNorm (cross-attention design only).
    pub norm_cross: Option<LayerNorm>,
    /// Cross-attention over the conditioning tokens (cross-attention design only).
    pub cross_attn: Option<CrossAttention>,
    /// Conditioning design.
    #[module(skip)]
    pub kind: BlockKind,
}

impl DiTBlock {
    /// # Shapes
    /// - `x`: `[B, N, D]`
    /// - `c`: `[B, D]` conditioning vector (adaptive designs)
    /// - `context`: `[B, M, D]` conditioning tokens (cross-attention design; when `None`, `c`
    ///   is used as a single token)
    /// - output: `[B, N, D]`
    pub fn forward(&self, x: Tensor<3>, c: Tensor<2>, context: Option<Tensor<3>>) -> Tensor<3> {
        let ln = |t: Tensor<3>| layer_norm(t, DIT_NORM_EPS);
        match (&self.ada_ln_modulation, self.kind) {
            (Some(ada), BlockKind::AdaLnZero) => {
                let m = ada.forward(c);
                let [s_msa, sc_msa, g_msa, s_mlp, sc_mlp, g_mlp] = m.try_into().expect("6 chunks");
                let x = gated_residual(x.clone(), g_msa, self.attn.forward(modulate(ln(x), s_msa, sc_msa)));
                gated_residual(x.clone(), g_mlp, self.mlp.forward(modulate(ln(x), s_mlp, sc_mlp)))
            }
            (Some(ada), _) => {
                let m = ada.forward(c);
                let [s_msa, sc_msa, s_mlp, sc_mlp] = m.try_into().expect("4 chunks");
                let x = x.clone() + self.attn.forward(modulate(ln(x), s_msa, sc_msa));
                x.clone() + self.mlp.forward(modulate(ln(x), s_mlp, sc_mlp))
            }
            (None, _) => {
                let (n1, n2) = (self.norm1.as_ref().unwrap(), self.norm2.as_ref().unwrap());
                let mut x = x.clone() + self.attn.forward(n1.forward(x));
                if let (Some(ca), Some(nc)) = (&self.cross_attn, &self.norm_cross) {
                    let ctx = context.unwrap_or_else(|| c.unsqueeze_dim::<3>(1));
                    x = x.clone() + ca.forward(nc.forward(x), ctx);
                }
                x.clone() + self.mlp.forward(n2.forward(x))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaln_zero_starts_as_identity() {
        let device = Device::flex();
        let block = DiTBlockConfig::new(16, 2).init(&device).unwrap();
        let x = crate::test_util::randn([2, 5, 16], 101, &device);
        let c = crate::test_util::randn([2, 16], 102, &device);
        let y = block.forward(x.clone(), c, None);
        assert!(y.equal(x).all().into_scalar::<bool>());
    }

    #[test]
    fn every_design_runs() {
        let device = Device::flex();
        for kind in [BlockKind::AdaLn, BlockKind::CrossAttention, BlockKind::InContext] {
            let block = DiTBlockConfig::new(16, 2).with_kind(kind).init(&device).unwrap();
            let x = crate::test_util::randn([2, 5, 16], 103, &device);
            let c = crate::test_util::randn([2, 16], 104, &device);
            let y = block.forward(x.clone(), c, None);
            assert_eq!(y.dims(), [2, 5, 16]);
            // Not the identity: these designs have no zero gate.
            assert!(!y.equal(x).all().into_scalar::<bool>(), "{kind:?}");
        }
    }
}

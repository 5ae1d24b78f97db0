//! The feed-forward part of a [`Block`](crate::blocks::Block): one enum arm per variant, each
//! a layer of [`crate::layers`] used as it is.
//!
//! | kind | module | hidden width (nominal `h = int(D * mlp_ratio)`) |
//! |---|---|---|
//! | [`FeedForwardKind::Mlp`] | [`layers::Mlp`](crate::layers::Mlp), tanh-GELU (DiT) | `h` |
//! | [`FeedForwardKind::SwiGlu`] | [`layers::SwiGlu`](crate::layers::SwiGlu) (MicroDiT) | `int(2h/3)` rounded up to `multiple_of` |
//! | [`FeedForwardKind::DwConv`] | [`layers::DwConvFfn`](crate::layers::DwConvFfn) (U-DiT; needs the token grid) | `h` |
//! | [`FeedForwardKind::Moe`] | [`layers::ExpertChoiceMoe`](crate::layers::ExpertChoiceMoe) (MicroDiT) | `h` per expert, rounded up to `multiple_of` |

use burn::prelude::*;

use crate::blocks::parts::spec::PartSpec;
use crate::error::{Error, Result, ensure_config};
use crate::layers::dwconv_ffn::{DW_KERNEL, DwConvFfn, DwConvFfnConfig, FfnForm, REP_DW_KERNELS};
use crate::layers::mlp::{Mlp, MlpConfig};
use crate::layers::moe::{ExpertChoiceMoe, ExpertChoiceMoeConfig, tokens_per_expert};
use crate::layers::swiglu::{SwiGlu, SwiGluConfig, round_up, swiglu_hidden};

/// Which feed-forward a block uses.
#[derive(Config, Debug, PartialEq)]
pub enum FeedForwardKind {
    /// Two-layer tanh-GELU MLP.
    Mlp,
    /// SwiGLU, hidden widths rounded up to `multiple_of`.
    SwiGlu {
        /// Rounding of the hidden width.
        multiple_of: usize,
    },
    /// Depthwise-conv FFN on the token grid (re-parametrisable training form, or plain).
    DwConv {
        /// FFN structure.
        form: FfnForm,
    },
    /// Expert-choice mixture of GELU-MLP experts.
    Moe {
        /// Number of experts.
        num_experts: usize,
        /// Capacity factor: each expert takes `int(capacity * N / E)` tokens.
        capacity: f64,
        /// Rounding of the expert hidden width.
        multiple_of: usize,
    },
}

impl FeedForwardKind {
    /// Whether the part needs the full token grid.
    pub fn needs_grid(&self) -> bool {
        matches!(self, FeedForwardKind::DwConv { .. })
    }

    /// Parameters of the part for a block of spec `s` (width `D`, nominal hidden width
    /// `s.ffn_hidden`).
    pub fn num_params(&self, s: &PartSpec) -> usize {
        let (d, hidden) = (s.d_model, s.ffn_hidden);
        let lin = |i: usize, o: usize| i * o + o;
        let lin_b = |i: usize, o: usize| i * o + if s.bias { o } else { 0 };
        match self {
            FeedForwardKind::Mlp => lin_b(d, hidden) + lin_b(hidden, d),
            FeedForwardKind::SwiGlu { multiple_of } => {
                let h = swiglu_hidden(hidden, (*multiple_of).max(1));
                2 * lin_b(d, h) + lin_b(h, d)
            }
            FeedForwardKind::DwConv { form } => {
                let h = hidden;
                match form {
                    FfnForm::Reparam => {
                        let m = h / 2;
                        lin(d, m) + lin(m, h) + REP_DW_KERNELS.iter().map(|k| h * k * k + h).sum::<usize>() + lin(h, m) + lin(m, d)
                    }
                    FfnForm::Plain | FfnForm::Fused => lin(d, h) + h * DW_KERNEL * DW_KERNEL + h + lin(h, d),
                    FfnForm::Pointwise => lin(d, h) + lin(h, d),
                }
            }
            FeedForwardKind::Moe { num_experts, multiple_of, .. } => {
                let h = round_up(hidden, (*multiple_of).max(1));
                d * num_experts + 2 * num_experts * d * h
            }
        }
    }

    /// Multiply-accumulates of the part over `n` tokens.
    ///
    /// # Errors
    /// An MoE whose experts would take no token (or more than `n`).
    pub fn macs(&self, s: &PartSpec, n: usize) -> Result<f64> {
        let (d, hidden) = (s.d_model, s.ffn_hidden);
        let (df, nf) = (d as f64, n as f64);
        Ok(match self {
            FeedForwardKind::Mlp => 2.0 * nf * df * hidden as f64,
            FeedForwardKind::SwiGlu { multiple_of } => 3.0 * nf * df * swiglu_hidden(hidden, (*multiple_of).max(1)) as f64,
            FeedForwardKind::DwConv { form } => {
                let h = hidden as f64;
                let m = (hidden / 2) as f64;
                nf * match form {
                    FfnForm::Reparam => 2.0 * (df * m + m * h) + h * REP_DW_KERNELS.iter().map(|k| (k * k) as f64).sum::<f64>(),
                    FfnForm::Plain | FfnForm::Fused => 2.0 * df * h + h * (DW_KERNEL * DW_KERNEL) as f64,
                    FfnForm::Pointwise => 2.0 * df * h,
                }
            }
            FeedForwardKind::Moe { num_experts, capacity, multiple_of } => {
                let h = round_up(hidden, (*multiple_of).max(1)) as f64;
                let k = tokens_per_expert(*capacity, *num_experts, n)? as f64;
                nf * df * *num_experts as f64 + *num_experts as f64 * k * 2.0 * df * h
            }
        })
    }

    /// Builds the part for a block of spec `s`: biases as `s.bias` (the MoE has none),
    /// normal-initialised SwiGLU and MoE weights with the stds of `s.init` when it is normal
    /// (else their 0.02 defaults), Xavier-uniform MLP and depthwise-conv FFN.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for zero widths or a bad expert capacity.
    pub fn init(&self, s: &PartSpec, device: &Device) -> Result<FeedForwardPart> {
        let (d_model, hidden) = (s.d_model, s.ffn_hidden);
        ensure_config(d_model > 0 && hidden > 0, || format!("feed-forward widths must be positive: {d_model}, {hidden}"))?;
        let (std_in, std_out) = s.normal_stds().unwrap_or((0.02, 0.02));
        Ok(match self {
            FeedForwardKind::Mlp => FeedForwardPart::Mlp(MlpConfig::new(d_model, hidden).with_bias(s.bias).init(device)?),
            FeedForwardKind::SwiGlu { multiple_of } => FeedForwardPart::SwiGlu(
                SwiGluConfig::new(d_model, hidden)
                    .with_multiple_of(*multiple_of)
                    .with_bias(s.bias)
                    .with_init_std_in(std_in)
                    .with_init_std_out(std_out)
                    .init(device)?,
            ),
            FeedForwardKind::DwConv { form } => {
                FeedForwardPart::DwConv(DwConvFfnConfig::new(d_model, hidden).with_form(*form).init(device)?)
            }
            FeedForwardKind::Moe { num_experts, capacity, multiple_of } => FeedForwardPart::Moe(
                ExpertChoiceMoeConfig::new(d_model, hidden, *num_experts)
                    .with_capacity(*capacity)
                    .with_multiple_of(*multiple_of)
                    .with_init_std_in(std_in)
                    .with_init_std_out(std_out)
                    .init(device)?,
            ),
        })
    }
}

/// The feed-forward part of a block (see the [module docs](self)).
#[derive(Module, Debug)]
pub enum FeedForwardPart {
    /// GELU MLP.
    Mlp(Mlp),
    /// SwiGLU.
    SwiGlu(SwiGlu),
    /// Depthwise-conv FFN.
    DwConv(DwConvFfn),
    /// Expert-choice MoE.
    Moe(ExpertChoiceMoe),
}

impl FeedForwardPart {
    /// # Shapes
    /// - `x`: `[B, N, D]`; `grid`: `[rows, cols]` of a full token grid (`None` for masked
    ///   tokens) -> `[B, N, D]`
    ///
    /// # Errors
    /// A missing grid for the depthwise-conv FFN, shapes the part cannot take, or an MoE
    /// whose experts would take no token.
    pub fn forward(&self, x: Tensor<3>, grid: Option<[usize; 2]>) -> Result<Tensor<3>> {
        match self {
            FeedForwardPart::Mlp(m) => Ok(m.forward(x)),
            FeedForwardPart::SwiGlu(m) => Ok(m.forward(x)),
            FeedForwardPart::DwConv(m) => {
                let [rows, cols] = grid.ok_or_else(|| {
                    Error::InvalidArgument("the depthwise-conv FFN needs the full token grid (no masking)".into())
                })?;
                m.forward_tokens(x, [rows, cols])
            }
            FeedForwardPart::Moe(m) => m.forward(x),
        }
    }
}

//! The condition embedder of every model: a timestep embedder plus one optional condition
//! path, whose vectors are summed into the conditioning vector `c` that drives adaLN.
//!
//! ```text
//! c = TimestepEmbedder(t) + y_emb
//! y_emb = LabelEmbedder(y)                                       labels (DiT, U-DiT)
//!       = MLP_silu(pooled)                                       pooled vector (MM-DiT)
//!       = NormMlp(mean_L(context)),  context = PromptBlock(NormMlp(captions))   captions (MicroDiT)
//! ```
//!
//! Only the caption path also returns tokens (`context`, cross-attended by the blocks).

use burn::prelude::*;

use crate::blocks::microdit_block::{NormMlp, PromptBlock};
use crate::error::{Error, Result, ensure_dims};
use crate::layers::activation::Activation;
use crate::layers::label_embed::{LabelEmbedder, LabelEmbedderConfig};
use crate::layers::mlp::{Mlp, MlpConfig};
use crate::layers::timestep_embed::{TimestepEmbedder, TimestepEmbedderConfig};

/// What, besides the timestep, conditions the model.
#[derive(Config, Debug, PartialEq)]
pub enum ConditionKind {
    /// Nothing (unconditional).
    None,
    /// Class labels; label `num_classes` is the null class when `dropout_prob > 0`.
    Labels {
        /// Number of real classes.
        num_classes: usize,
        /// Train-time label dropout.
        dropout_prob: f64,
    },
    /// A pooled vector through `Linear, SiLU, Linear` (MM-DiT's pooled text).
    Pooled {
        /// Width of the pooled vector.
        pooled_dim: usize,
    },
    /// Caption tokens through MicroDiT's caption path.
    Caption {
        /// Width of the caption tokens.
        caption_channels: usize,
        /// Head width of the caption attention block.
        head_dim: usize,
        /// SwiGLU hidden widths are rounded up to a multiple of this.
        multiple_of: usize,
        /// Biases on the caption block's attention and SwiGLU linears.
        bias: bool,
        /// LayerNorm epsilon.
        norm_eps: f64,
    },
}

impl ConditionKind {
    /// Class labels, or nothing for `num_classes == 0` (DiT's and U-DiT's convention).
    pub fn labels(num_classes: usize, dropout_prob: f64) -> Self {
        match num_classes {
            0 => Self::None,
            n => Self::Labels { num_classes: n, dropout_prob },
        }
    }
}

/// Configuration of a [`ConditionEmbedder`].
#[derive(Config, Debug)]
pub struct ConditionEmbedderConfig {
    /// The timestep embedder (its `d_model` is the width of `c`).
    pub timestep: TimestepEmbedderConfig,
    /// The condition path. Default: none.
    #[config(default = "ConditionKind::None")]
    pub condition: ConditionKind,
}

impl ConditionEmbedderConfig {
    /// Initialise a [`ConditionEmbedder`] (each part with its reference's init).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for zero sizes, a dropout outside `[0, 1)` or a caption width
    /// not divisible by the head width.
    pub fn init(&self, device: &Device) -> Result<ConditionEmbedder> {
        let d = self.timestep.d_model;
        let y_embedder = match &self.condition {
            ConditionKind::None => None,
            ConditionKind::Labels { num_classes, dropout_prob } => Some(ConditionPath::Labels(
                LabelEmbedderConfig::new(*num_classes, d).with_dropout_prob(*dropout_prob).init(device)?,
            )),
            ConditionKind::Pooled { pooled_dim } => Some(ConditionPath::Pooled(
                MlpConfig::new(*pooled_dim, d).with_d_output(Some(d)).with_activation(Activation::Silu).init(device)?,
            )),
            ConditionKind::Caption { caption_channels, head_dim, multiple_of, bias, norm_eps } => {
                Some(ConditionPath::Caption(CaptionEmbedder {
                    y_proj: NormMlp::new(*caption_channels, d, *norm_eps, device),
                    y_emb_preprocess: PromptBlock::new(d, *head_dim, *multiple_of, *bias, *norm_eps, device)?,
                    pooled_y_emb_process: NormMlp::new(d, d, *norm_eps, device),
                }))
            }
        };
        Ok(ConditionEmbedder { t_embedder: self.timestep.init(device)?, y_embedder })
    }
}

/// MicroDiT's caption path (official keys `y_embedder.y_proj`, `y_emb_preprocess`,
/// `pooled_y_emb_process`).
#[derive(Module, Debug)]
pub struct CaptionEmbedder {
    /// Caption projection `caption_channels -> D`.
    pub y_proj: NormMlp,
    /// Attention block over the caption tokens.
    pub y_emb_preprocess: PromptBlock,
    /// MLP of the pooled (mean) caption, added to the timestep embedding.
    pub pooled_y_emb_process: NormMlp,
}

/// The condition path of a [`ConditionEmbedder`].
#[derive(Module, Debug)]
pub enum ConditionPath {
    /// Class-label table.
    Labels(LabelEmbedder),
    /// Pooled-vector MLP.
    Pooled(Mlp),
    /// Caption path.
    Caption(CaptionEmbedder),
}

/// The condition a model is called with (borrowed), matching its [`ConditionKind`].
#[derive(Debug, Clone, Copy)]
pub enum ConditionInput<'a> {
    /// Unconditional.
    None,
    /// Class labels `[B]`.
    Labels(&'a Tensor<1, Int>),
    /// Pooled vector `[B, pooled_dim]`.
    Pooled(&'a Tensor<2>),
    /// Caption tokens `[B, L, caption_channels]`.
    Caption(&'a Tensor<3>),
}

/// What a [`ConditionEmbedder`] computes.
#[derive(Debug, Clone)]
pub struct EmbeddedCondition {
    /// Timestep embedding `[B, D]`.
    pub t_emb: Tensor<2>,
    /// Embedding of the condition `[B, D]` (labels, pooled vector or pooled captions).
    pub y_emb: Option<Tensor<2>>,
    /// Processed caption tokens `[B, L, D]` (caption path only).
    pub context: Option<Tensor<3>>,
}

impl EmbeddedCondition {
    /// The conditioning vector `t_emb + y_emb`, `[B, D]`.
    pub fn vector(&self) -> Tensor<2> {
        match &self.y_emb {
            Some(y) => self.t_emb.clone() + y.clone(),
            None => self.t_emb.clone(),
        }
    }

    /// The embeddings as tokens `[t_emb, y_emb]`, `[B, 1 or 2, D]` (DiT's cross-attention and
    /// in-context designs).
    pub fn tokens(&self) -> Tensor<3> {
        let mut v = vec![self.t_emb.clone().unsqueeze_dim::<3>(1)];
        v.extend(self.y_emb.clone().map(|y| y.unsqueeze_dim::<3>(1)));
        Tensor::cat(v, 1)
    }
}

/// Timestep embedder plus an optional condition path (keys `t_embedder.*`, `y_embedder.*`).
/// See the [module docs](self).
#[derive(Module, Debug)]
pub struct ConditionEmbedder {
    /// Timestep embedder.
    pub t_embedder: TimestepEmbedder,
    /// Condition path (`None`: unconditional).
    pub y_embedder: Option<ConditionPath>,
}

impl ConditionEmbedder {
    /// The label table, for a label-conditioned embedder.
    pub fn labels(&self) -> Option<&LabelEmbedder> {
        match &self.y_embedder {
            Some(ConditionPath::Labels(e)) => Some(e),
            _ => None,
        }
    }

    /// The caption path, for a caption-conditioned embedder.
    pub fn caption(&self) -> Option<&CaptionEmbedder> {
        match &self.y_embedder {
            Some(ConditionPath::Caption(e)) => Some(e),
            _ => None,
        }
    }

    /// Width of the condition input: pooled width, caption channels; `None` for labels or
    /// nothing.
    pub fn input_width(&self) -> Option<usize> {
        match &self.y_embedder {
            Some(ConditionPath::Pooled(m)) => Some(m.fc1.weight.dims()[0]),
            Some(ConditionPath::Caption(c)) => Some(c.y_proj.fc1.weight.dims()[0]),
            _ => None,
        }
    }

    /// Checks that `cond` fits the embedder's kind and a batch of `b`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for the wrong kind, [`Error::Shape`] for wrong shapes.
    pub fn check(&self, cond: ConditionInput<'_>, b: usize) -> Result<()> {
        let w = self.input_width();
        match (cond, &self.y_embedder) {
            (ConditionInput::None, None) => Ok(()),
            (ConditionInput::Labels(y), Some(ConditionPath::Labels(_))) => ensure_dims("labels", y.dims(), [Some(b)]),
            (ConditionInput::Pooled(p), Some(ConditionPath::Pooled(_))) => ensure_dims("pooled", p.dims(), [Some(b), w]),
            (ConditionInput::Caption(c), Some(ConditionPath::Caption(_))) => {
                ensure_dims("captions", c.dims(), [Some(b), None, w])
            }
            (given, _) => Err(Error::InvalidArgument(format!(
                "the model is conditioned on {}, got {}",
                self.kind_name(),
                input_name(given)
            ))),
        }
    }

    fn kind_name(&self) -> &'static str {
        match &self.y_embedder {
            None => "nothing (unconditional)",
            Some(ConditionPath::Labels(_)) => "class labels",
            Some(ConditionPath::Pooled(_)) => "a pooled vector",
            Some(ConditionPath::Caption(_)) => "captions",
        }
    }

    /// Embeds the timesteps and the condition; where `drop` is true, labels become the null
    /// class and captions / pooled vectors all zeros (classifier-free-guidance dropout).
    ///
    /// # Shapes
    /// - `t`: `[B]`; `cond` as [`ConditionInput`]; `drop`: `[B]`
    ///
    /// # Errors
    /// As [`check`](Self::check); labels outside the table; NaN/inf in a float condition
    /// ([`Error::Numerical`]).
    pub fn forward(&self, t: Tensor<1>, cond: ConditionInput<'_>, drop: Option<Tensor<1, Bool>>) -> Result<EmbeddedCondition> {
        let b = t.dims()[0];
        self.check(cond, b)?;
        let dtype = self.t_embedder.linear_1.weight.dtype();
        let t_emb = self.t_embedder.forward(t);
        let zero_dropped = |x: Tensor<3>| match &drop {
            Some(mask) => {
                let dims = x.dims();
                x.mask_fill(mask.clone().reshape([b, 1, 1]).expand(dims), 0.0)
            }
            None => x,
        };
        let (y_emb, context) = match (cond, &self.y_embedder) {
            (ConditionInput::Labels(y), Some(ConditionPath::Labels(e))) => (Some(e.forward(y.clone(), drop)?), None),
            (ConditionInput::Pooled(p), Some(ConditionPath::Pooled(m))) => {
                let p = crate::validate::float_input("pooled", p.clone(), dtype)?;
                let p = zero_dropped(p.unsqueeze_dim::<3>(1)).squeeze_dim::<2>(1);
                (Some(m.forward(p)), None)
            }
            (ConditionInput::Caption(y), Some(ConditionPath::Caption(e))) => {
                let y = zero_dropped(crate::validate::float_input("captions", y.clone(), dtype)?);
                let y = e.y_emb_preprocess.forward(e.y_proj.forward(y)); // [B, L, D]
                let pooled = e.pooled_y_emb_process.forward(y.clone().mean_dim(1).squeeze_dim::<2>(1));
                (Some(pooled), Some(y))
            }
            _ => (None, None),
        };
        Ok(EmbeddedCondition { t_emb, y_emb, context })
    }
}

fn input_name(c: ConditionInput<'_>) -> &'static str {
    match c {
        ConditionInput::None => "no condition",
        ConditionInput::Labels(_) => "class labels",
        ConditionInput::Pooled(_) => "a pooled vector",
        ConditionInput::Caption(_) => "captions",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: ConditionKind) -> ConditionEmbedderConfig {
        ConditionEmbedderConfig::new(TimestepEmbedderConfig::new(16)).with_condition(kind)
    }

    #[test]
    fn every_kind_embeds_and_checks_its_input() {
        let device = Device::flex();
        let t = Tensor::<1>::from_floats([1.0, 20.0], &device);
        let labels = Tensor::<1, Int>::from_ints([0, 3], &device);
        let pooled = crate::test_util::randn([2, 5], 1, &device);
        let captions = crate::test_util::randn([2, 3, 6], 2, &device);
        let kinds = [
            (ConditionKind::None, ConditionInput::None),
            (ConditionKind::Labels { num_classes: 3, dropout_prob: 0.1 }, ConditionInput::Labels(&labels)),
            (ConditionKind::Pooled { pooled_dim: 5 }, ConditionInput::Pooled(&pooled)),
            (
                ConditionKind::Caption { caption_channels: 6, head_dim: 8, multiple_of: 1, bias: false, norm_eps: 1e-6 },
                ConditionInput::Caption(&captions),
            ),
        ];
        for (i, (kind, input)) in kinds.iter().enumerate() {
            let e = config(kind.clone()).init(&device).unwrap();
            let out = e.forward(t.clone(), *input, None).unwrap();
            assert_eq!(out.vector().dims(), [2, 16]);
            assert_eq!(out.context.is_some(), i == 3);
            // every other kind of input is refused
            for (j, (_, other)) in kinds.iter().enumerate() {
                assert_eq!(e.forward(t.clone(), *other, None).is_ok(), i == j, "{kind:?} given input {j}");
            }
        }
        let e = config(ConditionKind::Pooled { pooled_dim: 4 }).init(&device).unwrap();
        assert!(e.forward(t, ConditionInput::Pooled(&pooled), None).is_err());
    }

    #[test]
    fn dropped_captions_are_zero_captions() {
        let device = Device::flex();
        let kind = ConditionKind::Caption { caption_channels: 6, head_dim: 8, multiple_of: 1, bias: false, norm_eps: 1e-6 };
        let e = config(kind).init(&device).unwrap();
        let t = Tensor::<1>::from_floats([1.0, 2.0], &device);
        let captions = crate::test_util::randn([2, 3, 6], 3, &device);
        let drop = Tensor::<1, Bool>::from_bool(TensorData::from([true, false]), &device);
        let dropped = e.forward(t.clone(), ConditionInput::Caption(&captions), Some(drop)).unwrap().vector();
        let zeros = Tensor::cat(vec![Tensor::zeros([1, 3, 6], &device), captions.clone().slice([1..2])], 0);
        let expected = e.forward(t, ConditionInput::Caption(&zeros), None).unwrap().vector();
        dropped.into_data().assert_approx_eq::<f32>(&expected.into_data(), burn::tensor::Tolerance::absolute(1e-6));
    }
}

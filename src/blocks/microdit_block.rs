//! MicroDiT's blocks (SonyResearch/micro_diffusion `dit.py` and `utils.py`): the transformer
//! block as a preset of the one [`Block`] ([`MicroDiTBlockConfig`]), with layer-wise scaled
//! attention and feed-forward widths, caption cross-attention and an optional expert-choice
//! MoE feed-forward; the caption-prompt block; the caption MLPs and the patch-mixer maps (the
//! final layer is [`crate::blocks::FinalLayer`]).
//!
//! Every block comes in two styles ([`BlockStyle`]): the reference MicroDiT block, and a plain
//! DiT (adaLN-Zero) block, so that the patch-mixer, masking, MoE and layer-wise scaling can be
//! used with a class-conditional DiT backbone as well.
//!
//! | style | attention | feed-forward | conditioning | options |
//! |---|---|---|---|---|
//! | MicroDiT | `MultiHead` of width [`qkv_hidden`] | `SwiGlu` (`Moe`) | `AdaLnZeroCross` | `QkNorm::FullLayerNorm`, `bias = use_bias`, normal init, tanh-GELU adaLN |
//! | DiT | `MultiHead` of width [`qkv_hidden`] | `Mlp` (`Moe`) | `AdaLnZero` | biases, Xavier init, SiLU adaLN |

use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;

use crate::blocks::block::{Block, BlockConfig};
use crate::blocks::parts::caption_conditioning::weight_only_norm;
use crate::blocks::parts::scaling::qkv_hidden;
use crate::blocks::parts::{ConditioningKind, FeedForwardKind};
use crate::cpu;
use crate::error::{Result, ensure_config};
use crate::layers::activation::Activation;
use crate::layers::attention::{Attention, AttentionConfig, QkNorm};
use crate::layers::init::{WeightInit, linear};
use crate::layers::swiglu::{SwiGlu, SwiGluConfig, round_up};

/// Standard deviation of MicroDiT's input-side projections (`trunc_normal_(std=0.02)`).
pub const MICRODIT_INIT_STD: f64 = 0.02;

/// Which design a block follows.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum BlockStyle {
    /// The reference MicroDiT block: LayerNorms with a weight and no bias, LayerNorm (no
    /// affine) on queries and keys over all heads, cross-attention over caption tokens between
    /// self-attention and the feed-forward, SwiGLU feed-forward, tanh-GELU before the adaLN
    /// linear.
    MicroDiT,
    /// A plain DiT adaLN-Zero block: LayerNorms without affine parameters, no q/k
    /// normalisation, no cross-attention, tanh-GELU MLP, SiLU before the adaLN linear.
    DiT,
}

impl BlockStyle {
    /// Activation in front of the adaLN linear.
    pub fn modulation_activation(self) -> Activation {
        match self {
            BlockStyle::MicroDiT => Activation::GeluTanh,
            BlockStyle::DiT => Activation::Silu,
        }
    }
}

/// The MicroDiT block preset: its reference options, turned into a [`BlockConfig`] by
/// [`block_config`](Self::block_config).
#[derive(Config, Debug)]
pub struct MicroDiTBlockConfig {
    /// Block width `D`.
    pub d_model: usize,
    /// Width of the conditioning vector fed to the adaLN modulation.
    pub d_cond: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Attention-width multiplier (layer-wise scaling). Default: 1.0.
    #[config(default = 1.0)]
    pub qkv_ratio: f64,
    /// Feed-forward-width multiplier (layer-wise scaling). Default: 4.0.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Feed-forward hidden widths are rounded up to a multiple of this. Default: 1.
    #[config(default = 1)]
    pub multiple_of: usize,
    /// Block design. Default: MicroDiT.
    #[config(default = "BlockStyle::MicroDiT")]
    pub style: BlockStyle,
    /// Biases on the attention and SwiGLU linears (the reference's `use_bias`; DiT-style blocks
    /// always have them). Default: false.
    #[config(default = false)]
    pub bias: bool,
    /// LayerNorm epsilon (DiT-style blocks: 1e-6 only). Default: 1e-6.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// Replace the dense feed-forward by an expert-choice MoE. Default: false.
    #[config(default = false)]
    pub moe: bool,
    /// Number of experts (MoE blocks). Default: 8.
    #[config(default = 8)]
    pub num_experts: usize,
    /// Expert capacity factor (MoE blocks). Default: 2.0.
    #[config(default = 2.0)]
    pub expert_capacity: f64,
    /// Normal init std of the output projections (MicroDiT style; the reference's
    /// depth-dependent `weight_init_std`). Default: 0.02.
    #[config(default = 0.02)]
    pub init_std: f64,
}

impl MicroDiTBlockConfig {
    /// Attention width: [`qkv_hidden`]`(D, head_dim, qkv_ratio)`.
    pub fn qkv_hidden(&self) -> usize {
        qkv_hidden(self.d_model, self.head_dim, self.qkv_ratio)
    }

    /// Number of attention heads, `qkv_hidden / head_dim`.
    pub fn num_heads(&self) -> usize {
        self.qkv_hidden() / self.head_dim.max(1)
    }

    /// Nominal feed-forward width `int(D * mlp_ratio)`; SwiGLU takes 2/3 of it and every
    /// kind rounds up to `multiple_of` (see [`ffn_hidden`](Self::ffn_hidden)).
    pub fn ffn_nominal(&self) -> usize {
        (self.d_model as f64 * self.mlp_ratio) as usize
    }

    /// Actual feed-forward hidden width: SwiGLU `round_up(int(2h/3))`, MoE expert and DiT MLP
    /// `round_up(h)`, with `h` = [`ffn_nominal`](Self::ffn_nominal).
    pub fn ffn_hidden(&self) -> usize {
        let h = self.ffn_nominal();
        let m = self.multiple_of.max(1);
        match (self.moe, self.style) {
            (false, BlockStyle::MicroDiT) => crate::layers::swiglu::swiglu_hidden(h, m),
            _ => round_up(h, m),
        }
    }

    /// The [`Block`] configuration of this preset (see the [module docs](self)).
    pub fn block_config(&self) -> BlockConfig {
        let micro = self.style == BlockStyle::MicroDiT;
        let multiple_of = self.multiple_of;
        let (feed_forward, ffn_hidden) = match (self.moe, micro) {
            (true, _) => {
                let (num_experts, capacity) = (self.num_experts, self.expert_capacity);
                (FeedForwardKind::Moe { num_experts, capacity, multiple_of }, self.ffn_nominal())
            }
            (false, true) => (FeedForwardKind::SwiGlu { multiple_of }, self.ffn_nominal()),
            (false, false) => (FeedForwardKind::Mlp, self.ffn_hidden()),
        };
        BlockConfig::new(self.d_model, self.num_heads())
            .with_attn_hidden(Some(self.qkv_hidden()))
            .with_feed_forward(feed_forward)
            .with_ffn_hidden(Some(ffn_hidden))
            .with_d_cond(Some(self.d_cond))
            .with_conditioning(if micro { ConditioningKind::AdaLnZeroCross } else { ConditioningKind::AdaLnZero })
            .with_qk_norm(if micro { QkNorm::FullLayerNorm } else { QkNorm::None })
            .with_bias(self.bias || !micro)
            .with_init_std(micro.then_some([MICRODIT_INIT_STD, self.init_std]))
            .with_norm_eps(self.norm_eps)
            .with_modulation_activation(self.style.modulation_activation())
    }

    /// Checks the sizes; called by [`init`](Self::init).
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] naming the problem.
    pub fn validate(&self) -> Result<()> {
        let (d, hd) = (self.d_model, self.head_dim);
        ensure_config(d > 0 && self.d_cond > 0 && hd > 0 && self.multiple_of > 0, || {
            format!("block sizes must be positive: {self:?}")
        })?;
        ensure_config(d.is_multiple_of(hd), || format!("block width {d} is not divisible by the head width {hd}"))?;
        ensure_config(self.qkv_ratio > 0.0 && self.mlp_ratio > 0.0, || {
            format!("width multipliers must be positive, got qkv {} and mlp {}", self.qkv_ratio, self.mlp_ratio)
        })?;
        ensure_config(self.ffn_hidden() > 0, || format!("feed-forward width rounds to zero: {self:?}"))?;
        self.block_config().validate()
    }

    /// Initialise the block: MicroDiT style with the reference's `custom_init` (normal 0.02
    /// input projections, normal `init_std` output projections, zero adaLN); DiT style with
    /// DiT's init (Xavier linears, zero adaLN).
    ///
    /// # Errors
    /// As [`validate`](Self::validate) and [`BlockConfig::init`].
    pub fn init(&self, device: &Device) -> Result<Block> {
        self.validate()?;
        self.block_config().init(device)
    }
}

/// The reference `AttentionBlockPromptEmbedding`: a pre-norm transformer block over the
/// caption tokens (weight-only LayerNorms, q/k-normed attention, SwiGLU of nominal width `4D`).
#[derive(Module, Debug)]
pub struct PromptBlock {
    /// Pre-attention norm.
    pub norm1: LayerNorm,
    /// Self-attention with the full-width q/k LayerNorm (`proj` zero-initialised).
    pub attn: Attention,
    /// Pre-feed-forward norm.
    pub norm2: LayerNorm,
    /// SwiGLU (`w3` zero-initialised).
    pub mlp: SwiGlu,
}

impl PromptBlock {
    /// A prompt block of width `d` with `d / head_dim` heads.
    pub fn new(d: usize, head_dim: usize, multiple_of: usize, bias: bool, eps: f64, device: &Device) -> Result<Self> {
        ensure_config(head_dim > 0 && d.is_multiple_of(head_dim), || {
            format!("caption width {d} is not divisible by the head width {head_dim}")
        })?;
        let mut mlp = SwiGluConfig::new(d, 4 * d).with_multiple_of(multiple_of).with_bias(bias).init(device)?;
        mlp.w3 = linear(mlp.hidden(), d, bias, WeightInit::Zeros, device);
        let attn = AttentionConfig::new(d, d / head_dim)
            .with_qkv_bias(bias)
            .with_proj_bias(bias)
            .with_qk_norm(QkNorm::FullLayerNorm)
            .with_qk_norm_eps(eps)
            .with_init_in(WeightInit::Normal(MICRODIT_INIT_STD))
            .with_init_out(WeightInit::Zeros);
        Ok(Self { norm1: weight_only_norm(d, eps, device), attn: attn.init(device)?, norm2: weight_only_norm(d, eps, device), mlp })
    }

    /// # Shapes
    /// - `x`: `[B, L, D]` -> `[B, L, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x));
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// timm `Mlp` with a norm after the activation: `fc2(norm(gelu_tanh(fc1(x))))` (the
/// reference's caption projection `y_embedder.y_proj` and `pooled_y_emb_process`).
#[derive(Module, Debug)]
pub struct NormMlp {
    /// `[D_in, D]`.
    pub fc1: Linear,
    /// Weight-only LayerNorm over the hidden width.
    pub norm: LayerNorm,
    /// `[D, D]`.
    pub fc2: Linear,
}

impl NormMlp {
    /// `d_in -> d -> d`, normal(0.02) weights and zero biases as the reference init.
    pub fn new(d_in: usize, d: usize, eps: f64, device: &Device) -> Self {
        let std = WeightInit::Normal(MICRODIT_INIT_STD);
        Self { fc1: linear(d_in, d, true, std, device), norm: weight_only_norm(d, eps, device), fc2: linear(d, d, true, std, device) }
    }

    /// # Shapes
    /// - `x`: `[..., D_in]` -> `[..., D]`
    pub fn forward<const N: usize>(&self, x: Tensor<N>) -> Tensor<N> {
        cpu::linear(&self.fc2, self.norm.forward(Activation::GeluTanh.forward(cpu::linear(&self.fc1, x))))
    }
}

/// `linear(norm(x))` (the reference's `nn.Sequential(LayerNorm, Linear)` patch-mixer maps,
/// keys `.0.weight`, `.1.weight`).
#[derive(Module, Debug)]
pub struct NormLinear {
    /// Weight-only LayerNorm over the input width.
    pub norm: LayerNorm,
    /// `[D_in, D_out]`, Xavier uniform.
    pub linear: Linear,
}

impl NormLinear {
    /// `d_in -> d_out`.
    pub fn new(d_in: usize, d_out: usize, bias: bool, eps: f64, device: &Device) -> Self {
        Self { norm: weight_only_norm(d_in, eps, device), linear: linear(d_in, d_out, bias, WeightInit::XavierUniform, device) }
    }

    /// # Shapes
    /// - `x`: `[..., D_in]` -> `[..., D_out]`
    pub fn forward<const N: usize>(&self, x: Tensor<N>) -> Tensor<N> {
        cpu::linear(&self.linear, self.norm.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::parts::{BlockCondition, ConditioningPart, FeedForwardPart};
    use burn::tensor::Tolerance;

    #[test]
    fn layerwise_widths() {
        let cfg = MicroDiTBlockConfig::new(32, 32, 8).with_qkv_ratio(0.5).with_mlp_ratio(0.5).with_multiple_of(16);
        assert_eq!((cfg.qkv_hidden(), cfg.num_heads(), cfg.ffn_hidden()), (16, 2, 16));
        let moe = cfg.clone().with_mlp_ratio(0.5 + 3.5 / 3.0).with_moe(true).with_num_experts(4);
        assert_eq!(moe.ffn_hidden(), 64); // int(53.33) = 53 -> 64, no 2/3 for experts
        let dit = cfg.clone().with_style(BlockStyle::DiT).with_mlp_ratio(4.0).with_multiple_of(1);
        assert_eq!(dit.ffn_hidden(), 128);
        // the built blocks have these widths and as many parameters as counted
        let device = Device::flex();
        for c in [cfg.clone(), moe.with_expert_capacity(1.0), dit, cfg.with_style(BlockStyle::DiT).with_multiple_of(48)] {
            let block = c.init(&device).unwrap();
            assert_eq!(block.num_params(), c.block_config().num_params(), "{c:?}");
            let hidden = match &block.mlp {
                FeedForwardPart::SwiGlu(m) => m.hidden(),
                FeedForwardPart::Moe(m) => m.hidden(),
                FeedForwardPart::Mlp(m) => m.fc1.weight.dims()[1],
                FeedForwardPart::DwConv(_) => unreachable!(),
            };
            assert_eq!(hidden, c.ffn_hidden(), "{c:?}");
        }
    }

    #[test]
    fn bad_widths_are_errors() {
        let device = Device::flex();
        assert!(MicroDiTBlockConfig::new(30, 30, 8).init(&device).is_err()); // 30 % 8
        assert!(MicroDiTBlockConfig::new(32, 32, 0).init(&device).is_err());
        assert!(MicroDiTBlockConfig::new(32, 32, 8).with_qkv_ratio(0.0).init(&device).is_err());
        assert!(MicroDiTBlockConfig::new(32, 32, 8).with_moe(true).with_expert_capacity(9.0).init(&device).is_err());
        assert!(MicroDiTBlockConfig::new(32, 32, 8).with_style(BlockStyle::DiT).with_norm_eps(1e-5).init(&device).is_err());
        assert!(PromptBlock::new(30, 8, 1, false, 1e-6, &device).is_err());
    }

    #[test]
    fn zero_modulation_is_identity_up_to_cross_attention() {
        let device = Device::flex();
        let x = crate::test_util::randn([2, 5, 16], 101, &device);
        let c = crate::test_util::randn([2, 24], 102, &device);
        let ctx = crate::test_util::randn([2, 3, 16], 103, &device);
        let cond = |context: Option<Tensor<3>>| BlockCondition { c: c.clone(), shared: None, context };
        // DiT style: adaLN-Zero makes the whole block the identity
        let dit = MicroDiTBlockConfig::new(16, 24, 4).with_style(BlockStyle::DiT).init(&device).unwrap();
        assert!(dit.forward(x.clone(), None, &cond(None)).unwrap().equal(x.clone()).all().into_scalar::<bool>());
        // MicroDiT style: only the (ungated) cross-attention changes x
        let block = MicroDiTBlockConfig::new(16, 24, 4).with_moe(true).with_num_experts(2).init(&device).unwrap();
        let ConditioningPart::AdaLnZeroCross(ca) = &block.conditioning else { panic!("caption conditioning") };
        let expected = x.clone() + ca.cross_attn.forward(ca.norm2.forward(x.clone()), ctx.clone());
        let out = block.forward(x.clone(), None, &cond(Some(ctx))).unwrap();
        out.into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-6));
        assert!(block.forward(x, None, &cond(None)).is_err());
    }
}

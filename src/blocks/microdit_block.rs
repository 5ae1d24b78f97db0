//! MicroDiT building blocks (SonyResearch/micro_diffusion `dit.py` and `utils.py`): the
//! transformer block with layer-wise scaled attention and feed-forward widths, optional caption
//! cross-attention and an optional expert-choice MoE feed-forward; the caption-prompt block; the
//! caption MLPs (the final layer is [`crate::blocks::FinalLayer`]).
//!
//! Every block comes in two styles ([`BlockStyle`]): the reference MicroDiT block, and a plain
//! DiT (adaLN-Zero) block, so that the patch-mixer, masking, MoE and layer-wise scaling can be
//! used with a class-conditional DiT backbone as well.

use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;

use crate::blocks::parts::FeedForwardPart;
use crate::error::{Error, Result, ensure_config, ensure_dims};
use crate::layers::activation::Activation;
use crate::layers::adaln::AdaLnModulation;
use crate::layers::attention::{merge_heads, sdpa, split_heads};
use crate::layers::init::{WeightInit, linear};
use crate::layers::mlp::MlpConfig;
use crate::layers::moe::ExpertChoiceMoeConfig;
use crate::layers::norm::{gated_residual, layer_norm, modulate};
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

/// Width of the attention space at qkv multiplier `ratio`: `dim` itself when `ratio == 1`,
/// otherwise `int(dim * ratio)` rounded up to a multiple of `2 * head_dim` (the reference).
pub fn qkv_hidden(dim: usize, head_dim: usize, ratio: f64) -> usize {
    if ratio == 1.0 { dim } else { round_up((dim as f64 * ratio) as usize, 2 * head_dim) }
}

/// A LayerNorm with a weight and no bias (the reference's `create_norm('layernorm')`).
fn weight_norm(d: usize, eps: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d).with_epsilon(eps).with_bias(false).init(device)
}

fn norm_or_plain(norm: &Option<LayerNorm>, x: Tensor<3>, eps: f64) -> Tensor<3> {
    match norm {
        Some(n) => n.forward(x),
        None => layer_norm(x, eps),
    }
}

/// Self-attention in a space of its own width (`qkv`: `D -> 3 * hidden`, `proj`:
/// `hidden -> D`), with optional parameter-free LayerNorm of queries and keys over all heads
/// (the reference `SelfAttention`).
#[derive(Module, Debug)]
pub struct MicroSelfAttention {
    /// `[D, 3 * hidden]`, output ordered `(q, k, v)` then heads.
    pub qkv: Linear,
    /// `[hidden, D]`.
    pub proj: Linear,
    /// Heads.
    pub n_heads: usize,
    /// LayerNorm q and k (no affine) before splitting heads.
    pub qk_norm: bool,
    /// Epsilon of the q/k norm.
    pub eps: f64,
}

impl MicroSelfAttention {
    /// An attention `D -> hidden (n_heads heads) -> D`; `init` gives the weight inits of `qkv`
    /// and `proj` (biases are zero).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        d: usize,
        hidden: usize,
        n_heads: usize,
        bias: bool,
        qk_norm: bool,
        eps: f64,
        init: [WeightInit; 2],
        device: &Device,
    ) -> Result<Self> {
        ensure_config(n_heads > 0 && hidden > 0 && hidden.is_multiple_of(n_heads), || {
            format!("attention width {hidden} is not divisible by its {n_heads} heads")
        })?;
        Ok(Self {
            qkv: linear(d, 3 * hidden, bias, init[0], device),
            proj: linear(hidden, d, bias, init[1], device),
            n_heads,
            qk_norm,
            eps,
        })
    }

    /// Attention width (heads times head width).
    pub fn hidden(&self) -> usize {
        self.proj.weight.dims()[0]
    }

    /// # Shapes
    /// - `x`: `[B, N, D]` -> `[B, N, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let mut it = self.qkv.forward(x).chunk(3, 2).into_iter();
        let (q, k, v) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let (q, k) = if self.qk_norm { (layer_norm(q, self.eps), layer_norm(k, self.eps)) } else { (q, k) };
        let h = self.n_heads;
        let o = sdpa(split_heads(q, h), split_heads(k, h), split_heads(v, h));
        self.proj.forward(merge_heads(o))
    }
}

/// Cross-attention of tokens over context tokens of the same width (the reference
/// `CrossAttention`: `q_linear`, `kv_linear`, `proj`; q and k LayerNormed without affine).
#[derive(Module, Debug)]
pub struct MicroCrossAttention {
    /// `[D, hidden]`.
    pub q_linear: Linear,
    /// `[D, 2 * hidden]`, output ordered `(k, v)`.
    pub kv_linear: Linear,
    /// `[hidden, D]`.
    pub proj: Linear,
    /// Heads.
    pub n_heads: usize,
    /// Epsilon of the q/k norm.
    pub eps: f64,
}

impl MicroCrossAttention {
    /// # Shapes
    /// - `x`: `[B, N, D]`, `context`: `[B, M, D]` -> `[B, N, D]`
    pub fn forward(&self, x: Tensor<3>, context: Tensor<3>) -> Tensor<3> {
        let h = self.n_heads;
        let q = layer_norm(self.q_linear.forward(x), self.eps);
        let mut it = self.kv_linear.forward(context).chunk(2, 2).into_iter();
        let (k, v) = (it.next().unwrap(), it.next().unwrap());
        let o = sdpa(split_heads(q, h), split_heads(layer_norm(k, self.eps), h), split_heads(v, h));
        self.proj.forward(merge_heads(o))
    }
}

/// Configuration of a [`MicroDiTBlock`].
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
    /// LayerNorm epsilon. Default: 1e-6.
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
    /// Scale the cross-attention width with `qkv_ratio` too (the reference's `compress_xattn`;
    /// every reference model leaves it off, so cross-attention keeps width `D`). Default: false.
    #[config(default = false)]
    pub compress_xattn: bool,
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

    /// Cross-attention width: the attention width with `compress_xattn`, else `D`.
    pub fn cross_hidden(&self) -> usize {
        if self.compress_xattn { self.qkv_hidden() } else { self.d_model }
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

    /// Checks the sizes; called by [`init`](Self::init).
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
        Ok(())
    }

    /// Initialise a [`MicroDiTBlock`]: MicroDiT style with the reference's `custom_init`
    /// (normal 0.02 input projections, normal `init_std` output projections, zero adaLN);
    /// DiT style with DiT's init (Xavier linears, zero adaLN).
    pub fn init(&self, device: &Device) -> Result<MicroDiTBlock> {
        self.validate()?;
        let d = self.d_model;
        let eps = self.norm_eps;
        let micro = self.style == BlockStyle::MicroDiT;
        let (w_in, w_out) = if micro {
            (WeightInit::Normal(MICRODIT_INIT_STD), WeightInit::Normal(self.init_std))
        } else {
            (WeightInit::XavierUniform, WeightInit::XavierUniform)
        };
        let bias = self.bias || !micro;
        let hidden = self.qkv_hidden();
        let heads = self.num_heads();
        let attn = MicroSelfAttention::new(d, hidden, heads, bias, micro, eps, [w_in, w_out], device)?;
        let xh = self.cross_hidden();
        let cross_attn = micro.then(|| MicroCrossAttention {
            q_linear: linear(d, xh, bias, w_in, device),
            kv_linear: linear(d, 2 * xh, bias, w_in, device),
            proj: linear(xh, d, bias, w_out, device),
            n_heads: xh / self.head_dim,
            eps,
        });
        let mlp = if self.moe {
            FeedForwardPart::Moe(
                ExpertChoiceMoeConfig::new(d, self.ffn_nominal(), self.num_experts)
                    .with_capacity(self.expert_capacity)
                    .with_multiple_of(self.multiple_of)
                    .with_init_std_in(MICRODIT_INIT_STD)
                    .with_init_std_out(self.init_std)
                    .init(device)?,
            )
        } else if micro {
            FeedForwardPart::SwiGlu(
                SwiGluConfig::new(d, self.ffn_nominal())
                    .with_multiple_of(self.multiple_of)
                    .with_bias(self.bias)
                    .with_init_std_in(MICRODIT_INIT_STD)
                    .with_init_std_out(self.init_std)
                    .init(device)?,
            )
        } else {
            FeedForwardPart::Mlp(MlpConfig::new(d, self.ffn_hidden()).init(device)?)
        };
        let norm = || micro.then(|| weight_norm(d, eps, device));
        Ok(MicroDiTBlock {
            norm1: norm(),
            norm2: norm(),
            norm3: norm(),
            attn,
            cross_attn,
            mlp,
            ada_ln_modulation: AdaLnModulation::new(self.d_cond, d, 6, true, device).with_activation(self.style.modulation_activation()),
            norm_eps: eps,
        })
    }
}

/// A MicroDiT block (or its DiT-style variant):
///
/// ```text
/// x = x + gate_msa * attn(modulate(norm1(x), shift_msa, scale_msa))
/// x = x + cross_attn(norm2(x), context)            (MicroDiT style only)
/// x = x + gate_mlp * mlp(modulate(norm3(x), shift_mlp, scale_mlp))
/// ```
///
/// Official keys: `norm{1,2,3}.weight`, `attn.{qkv,proj}`, `cross_attn.{q_linear,kv_linear,proj}`,
/// `mlp.{w1,w2,w3}` (SwiGLU) or `mlp.{gate,w1,w2}` (MoE), `adaLN_modulation.1`.
#[derive(Module, Debug)]
pub struct MicroDiTBlock {
    /// Pre-attention norm (weight only; `None`: parameter-free, DiT style).
    pub norm1: Option<LayerNorm>,
    /// Pre-cross-attention norm (MicroDiT style).
    pub norm2: Option<LayerNorm>,
    /// Pre-feed-forward norm (weight only; `None`: parameter-free, DiT style).
    pub norm3: Option<LayerNorm>,
    /// Self-attention.
    pub attn: MicroSelfAttention,
    /// Cross-attention over the context tokens (MicroDiT style).
    pub cross_attn: Option<MicroCrossAttention>,
    /// Feed-forward: SwiGLU, MLP or expert-choice MoE.
    pub mlp: FeedForwardPart,
    /// adaLN-Zero modulation (shift/scale/gate for attention and feed-forward).
    pub ada_ln_modulation: AdaLnModulation,
    /// LayerNorm epsilon.
    pub norm_eps: f64,
}

impl MicroDiTBlock {
    /// Block width.
    pub fn d_model(&self) -> usize {
        self.attn.qkv.weight.dims()[0]
    }

    /// # Shapes
    /// - `x`: `[B, N, D]`
    /// - `context`: `[B, M, D]` caption tokens (required by MicroDiT-style blocks, ignored by
    ///   DiT-style ones)
    /// - `c`: `[B, D_cond]` conditioning vector
    /// - output: `[B, N, D]`
    pub fn forward(&self, x: Tensor<3>, context: Option<&Tensor<3>>, c: Tensor<2>) -> Result<Tensor<3>> {
        let d = self.d_model();
        ensure_dims("x", x.dims(), [None, None, Some(d)])?;
        let [s_msa, sc_msa, g_msa, s_mlp, sc_mlp, g_mlp]: [Tensor<2>; 6] =
            self.ada_ln_modulation.forward(c).try_into().expect("6 chunks");
        let eps = self.norm_eps;
        let h = modulate(norm_or_plain(&self.norm1, x.clone(), eps), s_msa, sc_msa);
        let mut x = gated_residual(x, g_msa, self.attn.forward(h));
        if let Some(ca) = &self.cross_attn {
            let ctx = context.ok_or_else(|| {
                Error::InvalidArgument("a MicroDiT block with cross-attention needs context tokens".into())
            })?;
            ensure_dims("context", ctx.dims(), [Some(x.dims()[0]), None, Some(d)])?;
            x = x.clone() + ca.forward(norm_or_plain(&self.norm2, x, eps), ctx.clone());
        }
        let h = modulate(norm_or_plain(&self.norm3, x.clone(), eps), s_mlp, sc_mlp);
        Ok(gated_residual(x, g_mlp, self.mlp.forward(h, None)?))
    }
}

/// The reference `AttentionBlockPromptEmbedding`: a pre-norm transformer block over the
/// caption tokens (weight-only LayerNorms, q/k-normed attention, SwiGLU of nominal width `4D`).
#[derive(Module, Debug)]
pub struct PromptBlock {
    /// Pre-attention norm.
    pub norm1: LayerNorm,
    /// Self-attention (`proj` zero-initialised).
    pub attn: MicroSelfAttention,
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
        let std = WeightInit::Normal(MICRODIT_INIT_STD);
        let mut mlp = SwiGluConfig::new(d, 4 * d).with_multiple_of(multiple_of).with_bias(bias).init(device)?;
        mlp.w3 = linear(mlp.hidden(), d, bias, WeightInit::Zeros, device);
        Ok(Self {
            norm1: weight_norm(d, eps, device),
            attn: MicroSelfAttention::new(d, d, d / head_dim, bias, true, eps, [std, WeightInit::Zeros], device)?,
            norm2: weight_norm(d, eps, device),
            mlp,
        })
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
        Self { fc1: linear(d_in, d, true, std, device), norm: weight_norm(d, eps, device), fc2: linear(d, d, true, std, device) }
    }

    /// # Shapes
    /// - `x`: `[..., D_in]` -> `[..., D]`
    pub fn forward<const N: usize>(&self, x: Tensor<N>) -> Tensor<N> {
        self.fc2.forward(self.norm.forward(Activation::GeluTanh.forward(self.fc1.forward(x))))
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
        Self { norm: weight_norm(d_in, eps, device), linear: linear(d_in, d_out, bias, WeightInit::XavierUniform, device) }
    }

    /// # Shapes
    /// - `x`: `[..., D_in]` -> `[..., D_out]`
    pub fn forward<const N: usize>(&self, x: Tensor<N>) -> Tensor<N> {
        self.linear.forward(self.norm.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    #[test]
    fn layerwise_widths() {
        // qkv: dim itself at ratio 1, else int(dim * r) rounded up to 2 * head_dim
        assert_eq!(qkv_hidden(32, 8, 1.0), 32);
        assert_eq!(qkv_hidden(32, 8, 0.5), 16);
        assert_eq!(qkv_hidden(32, 8, 2.0 / 3.0), 32); // 21 -> 32
        assert_eq!(qkv_hidden(1024, 64, 0.5), 512);
        assert_eq!(qkv_hidden(1024, 64, 0.5 + 0.5 / 27.0), 640); // 530 -> 640
        let cfg = MicroDiTBlockConfig::new(32, 32, 8).with_qkv_ratio(0.5).with_mlp_ratio(0.5).with_multiple_of(16);
        assert_eq!((cfg.qkv_hidden(), cfg.num_heads(), cfg.ffn_hidden()), (16, 2, 16));
        let moe = cfg.clone().with_mlp_ratio(0.5 + 3.5 / 3.0).with_moe(true).with_num_experts(4);
        assert_eq!(moe.ffn_hidden(), 64); // int(53.33) = 53 -> 64, no 2/3 for experts
        let dit = cfg.clone().with_style(BlockStyle::DiT).with_mlp_ratio(4.0).with_multiple_of(1);
        assert_eq!(dit.ffn_hidden(), 128);
    }

    #[test]
    fn bad_widths_are_errors() {
        let device = Device::flex();
        assert!(MicroDiTBlockConfig::new(30, 30, 8).init(&device).is_err()); // 30 % 8
        assert!(MicroDiTBlockConfig::new(32, 32, 0).init(&device).is_err());
        assert!(MicroDiTBlockConfig::new(32, 32, 8).with_qkv_ratio(0.0).init(&device).is_err());
        assert!(MicroDiTBlockConfig::new(32, 32, 8).with_moe(true).with_expert_capacity(9.0).init(&device).is_err());
        assert!(PromptBlock::new(30, 8, 1, false, 1e-6, &device).is_err());
    }

    #[test]
    fn zero_modulation_is_identity_up_to_cross_attention() {
        let device = Device::flex();
        let x = crate::test_util::randn([2, 5, 16], 101, &device);
        let c = crate::test_util::randn([2, 24], 102, &device);
        // DiT style: adaLN-Zero makes the whole block the identity
        let dit = MicroDiTBlockConfig::new(16, 24, 4).with_style(BlockStyle::DiT).init(&device).unwrap();
        assert!(dit.forward(x.clone(), None, c.clone()).unwrap().equal(x.clone()).all().into_scalar::<bool>());
        // MicroDiT style: only the (ungated) cross-attention changes x
        let block = MicroDiTBlockConfig::new(16, 24, 4).with_moe(true).with_num_experts(2).init(&device).unwrap();
        let ctx = crate::test_util::randn([2, 3, 16], 103, &device);
        let ca = block.cross_attn.as_ref().unwrap();
        let expected = x.clone() + ca.forward(block.norm2.as_ref().unwrap().forward(x.clone()), ctx.clone());
        let out = block.forward(x.clone(), Some(&ctx), c.clone()).unwrap();
        out.into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-6));
        assert!(block.forward(x, None, c).is_err());
    }

    #[test]
    fn qk_norm_spans_all_heads() {
        let device = Device::flex();
        let w = [WeightInit::Normal(0.5), WeightInit::Normal(0.5)];
        let a = MicroSelfAttention::new(8, 8, 2, false, true, 1e-6, w, &device).unwrap();
        let x = crate::test_util::randn([1, 4, 8], 104, &device);
        // reference: LayerNorm over the full q / k width, then split heads
        let qkv = a.qkv.forward(x.clone());
        let q = layer_norm(qkv.clone().slice([0..1, 0..4, 0..8]), 1e-6);
        let k = layer_norm(qkv.clone().slice([0..1, 0..4, 8..16]), 1e-6);
        let v = qkv.slice([0..1, 0..4, 16..24]);
        let scores = split_heads(q, 2).matmul(split_heads(k, 2).swap_dims(2, 3)) / 2.0;
        let o = burn::tensor::activation::softmax(scores, 3).matmul(split_heads(v, 2));
        let expected = a.proj.forward(merge_heads(o));
        a.forward(x).into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
    }
}

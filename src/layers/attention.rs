//! Multi-head attention built on Burn's fused `attention` op, and the head-splitting helpers
//! every attention variant of the crate shares.

use burn::module::Param;
use burn::nn::{Initializer, Linear};
use burn::prelude::*;

use crate::cpu;
use crate::error::{Result, ensure_config, ensure_dims};
use crate::layers::init::{WeightInit, linear};
use crate::layers::norm::{layer_norm, rms_norm};

/// `[B, N, H*Dh] -> [B, H, N, Dh]`.
pub fn split_heads(x: Tensor<3>, n_heads: usize) -> Tensor<4> {
    let [b, n, c] = x.dims();
    x.reshape([b, n, n_heads, c / n_heads]).swap_dims(1, 2)
}

/// `[B, H, N, Dh] -> [B, N, H*Dh]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, n, dh] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * dh])
}

/// Scaled dot-product attention `softmax(q k^T / sqrt(Dh)) v`: the crate's vectorised op
/// ([`crate::cpu::attention`]) on flex, Burn's fused op elsewhere (flash kernels where the
/// backend has them).
///
/// # Shapes
/// - `q`: `[B, H, Nq, Dh]`, `k`: `[B, H, Nk, Dh]`, `v`: `[B, H, Nk, Dv]` -> `[B, H, Nq, Dv]`
pub fn sdpa(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    crate::cpu::attention(q, k, v)
}

/// Normalisation applied to queries and keys.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum QkNorm {
    /// No normalisation (DiT).
    None,
    /// Per-head RMSNorm with a learned weight (SD3.5, diffusers `qk_norm="rms_norm"`).
    RmsNorm,
    /// Per-head LayerNorm with learned weight and bias (diffusers `qk_norm="layer_norm"`).
    LayerNorm,
    /// LayerNorm without parameters over the full query / key width (all heads together),
    /// before the heads are split (MicroDiT's `SelfAttention` and `CrossAttention`).
    FullLayerNorm,
}

impl QkNorm {
    /// Learned parameters of the query and key norms at head width `head_dim`.
    pub fn num_params(self, head_dim: usize) -> usize {
        match self {
            QkNorm::None | QkNorm::FullLayerNorm => 0,
            QkNorm::RmsNorm => 2 * head_dim,
            QkNorm::LayerNorm => 4 * head_dim,
        }
    }

    /// The epsilon of a [`FullLayerNorm`](QkNorm::FullLayerNorm) (what the attention layers
    /// store), `None` for the other kinds.
    pub fn full_eps(self, eps: f64) -> Option<f64> {
        (self == QkNorm::FullLayerNorm).then_some(eps)
    }
}

/// [`QkNorm::FullLayerNorm`] of `x` `[B, N, hidden]` when `eps` is given; `x` otherwise.
pub fn full_qk_norm(x: Tensor<3>, eps: Option<f64>) -> Tensor<3> {
    match eps {
        Some(eps) => layer_norm(x, eps),
        None => x,
    }
}

/// A learned per-head normalisation of width `Dh` (keys `weight`, `bias` as in PyTorch).
#[derive(Module, Debug)]
pub struct HeadNorm {
    /// Scale `[Dh]`, ones at init.
    pub weight: Param<Tensor<1>>,
    /// Shift `[Dh]` (LayerNorm only), zeros at init.
    pub bias: Option<Param<Tensor<1>>>,
    /// Epsilon.
    pub eps: f64,
}

impl HeadNorm {
    /// A head norm of kind `kind` (`None` gives `None`).
    pub fn new(kind: QkNorm, dim: usize, eps: f64, device: &Device) -> Option<Self> {
        let weight = || Initializer::Ones.init([dim], device);
        match kind {
            QkNorm::None | QkNorm::FullLayerNorm => None,
            QkNorm::RmsNorm => Some(Self { weight: weight(), bias: None, eps }),
            QkNorm::LayerNorm => {
                Some(Self { weight: weight(), bias: Some(Initializer::Zeros.init([dim], device)), eps })
            }
        }
    }

    /// # Shapes
    /// - `x`: `[..., Dh]` -> `[..., Dh]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let w = self.weight.val();
        match &self.bias {
            None => rms_norm(x, self.eps) * w.unsqueeze::<D>(),
            Some(b) => layer_norm(x, self.eps) * w.unsqueeze::<D>() + b.val().unsqueeze::<D>(),
        }
    }
}

/// Configuration of an [`Attention`].
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Model width `C`.
    pub d_model: usize,
    /// Number of heads `H` (`C` must be divisible by `H`).
    pub n_heads: usize,
    /// Bias on the qkv projection. Default: true.
    #[config(default = true)]
    pub qkv_bias: bool,
    /// Bias on the output projection. Default: true.
    #[config(default = true)]
    pub proj_bias: bool,
    /// Init of the qkv weights. Default: Xavier uniform.
    #[config(default = "WeightInit::XavierUniform")]
    pub init_in: WeightInit,
    /// Init of the output-projection weights. Default: Xavier uniform.
    #[config(default = "WeightInit::XavierUniform")]
    pub init_out: WeightInit,
    /// Query/key normalisation. Default: none.
    #[config(default = "QkNorm::None")]
    pub qk_norm: QkNorm,
    /// Epsilon of the query/key normalisation. Default: 1e-6.
    #[config(default = 1e-6)]
    pub qk_norm_eps: f64,
    /// Width of the attention space (heads times head width) when it differs from
    /// `d_model` (layer-wise scaling): `qkv` is `[C, 3 hidden]`, `proj` `[hidden, C]`.
    /// Default: None (`d_model`).
    #[config(default = "None")]
    pub d_hidden: Option<usize>,
}

impl AttentionConfig {
    /// Initialise an [`Attention`] (weights as `init_in` / `init_out`, zero biases).
    pub fn init(&self, device: &Device) -> Result<Attention> {
        let (c, h) = (self.d_model, self.n_heads);
        let hidden = self.d_hidden.unwrap_or(c);
        ensure_config(c > 0 && h > 0 && hidden > 0 && hidden % h == 0, || {
            format!("attention width {hidden} must be a positive multiple of the number of heads {h}")
        })?;
        let dh = hidden / h;
        Ok(Attention {
            qkv: linear(c, 3 * hidden, self.qkv_bias, self.init_in, device),
            proj: linear(hidden, c, self.proj_bias, self.init_out, device),
            q_norm: HeadNorm::new(self.qk_norm, dh, self.qk_norm_eps, device),
            k_norm: HeadNorm::new(self.qk_norm, dh, self.qk_norm_eps, device),
            full_qk_norm_eps: self.qk_norm.full_eps(self.qk_norm_eps),
            n_heads: h,
        })
    }
}

/// Multi-head self-attention with a fused qkv projection (timm `Attention`: keys `qkv`, `proj`).
#[derive(Module, Debug)]
pub struct Attention {
    /// `[C, 3C]`, output ordered `(q, k, v)` then heads.
    pub qkv: Linear,
    /// `[C, C]`.
    pub proj: Linear,
    /// Optional query normalisation.
    pub q_norm: Option<HeadNorm>,
    /// Optional key normalisation.
    pub k_norm: Option<HeadNorm>,
    /// Epsilon of the parameter-free query/key LayerNorm over all heads
    /// ([`QkNorm::FullLayerNorm`]); `None` without it.
    pub full_qk_norm_eps: Option<f64>,
    /// Number of heads.
    pub n_heads: usize,
}

impl Attention {
    /// Project to per-head queries, keys and values (after q/k normalisation).
    ///
    /// # Shapes
    /// - `x`: `[B, N, C]` -> three `[B, H, N, hidden/H]` (`hidden = C` unless scaled)
    pub fn qkv_heads(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let [b, n, _] = x.dims();
        let h = self.n_heads;
        let hidden = self.qkv.weight.dims()[1] / 3;
        let qkv = cpu::linear(&self.qkv, x);
        let (q, k, v) = match self.full_qk_norm_eps {
            // normalised q and k are fresh tensors: split the heads of each (no concatenation)
            Some(eps) => {
                let mut it = qkv.chunk(3, 2).into_iter();
                let (q, k, v) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
                let norm_heads = |t| split_heads(full_qk_norm(t, Some(eps)), h);
                (norm_heads(q), norm_heads(k), split_heads(v, h))
            }
            None => {
                let qkv = qkv.reshape([b, n, 3, h, hidden / h]).permute([2, 0, 3, 1, 4]);
                let mut it = qkv.chunk(3, 0).into_iter().map(|t| t.squeeze_dim::<4>(0));
                (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
            }
        };
        let q = match &self.q_norm { Some(nm) => nm.forward(q), None => q };
        let k = match &self.k_norm { Some(nm) => nm.forward(k), None => k };
        (q, k, v)
    }

    /// Self-attention over the token axis.
    ///
    /// # Shapes
    /// - `x`: `[B, N, C]` -> `[B, N, C]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (q, k, v) = self.qkv_heads(x);
        cpu::linear(&self.proj, merge_heads(sdpa(q, k, v)))
    }

    /// Like [`forward`](Self::forward), checking the input shape first.
    pub fn try_forward(&self, x: Tensor<3>) -> Result<Tensor<3>> {
        ensure_dims("x", x.dims(), [None, None, Some(self.qkv.weight.dims()[0])])?;
        Ok(self.forward(x))
    }
}

/// Configuration of a [`CrossAttention`].
#[derive(Config, Debug)]
pub struct CrossAttentionConfig {
    /// Query (and output) width `C`.
    pub d_model: usize,
    /// Width of the context tokens.
    pub d_context: usize,
    /// Number of heads.
    pub n_heads: usize,
    /// Width of the attention space when it differs from `d_model`. Default: None (`d_model`).
    #[config(default = "None")]
    pub d_hidden: Option<usize>,
    /// Biases on the three projections. Default: true.
    #[config(default = true)]
    pub bias: bool,
    /// Query/key normalisation: none or [`QkNorm::FullLayerNorm`] (per-head norms are not
    /// supported here). Default: none.
    #[config(default = "QkNorm::None")]
    pub qk_norm: QkNorm,
    /// Epsilon of the query/key normalisation. Default: 1e-6.
    #[config(default = 1e-6)]
    pub qk_norm_eps: f64,
    /// Init of the `q` and `kv` weights. Default: Xavier uniform.
    #[config(default = "WeightInit::XavierUniform")]
    pub init_in: WeightInit,
    /// Init of the output-projection weights. Default: Xavier uniform.
    #[config(default = "WeightInit::XavierUniform")]
    pub init_out: WeightInit,
}

impl CrossAttentionConfig {
    /// Initialise a [`CrossAttention`] (weights as `init_in` / `init_out`, zero biases).
    pub fn init(&self, device: &Device) -> Result<CrossAttention> {
        let (c, h) = (self.d_model, self.n_heads);
        let hidden = self.d_hidden.unwrap_or(c);
        ensure_config(c > 0 && h > 0 && hidden > 0 && hidden % h == 0 && self.d_context > 0, || {
            format!("cross-attention width {hidden} must be a positive multiple of the heads {h}")
        })?;
        ensure_config(matches!(self.qk_norm, QkNorm::None | QkNorm::FullLayerNorm), || {
            format!("cross-attention supports no or full-width QK norm, not {:?}", self.qk_norm)
        })?;
        Ok(CrossAttention {
            q: linear(c, hidden, self.bias, self.init_in, device),
            kv: linear(self.d_context, 2 * hidden, self.bias, self.init_in, device),
            proj: linear(hidden, c, self.bias, self.init_out, device),
            full_qk_norm_eps: self.qk_norm.full_eps(self.qk_norm_eps),
            n_heads: h,
        })
    }
}

/// Multi-head cross-attention of tokens over a context sequence.
#[derive(Module, Debug)]
pub struct CrossAttention {
    /// `[C, hidden]` (`hidden = C` unless set).
    pub q: Linear,
    /// `[C_ctx, 2 hidden]`, output ordered `(k, v)`.
    pub kv: Linear,
    /// `[hidden, C]`.
    pub proj: Linear,
    /// Epsilon of the parameter-free query/key LayerNorm ([`QkNorm::FullLayerNorm`]); `None`
    /// without it.
    pub full_qk_norm_eps: Option<f64>,
    /// Number of heads.
    pub n_heads: usize,
}

impl CrossAttention {
    /// # Shapes
    /// - `x`: `[B, N, C]`, `context`: `[B, M, C_ctx]` -> `[B, N, C]`
    pub fn forward(&self, x: Tensor<3>, context: Tensor<3>) -> Tensor<3> {
        let (h, eps) = (self.n_heads, self.full_qk_norm_eps);
        let q = split_heads(full_qk_norm(cpu::linear(&self.q, x), eps), h);
        let kv = cpu::linear(&self.kv, context);
        let mut it = kv.chunk(2, 2).into_iter();
        let (k, v) = (full_qk_norm(it.next().unwrap(), eps), it.next().unwrap());
        cpu::linear(&self.proj, merge_heads(sdpa(q, split_heads(k, h), split_heads(v, h))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::softmax;
    use burn::tensor::Tolerance;

    #[test]
    fn fused_equals_naive() {
        let device = Device::flex();
        let attn = AttentionConfig::new(16, 4).init(&device).unwrap();
        let x = crate::test_util::randn([2, 5, 16], 101, &device);
        let (q, k, v) = attn.qkv_heads(x.clone());
        let scores = q.matmul(k.swap_dims(2, 3)) / 2.0; // sqrt(Dh = 4)
        let naive = attn.proj.forward(merge_heads(softmax(scores, 3).matmul(v)));
        attn.forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&naive.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn heads_roundtrip_and_errors() {
        let device = Device::flex();
        let x = crate::test_util::uniform([2, 5, 12], 102, &device);
        assert!(merge_heads(split_heads(x.clone(), 3)).equal(x).all().into_scalar::<bool>());
        assert!(AttentionConfig::new(10, 4).init(&device).is_err());
        let a = AttentionConfig::new(8, 2).init(&device).unwrap();
        assert!(a.try_forward(Tensor::zeros([1, 3, 7], &device)).is_err());
    }

    #[test]
    fn qk_norms() {
        let device = Device::flex();
        for kind in [QkNorm::RmsNorm, QkNorm::LayerNorm] {
            let a = AttentionConfig::new(8, 2).with_qk_norm(kind).init(&device).unwrap();
            let x = crate::test_util::randn([1, 3, 8], 103, &device) * 3.0;
            let (q, _, _) = a.qkv_heads(x);
            let ms = q.square().mean_dim(3).into_data().try_to_vec::<f32>().unwrap();
            // unit RMS after RMSNorm; unit variance (mean square <= 1) after LayerNorm
            assert!(ms.iter().all(|m| (*m - 1.0).abs() < 1e-3 || kind == QkNorm::LayerNorm && *m <= 1.0 + 1e-3));
        }
    }

    #[test]
    fn full_qk_norm_spans_all_heads() {
        let device = Device::flex();
        let a = AttentionConfig::new(8, 2)
            .with_qk_norm(QkNorm::FullLayerNorm)
            .with_init_in(WeightInit::Normal(0.5))
            .init(&device)
            .unwrap();
        assert!(a.q_norm.is_none() && a.full_qk_norm_eps == Some(1e-6));
        let x = crate::test_util::randn([1, 4, 8], 104, &device);
        // reference (MicroDiT): LayerNorm over the full q / k width, then split heads
        let qkv = a.qkv.forward(x.clone());
        let q = layer_norm(qkv.clone().slice([0..1, 0..4, 0..8]), 1e-6);
        let k = layer_norm(qkv.clone().slice([0..1, 0..4, 8..16]), 1e-6);
        let v = qkv.slice([0..1, 0..4, 16..24]);
        let scores = split_heads(q.clone(), 2).matmul(split_heads(k.clone(), 2).swap_dims(2, 3)) / 2.0;
        let o = softmax(scores, 3).matmul(split_heads(v.clone(), 2));
        let expected = a.proj.forward(merge_heads(o));
        a.forward(x.clone()).into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
        // the cross-attention normalises its queries and keys the same way
        let ca = CrossAttentionConfig::new(8, 8, 2).with_qk_norm(QkNorm::FullLayerNorm).init(&device).unwrap();
        let ctx = crate::test_util::randn([1, 3, 8], 105, &device);
        let q = split_heads(layer_norm(ca.q.forward(x.clone()), 1e-6), 2);
        let kv = ca.kv.forward(ctx.clone());
        let k = split_heads(layer_norm(kv.clone().slice([0..1, 0..3, 0..8]), 1e-6), 2);
        let v = split_heads(kv.slice([0..1, 0..3, 8..16]), 2);
        let o = softmax(q.matmul(k.swap_dims(2, 3)) / 2.0, 3).matmul(v);
        let expected = ca.proj.forward(merge_heads(o));
        ca.forward(x, ctx).into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
        assert!(CrossAttentionConfig::new(8, 8, 2).with_qk_norm(QkNorm::RmsNorm).init(&device).is_err());
    }

    #[test]
    fn cross_attention_shape() {
        let device = Device::flex();
        let ca = CrossAttentionConfig::new(8, 6, 2).init(&device).unwrap();
        let out = ca.forward(Tensor::zeros([2, 5, 8], &device), Tensor::ones([2, 3, 6], &device));
        assert_eq!(out.dims(), [2, 5, 8]);
    }
}

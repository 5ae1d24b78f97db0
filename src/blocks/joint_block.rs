//! The MM-DiT joint transformer block (SD3), generic over the number of token streams.
//!
//! Every stream `s` has its own weights: an adaLN modulation regressed from the shared
//! conditioning vector `c`, its q/k/v (+ optional q/k norm) and output projections inside a
//! [`JointAttention`], and its MLP. Per full stream, exactly as diffusers'
//! `JointTransformerBlock` with `AdaLayerNormZero`:
//!
//! ```text
//! shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = Linear(SiLU(c))     (6 chunks)
//! h_s   = LN(x_s) * (1 + scale_a) + shift_a                                 (LN: no affine, eps 1e-6)
//! a_s   = JointAttention(h_0, h_1, ...)_s                                    (one attention, all tokens)
//! x_s  += gate_a * a_s
//! x_s  += gate_m * MLP(LN(x_s) * (1 + scale_m) + shift_m)                   (MLP: ratio 4, tanh-GELU)
//! ```
//!
//! A **pre-only** stream (SD3's text stream in the last block, diffusers `context_pre_only`)
//! is only modulated (`shift, scale` from a 2-chunk modulation, diffusers'
//! `AdaLayerNormContinuous`) and feeds keys/values to the others; it returns `None`.
//!
//! A **dual-attention** stream (SD3.5's MMDiT-X: the image stream of the first blocks,
//! diffusers `use_dual_attention` with `SD35AdaLayerNormZeroX`) has a 9-chunk modulation and
//! a second, stream-only self-attention `Attn2` (own q/k/v, q/k norm and output projection)
//! on the same normalised input, added after the joint attention:
//!
//! ```text
//! shift_a, scale_a, gate_a, shift_m, scale_m, gate_m, shift_2, scale_2, gate_2 = Linear(SiLU(c))
//! n    = LN(x_s);  h_s = n * (1 + scale_a) + shift_a;  h2 = n * (1 + scale_2) + shift_2
//! x_s += gate_a * JointAttention(h_0, h_1, ...)_s
//! x_s += gate_2 * Attn2(h2)
//! x_s += gate_m * MLP(LN(x_s) * (1 + scale_m) + shift_m)
//! ```
//!
//! # Using the block in your own model
//! Embed each modality to the same width `C`, build one conditioning vector `c: [B, C]`
//! (e.g. timestep embedding + pooled-condition projection) and thread the streams through the
//! blocks; mark a stream pre-only in the last block when its output is not needed:
//!
//! ```
//! use burn::prelude::*;
//! use diffusion_transformers::blocks::JointBlockConfig;
//!
//! # fn main() -> Result<(), diffusion_transformers::Error> {
//! let device = Device::flex();
//! // three streams (image, text, audio), width 64, 4 heads; audio is pre-only in the last block
//! let depth = 2;
//! let blocks = (0..depth)
//!     .map(|i| {
//!         let cfg = JointBlockConfig::new(64, 4).with_n_streams(3);
//!         let cfg = if i + 1 == depth { cfg.with_pre_only(vec![2]) } else { cfg };
//!         cfg.init(&device)
//!     })
//!     .collect::<Result<Vec<_>, _>>()?;
//! let mut streams = vec![
//!     Tensor::<3>::zeros([1, 16, 64], &device), // image tokens
//!     Tensor::<3>::zeros([1, 7, 64], &device),  // text tokens
//!     Tensor::<3>::zeros([1, 5, 64], &device),  // audio tokens
//! ];
//! let c = Tensor::<2>::zeros([1, 64], &device);
//! for block in &blocks {
//!     let out = block.forward(streams.clone(), c.clone())?;
//!     // a pre-only stream returns None; keep its last input (it is not used any more)
//!     streams = out.into_iter().zip(streams).map(|(o, s)| o.unwrap_or(s)).collect();
//! }
//! assert_eq!(streams[0].dims(), [1, 16, 64]);
//! # Ok(()) }
//! ```

use burn::prelude::*;

use crate::error::{Result, ensure_config, ensure_dims};
use crate::layers::adaln::AdaLnModulation;
use crate::layers::attention::{Attention, AttentionConfig, QkNorm};
use crate::layers::joint_attention::{JointAttention, JointAttentionConfig, check_streams};
use crate::layers::mlp::{Mlp, MlpConfig};
use crate::layers::norm::{gated_residual, layer_norm, modulate};

/// Epsilon of every (affine-free) LayerNorm of the MM-DiT blocks and final layer.
pub const JOINT_NORM_EPS: f64 = 1e-6;

/// Configuration of a [`JointBlock`].
#[derive(Config, Debug)]
pub struct JointBlockConfig {
    /// Width `C` of every stream and of the conditioning vector.
    pub d_model: usize,
    /// Attention heads (`C` must be divisible by them).
    pub n_heads: usize,
    /// Number of token streams. Default: 2 (image, text).
    #[config(default = 2)]
    pub n_streams: usize,
    /// Indices of the pre-only streams (SD3: `[1]` in the last block). Default: none.
    #[config(default = "Vec::new()")]
    pub pre_only: Vec<usize>,
    /// MLP hidden width is `int(C * mlp_ratio)`. Default: 4.0.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Per-head query/key normalisation (eps 1e-6) of the joint and the dual attention.
    /// Default: none (SD3); RMSNorm in SD3.5.
    #[config(default = "QkNorm::None")]
    pub qk_norm: QkNorm,
    /// Indices of the streams with a second, stream-only self-attention and a 9-chunk
    /// modulation (SD3.5 MMDiT-X: `[0]`, the image, in the first blocks). Default: none.
    #[config(default = "Vec::new()")]
    pub dual_attention: Vec<usize>,
}

impl JointBlockConfig {
    /// MLP hidden width, `int(C * mlp_ratio)` (diffusers' `FeedForward`).
    pub fn mlp_hidden(&self) -> usize {
        (self.d_model as f64 * self.mlp_ratio) as usize
    }

    fn attention(&self) -> JointAttentionConfig {
        JointAttentionConfig::new(self.d_model, self.n_heads)
            .with_n_streams(self.n_streams)
            .with_pre_only(self.pre_only.clone())
            .with_qk_norm(self.qk_norm)
    }

    /// Initialise a [`JointBlock`]: Xavier linears, zero adaLN modulations (adaLN-Zero, so a
    /// fresh block is the identity on its full streams).
    pub fn init(&self, device: &Device) -> Result<JointBlock> {
        ensure_config(self.mlp_ratio > 0.0 && self.mlp_hidden() > 0, || {
            format!("mlp_ratio must give a positive hidden width, got {}", self.mlp_ratio)
        })?;
        let attn = self.attention().init(device)?;
        ensure_config(self.dual_attention.iter().all(|s| *s < self.n_streams && !self.pre_only.contains(s)), || {
            format!(
                "dual-attention streams {:?} must be full (not pre-only) streams below {}",
                self.dual_attention, self.n_streams
            )
        })?;
        let d = self.d_model;
        let (mut ada_ln_modulation, mut mlp, mut attn2) = (Vec::new(), Vec::new(), Vec::new());
        for (s, stream) in attn.streams.iter().enumerate() {
            let pre_only = stream.is_pre_only();
            let dual = self.dual_attention.contains(&s);
            let chunks = if pre_only { 2 } else if dual { 9 } else { 6 };
            ada_ln_modulation.push(AdaLnModulation::new(d, d, chunks, true, device));
            mlp.push(if pre_only { None } else { Some(MlpConfig::new(d, self.mlp_hidden()).init(device)?) });
            let self_attn = AttentionConfig::new(d, self.n_heads).with_qk_norm(self.qk_norm);
            attn2.push(if dual { Some(self_attn.init(device)?) } else { None });
        }
        Ok(JointBlock { attn, ada_ln_modulation, mlp, attn2 })
    }
}

/// An MM-DiT block over `n_streams` token streams (see the module docs for the equations).
///
/// diffusers keys (SD3, stream 0 = image, 1 = text): `attn.*` (see [`JointAttention`]),
/// `norm1.linear` / `norm1_context.linear` (modulations), `ff.net.{0.proj,2}` /
/// `ff_context.net.{0.proj,2}` (MLPs), `attn2.*` (the image stream's dual attention).
#[derive(Module, Debug)]
pub struct JointBlock {
    /// Per-stream projections and the joint attention.
    pub attn: JointAttention,
    /// Per-stream adaLN modulation: 6 chunks (shift, scale, gate for attention, then for the
    /// MLP) for a full stream, 2 chunks (shift, scale) for a pre-only stream.
    pub ada_ln_modulation: Vec<AdaLnModulation>,
    /// Per-stream MLP (tanh-GELU); `None` for a pre-only stream.
    pub mlp: Vec<Option<Mlp>>,
    /// Per-stream second self-attention over the stream's own tokens (MMDiT-X dual
    /// attention); `None` for the other streams.
    pub attn2: Vec<Option<Attention>>,
}

impl JointBlock {
    /// Width `C`.
    pub fn d_model(&self) -> usize {
        self.attn.d_model()
    }

    /// Number of streams.
    pub fn n_streams(&self) -> usize {
        self.attn.streams.len()
    }

    /// Whether stream `s` is pre-only.
    pub fn is_pre_only(&self, s: usize) -> bool {
        self.attn.streams.get(s).is_some_and(|st| st.is_pre_only())
    }

    /// Whether stream `s` has a dual (second, stream-only) attention.
    pub fn has_dual_attention(&self, s: usize) -> bool {
        self.attn2.get(s).is_some_and(Option::is_some)
    }

    /// # Shapes
    /// - `xs`: one `[B, N_s, C]` per stream (any `N_s >= 1`)
    /// - `c`: `[B, C]` conditioning vector shared by all streams
    /// - output: per stream `Some([B, N_s, C])`, `None` for a pre-only stream
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for a wrong number of streams,
    /// [`crate::Error::Shape`] for streams or `c` of the wrong shape.
    pub fn forward(&self, xs: Vec<Tensor<3>>, c: Tensor<2>) -> Result<Vec<Option<Tensor<3>>>> {
        let d = self.d_model();
        check_streams(&xs, self.n_streams(), d)?;
        ensure_dims("c", c.dims(), [Some(xs[0].dims()[0]), Some(d)])?;
        let ln = |t: Tensor<3>| layer_norm(t, JOINT_NORM_EPS);
        let mut normed = Vec::with_capacity(xs.len());
        let mut post = Vec::with_capacity(xs.len());
        let mut dual = Vec::with_capacity(xs.len());
        for ((ada, x), attn2) in self.ada_ln_modulation.iter().zip(&xs).zip(&self.attn2) {
            let mut m = ada.forward(c.clone()).into_iter();
            let (shift, scale) = (m.next().expect("shift"), m.next().expect("scale"));
            let n = ln(x.clone());
            // gate_a, shift_m, scale_m, gate_m (full streams)
            post.push(m.by_ref().take(4).collect::<Vec<_>>());
            // the dual attention's output, gated: shift_2, scale_2, gate_2 are chunks 6..9
            dual.push(attn2.as_ref().map(|attn2| {
                let (s2, sc2, g2) = (m.next().expect("shift_2"), m.next().expect("scale_2"), m.next().expect("gate_2"));
                (g2, attn2.forward(modulate(n.clone(), s2, sc2)))
            }));
            normed.push(modulate(n, shift, scale));
        }
        let attn = self.attn.forward(normed)?;
        Ok(xs
            .into_iter()
            .zip(attn)
            .zip(post)
            .zip(dual)
            .zip(&self.mlp)
            .map(|((((x, a), post), dual), mlp)| {
                let (a, mlp) = (a?, mlp.as_ref()?);
                let [g_a, s_m, sc_m, g_m]: [Tensor<2>; 4] = post.try_into().ok()?;
                let x = gated_residual(x, g_a, a);
                let x = match dual {
                    Some((g2, a2)) => gated_residual(x, g2, a2),
                    None => x,
                };
                Some(gated_residual(x.clone(), g_m, mlp.forward(modulate(ln(x), s_m, sc_m))))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::layers::activation::gelu_tanh;
    use burn::module::Param;
    use burn::tensor::Tolerance;

    fn randomize(block: JointBlock) -> JointBlock {
        // adaLN-Zero makes a fresh block trivial; give the modulations random weights.
        let mut block = block;
        for (i, ada) in block.ada_ln_modulation.iter_mut().enumerate() {
            let dims = ada.linear.weight.dims();
            ada.linear.weight =
                Param::from_tensor(crate::test_util::randn(dims, 101 + i as u64, &ada.linear.weight.device()) * 0.3);
        }
        block
    }

    #[test]
    fn fresh_block_is_identity_on_full_streams() {
        let device = Device::flex();
        let block = JointBlockConfig::new(16, 2).init(&device).unwrap();
        let x = crate::test_util::randn([2, 5, 16], 102, &device);
        let t = crate::test_util::randn([2, 3, 16], 103, &device);
        let c = crate::test_util::randn([2, 16], 104, &device);
        let out = block.forward(vec![x.clone(), t.clone()], c).unwrap();
        assert!(out[0].clone().unwrap().equal(x).all().into_scalar::<bool>());
        assert!(out[1].clone().unwrap().equal(t).all().into_scalar::<bool>());
    }

    #[test]
    fn matches_the_written_out_equations() {
        let device = Device::flex();
        let block = randomize(JointBlockConfig::new(8, 2).init(&device).unwrap());
        let x = crate::test_util::randn([1, 4, 8], 105, &device);
        let t = crate::test_util::randn([1, 3, 8], 106, &device);
        let c = crate::test_util::randn([1, 8], 107, &device);
        let out = block.forward(vec![x.clone(), t.clone()], c.clone()).unwrap();
        // written out with the diffusers chunk order and LayerNorm(eps 1e-6, no affine)
        let ln = |v: Tensor<3>| {
            let (var, mean) = v.clone().var_mean_bias(2);
            (v - mean) / (var + 1e-6).sqrt()
        };
        let mods: Vec<Vec<Tensor<3>>> = block
            .ada_ln_modulation
            .iter()
            .map(|a| a.forward(c.clone()).into_iter().map(|m| m.unsqueeze_dim(1)).collect())
            .collect();
        let h: Vec<Tensor<3>> = [x.clone(), t.clone()]
            .into_iter()
            .zip(&mods)
            .map(|(v, m)| ln(v) * (m[1].clone() + 1.0) + m[0].clone())
            .collect();
        let a = block.attn.forward(h).unwrap();
        for (s, (v, a)) in [x, t].into_iter().zip(a).enumerate() {
            let m = &mods[s];
            let v = v + m[2].clone() * a.unwrap();
            let mlp = block.mlp[s].as_ref().unwrap();
            let hidden = gelu_tanh(mlp.fc1.forward(ln(v.clone()) * (m[4].clone() + 1.0) + m[3].clone()));
            let expected = v + m[5].clone() * mlp.fc2.forward(hidden);
            out[s]
                .clone()
                .unwrap()
                .into_data()
                .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
        }
    }

    /// Deterministic values in about [-1, 1] (no RNG needed).
    fn wave<const D: usize>(dims: [usize; D], k: f32, device: &Device) -> Tensor<D> {
        let n: usize = dims.iter().product();
        Tensor::from_data(TensorData::new((0..n).map(|i| (i as f32 * k).sin()).collect::<Vec<_>>(), dims), device)
    }

    #[test]
    fn dual_attention_matches_the_written_out_equations() {
        let device = Device::flex();
        let cfg = JointBlockConfig::new(8, 2).with_qk_norm(QkNorm::RmsNorm).with_dual_attention(vec![0]);
        let mut block = cfg.init(&device).unwrap();
        assert_eq!((block.ada_ln_modulation[0].n_chunks, block.ada_ln_modulation[1].n_chunks), (9, 6));
        assert!(block.has_dual_attention(0) && !block.has_dual_attention(1));
        for (i, ada) in block.ada_ln_modulation.iter_mut().enumerate() {
            let dims = ada.linear.weight.dims();
            ada.linear.weight = Param::from_tensor(wave(dims, 0.37 + i as f32, &device) * 0.3);
        }
        let x = wave([2, 4, 8], 0.71, &device);
        let t = wave([2, 3, 8], 1.13, &device);
        let c = wave([2, 8], 0.53, &device);
        let out = block.forward(vec![x.clone(), t.clone()], c.clone()).unwrap();
        let ln = |v: Tensor<3>| {
            let (var, mean) = v.clone().var_mean_bias(2);
            (v - mean) / (var + 1e-6).sqrt()
        };
        let m: Vec<Tensor<3>> =
            block.ada_ln_modulation[0].forward(c.clone()).into_iter().map(|m| m.unsqueeze_dim(1)).collect();
        let mt: Vec<Tensor<3>> =
            block.ada_ln_modulation[1].forward(c).into_iter().map(|m| m.unsqueeze_dim(1)).collect();
        let h = ln(x.clone()) * (m[1].clone() + 1.0) + m[0].clone();
        let h2 = ln(x.clone()) * (m[7].clone() + 1.0) + m[6].clone();
        let ht = ln(t.clone()) * (mt[1].clone() + 1.0) + mt[0].clone();
        let a = block.attn.forward(vec![h, ht]).unwrap().remove(0).unwrap();
        let v = x + m[2].clone() * a + m[8].clone() * block.attn2[0].as_ref().unwrap().forward(h2);
        let mlp = block.mlp[0].as_ref().unwrap();
        let hidden = gelu_tanh(mlp.fc1.forward(ln(v.clone()) * (m[4].clone() + 1.0) + m[3].clone()));
        let expected = v + m[5].clone() * mlp.fc2.forward(hidden);
        let got = out[0].clone().unwrap();
        got.into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
        // the dual attention is on stream 0 only, and only a full stream may have one
        assert!(cfg.clone().with_dual_attention(vec![2]).init(&device).is_err());
        assert!(cfg.with_pre_only(vec![1]).with_dual_attention(vec![1]).init(&device).is_err());
    }

    #[test]
    fn pre_only_stream_is_modulated_keys_and_values() {
        let device = Device::flex();
        let block = JointBlockConfig::new(8, 2).with_pre_only(vec![1]).init(&device).unwrap();
        assert_eq!(block.ada_ln_modulation[1].n_chunks, 2);
        assert!(block.mlp[1].is_none() && block.is_pre_only(1) && !block.is_pre_only(0));
        let block = randomize(block);
        let x = crate::test_util::randn([2, 4, 8], 108, &device);
        let t = crate::test_util::randn([2, 3, 8], 109, &device);
        let c = crate::test_util::randn([2, 8], 110, &device);
        let out = block.forward(vec![x.clone(), t.clone()], c.clone()).unwrap();
        assert!(out[1].is_none());
        assert_eq!(out[0].clone().unwrap().dims(), [2, 4, 8]);
        // the text tokens matter: changing them changes the image output (not by a scale,
        // which the LayerNorm removes)
        let t2 = t + crate::test_util::randn([2, 3, 8], 111, &device);
        let out2 = block.forward(vec![x, t2], c).unwrap();
        let diff = (out[0].clone().unwrap() - out2[0].clone().unwrap()).abs().max().into_scalar::<f32>();
        assert!(diff > 1e-4, "{diff}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let device = Device::flex();
        let block = JointBlockConfig::new(8, 2).init(&device).unwrap();
        let x = Tensor::<3>::zeros([2, 4, 8], &device);
        let c = Tensor::<2>::zeros([2, 8], &device);
        assert!(matches!(block.forward(vec![x.clone()], c.clone()), Err(Error::InvalidArgument(_))));
        let narrow = Tensor::<3>::zeros([2, 3, 6], &device);
        assert!(matches!(block.forward(vec![x.clone(), narrow], c.clone()), Err(Error::Shape { .. })));
        let bad_c = Tensor::<2>::zeros([2, 7], &device);
        assert!(matches!(block.forward(vec![x.clone(), x.clone()], bad_c), Err(Error::Shape { .. })));
        let bad_b = Tensor::<2>::zeros([3, 8], &device);
        assert!(matches!(block.forward(vec![x.clone(), x], bad_b), Err(Error::Shape { .. })));
        assert!(JointBlockConfig::new(8, 3).init(&device).is_err());
        assert!(JointBlockConfig::new(8, 2).with_mlp_ratio(0.0).init(&device).is_err());
        assert!(JointBlockConfig::new(8, 2).with_pre_only(vec![0, 1]).init(&device).is_err());
    }
}

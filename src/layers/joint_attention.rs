//! Joint attention (MM-DiT, Esser et al. 2024, "Scaling Rectified Flow Transformers for
//! High-Resolution Image Synthesis"): several token streams, each with its **own** q/k/v
//! projection, optional per-head q/k normalisation and output projection, attend **once** over
//! the concatenation of all their tokens, so every modality attends to every other.
//!
//! This is diffusers' `Attention(added_kv_proj_dim=...)` with `JointAttnProcessor2_0`
//! generalised to any number of streams: SD3 has two (image = stream 0 with `to_q/to_k/to_v`,
//! `norm_q/norm_k`, `to_out.0`; text = stream 1 with `add_{q,k,v}_proj`,
//! `norm_added_{q,k}`, `to_add_out`).
//!
//! A stream may be **pre-only** (SD3's text stream in the last block): its tokens supply keys
//! and values but it produces no output, so it has no output projection. Its query projection
//! is kept (checkpoints carry it) but its queries are not evaluated: attention rows are
//! independent, so the other streams' outputs are exactly those of the full computation.

use burn::nn::Linear;
use burn::prelude::*;

use crate::cpu;
use crate::error::{Error, Result, ensure_config};
use crate::layers::attention::{HeadNorm, QkNorm, merge_heads, sdpa, split_heads};
use crate::layers::init::{WeightInit, linear};

/// Configuration of a [`JointAttention`].
#[derive(Config, Debug)]
pub struct JointAttentionConfig {
    /// Width `C` of every stream (and of the attention).
    pub d_model: usize,
    /// Number of heads `H` (`C` must be divisible by `H`).
    pub n_heads: usize,
    /// Number of token streams. Default: 2 (image and text, as SD3).
    #[config(default = 2)]
    pub n_streams: usize,
    /// Indices of the pre-only streams (keys/values only, no output). Default: none.
    #[config(default = "Vec::new()")]
    pub pre_only: Vec<usize>,
    /// Bias on the q/k/v projections. Default: true.
    #[config(default = true)]
    pub qkv_bias: bool,
    /// Per-head query/key normalisation of every stream (not `FullLayerNorm`). Default: none.
    #[config(default = "QkNorm::None")]
    pub qk_norm: QkNorm,
    /// Epsilon of the query/key normalisation. Default: 1e-6 (SD3).
    #[config(default = 1e-6)]
    pub qk_norm_eps: f64,
}

impl JointAttentionConfig {
    /// Checks the sizes and the pre-only indices.
    pub fn validate(&self) -> Result<()> {
        let (c, h, s) = (self.d_model, self.n_heads, self.n_streams);
        ensure_config(c > 0 && h > 0 && c % h == 0, || {
            format!("joint attention width {c} must be a positive multiple of the number of heads {h}")
        })?;
        ensure_config(s > 0, || "joint attention needs at least one stream".to_string())?;
        ensure_config(self.qk_norm != QkNorm::FullLayerNorm, || {
            "joint attention normalises queries and keys per head (no FullLayerNorm)".to_string()
        })?;
        ensure_config(self.pre_only.iter().all(|&i| i < s), || {
            format!("pre-only stream indices {:?} must be below the {s} streams", self.pre_only)
        })?;
        ensure_config((0..s).any(|i| !self.pre_only.contains(&i)), || {
            "at least one stream must produce an output (not be pre-only)".to_string()
        })
    }

    /// Initialise a [`JointAttention`] with Xavier-uniform weights and zero biases.
    pub fn init(&self, device: &Device) -> Result<JointAttention> {
        self.validate()?;
        let (c, h) = (self.d_model, self.n_heads);
        let dh = c / h;
        let streams = (0..self.n_streams)
            .map(|i| JointAttentionStream {
                qkv: linear(c, 3 * c, self.qkv_bias, WeightInit::XavierUniform, device),
                q_norm: HeadNorm::new(self.qk_norm, dh, self.qk_norm_eps, device),
                k_norm: HeadNorm::new(self.qk_norm, dh, self.qk_norm_eps, device),
                proj: (!self.pre_only.contains(&i)).then(|| linear(c, c, true, WeightInit::XavierUniform, device)),
            })
            .collect();
        Ok(JointAttention { streams, n_heads: h })
    }
}

/// One stream's weights in a [`JointAttention`].
#[derive(Module, Debug)]
pub struct JointAttentionStream {
    /// Fused q/k/v projection `[C, 3C]`, output ordered `(q, k, v)` then heads.
    pub qkv: Linear,
    /// Optional per-head query normalisation (width `C/H`).
    pub q_norm: Option<HeadNorm>,
    /// Optional per-head key normalisation (width `C/H`).
    pub k_norm: Option<HeadNorm>,
    /// Output projection `[C, C]`; `None` for a pre-only stream.
    pub proj: Option<Linear>,
}

impl JointAttentionStream {
    /// Whether the stream only supplies keys and values.
    pub fn is_pre_only(&self) -> bool {
        self.proj.is_none()
    }

    /// Per-head queries, keys and values (after q/k normalisation); the queries are `None` for
    /// a pre-only stream (they would be discarded).
    ///
    /// # Shapes
    /// - `x`: `[B, N, C]` -> three `[B, H, N, C/H]`
    pub fn qkv_heads(&self, x: Tensor<3>, n_heads: usize) -> (Option<Tensor<4>>, Tensor<4>, Tensor<4>) {
        let mut it = cpu::linear(&self.qkv, x).chunk(3, 2).into_iter().map(|t| split_heads(t, n_heads));
        let (q, k, v) = (it.next().expect("q"), it.next().expect("k"), it.next().expect("v"));
        let q = (!self.is_pre_only()).then(|| match &self.q_norm {
            Some(n) => n.forward(q),
            None => q,
        });
        let k = match &self.k_norm {
            Some(n) => n.forward(k),
            None => k,
        };
        (q, k, v)
    }
}

/// Multi-stream joint attention: per-stream projections, one attention over all tokens.
#[derive(Module, Debug)]
pub struct JointAttention {
    /// The streams' weights, in stream order.
    pub streams: Vec<JointAttentionStream>,
    /// Number of heads.
    pub n_heads: usize,
}

impl JointAttention {
    /// Width `C` of every stream.
    pub fn d_model(&self) -> usize {
        self.streams[0].qkv.weight.dims()[0]
    }

    /// Attend once over the concatenation of every stream's tokens (stream order).
    ///
    /// # Shapes
    /// - `xs`: one `[B, N_s, C]` per stream (same `B` and `C`, any `N_s >= 1`)
    /// - output: per stream, `Some([B, N_s, C])`, or `None` for a pre-only stream
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a wrong number of streams, [`Error::Shape`] for a stream
    /// of the wrong width, batch or an empty one.
    pub fn forward(&self, xs: Vec<Tensor<3>>) -> Result<Vec<Option<Tensor<3>>>> {
        check_streams(&xs, self.streams.len(), self.d_model())?;
        let h = self.n_heads;
        let lens: Vec<usize> = xs.iter().map(|x| x.dims()[1]).collect();
        let (mut qs, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
        for (stream, x) in self.streams.iter().zip(xs) {
            let (q, k, v) = stream.qkv_heads(x, h);
            qs.extend(q);
            ks.push(k);
            vs.push(v);
        }
        let out = merge_heads(sdpa(Tensor::cat(qs, 2), Tensor::cat(ks, 2), Tensor::cat(vs, 2)));
        let [b, _, c] = out.dims();
        let mut start = 0;
        Ok(self
            .streams
            .iter()
            .zip(lens)
            .map(|(stream, n)| {
                stream.proj.as_ref().map(|proj| {
                    let y = out.clone().slice([0..b, start..start + n, 0..c]);
                    start += n;
                    cpu::linear(proj, y)
                })
            })
            .collect())
    }
}

/// Checks a list of streams against the expected count and width: same batch, `N_s >= 1`.
pub(crate) fn check_streams(xs: &[Tensor<3>], n_streams: usize, d_model: usize) -> Result<()> {
    if xs.len() != n_streams {
        return Err(Error::InvalidArgument(format!(
            "joint attention over {n_streams} streams got {} inputs",
            xs.len()
        )));
    }
    let batch = xs[0].dims()[0];
    for (i, x) in xs.iter().enumerate() {
        let [b, n, c] = x.dims();
        if b != batch || n == 0 || c != d_model {
            return Err(Error::Shape {
                name: format!("stream {i}"),
                expected: format!("[{batch}, N >= 1, {d_model}]"),
                got: format!("{:?}", x.dims()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::softmax;
    use burn::tensor::Tolerance;

    fn naive_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
        let dh = q.dims()[3] as f64;
        softmax(q.matmul(k.swap_dims(2, 3)) / dh.sqrt(), 3).matmul(v)
    }

    #[test]
    fn equals_naive_attention_over_the_concatenation() {
        let device = Device::flex();
        for qk_norm in [QkNorm::None, QkNorm::RmsNorm, QkNorm::LayerNorm] {
            let attn = JointAttentionConfig::new(16, 4).with_qk_norm(qk_norm).init(&device).unwrap();
            let a = crate::test_util::randn([2, 5, 16], 101, &device);
            let b = crate::test_util::randn([2, 3, 16], 102, &device);
            let out = attn.forward(vec![a.clone(), b.clone()]).unwrap();
            let (qa, ka, va) = attn.streams[0].qkv_heads(a, 4);
            let (qb, kb, vb) = attn.streams[1].qkv_heads(b, 4);
            let all = merge_heads(naive_attention(
                Tensor::cat(vec![qa.unwrap(), qb.unwrap()], 2),
                Tensor::cat(vec![ka, kb], 2),
                Tensor::cat(vec![va, vb], 2),
            ));
            let ya = attn.streams[0].proj.as_ref().unwrap().forward(all.clone().slice([0..2, 0..5, 0..16]));
            let yb = attn.streams[1].proj.as_ref().unwrap().forward(all.slice([0..2, 5..8, 0..16]));
            let mut out = out.into_iter();
            let tol = Tolerance::absolute(1e-5);
            out.next().unwrap().unwrap().into_data().assert_approx_eq::<f32>(&ya.into_data(), tol);
            out.next().unwrap().unwrap().into_data().assert_approx_eq::<f32>(&yb.into_data(), tol);
        }
    }

    #[test]
    fn pre_only_stream_has_no_output_and_leaves_the_others_exact() {
        let device = Device::flex();
        let full = JointAttentionConfig::new(8, 2).init(&device).unwrap();
        let mut pre = JointAttentionConfig::new(8, 2).with_pre_only(vec![1]).init(&device).unwrap();
        assert!(pre.streams[1].proj.is_none());
        // same projections as `full` for the shared weights
        pre.streams[0] = full.streams[0].clone();
        pre.streams[1].qkv = full.streams[1].qkv.clone();
        let a = crate::test_util::randn([1, 4, 8], 103, &device);
        let b = crate::test_util::randn([1, 6, 8], 104, &device);
        let y_full = full.forward(vec![a.clone(), b.clone()]).unwrap();
        let y_pre = pre.forward(vec![a, b]).unwrap();
        assert!(y_pre[1].is_none());
        y_pre[0]
            .clone()
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&y_full[0].clone().unwrap().into_data(), Tolerance::absolute(1e-6));
    }

    #[test]
    fn three_streams_and_errors() {
        let device = Device::flex();
        let attn = JointAttentionConfig::new(8, 2).with_n_streams(3).init(&device).unwrap();
        let x = |n| Tensor::<3>::zeros([2, n, 8], &device);
        let out = attn.forward(vec![x(1), x(2), x(3)]).unwrap();
        let dims: Vec<_> = out.into_iter().map(|y| y.unwrap().dims()).collect();
        assert_eq!(dims, vec![[2, 1, 8], [2, 2, 8], [2, 3, 8]]);
        assert!(matches!(attn.forward(vec![x(1), x(2)]), Err(Error::InvalidArgument(_))));
        assert!(matches!(attn.forward(vec![x(1), x(0), x(2)]), Err(Error::Shape { .. })));
        let wide = Tensor::<3>::zeros([2, 2, 9], &device);
        assert!(matches!(attn.forward(vec![x(1), wide, x(2)]), Err(Error::Shape { .. })));
        let other_batch = Tensor::<3>::zeros([3, 2, 8], &device);
        assert!(matches!(attn.forward(vec![x(1), other_batch, x(2)]), Err(Error::Shape { .. })));
        assert!(JointAttentionConfig::new(10, 4).init(&device).is_err());
        assert!(JointAttentionConfig::new(8, 2).with_pre_only(vec![2]).init(&device).is_err());
        assert!(JointAttentionConfig::new(8, 2).with_pre_only(vec![0, 1]).init(&device).is_err());
        assert!(JointAttentionConfig::new(8, 2).with_n_streams(0).init(&device).is_err());
    }
}

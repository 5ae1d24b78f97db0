//! The T5 encoder (Raffel et al. 2020; v1.1 as SD3's `text_encoder_3`) as transformers'
//! `T5EncoderModel`.
//!
//! ```text
//! h_0 = E[t]
//! h'_l = h_{l-1} + O(softmax(Q K^T + B + M) V),  Q, K, V from RMS(h_{l-1})   (no 1/sqrt(d) scale)
//! h_l  = h'_l + wo(act(wi_0 x) * wi_1 x),  x = RMS(h'_l)       (gated, v1.1; `wo(act(wi x))` for relu)
//! last_hidden_state = RMS_f(h_N)
//! RMS(x) = w * x / sqrt(mean(x^2) + eps)   (statistics in f32)
//! ```
//!
//! `B[h, i, j]` is a learned bias per head of the bucket of the relative position `j - i`
//! (bidirectional: half the buckets per direction, exact below half of those, logarithmic up to
//! `relative_attention_max_distance`), computed once from block 0's table and shared by every
//! layer; `M` masks padded keys when an attention mask is given (SD3's pipeline gives none).
//! `feed_forward_proj` = `gated-gelu` uses the tanh GELU (`gelu_new`), as transformers.
//!
//! Half precision follows transformers: the norms compute in f32 and return the weight's dtype,
//! the hidden states of an f16 model are clamped to the f16 range after the attention and the
//! feed-forward, and `wo` may be kept in f32 (`_keep_in_fp32_modules`), in which case its input
//! is cast to f32 and the residual stream is promoted.
//!
//! Checkpoints load through the crate's one loader ([`LoadWeights`], format [`T5Transformers`])
//! under transformers' names (`shared.weight` or `encoder.embed_tokens.weight`,
//! `encoder.block.N.layer.0.SelfAttention.q.weight`, `encoder.block.N.layer.1.DenseReluDense.wi_0.weight`, ...).

use std::path::Path;

use burn::module::Param;
use burn::nn::{Embedding, Initializer, Linear};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use serde_json::Value;

use crate::cpu;
use crate::error::{Error, Result, ensure_config, ensure_positive};
use crate::layers::Activation;
use crate::layers::attention::{merge_heads, split_heads};
use crate::layers::init::{WeightInit, linear};
use crate::text::config::{JsonConfig, read_config_file};
use crate::text::ids_to_host;
use crate::weights::{CheckpointFormat, KeyMap, LazyCheckpoint, LoadWeights};

/// Configuration of a [`T5EncoderModel`], field for field transformers' `T5Config`.
#[derive(Config, Debug, PartialEq)]
pub struct T5EncoderConfig {
    /// Vocabulary size. Default: 32128.
    #[config(default = 32128)]
    pub vocab_size: usize,
    /// Width. Default: 512.
    #[config(default = 512)]
    pub d_model: usize,
    /// Width of one head. Default: 64.
    #[config(default = 64)]
    pub d_kv: usize,
    /// Feed-forward width. Default: 2048.
    #[config(default = 2048)]
    pub d_ff: usize,
    /// Number of blocks. Default: 6.
    #[config(default = 6)]
    pub num_layers: usize,
    /// Number of heads. Default: 8.
    #[config(default = 8)]
    pub num_heads: usize,
    /// Relative-position buckets. Default: 32.
    #[config(default = 32)]
    pub relative_attention_num_buckets: usize,
    /// Distance beyond which relative positions share a bucket. Default: 128.
    #[config(default = 128)]
    pub relative_attention_max_distance: usize,
    /// RMSNorm epsilon. Default: 1e-6.
    #[config(default = 1e-6)]
    pub layer_norm_epsilon: f64,
    /// Gated feed-forward (`gated-*`, T5 v1.1). Default: false (`relu`).
    #[config(default = false)]
    pub is_gated_act: bool,
    /// Feed-forward activation. Default: ReLU.
    #[config(default = "Activation::Relu")]
    pub dense_act_fn: Activation,
}

impl T5EncoderConfig {
    /// Read transformers' `config.json` by its own option names (absent options take
    /// `T5Config`'s defaults); `feed_forward_proj` is `"{act}"` or `"gated-{act}"`, with
    /// `gated-gelu` meaning the tanh GELU as in transformers.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a value of the wrong type or an unknown activation.
    pub fn from_transformers(config: &Value) -> Result<Self> {
        let cfg = JsonConfig::new(config);
        let d = Self::new();
        let proj = cfg.string("feed_forward_proj", "relu")?;
        let parts: Vec<&str> = proj.split('-').collect();
        let (is_gated_act, act) = match parts.as_slice() {
            [act] => (false, *act),
            ["gated", act] => (true, *act),
            _ => return Err(Error::InvalidConfig(format!("`feed_forward_proj` `{proj}` is neither `ACT` nor `gated-ACT`"))),
        };
        let dense_act_fn = if proj == "gated-gelu" { Activation::GeluTanh } else { Activation::from_transformers(act)? };
        Ok(Self {
            vocab_size: cfg.usize("vocab_size", d.vocab_size)?,
            d_model: cfg.usize("d_model", d.d_model)?,
            d_kv: cfg.usize("d_kv", d.d_kv)?,
            d_ff: cfg.usize("d_ff", d.d_ff)?,
            num_layers: cfg.usize("num_layers", d.num_layers)?,
            num_heads: cfg.usize("num_heads", d.num_heads)?,
            relative_attention_num_buckets: cfg.usize("relative_attention_num_buckets", d.relative_attention_num_buckets)?,
            relative_attention_max_distance: cfg.usize("relative_attention_max_distance", d.relative_attention_max_distance)?,
            layer_norm_epsilon: cfg.f64("layer_norm_epsilon", d.layer_norm_epsilon)?,
            is_gated_act,
            dense_act_fn,
        })
    }

    /// Build the encoder with random weights (load a checkpoint afterwards).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for zero sizes or fewer than 2 buckets per direction.
    pub fn init(&self, device: &Device) -> Result<T5EncoderModel> {
        let (d, inner) = (self.d_model, self.num_heads * self.d_kv);
        ensure_positive(&[
            ("vocab_size", self.vocab_size),
            ("d_model", d),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("relative_attention_max_distance", self.relative_attention_max_distance),
        ])?;
        ensure_config(self.relative_attention_num_buckets >= 4, || {
            format!("relative_attention_num_buckets must be at least 4, got {}", self.relative_attention_num_buckets)
        })?;
        let init = WeightInit::Normal(0.05);
        let lin = |i, o| linear(i, o, false, init, device);
        let norm = || T5LayerNorm { weight: Initializer::Ones.init([d], device), eps: self.layer_norm_epsilon };
        let block = (0..self.num_layers)
            .map(|_| T5Block {
                attn_norm: norm(),
                attn: T5Attention { q: lin(d, inner), k: lin(d, inner), v: lin(d, inner), o: lin(inner, d), n_heads: self.num_heads },
                ff_norm: norm(),
                ff: T5FeedForward {
                    wi: (!self.is_gated_act).then(|| lin(d, self.d_ff)),
                    wi_0: self.is_gated_act.then(|| lin(d, self.d_ff)),
                    wi_1: self.is_gated_act.then(|| lin(d, self.d_ff)),
                    wo: lin(self.d_ff, d),
                    act: self.dense_act_fn,
                },
            })
            .collect();
        let table = |rows, cols| Embedding { weight: Initializer::Normal { mean: 0.0, std: 1.0 }.init([rows, cols], device) };
        Ok(T5EncoderModel {
            shared: table(self.vocab_size, d),
            relative_attention_bias: table(self.relative_attention_num_buckets, self.num_heads),
            block,
            final_layer_norm: norm(),
            max_distance: self.relative_attention_max_distance,
        })
    }
}

/// T5's RMSNorm: no mean, no bias, statistics in f32.
#[derive(Module, Debug)]
pub struct T5LayerNorm {
    /// Scale `[d_model]`.
    pub weight: Param<Tensor<1>>,
    /// Epsilon.
    pub eps: f64,
}

impl T5LayerNorm {
    /// # Shapes
    /// - `x`: `[B, L, D]` -> `[B, L, D]` in the weight's dtype
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let w = self.weight.val();
        let x = x.cast(DType::F32);
        let var = x.clone().square().mean_dim(2);
        let y = x * (var + self.eps).sqrt().recip();
        y.cast(w.dtype()) * w.unsqueeze::<3>()
    }
}

/// Self-attention without output scaling (keys `q`, `k`, `v`, `o`, no biases).
#[derive(Module, Debug)]
pub struct T5Attention {
    /// `[D, H*d_kv]`.
    pub q: Linear,
    /// `[D, H*d_kv]`.
    pub k: Linear,
    /// `[D, H*d_kv]`.
    pub v: Linear,
    /// `[H*d_kv, D]`.
    pub o: Linear,
    /// Number of heads.
    pub n_heads: usize,
}

impl T5Attention {
    /// # Shapes
    /// - `x`: `[B, L, D]`, `bias`: `[B, H, L, L]`, `mask`: `[B, H, L, L]` (true = masked) -> `[B, L, D]`
    pub fn forward(&self, x: Tensor<3>, bias: Tensor<4>, mask: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let h = self.n_heads;
        let q = split_heads(cpu::linear(&self.q, x.clone()), h);
        let k = split_heads(cpu::linear(&self.k, x.clone()), h);
        let v = split_heads(cpu::linear(&self.v, x), h);
        let options = AttentionModuleOptions { scale: Some(1.0), ..Default::default() };
        let bias = bias.cast(q.dtype());
        cpu::linear(&self.o, merge_heads(attention(q, k, v, mask, Some(bias), options)))
    }
}

/// The feed-forward: gated `wo(act(wi_0 x) * wi_1 x)` or plain `wo(act(wi x))`.
#[derive(Module, Debug)]
pub struct T5FeedForward {
    /// Plain input projection `[D, d_ff]` (non-gated).
    pub wi: Option<Linear>,
    /// Gate projection `[D, d_ff]` (gated).
    pub wi_0: Option<Linear>,
    /// Linear projection `[D, d_ff]` (gated).
    pub wi_1: Option<Linear>,
    /// Output projection `[d_ff, D]`.
    pub wo: Linear,
    /// The activation.
    #[module(skip)]
    pub act: Activation,
}

impl T5FeedForward {
    /// # Shapes
    /// - `x`: `[B, L, D]` -> `[B, L, D]` in `wo`'s dtype
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = match (&self.wi, &self.wi_0, &self.wi_1) {
            (_, Some(w0), Some(w1)) => self.act.forward(cpu::linear(w0, x.clone())) * cpu::linear(w1, x),
            (Some(wi), _, _) => self.act.forward(cpu::linear(wi, x)),
            _ => unreachable!("built with either wi or wi_0 and wi_1"),
        };
        cpu::linear(&self.wo, hidden.cast(self.wo.weight.val().dtype()))
    }
}

/// One encoder block: attention and feed-forward sub-layers, each pre-norm and residual.
#[derive(Module, Debug)]
pub struct T5Block {
    /// Norm before the attention (`layer.0.layer_norm`).
    pub attn_norm: T5LayerNorm,
    /// Self-attention (`layer.0.SelfAttention`).
    pub attn: T5Attention,
    /// Norm before the feed-forward (`layer.1.layer_norm`).
    pub ff_norm: T5LayerNorm,
    /// Feed-forward (`layer.1.DenseReluDense`).
    pub ff: T5FeedForward,
}

/// `a + b`, promoted to f32 when the dtypes differ (PyTorch's type promotion).
fn add_promoted(a: Tensor<3>, b: Tensor<3>) -> Tensor<3> {
    if a.dtype() == b.dtype() { a + b } else { a.cast(DType::F32) + b.cast(DType::F32) }
}

/// Clamp f16 hidden states into the finite f16 range (transformers' fp16 guard).
fn clamp_f16(x: Tensor<3>) -> Tensor<3> {
    if x.dtype() != DType::F16 {
        return x;
    }
    let max = f64::from(half::f16::MAX);
    let has_inf = x.clone().is_inf().any().into_scalar::<bool>();
    let limit = if has_inf { max - 1000.0 } else { max };
    x.clamp(-limit, limit)
}

impl T5Block {
    /// # Shapes
    /// - `x`: `[B, L, D]`, `bias`, `mask`: `[B, H, L, L]` -> `[B, L, D]`
    pub fn forward(&self, x: Tensor<3>, bias: Tensor<4>, mask: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let x = clamp_f16(add_promoted(x.clone(), self.attn.forward(self.attn_norm.forward(x), bias, mask)));
        clamp_f16(add_promoted(x.clone(), self.ff.forward(self.ff_norm.forward(x))))
    }
}

/// The T5 encoder (see the [module docs](self)).
#[derive(Module, Debug)]
pub struct T5EncoderModel {
    /// Token embedding `[vocab_size, D]` (tied; `shared.weight`).
    pub shared: Embedding,
    /// Relative-position bias `[num_buckets, H]` (block 0's table, shared by every block).
    pub relative_attention_bias: Embedding,
    /// The blocks.
    pub block: Vec<T5Block>,
    /// Final RMSNorm.
    pub final_layer_norm: T5LayerNorm,
    /// `relative_attention_max_distance`.
    pub max_distance: usize,
}

/// The bidirectional bucket of the relative position `rel = key - query` (transformers'
/// `_relative_position_bucket`, with its f32 logarithm).
pub fn relative_position_bucket(rel: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = (num_buckets / 2) as i64;
    let offset = if rel > 0 { half } else { 0 };
    let n = rel.abs();
    let max_exact = half / 2;
    if n < max_exact {
        return (offset + n) as usize;
    }
    let ratio = (n as f32 / max_exact as f32).ln() / (max_distance as f64 / max_exact as f64).ln() as f32;
    let large = max_exact + (ratio * (half - max_exact) as f32) as i64;
    (offset + large.min(half - 1)) as usize
}

impl T5EncoderModel {
    /// The position bias `[1, H, L, L]` of a sequence of length `len`.
    pub fn position_bias(&self, len: usize) -> Tensor<4> {
        let [buckets, h] = self.relative_attention_bias.weight.dims();
        let ids: Vec<i64> = (0..len as i64)
            .flat_map(|q| (0..len as i64).map(move |k| (q, k)))
            .map(|(q, k)| relative_position_bucket(k - q, buckets, self.max_distance) as i64)
            .collect();
        let device = self.shared.weight.device();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, len * len]), &device);
        self.relative_attention_bias.forward(ids).reshape([len, len, h]).permute([2, 0, 1]).unsqueeze_dim::<4>(0)
    }

    /// Encode token ids; `attention_mask` (1 on tokens, 0 on padding) hides padded keys.
    ///
    /// # Shapes
    /// - `input_ids`, `attention_mask`: `[B, L]` -> `[B, L, D]`
    ///
    /// # Errors
    /// [`Error::Shape`] for an empty input or a mask of another shape,
    /// [`Error::InvalidArgument`] for ids outside the vocabulary.
    pub fn forward(&self, input_ids: Tensor<2, Int>, attention_mask: Option<Tensor<2, Int>>) -> Result<Tensor<3>> {
        let [b, l] = input_ids.dims();
        if b == 0 || l == 0 {
            return Err(Error::Shape { name: "input_ids".into(), expected: "[B >= 1, L >= 1]".into(), got: format!("{:?}", [b, l]) });
        }
        ids_to_host(&input_ids, self.shared.weight.dims()[0])?;
        let h = self.relative_attention_bias.weight.dims()[1];
        let mask = match attention_mask {
            None => None,
            Some(m) => {
                crate::error::ensure_dims("attention_mask", m.dims(), [Some(b), Some(l)])?;
                Some(m.equal_elem(0).reshape([b, 1, 1, l]).expand([b, h, l, l]))
            }
        };
        // the blocks on the CPU pool's threads, as the denoisers' forwards
        Ok(crate::cpu::on_workers(&input_ids.device(), || {
            let bias = self.position_bias(l).expand([b, h, l, l]);
            let mut x = self.shared.forward(input_ids);
            for block in &self.block {
                x = block.forward(x, bias.clone(), mask.clone());
            }
            self.final_layer_norm.forward(x)
        }))
    }

    /// Build from a transformers directory (`config.json` and `model.safetensors`, sharded
    /// or not), as SD3's `text_encoder_3` folder, streaming the weights in with the one loader
    /// ([`LoadWeights`]: tensor by tensor, converted to the model's dtype).
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable files, [`Error::InvalidConfig`], [`Error::CheckpointMismatch`].
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = read_config_file(&dir.join("config.json"))?;
        let mut model = T5EncoderConfig::from_transformers(&config)?.init(device)?;
        model.load_weights(dir)?;
        Ok(model)
    }
}

/// Module path -> transformers key.
fn key_map() -> KeyMap {
    // Rules apply in order: the bias table's rule comes after `block`, whose output it contains.
    KeyMap::new([
        ("block", "encoder.block"),
        ("final_layer_norm", "encoder.final_layer_norm"),
        ("attn_norm", "layer.0.layer_norm"),
        ("attn", "layer.0.SelfAttention"),
        ("ff_norm", "layer.1.layer_norm"),
        ("ff", "layer.1.DenseReluDense"),
        ("relative_attention_bias", "encoder.block.0.layer.0.SelfAttention.relative_attention_bias"),
    ])
}

/// transformers' `T5EncoderModel` names: the T5 encoder's [`CheckpointFormat`]. The tied token
/// embedding may be stored as `shared.weight`, `encoder.embed_tokens.weight` or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct T5Transformers;

impl CheckpointFormat<T5EncoderModel> for T5Transformers {
    fn key(&self, module_path: &str) -> String {
        key_map().checkpoint_key(module_path)
    }

    fn prepare(&self, _model: &T5EncoderModel, checkpoint: &mut LazyCheckpoint<'_>) -> Result<()> {
        if let Some(emb) = checkpoint.remove("encoder.embed_tokens.weight") {
            if !checkpoint.contains("shared.weight") {
                checkpoint.insert("shared.weight", emb);
            }
        }
        Ok(())
    }
}

impl LoadWeights for T5EncoderModel {
    type Format = T5Transformers;

    fn format_of(&self, _checkpoint: &LazyCheckpoint<'_>) -> T5Transformers {
        T5Transformers
    }

    fn export_format(&self) -> T5Transformers {
        T5Transformers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_transformers() {
        // torch: T5Attention._relative_position_bucket(arange(-12, 13), True, 32, 128)
        let got: Vec<usize> = (-12..=12).map(|r| relative_position_bucket(r, 32, 128)).collect();
        let want = [9, 8, 8, 8, 8, 7, 6, 5, 4, 3, 2, 1, 0, 17, 18, 19, 20, 21, 22, 23, 24, 24, 24, 24, 25];
        assert_eq!(got, want);
        let far: Vec<usize> = [-200, 200, -127, 127, -128, 128, 64, -20].map(|r| relative_position_bucket(r, 32, 128)).to_vec();
        assert_eq!(far, [15, 31, 15, 31, 15, 31, 30, 10]);
    }

    #[test]
    fn keys_and_forward() {
        let device = Device::flex();
        let cfg = T5EncoderConfig::from_transformers(&serde_json::json!({"vocab_size": 40, "d_model": 16, "d_kv": 4,
            "d_ff": 24, "num_layers": 2, "num_heads": 3, "relative_attention_num_buckets": 8,
            "relative_attention_max_distance": 16, "feed_forward_proj": "gated-gelu"}))
        .unwrap();
        assert!(cfg.is_gated_act && cfg.dense_act_fn == Activation::GeluTanh);
        let model = cfg.init(&device).unwrap();
        let ck = model.to_checkpoint().unwrap();
        for k in [
            "shared.weight",
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            "encoder.block.1.layer.0.SelfAttention.o.weight",
            "encoder.block.1.layer.0.layer_norm.weight",
            "encoder.block.0.layer.1.DenseReluDense.wi_1.weight",
            "encoder.block.0.layer.1.layer_norm.weight",
            "encoder.final_layer_norm.weight",
        ] {
            assert!(ck.contains(k), "{k}");
        }
        assert_eq!(ck.get("encoder.block.0.layer.0.SelfAttention.q.weight").unwrap().shape().to_vec(), vec![12, 16]);
        let mut renamed = ck.clone();
        let emb = renamed.remove("shared.weight").unwrap();
        renamed.insert("encoder.embed_tokens.weight", emb);
        let mut m2 = cfg.init(&device).unwrap();
        m2.load_checkpoint(&renamed).unwrap();
        let ids = Tensor::<2, Int>::from_ints([[3, 4, 1, 0]], &device);
        let mask = Tensor::<2, Int>::from_ints([[1, 1, 1, 0]], &device);
        assert_eq!(m2.forward(ids.clone(), Some(mask)).unwrap().dims(), [1, 4, 16]);
        assert!(m2.forward(ids, Some(Tensor::<2, Int>::ones([1, 3], &device))).is_err());
        assert!(m2.forward(Tensor::<2, Int>::from_ints([[40]], &device), None).is_err());
        assert!(T5EncoderConfig::from_transformers(&serde_json::json!({"feed_forward_proj": "gated-gelu-x"})).is_err());
    }

    #[test]
    fn from_pretrained_streams_a_sharded_bf16_folder() {
        let device = Device::flex();
        let config = serde_json::json!({"vocab_size": 40, "d_model": 16, "d_kv": 4, "d_ff": 24, "num_layers": 2,
            "num_heads": 3, "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16,
            "feed_forward_proj": "gated-gelu"});
        let cfg = T5EncoderConfig::from_transformers(&config).unwrap();
        let src = cfg.init(&device).unwrap();
        // bf16 tensors in two shards behind an index, as SD3's text_encoder_3 folder
        let dir = std::env::temp_dir().join(format!("dt_t5_sharded_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut shards, mut weight_map) = ([crate::weights::Checkpoint::new(), crate::weights::Checkpoint::new()], serde_json::Map::new());
        for (i, (k, v)) in src.to_checkpoint().unwrap().into_tensors().into_iter().enumerate() {
            let name = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
            weight_map.insert(k.clone(), name.into());
            shards[i % 2].insert(k, v.convert_dtype(DType::BF16));
        }
        for (i, shard) in shards.iter().enumerate() {
            shard.save_safetensors(dir.join(format!("model-0000{}-of-00002.safetensors", i + 1))).unwrap();
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let model = T5EncoderModel::from_pretrained(&dir, &device).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let mut want = cfg.init(&device).unwrap();
        let merged: std::collections::BTreeMap<_, _> = shards.into_iter().flat_map(|s| s.into_tensors()).collect();
        want.load_checkpoint(&crate::weights::Checkpoint::from_tensors(merged)).unwrap();
        let ids = Tensor::<2, Int>::from_ints([[3, 4, 1, 0]], &device);
        let (a, b) = (model.forward(ids.clone(), None).unwrap(), want.forward(ids, None).unwrap());
        assert_eq!(a.dtype(), DType::F32);
        a.into_data().assert_eq(&b.into_data(), true);
    }
}

//! The CLIP text transformer (Radford et al. 2021) as transformers' `CLIPTextModel` /
//! `CLIPTextModelWithProjection`: OpenAI CLIP-L/14, OpenCLIP bigG/14 and ViT-H/14 text towers.
//!
//! For token ids `t` of length `L` (at most `max_position_embeddings`):
//!
//! ```text
//! h_0 = E_tok[t] + E_pos[0..L]
//! h_l = h'_l + MLP(LN_2(h'_l)),  h'_l = h_{l-1} + CausalSelfAttention(LN_1(h_{l-1}))   (l = 1..N)
//! last_hidden_state = LN_f(h_N);  penultimate_hidden_state = h_{N-1}   (SD3's conditioning)
//! pooled = last_hidden_state[b, p_b];  text_embeds = pooled W_proj   (no bias)
//! ```
//!
//! `MLP(x) = fc2(act(fc1(x)))` with `act` = QuickGELU (OpenAI CLIP) or GELU (OpenCLIP). The pooled
//! position `p_b` follows transformers: with the legacy `eos_token_id == 2` of the released
//! configs it is the position of the largest id (the first one, as `argmax`; the EOS token is the
//! largest id of CLIP's vocabulary); otherwise the first position holding `eos_token_id`.
//!
//! Checkpoints load through the crate's one loader ([`LoadWeights`]) in transformers' key names
//! (`text_model.encoder.layers.N.self_attn.q_proj.weight`, `text_projection.weight`) or
//! OpenCLIP's (`transformer.resblocks.N.attn.in_proj_weight`, `text_projection` applied as
//! `x @ P`), detected from the keys; see [`clip_format`](crate::text::clip_format).

use std::path::Path;

use burn::nn::{Embedding, Initializer, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use serde_json::Value;

use crate::cpu;
use crate::error::{Error, Result, ensure_divisible, ensure_positive};
use crate::layers::Activation;
use crate::layers::attention::{merge_heads, split_heads};
use crate::layers::init::{WeightInit, linear};
use crate::text::config::{JsonConfig, read_config_file};
use crate::text::ids_to_host;
use crate::text::clip_format::ClipTextFormat;
use crate::weights::{LazyCheckpoint, LoadWeights};

/// Configuration of a [`ClipTextModel`], field for field transformers' `CLIPTextConfig`.
#[derive(Config, Debug, PartialEq)]
pub struct ClipTextConfig {
    /// Vocabulary size. Default: 49408.
    #[config(default = 49408)]
    pub vocab_size: usize,
    /// Width `D`. Default: 512.
    #[config(default = 512)]
    pub hidden_size: usize,
    /// MLP width. Default: 2048.
    #[config(default = 2048)]
    pub intermediate_size: usize,
    /// Number of layers `N`. Default: 12.
    #[config(default = 12)]
    pub num_hidden_layers: usize,
    /// Attention heads. Default: 8.
    #[config(default = 8)]
    pub num_attention_heads: usize,
    /// Longest token sequence. Default: 77.
    #[config(default = 77)]
    pub max_position_embeddings: usize,
    /// Width of the projected pooled output; `None` builds a `CLIPTextModel` without
    /// projection. Default: `Some(512)`.
    #[config(default = "Some(512)")]
    pub projection_dim: Option<usize>,
    /// LayerNorm epsilon. Default: 1e-5.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// MLP activation. Default: QuickGELU.
    #[config(default = "Activation::QuickGelu")]
    pub hidden_act: Activation,
    /// End-of-text id; 2 selects the legacy argmax pooling. Default: 2.
    #[config(default = 2)]
    pub eos_token_id: i64,
}

impl ClipTextConfig {
    /// Read transformers' `config.json` of a `CLIPTextModel(WithProjection)` (or the
    /// `text_config` of a full `CLIPModel`), by its own option names; absent options take
    /// `CLIPTextConfig`'s defaults. `with_projection` says whether the checkpoint has a
    /// `text_projection` (the `WithProjection` class or a full `CLIPModel`).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a value of the wrong type or an unknown `hidden_act`.
    pub fn from_transformers(config: &Value, with_projection: bool) -> Result<Self> {
        let cfg = JsonConfig::new(config.get("text_config").unwrap_or(config));
        let d = Self::new();
        let projection_dim = cfg.usize("projection_dim", d.projection_dim.unwrap_or(512))?;
        Ok(Self {
            vocab_size: cfg.usize("vocab_size", d.vocab_size)?,
            hidden_size: cfg.usize("hidden_size", d.hidden_size)?,
            intermediate_size: cfg.usize("intermediate_size", d.intermediate_size)?,
            num_hidden_layers: cfg.usize("num_hidden_layers", d.num_hidden_layers)?,
            num_attention_heads: cfg.usize("num_attention_heads", d.num_attention_heads)?,
            max_position_embeddings: cfg.usize("max_position_embeddings", d.max_position_embeddings)?,
            projection_dim: with_projection.then_some(projection_dim),
            layer_norm_eps: cfg.f64("layer_norm_eps", d.layer_norm_eps)?,
            hidden_act: Activation::from_transformers(&cfg.string("hidden_act", "quick_gelu")?)?,
            eos_token_id: cfg.i64("eos_token_id", d.eos_token_id)?,
        })
    }

    /// Build the model with random weights (load a checkpoint afterwards).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for zero sizes or a width not divisible by the heads.
    pub fn init(&self, device: &Device) -> Result<ClipTextModel> {
        let (d, h) = (self.hidden_size, self.num_attention_heads);
        ensure_positive(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", d),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", h),
            ("max_position_embeddings", self.max_position_embeddings),
        ])?;
        ensure_divisible("hidden_size", d, "num_attention_heads", h)?;
        let init = WeightInit::Normal(0.02);
        let ln = || LayerNormConfig::new(d).with_epsilon(self.layer_norm_eps).init(device);
        let layers = (0..self.num_hidden_layers)
            .map(|_| ClipEncoderLayer {
                self_attn: ClipAttention {
                    q_proj: linear(d, d, true, init, device),
                    k_proj: linear(d, d, true, init, device),
                    v_proj: linear(d, d, true, init, device),
                    out_proj: linear(d, d, true, init, device),
                    n_heads: h,
                },
                layer_norm1: ln(),
                mlp: ClipMlp {
                    fc1: linear(d, self.intermediate_size, true, init, device),
                    fc2: linear(self.intermediate_size, d, true, init, device),
                    act: self.hidden_act,
                },
                layer_norm2: ln(),
            })
            .collect();
        let table = |rows| Embedding { weight: Initializer::Normal { mean: 0.0, std: 0.02 }.init([rows, d], device) };
        Ok(ClipTextModel {
            embeddings: ClipEmbeddings {
                token_embedding: table(self.vocab_size),
                position_embedding: table(self.max_position_embeddings),
            },
            encoder: ClipEncoder { layers },
            final_layer_norm: ln(),
            text_projection: self.projection_dim.map(|p| linear(d, p, false, init, device)),
            eos_token_id: self.eos_token_id,
        })
    }
}

/// Token and position tables.
#[derive(Module, Debug)]
pub struct ClipEmbeddings {
    /// `[vocab_size, D]`.
    pub token_embedding: Embedding,
    /// `[max_position_embeddings, D]`.
    pub position_embedding: Embedding,
}

/// Multi-head causal self-attention with separate projections (keys `q_proj`, ..., `out_proj`).
#[derive(Module, Debug)]
pub struct ClipAttention {
    /// Query projection `[D, D]`.
    pub q_proj: Linear,
    /// Key projection `[D, D]`.
    pub k_proj: Linear,
    /// Value projection `[D, D]`.
    pub v_proj: Linear,
    /// Output projection `[D, D]`.
    pub out_proj: Linear,
    /// Number of heads.
    pub n_heads: usize,
}

impl ClipAttention {
    /// # Shapes
    /// - `x`: `[B, L, D]` -> `[B, L, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.n_heads;
        let q = split_heads(cpu::linear(&self.q_proj, x.clone()), h);
        let k = split_heads(cpu::linear(&self.k_proj, x.clone()), h);
        let v = split_heads(cpu::linear(&self.v_proj, x), h);
        let options = AttentionModuleOptions { is_causal: true, ..Default::default() };
        cpu::linear(&self.out_proj, merge_heads(attention(q, k, v, None, None, options)))
    }
}

/// The feed-forward `fc2(act(fc1(x)))`.
#[derive(Module, Debug)]
pub struct ClipMlp {
    /// `[D, intermediate]`.
    pub fc1: Linear,
    /// `[intermediate, D]`.
    pub fc2: Linear,
    /// The activation.
    #[module(skip)]
    pub act: Activation,
}

/// One pre-norm transformer layer.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    /// Causal self-attention.
    pub self_attn: ClipAttention,
    /// Norm before the attention.
    pub layer_norm1: LayerNorm,
    /// Feed-forward.
    pub mlp: ClipMlp,
    /// Norm before the feed-forward.
    pub layer_norm2: LayerNorm,
}

impl ClipEncoderLayer {
    /// # Shapes
    /// - `x`: `[B, L, D]` -> `[B, L, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        let y = cpu::linear(&self.mlp.fc2, self.mlp.act.forward(cpu::linear(&self.mlp.fc1, self.layer_norm2.forward(x.clone()))));
        x + y
    }
}

/// The layer stack.
#[derive(Module, Debug)]
pub struct ClipEncoder {
    /// The `N` layers.
    pub layers: Vec<ClipEncoderLayer>,
}

/// What [`ClipTextModel::forward`] returns.
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// `[B, L, D]` after the final LayerNorm.
    pub last_hidden_state: Tensor<3>,
    /// `[B, L, D]` transformers' `hidden_states[-2]`: the input of the last layer, without the
    /// final norm (what SD3 conditions on).
    pub penultimate_hidden_state: Tensor<3>,
    /// `[B, D]` the pooled token of `last_hidden_state` (transformers' `pooler_output`).
    pub pooler_output: Tensor<2>,
    /// `[B, projection_dim]` the pooled token through `text_projection`, when the model has one.
    pub text_embeds: Option<Tensor<2>>,
}

/// The CLIP text transformer (see the [module docs](self)).
#[derive(Module, Debug)]
pub struct ClipTextModel {
    /// Token and position tables.
    pub embeddings: ClipEmbeddings,
    /// The layers.
    pub encoder: ClipEncoder,
    /// Final LayerNorm.
    pub final_layer_norm: LayerNorm,
    /// Pooled-output projection `[D, projection_dim]` without bias (`WithProjection` only).
    pub text_projection: Option<Linear>,
    /// End-of-text id (2: legacy argmax pooling).
    pub eos_token_id: i64,
}

impl ClipTextModel {
    /// Encode token ids (`penultimate_hidden_state` is `hidden_states[-2]`).
    ///
    /// # Shapes
    /// - `input_ids`: `[B, L]`, `L <= max_position_embeddings`
    /// - see [`ClipTextOutput`]
    ///
    /// # Errors
    /// [`Error::Shape`] for an empty or too long sequence, [`Error::InvalidArgument`] for ids
    /// outside the vocabulary.
    pub fn forward(&self, input_ids: Tensor<2, Int>) -> Result<ClipTextOutput> {
        self.forward_skip(input_ids, 0)
    }

    /// Like [`forward`](Self::forward), with `penultimate_hidden_state` taken as
    /// `hidden_states[-(clip_skip + 2)]` (diffusers' `clip_skip`; 0 is the penultimate one).
    ///
    /// # Errors
    /// As [`forward`](Self::forward), and [`Error::InvalidArgument`] when `clip_skip` is not
    /// below the number of layers.
    pub fn forward_skip(&self, input_ids: Tensor<2, Int>, clip_skip: usize) -> Result<ClipTextOutput> {
        let [b, l] = input_ids.dims();
        let [max_len, d] = self.embeddings.position_embedding.weight.dims();
        let vocab = self.embeddings.token_embedding.weight.dims()[0];
        if l == 0 || l > max_len || b == 0 {
            return Err(Error::Shape {
                name: "input_ids".into(),
                expected: format!("[B >= 1, 1..={max_len}]"),
                got: format!("{:?}", [b, l]),
            });
        }
        let n = self.encoder.layers.len();
        if clip_skip >= n {
            return Err(Error::InvalidArgument(format!("clip_skip {clip_skip} needs more than {n} layers")));
        }
        let ids = ids_to_host(&input_ids, vocab)?;
        let pos = self.embeddings.position_embedding.weight.val().slice([0..l, 0..d]).unsqueeze_dim::<3>(0);
        // hidden_states[-(clip_skip + 2)] is the state after n - 1 - clip_skip layers.
        let keep = n - 1 - clip_skip;
        // the layers on the CPU pool's threads, as the denoisers' forwards
        let (penultimate, last) = crate::cpu::on_workers(&input_ids.device(), || {
            let mut h = self.embeddings.token_embedding.forward(input_ids) + pos;
            let mut penultimate = h.clone();
            for (i, layer) in self.encoder.layers.iter().enumerate() {
                h = layer.forward(h);
                if i + 1 == keep {
                    penultimate = h.clone();
                }
            }
            (penultimate, self.final_layer_norm.forward(h))
        });
        let rows: Vec<i64> = ids
            .chunks(l)
            .enumerate()
            .map(|(bi, row)| (bi * l + self.pooled_position(row)) as i64)
            .collect();
        let index = Tensor::<1, Int>::from_data(TensorData::new(rows, [b]), &last.device());
        let pooled = last.clone().reshape([b * l, d]).select(0, index);
        let text_embeds = self.text_projection.as_ref().map(|p| p.forward(pooled.clone()));
        Ok(ClipTextOutput { last_hidden_state: last, penultimate_hidden_state: penultimate, pooler_output: pooled, text_embeds })
    }

    /// The pooled position of one row of ids (see the [module docs](self)); the last position
    /// when the row holds no `eos_token_id`.
    pub fn pooled_position(&self, row: &[i64]) -> usize {
        if self.eos_token_id == 2 {
            let max = row.iter().copied().max().unwrap_or(0);
            row.iter().position(|&t| t == max).unwrap_or(0)
        } else {
            row.iter().position(|&t| t == self.eos_token_id).unwrap_or(row.len().saturating_sub(1))
        }
    }

    /// Build from a transformers directory (`config.json` and `model.safetensors`, sharded or
    /// not), as SD3's `text_encoder` and `text_encoder_2` folders, streaming the weights in
    /// with the one loader ([`LoadWeights`]: tensor by tensor, converted to the model's dtype;
    /// f16/bf16 weights stay f16/bf16 in a model built in that dtype).
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable files, [`Error::InvalidConfig`], [`Error::CheckpointMismatch`].
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = read_config_file(&dir.join("config.json"))?;
        let checkpoint = LazyCheckpoint::open(dir)?;
        let with_projection = checkpoint.contains("text_projection.weight");
        let mut model = ClipTextConfig::from_transformers(&config, with_projection)?.init(device)?;
        model.load_lazy_as(checkpoint, ClipTextFormat::Transformers)?;
        Ok(model)
    }

    /// Build OpenCLIP's text tower from an OpenCLIP model config (`open_clip_config.json` or
    /// open_clip's `model_configs/*.json`, read by [`ClipTextConfig::from_open_clip`]) and an
    /// OpenCLIP checkpoint (`open_clip_pytorch_model.bin`, `open_clip_model.safetensors`, or a
    /// checkpoint holding the tower under a prefix, such as MicroDiT's released ones); the
    /// vision tower is not loaded.
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable files, [`Error::InvalidConfig`], [`Error::CheckpointMismatch`].
    pub fn from_open_clip(config: impl AsRef<Path>, weights: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let config = ClipTextConfig::from_open_clip(&read_config_file(config.as_ref())?)?;
        let mut model = config.init(device)?;
        model.load_lazy_as(LazyCheckpoint::open(weights)?, ClipTextFormat::OpenClip)?;
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ClipTextConfig {
        ClipTextConfig::new()
            .with_vocab_size(50)
            .with_hidden_size(16)
            .with_intermediate_size(24)
            .with_num_hidden_layers(2)
            .with_num_attention_heads(4)
            .with_max_position_embeddings(8)
            .with_projection_dim(Some(12))
    }

    #[test]
    fn pooling_rules() {
        let device = Device::flex();
        let legacy = tiny().init(&device).unwrap();
        assert_eq!(legacy.pooled_position(&[49, 3, 49, 49]), 0);
        assert_eq!(legacy.pooled_position(&[0, 3, 49, 49]), 2);
        let eos = tiny().with_eos_token_id(7).init(&device).unwrap();
        assert_eq!(eos.pooled_position(&[0, 7, 9, 7]), 1);
        assert_eq!(eos.pooled_position(&[0, 1, 2]), 2);
    }

    #[test]
    fn keys_shapes_and_errors() {
        let device = Device::flex();
        let model = tiny().init(&device).unwrap();
        let ck = model.to_checkpoint().unwrap();
        for k in [
            "text_model.embeddings.token_embedding.weight",
            "text_model.embeddings.position_embedding.weight",
            "text_model.encoder.layers.1.self_attn.out_proj.bias",
            "text_model.encoder.layers.0.mlp.fc1.weight",
            "text_model.final_layer_norm.weight",
            "text_projection.weight",
        ] {
            assert!(ck.contains(k), "{k}");
        }
        assert_eq!(ck.get("text_projection.weight").unwrap().shape().to_vec(), vec![12, 16]);
        let ids = Tensor::<2, Int>::from_ints([[1, 2, 49, 0]], &device);
        let out = model.forward(ids).unwrap();
        assert_eq!(out.penultimate_hidden_state.dims(), [1, 4, 16]);
        assert_eq!(out.text_embeds.unwrap().dims(), [1, 12]);
        assert!(model.forward(Tensor::<2, Int>::zeros([1, 9], &device)).is_err());
        assert!(model.forward(Tensor::<2, Int>::from_ints([[50]], &device)).is_err());
        assert!(tiny().with_num_attention_heads(5).init(&device).is_err());
        let mut broken = ck.clone();
        broken.remove("text_projection.weight");
        let mut m2 = tiny().init(&device).unwrap();
        assert!(matches!(m2.load_checkpoint(&broken), Err(Error::CheckpointMismatch { .. })));
    }

    #[test]
    fn config_from_transformers_names() {
        let v = serde_json::json!({"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 20,
            "intermediate_size": 5120, "projection_dim": 1280, "hidden_act": "gelu", "eos_token_id": 49407});
        let c = ClipTextConfig::from_transformers(&v, true).unwrap();
        assert_eq!((c.hidden_size, c.projection_dim, c.hidden_act, c.eos_token_id), (1280, Some(1280), Activation::Gelu, 49407));
        assert_eq!(c.vocab_size, 49408);
        assert!(ClipTextConfig::from_transformers(&serde_json::json!({"hidden_act": "tanhh"}), false).is_err());
        assert!(ClipTextConfig::from_transformers(&serde_json::json!({"hidden_size": "big"}), false).is_err());
    }
}

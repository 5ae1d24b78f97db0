//! Checkpoint formats of the CLIP text transformer ([`ClipTextModel`]): transformers'
//! `CLIPTextModel(WithProjection)` / `CLIPModel` and OpenCLIP's own state dicts.
//!
//! | crate module path | transformers key | OpenCLIP key |
//! |---|---|---|
//! | `embeddings.token_embedding.weight` | `text_model.embeddings.token_embedding.weight` | `token_embedding.weight` |
//! | `embeddings.position_embedding.weight` | `text_model.embeddings.position_embedding.weight` | `positional_embedding` |
//! | `encoder.layers.N.self_attn.{q,k,v}_proj.*` | `text_model.encoder.layers.N.self_attn.{q,k,v}_proj.*` | row thirds of `transformer.resblocks.N.attn.in_proj_{weight,bias}` |
//! | `encoder.layers.N.self_attn.out_proj.*` | `text_model.….self_attn.out_proj.*` | `transformer.resblocks.N.attn.out_proj.*` |
//! | `encoder.layers.N.layer_norm{1,2}.*` | `text_model.….layer_norm{1,2}.*` | `transformer.resblocks.N.ln_{1,2}.*` |
//! | `encoder.layers.N.mlp.fc{1,2}.*` | `text_model.….mlp.fc{1,2}.*` | `transformer.resblocks.N.mlp.c_{fc,proj}.*` |
//! | `final_layer_norm.*` | `text_model.final_layer_norm.*` | `ln_final.*` |
//! | `text_projection.weight` `[P, D]` | `text_projection.weight` `[P, D]` | `text_projection` `[D, P]`, applied as `x @ P` (transposed on load) |
//!
//! transformers: the vision tower of a full `CLIPModel` (`vision_model.*`,
//! `visual_projection.weight`, `logit_scale`) and the `position_ids` buffer are ignored.
//!
//! OpenCLIP: the text tower is found by its `token_embedding.weight` and `positional_embedding`
//! keys under any prefix (none for an `open_clip_pytorch_model.bin`, `text.` for a
//! `CustomTextCLIP`, `text_encoder.encoder.clip_model.` in MicroDiT's released checkpoints, which
//! hold the whole `LatentDiffusion` model); tensors outside that prefix, the vision tower
//! (`visual.*`), `logit_scale` / `logit_bias` and an `attn_mask` buffer are ignored. The fused
//! in-projection is split into q, k, v row thirds and the projection matrix transposed, lazily:
//! a missing or mis-shaped in-projection is reported as `….attn.in_proj_weight (q)` and so on.

use serde_json::Value;

use crate::error::{Error, Result, ensure_config};
use crate::layers::Activation;
use crate::text::clip::{ClipTextConfig, ClipTextModel};
use crate::text::config::JsonConfig;
use crate::weights::{Checkpoint, CheckpointFormat, KeyMap, LazyCheckpoint, LoadWeights};

/// The checkpoint formats of a [`ClipTextModel`] (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClipTextFormat {
    /// transformers' `CLIPTextModel(WithProjection)` / `CLIPModel` names.
    #[default]
    Transformers,
    /// OpenCLIP's `CLIP` / `CustomTextCLIP` state dict (the text tower under any prefix).
    OpenClip,
}

/// The q, k, v names of OpenCLIP's fused in-projection (`param` = `weight` or `bias`).
fn in_proj_parts(prefix: &str, param: &str) -> Vec<String> {
    ["q", "k", "v"].iter().map(|p| format!("{prefix}in_proj_{param} ({p})")).collect()
}

/// Module path -> OpenCLIP key (before the in-projection split).
fn open_clip_key_map() -> KeyMap {
    KeyMap::new([
        ("embeddings.token_embedding", "token_embedding"),
        ("embeddings.position_embedding.weight", "positional_embedding"),
        ("encoder.layers", "transformer.resblocks"),
        ("self_attn", "attn"),
        ("layer_norm1", "ln_1"),
        ("layer_norm2", "ln_2"),
        ("fc1", "c_fc"),
        ("fc2", "c_proj"),
        ("final_layer_norm", "ln_final"),
        ("text_projection.weight", "text_projection"),
    ])
}

fn open_clip_key(path: &str) -> String {
    let key = open_clip_key_map().checkpoint_key(path);
    for (i, part) in ["q_proj.", "k_proj.", "v_proj."].iter().enumerate() {
        if let Some((prefix, param)) = key.split_once(part) {
            return in_proj_parts(prefix, param).swap_remove(i);
        }
    }
    key
}

/// The prefixes `p` under which `p + "token_embedding.weight"` and `p + "positional_embedding"`
/// both exist: OpenCLIP text towers.
fn open_clip_prefixes(ck: &LazyCheckpoint<'_>) -> Vec<String> {
    ck.keys()
        .filter_map(|k| k.strip_suffix("token_embedding.weight"))
        .filter(|p| ck.contains(&format!("{p}positional_embedding")))
        .map(str::to_string)
        .collect()
}

fn prepare_open_clip(ck: &mut LazyCheckpoint<'_>) -> Result<()> {
    match open_clip_prefixes(ck).as_slice() {
        [p] => {
            let p = p.clone();
            ck.retain_prefix(&p);
        }
        [] => {
            return Err(Error::InvalidArgument(
                "not an OpenCLIP checkpoint: no `token_embedding.weight` beside a `positional_embedding`".into(),
            ));
        }
        many => return Err(Error::InvalidArgument(format!("checkpoint holds several OpenCLIP text towers: prefixes {many:?}"))),
    }
    let foreign: Vec<String> = ck
        .keys()
        .filter(|k| k.starts_with("visual.") || ["logit_scale", "logit_bias", "attn_mask"].contains(k))
        .map(str::to_string)
        .collect();
    for k in foreign {
        ck.remove(&k);
    }
    let fused: Vec<String> = ck.keys().filter(|k| k.ends_with(".attn.in_proj_weight") || k.ends_with(".attn.in_proj_bias")).map(str::to_string).collect();
    for key in fused {
        let (prefix, param) = key.rsplit_once("in_proj_").expect("listed by suffix");
        ck.split_rows(&key, &in_proj_parts(prefix, param));
    }
    if let Some(t) = ck.get("text_projection").and_then(|t| t.clone().transposed()) {
        ck.insert("text_projection", t);
    }
    Ok(())
}

fn prepare_transformers(ck: &mut LazyCheckpoint<'_>) {
    let foreign: Vec<String> = ck
        .keys()
        .filter(|k| {
            k.starts_with("vision_model.") || ["visual_projection.weight", "logit_scale"].contains(k) || k.ends_with("embeddings.position_ids")
        })
        .map(str::to_string)
        .collect();
    for k in foreign {
        ck.remove(&k);
    }
}

impl CheckpointFormat<ClipTextModel> for ClipTextFormat {
    fn key(&self, module_path: &str) -> String {
        match self {
            Self::Transformers if module_path.starts_with("text_projection") => module_path.to_string(),
            Self::Transformers => format!("text_model.{module_path}"),
            Self::OpenClip => open_clip_key(module_path),
        }
    }

    fn prepare(&self, _model: &ClipTextModel, checkpoint: &mut LazyCheckpoint<'_>) -> Result<()> {
        match self {
            Self::Transformers => {
                prepare_transformers(checkpoint);
                Ok(())
            }
            Self::OpenClip => prepare_open_clip(checkpoint),
        }
    }

    fn finish_export(&self, _model: &ClipTextModel, checkpoint: &mut Checkpoint) -> Result<()> {
        if *self == Self::Transformers {
            return Ok(());
        }
        let mut lazy = LazyCheckpoint::from(std::mem::take(checkpoint));
        let fused: Vec<String> = lazy.keys().filter_map(|k| k.strip_suffix(" (q)").map(str::to_string)).collect();
        for key in fused {
            let (prefix, param) = key.rsplit_once("in_proj_").expect("named by in_proj_parts");
            lazy.fuse_rows(&in_proj_parts(prefix, param), key.clone());
        }
        if let Some(t) = lazy.get("text_projection").and_then(|t| t.clone().transposed()) {
            lazy.insert("text_projection", t);
        }
        *checkpoint = lazy.read_all()?;
        Ok(())
    }
}

impl LoadWeights for ClipTextModel {
    type Format = ClipTextFormat;

    /// OpenCLIP when the keys hold an OpenCLIP text tower, transformers otherwise.
    fn format_of(&self, checkpoint: &LazyCheckpoint<'_>) -> ClipTextFormat {
        if open_clip_prefixes(checkpoint).is_empty() { ClipTextFormat::Transformers } else { ClipTextFormat::OpenClip }
    }

    fn export_format(&self) -> ClipTextFormat {
        ClipTextFormat::Transformers
    }
}

impl ClipTextConfig {
    /// The text tower of an OpenCLIP model config, by open_clip's own option names: the
    /// `model_cfg` of an `open_clip_config.json` (or the model config itself, as open_clip's
    /// `model_configs/*.json`): `embed_dim` (the projection width), `quick_gelu` (QuickGELU,
    /// else exact GELU) and `text_cfg.{context_length, vocab_size, width, heads, layers,
    /// mlp_ratio, pool_type, norm_kwargs.eps}`, with open_clip's defaults for absent options.
    ///
    /// open_clip's `argmax` pooling (the position of the largest id, i.e. the end-of-text
    /// token) is transformers' legacy rule, so the config gets `eos_token_id = 2`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a wrong type or a text tower this model does not have
    /// (Hugging Face text towers, `pool_type` other than `argmax`, LayerScale, a class token,
    /// no causal mask, a projection with bias, the final norm after pooling).
    pub fn from_open_clip(config: &Value) -> Result<Self> {
        let model = JsonConfig::new(config.get("model_cfg").unwrap_or(config));
        let text = model.object("text_cfg")?;
        let unsupported = |what: &str| Error::InvalidConfig(format!("OpenCLIP text tower with {what} is not supported"));
        if text.has("hf_model_name") {
            return Err(unsupported("a Hugging Face model (`hf_model_name`)"));
        }
        let pool = text.string("pool_type", "argmax")?;
        ensure_config(pool == "argmax", || format!("OpenCLIP `pool_type` {pool:?} is not supported (only \"argmax\")"))?;
        for (key, what) in [
            ("embed_cls", "a class token (`embed_cls`)"),
            ("no_causal_mask", "no causal mask"),
            ("proj_bias", "a projection bias (`proj_bias`)"),
            ("final_ln_after_pool", "`final_ln_after_pool`"),
        ] {
            if text.bool(key, false)? {
                return Err(unsupported(what));
            }
        }
        if text.has("ls_init_value") {
            return Err(unsupported("LayerScale (`ls_init_value`)"));
        }
        let width = text.usize("width", 512)?;
        let mlp_ratio = text.f64("mlp_ratio", 4.0)?;
        Ok(Self {
            vocab_size: text.usize("vocab_size", 49408)?,
            hidden_size: width,
            intermediate_size: (width as f64 * mlp_ratio) as usize,
            num_hidden_layers: text.usize("layers", 12)?,
            num_attention_heads: text.usize("heads", 8)?,
            max_position_embeddings: text.usize("context_length", 77)?,
            projection_dim: Some(model.usize("embed_dim", width)?),
            layer_norm_eps: text.object("norm_kwargs")?.f64("eps", 1e-5)?,
            hidden_act: if model.bool("quick_gelu", false)? { Activation::QuickGelu } else { Activation::Gelu },
            eos_token_id: 2,
        })
    }

    /// OpenCLIP's ViT-H/14 text tower (`ViT-H-14`; width 1024, 24 layers, 16 heads, projection
    /// 1024); `quick_gelu` for the `-quickgelu` variants such as Apple's DFN5B
    /// `ViT-H-14-378-quickgelu`, the text encoder of MicroDiT's released checkpoints.
    pub fn open_clip_vit_h_14(quick_gelu: bool) -> Self {
        let act = if quick_gelu { Activation::QuickGelu } else { Activation::Gelu };
        Self::new()
            .with_hidden_size(1024)
            .with_intermediate_size(4096)
            .with_num_hidden_layers(24)
            .with_num_attention_heads(16)
            .with_projection_dim(Some(1024))
            .with_hidden_act(act)
    }

    /// OpenCLIP's ViT-bigG/14 text tower (`ViT-bigG-14`; width 1280, 32 layers, 20 heads, GELU,
    /// projection 1280), SD3's and SDXL's second text encoder.
    pub fn open_clip_vit_bigg_14() -> Self {
        Self::new()
            .with_hidden_size(1280)
            .with_intermediate_size(5120)
            .with_num_hidden_layers(32)
            .with_num_attention_heads(20)
            .with_projection_dim(Some(1280))
            .with_hidden_act(Activation::Gelu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::prelude::*;
    use burn::tensor::TensorData;

    /// A tiny `open_clip_config.json`.
    fn tiny_json() -> Value {
        serde_json::json!({"model_cfg": {"embed_dim": 12, "quick_gelu": true,
            "text_cfg": {"context_length": 8, "vocab_size": 50, "width": 16, "heads": 4, "layers": 2, "mlp_ratio": 1.5}}})
    }

    fn tiny() -> ClipTextConfig {
        ClipTextConfig::from_open_clip(&tiny_json()).unwrap()
    }

    fn ramp(ck: &Checkpoint) -> Checkpoint {
        let mut out = Checkpoint::new();
        for (i, (k, v)) in ck.tensors().iter().enumerate() {
            let vals: Vec<f32> = (0..v.num_elements()).map(|j| ((i * 13 + j * 7) % 29) as f32 / 14.0 - 1.0).collect();
            out.insert(k.clone(), TensorData::new(vals, v.shape().to_vec()));
        }
        out
    }

    #[test]
    fn open_clip_keys_round_trip_under_a_prefix() {
        let device = Device::flex();
        let cfg = tiny();
        assert_eq!((cfg.intermediate_size, cfg.projection_dim, cfg.hidden_act), (24, Some(12), Activation::QuickGelu));
        let mut src = cfg.init(&device).unwrap();
        let values = ramp(&src.to_checkpoint().unwrap());
        src.load_checkpoint(&values).unwrap();
        let oc = crate::weights::export(&src, &ClipTextFormat::OpenClip).unwrap();
        assert_eq!(oc.get("transformer.resblocks.1.attn.in_proj_weight").unwrap().shape().to_vec(), vec![48, 16]);
        assert_eq!(oc.get("transformer.resblocks.0.attn.in_proj_bias").unwrap().shape().to_vec(), vec![48]);
        assert_eq!(oc.get("text_projection").unwrap().shape().to_vec(), vec![16, 12]);
        assert_eq!(oc.get("positional_embedding").unwrap().shape().to_vec(), vec![8, 16]);
        // as in MicroDiT's released checkpoints: under a prefix, beside a vision tower and other models
        let mut whole = Checkpoint::new();
        for (k, v) in oc.tensors() {
            whole.insert(format!("text_encoder.encoder.clip_model.{k}"), v.clone());
        }
        for k in ["text_encoder.encoder.clip_model.visual.proj", "text_encoder.encoder.clip_model.logit_scale", "dit.x_embedder.proj.weight"] {
            whole.insert(k, TensorData::new(vec![1.0f32], [1]));
        }
        let dir = std::env::temp_dir().join(format!("dt_open_clip_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("open_clip_config.json"), tiny_json().to_string()).unwrap();
        whole.save_safetensors(dir.join("dit.safetensors")).unwrap();
        let mut model = ClipTextModel::from_open_clip(dir.join("open_clip_config.json"), dir.join("dit.safetensors"), &device).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let ids = Tensor::<2, Int>::from_ints([[1, 5, 49, 0]], &device);
        let (a, b) = (src.forward(ids.clone()).unwrap(), model.forward(ids).unwrap());
        a.last_hidden_state.into_data().assert_eq(&b.last_hidden_state.into_data(), true);
        a.text_embeds.unwrap().into_data().assert_eq(&b.text_embeds.unwrap().into_data(), true);
        // a broken in-projection is reported under its file name; the model is untouched
        let mut broken = oc.clone();
        broken.insert("transformer.resblocks.0.attn.in_proj_weight", TensorData::new(vec![0.0f32; 45 * 16], [45, 16]));
        broken.remove("ln_final.bias");
        let err = model.load_checkpoint(&broken).unwrap_err().to_string();
        assert!(err.contains("transformer.resblocks.0.attn.in_proj_weight (q)") && err.contains("ln_final.bias"), "{err}");
        let after = model.to_checkpoint().unwrap();
        for (k, v) in src.to_checkpoint().unwrap().tensors() {
            v.assert_eq(after.get(k).unwrap(), true);
        }
    }

    #[test]
    fn transformers_checkpoints_drop_the_vision_tower() {
        let device = Device::flex();
        let cfg = tiny();
        let mut model = cfg.init(&device).unwrap();
        let mut ck = model.to_checkpoint().unwrap();
        assert!(ck.contains("text_model.encoder.layers.1.self_attn.q_proj.weight") && ck.contains("text_projection.weight"));
        ck.insert("vision_model.post_layernorm.weight", TensorData::new(vec![1.0f32], [1]));
        ck.insert("text_model.embeddings.position_ids", TensorData::new(vec![0i64; 8], [1, 8]));
        assert_eq!(model.format_of(&LazyCheckpoint::from(&ck)), ClipTextFormat::Transformers);
        model.load_checkpoint(&ck).unwrap();
        ck.remove("text_projection.weight");
        assert!(matches!(model.load_checkpoint(&ck), Err(Error::CheckpointMismatch { .. })));
    }

    #[test]
    fn open_clip_configs() {
        let h = ClipTextConfig::from_open_clip(&serde_json::json!({"embed_dim": 1024, "quick_gelu": true,
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}}))
        .unwrap();
        assert_eq!(h, ClipTextConfig::open_clip_vit_h_14(true));
        let g = ClipTextConfig::from_open_clip(&serde_json::json!({"embed_dim": 1280,
            "text_cfg": {"width": 1280, "heads": 20, "layers": 32}}))
        .unwrap();
        assert_eq!(g, ClipTextConfig::open_clip_vit_bigg_14());
        for bad in [
            serde_json::json!({"text_cfg": {"pool_type": "first"}}),
            serde_json::json!({"text_cfg": {"ls_init_value": 0.1}}),
            serde_json::json!({"text_cfg": {"hf_model_name": "roberta-base"}}),
            serde_json::json!({"text_cfg": {"proj_bias": true}}),
            serde_json::json!({"text_cfg": 3}),
        ] {
            assert!(ClipTextConfig::from_open_clip(&bad).is_err(), "{bad}");
        }
    }
}

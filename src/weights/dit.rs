//! DiT checkpoints: the official layout (facebookresearch/DiT state dicts, `.pt` or
//! `.safetensors`) and diffusers' `DiTTransformer2DModel` layout.
//!
//! # How diffusers' layout maps
//! The map serves every flat model of the shell ([`ComposedDiT`]; its one stage is DiT's
//! `blocks`).
//!
//! | crate module path | official key | diffusers key |
//! |---|---|---|
//! | `x_embedder.proj` | `x_embedder.proj` | `pos_embed.proj` |
//! | `pos_embed` | `pos_embed` | not stored (recomputed sin-cos table) |
//! | `cond_embedders.0.t_embedder.linear_{1,2}` | `t_embedder.mlp.{0,2}` | `transformer_blocks.0.norm1.emb.timestep_embedder.linear_{1,2}` |
//! | `cond_embedders.0.y_embedder.embedding_table` | `y_embedder.embedding_table` | `transformer_blocks.0.norm1.emb.class_embedder.embedding_table` |
//! | `block_embedders.{k}.*` | (none) | `transformer_blocks.{k+1}.norm1.emb.*` |
//! | `stages.0.{i}.attn.qkv` | `blocks.{i}.attn.qkv` | `transformer_blocks.{i}.attn1.to_{q,k,v}` (concatenated) |
//! | `stages.0.{i}.attn.proj` | `blocks.{i}.attn.proj` | `transformer_blocks.{i}.attn1.to_out.0` |
//! | `stages.0.{i}.mlp.fc{1,2}` | `blocks.{i}.mlp.fc{1,2}` | `transformer_blocks.{i}.ff.net.{0.proj,2}` |
//! | `stages.0.{i}.conditioning.linear` | `blocks.{i}.adaLN_modulation.1` | `transformer_blocks.{i}.norm1.linear` |
//! | `final_layer.ada_ln_modulation.linear` | `final_layer.adaLN_modulation.1` | `proj_out_1` |
//! | `final_layer.linear` | `final_layer.linear` | `proj_out_2` |
//!
//! diffusers gives every block its own timestep/label embedder (`norm1.emb`) and conditions
//! the final layer on block 0's. A diffusers checkpoint converted from the official weights
//! holds identical copies: loading it into an official-layout model (the default) checks the
//! copies are equal and drops them. Checkpoints whose copies differ load into a model built
//! with `DiTConfig::with_per_block_embedders(true)`, which reproduces diffusers exactly.
//! diffusers' DiT also shifts its timestep frequencies (`downscale_freq_shift = 1`): build the
//! model with `with_timestep_freq_shift(1.0)`.

use crate::error::{Error, Result};
use crate::models::ComposedDiT;
use crate::weights::checkpoint::Checkpoint;
use crate::weights::format::CheckpointFormat;
use crate::weights::lazy::{LazyCheckpoint, LazyTensor};
use crate::weights::loader::{KeyMap, to_f32};

/// Which naming a DiT checkpoint uses: DiT's [`CheckpointFormat`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiTCheckpointLayout {
    /// facebookresearch/DiT `models.py` state-dict keys.
    Official,
    /// diffusers `DiTTransformer2DModel` keys.
    Diffusers,
}

impl DiTCheckpointLayout {
    /// Guess the layout from the keys (diffusers checkpoints have `transformer_blocks.*`).
    pub fn detect(checkpoint: &Checkpoint) -> Self {
        Self::detect_keys(checkpoint.tensors().keys().map(String::as_str))
    }

    pub(crate) fn detect_keys<'k>(mut keys: impl Iterator<Item = &'k str>) -> Self {
        if keys.any(|k| k.starts_with("transformer_blocks.")) { Self::Diffusers } else { Self::Official }
    }
}

/// Module path -> official key.
pub fn official_key_map() -> KeyMap {
    KeyMap::new([
        ("cond_embedders.0.t_embedder", "t_embedder"),
        ("cond_embedders.0.y_embedder", "y_embedder"),
        ("stages.0", "blocks"),
        ("t_embedder.linear_1", "t_embedder.mlp.0"),
        ("t_embedder.linear_2", "t_embedder.mlp.2"),
        ("ada_ln_modulation.linear", "adaLN_modulation.1"),
        ("conditioning.linear", "adaLN_modulation.1"),
        ("conditioning.norm1", "norm1"),
        ("conditioning.norm2", "norm2"),
        ("conditioning.norm_cross", "norm_cross"),
        ("conditioning.cross_attn", "cross_attn"),
    ])
}

const QKV: &str = "{to_q,to_k,to_v}";

/// Module path -> diffusers key (the fused qkv maps to a synthetic `attn1.{to_q,to_k,to_v}` key
/// that the diffusers format's `prepare` assembles from the three projections).
pub fn diffusers_key(path: &str) -> String {
    let path = path.strip_prefix("cond_embedders.0.").unwrap_or(path);
    let stage = path.strip_prefix("stages.0.").map(|rest| format!("blocks.{rest}"));
    let path = stage.as_deref().unwrap_or(path);
    let emb = |rest: &str| {
        rest.replacen("t_embedder.", "timestep_embedder.", 1).replacen("y_embedder.", "class_embedder.", 1)
    };
    if let Some(rest) = path.strip_prefix("block_embedders.") {
        if let Some((k, rest)) = rest.split_once('.') {
            if let Ok(k) = k.parse::<usize>() {
                return format!("transformer_blocks.{}.norm1.emb.{}", k + 1, emb(rest));
            }
        }
    }
    if path.starts_with("t_embedder.") || path.starts_with("y_embedder.") {
        return format!("transformer_blocks.0.norm1.emb.{}", emb(path));
    }
    if let Some(rest) = path.strip_prefix("x_embedder.") {
        return format!("pos_embed.{rest}");
    }
    if let Some(rest) = path.strip_prefix("final_layer.") {
        return rest
            .replacen("ada_ln_modulation.linear.", "proj_out_1.", 1)
            .replacen("linear.", "proj_out_2.", 1);
    }
    if let Some(rest) = path.strip_prefix("blocks.") {
        if let Some((i, rest)) = rest.split_once('.') {
            let mapped = [
                ("attn.qkv.", format!("attn1.{QKV}.")),
                ("attn.proj.", "attn1.to_out.0.".to_string()),
                ("mlp.fc1.", "ff.net.0.proj.".to_string()),
                ("mlp.fc2.", "ff.net.2.".to_string()),
                ("conditioning.linear.", "norm1.linear.".to_string()),
            ]
            .into_iter()
            .find_map(|(from, to)| rest.strip_prefix(from).map(|r| format!("{to}{r}")));
            if let Some(m) = mapped {
                return format!("transformer_blocks.{i}.{m}");
            }
        }
    }
    path.to_string()
}

/// Rewrites a diffusers checkpoint for [`diffusers_key`]: concatenates each block's q/k/v,
/// supplies the sin-cos `pos_embed` when absent, and drops per-block embedder copies that
/// equal block 0's when `model` shares one embedder (read one pair at a time to compare).
fn prepare_diffusers(model: &ComposedDiT, ck: &mut LazyCheckpoint<'_>) -> Result<()> {
    if let Some(p) = ck.remove("pos_embed.pos_embed") {
        ck.insert("pos_embed", p);
    } else if let (false, Some(table)) = (ck.contains("pos_embed"), &model.pos_embed) {
        ck.insert("pos_embed", LazyTensor::from_data(table.val().into_data()));
    }
    for i in 0..model.depth() {
        for param in ["weight", "bias"] {
            let names: Vec<String> =
                ["to_q", "to_k", "to_v"].iter().map(|n| format!("transformer_blocks.{i}.attn1.{n}.{param}")).collect();
            ck.fuse_rows(&names, format!("transformer_blocks.{i}.attn1.{QKV}.{param}"));
        }
    }
    if model.block_embedders.is_empty() {
        let copies: Vec<String> = ck
            .keys()
            .filter(|k| k.starts_with("transformer_blocks.") && k.contains(".norm1.emb.") && !k.starts_with("transformer_blocks.0."))
            .map(str::to_string)
            .collect();
        for key in copies {
            let (_, rest) = key.split_once(".norm1.emb.").expect("filtered");
            let first = format!("transformer_blocks.0.norm1.emb.{rest}");
            let same = match (ck.get(&key), ck.get(&first)) {
                (Some(a), Some(b)) if a.shape() == b.shape() => {
                    let (a, b) = (a.read()?, b.read()?);
                    if a.dtype() == b.dtype() { a.as_bytes() == b.as_bytes() } else { to_f32(&a) == to_f32(&b) }
                }
                _ => false,
            };
            if same {
                ck.remove(&key);
            }
        }
    }
    Ok(())
}

/// DiT's layouts, for any flat model of the shell.
impl CheckpointFormat<ComposedDiT> for DiTCheckpointLayout {
    fn key(&self, module_path: &str) -> String {
        match self {
            Self::Official => official_key_map().checkpoint_key(module_path),
            Self::Diffusers => diffusers_key(module_path),
        }
    }

    fn prepare(&self, model: &ComposedDiT, checkpoint: &mut LazyCheckpoint<'_>) -> Result<()> {
        match self {
            Self::Official => Ok(()),
            Self::Diffusers => prepare_diffusers(model, checkpoint),
        }
    }

    fn finish_export(&self, _model: &ComposedDiT, _checkpoint: &mut Checkpoint) -> Result<()> {
        match self {
            Self::Official => Ok(()),
            Self::Diffusers => Err(Error::InvalidArgument(
                "DiT exports the official layout only (diffusers converts it with its own script)".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffusers_names() {
        assert_eq!(diffusers_key("x_embedder.proj.weight"), "pos_embed.proj.weight");
        assert_eq!(
            diffusers_key("cond_embedders.0.t_embedder.linear_1.weight"),
            "transformer_blocks.0.norm1.emb.timestep_embedder.linear_1.weight"
        );
        assert_eq!(
            diffusers_key("block_embedders.0.y_embedder.embedding_table.weight"),
            "transformer_blocks.1.norm1.emb.class_embedder.embedding_table.weight"
        );
        assert_eq!(diffusers_key("stages.0.2.mlp.fc1.bias"), "transformer_blocks.2.ff.net.0.proj.bias");
        assert_eq!(diffusers_key("stages.0.2.attn.qkv.weight"), "transformer_blocks.2.attn1.{to_q,to_k,to_v}.weight");
        assert_eq!(diffusers_key("final_layer.linear.weight"), "proj_out_2.weight");
        assert_eq!(diffusers_key("final_layer.ada_ln_modulation.linear.bias"), "proj_out_1.bias");
        assert_eq!(official_key_map().checkpoint_key("stages.0.1.conditioning.linear.weight"), "blocks.1.adaLN_modulation.1.weight");
        assert_eq!(official_key_map().checkpoint_key("cond_embedders.0.t_embedder.linear_2.bias"), "t_embedder.mlp.2.bias");
    }
}

//! MicroDiT checkpoints in the official layout (SonyResearch/micro_diffusion `DiT` state dicts,
//! `.pt` or `.safetensors`).
//!
//! The model is the shell [`ComposedDiT`](crate::models::ComposedDiT) (module paths
//! `shell.*`; the prefix is dropped before the rules below).
//!
//! | crate module path | official key |
//! |---|---|
//! | `cond_embedders.0.t_embedder.linear_{1,2}` | `t_embedder.mlp.{0,2}` |
//! | `cond_embedders.0.y_embedder.y_proj.{fc1,norm,fc2}` | `y_embedder.y_proj.{fc1,norm,fc2}` |
//! | `cond_embedders.0.y_embedder.{y_emb_preprocess,pooled_y_emb_process}.*` | `{y_emb_preprocess,pooled_y_emb_process}.*` |
//! | `cond_embedders.0.y_embedder.embedding_table` (DiT backbone) | `y_embedder.embedding_table` |
//! | `stages.0.{i}` / `patch_mixer.{i}` | `blocks.{i}` / `patch_mixer.{i}` |
//! | `{stages.0,patch_mixer}.{i}.conditioning.ada_ln_modulation.linear` (MicroDiT) or `.conditioning.linear` (DiT backbone) | `….adaLN_modulation.1` |
//! | `{stages.0,patch_mixer}.{i}.conditioning.norm{1,2,3}` | `….norm{1,2,3}` |
//! | `{stages.0,patch_mixer}.{i}.conditioning.cross_attn.{q,kv,proj}` | `….cross_attn.{q_linear,kv_linear,proj}` |
//! | `{stages.0,patch_mixer}.{i}.mlp.*` (`w{1,2,3}` SwiGLU, `{gate,w1,w2}` MoE, `fc{1,2}` MLP) | same |
//! | `final_layer.ada_ln_modulation.linear` | `final_layer.adaLN_modulation.1` |
//! | `patch_mixer_map_{xin,xout,y}.{norm,linear}` | `patch_mixer_map_{xin,xout,y}.{0,1}` |
//! | everything else (`x_embedder.proj`, `pos_embed`, `mask_token`, `attn.*`, `final_layer.*`) | same |
//!
//! The released checkpoints hold the whole `LatentDiffusion` model (keys `dit.*` beside the VAE's
//! and text encoder's); Composer training checkpoints nest it under `state.model.`, and
//! `torch.compile` inserts `_orig_mod.`. The format finds the DiT's prefix
//! from `x_embedder.proj.weight`, keeps only the tensors under it and drops `_orig_mod.`. The
//! fixed `pos_embed` and `mask_token` buffers are taken from the model when a checkpoint lacks
//! them.
//!
//! A model with the DiT backbone uses DiT's names (`y_embedder.embedding_table`,
//! `mlp.fc{1,2}`), so an official DiT checkpoint (facebookresearch/DiT) loads into a
//! `MicroDiTBackbone::DiT` model without patch-mixer or MoE and with constant multipliers.

use crate::error::{Error, Result};
use crate::models::MicroDiT;
use crate::weights::format::{CheckpointFormat, LoadWeights};
use crate::weights::lazy::{LazyCheckpoint, LazyTensor};
use crate::weights::loader::KeyMap;

/// Shell module path (without the wrapper's `shell.`) -> official key.
pub fn official_key_map() -> KeyMap {
    let mut rules: Vec<(String, String)> = [
        ("cond_embedders.0.t_embedder", "t_embedder"),
        ("cond_embedders.0.y_embedder.y_emb_preprocess", "y_emb_preprocess"),
        ("cond_embedders.0.y_embedder.pooled_y_emb_process", "pooled_y_emb_process"),
        ("cond_embedders.0.y_embedder", "y_embedder"),
        ("stages.0", "blocks"),
        ("t_embedder.linear_1", "t_embedder.mlp.0"),
        ("t_embedder.linear_2", "t_embedder.mlp.2"),
        ("conditioning.cross_attn.q", "cross_attn.q_linear"),
        ("conditioning.cross_attn.kv", "cross_attn.kv_linear"),
        ("conditioning.cross_attn", "cross_attn"),
        ("conditioning.norm1", "norm1"),
        ("conditioning.norm2", "norm2"),
        ("conditioning.norm3", "norm3"),
        ("conditioning.ada_ln_modulation.linear", "adaLN_modulation.1"),
        ("conditioning.linear", "adaLN_modulation.1"),
        ("ada_ln_modulation.linear", "adaLN_modulation.1"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    for map in ["xin", "xout", "y"] {
        rules.push((format!("patch_mixer_map_{map}.norm"), format!("patch_mixer_map_{map}.0")));
        rules.push((format!("patch_mixer_map_{map}.linear"), format!("patch_mixer_map_{map}.1")));
    }
    KeyMap::new(rules)
}

/// The DiT's own tensors of a checkpoint: the prefix in front of `x_embedder.proj.weight`
/// (e.g. `dit.` or `state.model.dit.`) is stripped, tensors outside it dropped, `_orig_mod.`
/// segments removed, and missing `pos_embed` / `mask_token` buffers supplied from `model`.
fn prepare(model: &MicroDiT, ck: &mut LazyCheckpoint<'_>) -> Result<()> {
    ck.rename(|k| k.replace("_orig_mod.", ""));
    let prefixes: Vec<String> =
        ck.keys().filter_map(|k| k.strip_suffix("x_embedder.proj.weight").map(str::to_string)).collect();
    match prefixes.as_slice() {
        [] => {}
        [p] if p.is_empty() || p.ends_with('.') => {
            if !p.is_empty() {
                ck.retain_prefix(p);
            }
        }
        _ => {
            return Err(Error::InvalidArgument(format!(
                "checkpoint holds several (or oddly prefixed) models: prefixes {prefixes:?}"
            )));
        }
    }
    for (key, buffer) in [("pos_embed", &model.pos_embed), ("mask_token", &model.mask_token)] {
        if let (false, Some(b)) = (ck.contains(key), buffer) {
            ck.insert(key, LazyTensor::from_data(b.val().into_data()));
        }
    }
    Ok(())
}

/// The official layout (see the [module docs](self)): MicroDiT's [`CheckpointFormat`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MicroDiTOfficial;

impl CheckpointFormat<MicroDiT> for MicroDiTOfficial {
    fn key(&self, module_path: &str) -> String {
        official_key_map().checkpoint_key(module_path.strip_prefix("shell.").unwrap_or(module_path))
    }

    fn prepare(&self, model: &MicroDiT, checkpoint: &mut LazyCheckpoint<'_>) -> Result<()> {
        prepare(model, checkpoint)
    }
}

impl LoadWeights for MicroDiT {
    type Format = MicroDiTOfficial;

    fn format_of(&self, _checkpoint: &LazyCheckpoint<'_>) -> MicroDiTOfficial {
        MicroDiTOfficial
    }

    fn export_format(&self) -> MicroDiTOfficial {
        MicroDiTOfficial
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::checkpoint::Checkpoint;
    use crate::models::{DiTConfig, MicroDiTBackbone, MicroDiTCond, MicroDiTConfig};
    use burn::prelude::*;
    use burn::tensor::Tolerance;

    fn tiny(backbone: MicroDiTBackbone) -> MicroDiTConfig {
        MicroDiTConfig::new()
            .with_input_size(8)
            .with_dim(32)
            .with_depth(3)
            .with_head_dim(8)
            .with_multiple_of(16)
            .with_caption_channels(12)
            .with_patch_mixer_depth(2)
            .with_patch_mixer_dim(16)
            .with_num_experts(2)
            .with_expert_capacity(1.0)
            .with_num_classes(5)
            .with_backbone(backbone)
            .with_layerwise_scaling([0.5, 1.0], [0.5, 4.0])
    }

    fn randomize(ck: &Checkpoint) -> Checkpoint {
        // non-zero weights everywhere so that outputs depend on every tensor
        let mut out = Checkpoint::new();
        for (i, (k, v)) in ck.tensors().iter().enumerate() {
            let n: usize = v.shape().iter().product();
            let vals: Vec<f32> = (0..n).map(|j| (((i * 31 + j * 17) % 97) as f32 / 97.0 - 0.5) * 0.3).collect();
            out.insert(k.clone(), TensorData::new(vals, v.shape().to_vec()));
        }
        out
    }

    #[test]
    fn official_names_and_roundtrip() {
        let device = Device::flex();
        for backbone in [MicroDiTBackbone::MicroDiT, MicroDiTBackbone::DiT] {
            let model = tiny(backbone).init(&device).unwrap();
            let ck = model.to_checkpoint().unwrap();
            let micro = backbone == MicroDiTBackbone::MicroDiT;
            let mut expected = vec![
                "t_embedder.mlp.0.weight",
                "blocks.0.adaLN_modulation.1.bias",
                "blocks.1.mlp.gate.weight",
                "blocks.1.mlp.w1",
                "patch_mixer.1.mlp.w2",
                "patch_mixer_map_xin.0.weight",
                "patch_mixer_map_xout.1.weight",
                "pos_embed",
                "mask_token",
                "final_layer.linear.weight",
            ];
            if micro {
                expected.extend(["y_embedder.y_proj.norm.weight", "blocks.0.mlp.w3.weight", "blocks.2.cross_attn.kv_linear.weight"]);
                expected.extend(["patch_mixer_map_y.1.weight", "y_emb_preprocess.mlp.w1.weight", "final_layer.norm_final.weight"]);
            } else {
                expected.extend(["y_embedder.embedding_table.weight", "blocks.0.mlp.fc1.bias", "blocks.0.attn.qkv.bias"]);
            }
            for k in expected {
                assert!(ck.contains(k), "{backbone:?}: missing {k} in {:?}", ck.tensors().keys().collect::<Vec<_>>());
            }
            assert!(!ck.tensors().keys().any(|k| k.contains("SwiGlu") || k.contains("Moe") || k.contains("gamma")));
            assert!(!ck.tensors().keys().any(|k| k.contains("conditioning")));
            if micro {
                let keys = ["blocks.1.norm2.weight", "patch_mixer.0.cross_attn.q_linear.weight", "blocks.2.cross_attn.proj.weight"];
                for k in keys {
                    assert!(ck.contains(k), "missing {k}");
                }
            }

            // load randomized weights through a `dit.` prefix with foreign tensors beside it
            let weights = randomize(&ck);
            let mut wrapped = Checkpoint::new();
            for (k, v) in weights.tensors() {
                wrapped.insert(format!("dit.{k}"), v.clone());
            }
            wrapped.insert("vae.decoder.conv_in.weight", TensorData::new(vec![0f32; 4], [2, 2]));
            let mut loaded = tiny(backbone).init(&device).unwrap();
            loaded.load_checkpoint(&wrapped).unwrap();
            let back = loaded.to_checkpoint().unwrap();
            assert_eq!(back.len(), weights.len());
            for (k, v) in weights.tensors() {
                back.get(k).unwrap().assert_approx_eq::<f32>(v, Tolerance::absolute(0.0));
            }
        }
    }

    #[test]
    fn mismatches_are_listed_and_model_unchanged() {
        let device = Device::flex();
        let mut model = tiny(MicroDiTBackbone::MicroDiT).init(&device).unwrap();
        let mut ck = model.to_checkpoint().unwrap();
        ck.remove("blocks.0.attn.qkv.weight");
        ck.insert("blocks.1.mlp.w1", TensorData::new(vec![0f32; 8], [2, 2, 2]));
        ck.insert("extra.weight", TensorData::new(vec![0f32; 2], [2]));
        let before = model.to_checkpoint().unwrap();
        let err = model.load_checkpoint(&ck).unwrap_err().to_string();
        for k in ["blocks.0.attn.qkv.weight", "blocks.1.mlp.w1", "extra.weight"] {
            assert!(err.contains(k), "{err}");
        }
        let after = model.to_checkpoint().unwrap();
        for (k, v) in before.tensors() {
            after.get(k).unwrap().assert_approx_eq::<f32>(v, Tolerance::absolute(0.0));
        }
    }

    #[test]
    fn dit_backbone_loads_an_official_dit_checkpoint() {
        let device = Device::flex();
        for learn_sigma in [false, true] {
            let dit_cfg = DiTConfig::new()
                .with_input_size(8)
                .with_hidden_size(32)
                .with_depth(2)
                .with_num_heads(4)
                .with_num_classes(5)
                .with_learn_sigma(learn_sigma);
            let mut dit = dit_cfg.init(&device).unwrap();
            let ck = randomize(&dit.to_checkpoint().unwrap());
            dit.load_checkpoint(&ck).unwrap();
            let cfg = MicroDiTConfig::new()
                .with_input_size(8)
                .with_dim(32)
                .with_depth(2)
                .with_head_dim(8)
                .with_multiple_of(1)
                .with_use_patch_mixer(false)
                .with_experts_every_n(0)
                .with_backbone(MicroDiTBackbone::DiT)
                .with_num_classes(5)
                .with_learn_sigma(learn_sigma);
            let mut micro = cfg.init(&device).unwrap();
            micro.load_checkpoint(&ck).unwrap();
            let x = crate::test_util::randn([2, 4, 8, 8], 101, &device);
            let t = Tensor::<1>::from_floats([3.0, 700.0], &device);
            let y = Tensor::<1, Int>::from_ints([1, 5], &device);
            let want = dit.forward(x.clone(), t.clone(), Some(y.clone())).unwrap();
            let got = micro.forward(x, t, &MicroDiTCond::Labels(y)).unwrap();
            got.into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
        }
    }
}

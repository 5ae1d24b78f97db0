//! MM-DiT checkpoints in diffusers' `SD3Transformer2DModel` layout (`.safetensors`, sharded
//! safetensors with an index JSON, or a `transformer/` directory; see
//! [`LazyCheckpoint::open`]).
//!
//! # How diffusers' layout maps
//! The model is the shell [`ComposedDiT`](crate::models::ComposedDiT) (module paths `shell.*`;
//! the prefix is dropped before the rules below). Every block is a [`Block`] preset
//! ([`JointBlockConfig`](crate::blocks::JointBlockConfig)): the block's tokens are the image
//! stream (stream 0 of its joint attention), the context tokens the text stream (stream 1).
//!
//! | crate module path | diffusers key |
//! |---|---|
//! | `x_embedder.proj` | `pos_embed.proj` |
//! | `pos_embed` | `pos_embed.pos_embed` (supplied from the model when absent) |
//! | `cond_embedders.0.t_embedder.linear_{1,2}` | `time_text_embed.timestep_embedder.linear_{1,2}` |
//! | `cond_embedders.0.y_embedder.fc{1,2}` | `time_text_embed.text_embedder.linear_{1,2}` |
//! | `context_embedder` | `context_embedder` |
//! | `stages.0.{i}.attn.joint.streams.0.qkv` | `transformer_blocks.{i}.attn.to_{q,k,v}` (rows concatenated) |
//! | `stages.0.{i}.attn.joint.streams.1.qkv` | `transformer_blocks.{i}.attn.add_{q,k,v}_proj` (rows concatenated) |
//! | `stages.0.{i}.attn.joint.streams.{0,1}.proj` | `transformer_blocks.{i}.attn.{to_out.0, to_add_out}` |
//! | `stages.0.{i}.attn.joint.streams.0.{q,k}_norm` | `transformer_blocks.{i}.attn.norm_{q,k}` |
//! | `stages.0.{i}.attn.joint.streams.1.{q,k}_norm` | `transformer_blocks.{i}.attn.norm_added_{q,k}` |
//! | `stages.0.{i}.conditioning.linear` (`.conditioning.ada_ln_modulation.linear` in MMDiT-X blocks) | `transformer_blocks.{i}.norm1.linear` |
//! | `stages.0.{i}.attn.context_modulation.linear` | `transformer_blocks.{i}.norm1_context.linear` |
//! | `stages.0.{i}.mlp.fc{1,2}` | `transformer_blocks.{i}.ff.net.{0.proj,2}` |
//! | `stages.0.{i}.attn.context_mlp.fc{1,2}` | `transformer_blocks.{i}.ff_context.net.{0.proj,2}` |
//! | `stages.0.{i}.conditioning.attn2.qkv` | `transformer_blocks.{i}.attn2.to_{q,k,v}` (MMDiT-X; rows concatenated) |
//! | `stages.0.{i}.conditioning.attn2.{proj, q_norm, k_norm}` | `transformer_blocks.{i}.attn2.{to_out.0, norm_q, norm_k}` |
//! | `final_layer.ada_ln_modulation.linear` | `norm_out.linear` (halves swapped) |
//! | `final_layer.linear` | `proj_out` |
//!
//! diffusers' `AdaLayerNormContinuous` (the final `norm_out` and the last block's
//! `norm1_context`) emits `(scale, shift)`; the crate's modulations emit `(shift, scale)`, so
//! the two row halves of those linears are swapped on load and swapped back on export.

use crate::blocks::Block;
use crate::blocks::parts::{AttentionPart, ConditioningPart};
use crate::error::Result;
use crate::models::MMDiT;
use crate::weights::checkpoint::Checkpoint;
use crate::weights::format::{CheckpointFormat, LoadWeights};
use crate::weights::lazy::{LazyCheckpoint, LazyTensor};
use crate::weights::loader::{KeyMap, split_rows, swap_row_halves};

const IMAGE_QKV: [&str; 3] = ["to_q", "to_k", "to_v"];
const TEXT_QKV: [&str; 3] = ["add_q_proj", "add_k_proj", "add_v_proj"];

/// The q/k/v projection sets of block `block` of `model`, as (prefix, names): the joint
/// attention's image and text sets, and the dual attention's (MMDiT-X) where the block has one.
fn qkv_sets(model: &MMDiT, block: usize) -> Vec<(String, [&'static str; 3])> {
    let attn = format!("transformer_blocks.{block}.attn");
    let mut sets = vec![(attn.clone(), IMAGE_QKV), (attn, TEXT_QKV)];
    if matches!(model.stages[0][block].conditioning, ConditioningPart::AdaLnZeroDual(_)) {
        sets.push((format!("transformer_blocks.{block}.attn2"), IMAGE_QKV));
    }
    sets
}

/// Module path -> diffusers key. The fused q/k/v projections map to synthetic keys
/// `attn.{to_q,to_k,to_v}` / `attn.{add_q_proj,add_k_proj,add_v_proj}` that the loader
/// assembles from (and the exporter splits into) the three projections.
pub fn diffusers_key_map() -> KeyMap {
    let fused = |names: [&str; 3]| format!("attn.{{{}}}", names.join(","));
    KeyMap::new([
        ("pos_embed".to_string(), "pos_embed.pos_embed".to_string()),
        ("x_embedder.proj".into(), "pos_embed.proj".into()),
        ("cond_embedders.0.t_embedder".into(), "time_text_embed.timestep_embedder".into()),
        ("cond_embedders.0.y_embedder.fc1".into(), "time_text_embed.text_embedder.linear_1".into()),
        ("cond_embedders.0.y_embedder.fc2".into(), "time_text_embed.text_embedder.linear_2".into()),
        ("stages.0".into(), "transformer_blocks".into()),
        ("attn.joint.streams.0.qkv".into(), fused(IMAGE_QKV)),
        ("attn.joint.streams.1.qkv".into(), fused(TEXT_QKV)),
        ("attn.joint.streams.0.proj".into(), "attn.to_out.0".into()),
        ("attn.joint.streams.1.proj".into(), "attn.to_add_out".into()),
        ("attn.joint.streams.0.q_norm".into(), "attn.norm_q".into()),
        ("attn.joint.streams.0.k_norm".into(), "attn.norm_k".into()),
        ("attn.joint.streams.1.q_norm".into(), "attn.norm_added_q".into()),
        ("attn.joint.streams.1.k_norm".into(), "attn.norm_added_k".into()),
        ("attn.context_modulation.linear".into(), "norm1_context.linear".into()),
        ("attn.context_mlp.fc1".into(), "ff_context.net.0.proj".into()),
        ("attn.context_mlp.fc2".into(), "ff_context.net.2".into()),
        ("conditioning.linear".into(), "norm1.linear".into()),
        ("conditioning.ada_ln_modulation.linear".into(), "norm1.linear".into()),
        ("conditioning.attn2.qkv".into(), format!("attn2.{{{}}}", IMAGE_QKV.join(","))),
        ("conditioning.attn2.proj".into(), "attn2.to_out.0".into()),
        ("conditioning.attn2.q_norm".into(), "attn2.norm_q".into()),
        ("conditioning.attn2.k_norm".into(), "attn2.norm_k".into()),
        ("mlp.fc1".into(), "ff.net.0.proj".into()),
        ("mlp.fc2".into(), "ff.net.2".into()),
        ("final_layer.ada_ln_modulation.linear".into(), "norm_out.linear".into()),
        ("final_layer.linear".into(), "proj_out".into()),
    ])
}

fn keys(prefix: &str, names: [&str; 3], param: &str) -> Vec<String> {
    names.iter().map(|n| format!("{prefix}.{n}.{param}")).collect()
}

fn fused_key(prefix: &str, names: [&str; 3], param: &str) -> String {
    format!("{prefix}.{{{}}}.{param}", names.join(","))
}

/// Whether a block's text stream is pre-only.
fn context_pre_only(block: &Block) -> bool {
    matches!(&block.attn, AttentionPart::TwoStream(t) if t.context_mlp.is_none())
}

/// Keys of the `(scale, shift)` linears of diffusers' `AdaLayerNormContinuous` in `model`.
fn continuous_norm_keys(model: &MMDiT) -> Vec<String> {
    let mut prefixes = vec!["norm_out.linear".to_string()];
    for (i, block) in model.stages[0].iter().enumerate() {
        if context_pre_only(block) {
            prefixes.push(format!("transformer_blocks.{i}.norm1_context.linear"));
        }
    }
    prefixes.iter().flat_map(|p| [format!("{p}.weight"), format!("{p}.bias")]).collect()
}

/// Rewrites a diffusers checkpoint for [`diffusers_key_map`]: fuses each block's q/k/v rows,
/// swaps the `(scale, shift)` halves, and supplies the sin-cos table when absent (all lazily).
fn prepare_diffusers(model: &MMDiT, ck: &mut LazyCheckpoint<'_>) {
    for i in 0..model.stages[0].len() {
        for (prefix, names) in qkv_sets(model, i) {
            for param in ["weight", "bias"] {
                ck.fuse_rows(&keys(&prefix, names, param), fused_key(&prefix, names, param));
            }
        }
    }
    for key in continuous_norm_keys(model) {
        ck.swap_row_halves(&key);
    }
    if let (false, Some(table)) = (ck.contains("pos_embed.pos_embed"), &model.pos_embed) {
        ck.insert("pos_embed.pos_embed", LazyTensor::from_data(table.val().into_data()));
    }
}

/// diffusers' `SD3Transformer2DModel` layout: MM-DiT's [`CheckpointFormat`]. The export has
/// separate q/k/v, `(scale, shift)` order and `pos_embed.pos_embed`, for loading into
/// `SD3Transformer2DModel`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MMDiTDiffusers;

impl CheckpointFormat<MMDiT> for MMDiTDiffusers {
    fn key(&self, module_path: &str) -> String {
        diffusers_key_map().checkpoint_key(module_path.strip_prefix("shell.").unwrap_or(module_path))
    }

    fn prepare(&self, model: &MMDiT, checkpoint: &mut LazyCheckpoint<'_>) -> Result<()> {
        prepare_diffusers(model, checkpoint);
        Ok(())
    }

    fn finish_export(&self, model: &MMDiT, ck: &mut Checkpoint) -> Result<()> {
        for i in 0..model.stages[0].len() {
            for (prefix, names) in qkv_sets(model, i) {
                for param in ["weight", "bias"] {
                    split_rows(ck, &fused_key(&prefix, names, param), &keys(&prefix, names, param))?;
                }
            }
        }
        for key in continuous_norm_keys(model) {
            swap_row_halves(ck, &key);
        }
        Ok(())
    }
}

impl LoadWeights for MMDiT {
    type Format = MMDiTDiffusers;

    fn format_of(&self, _checkpoint: &LazyCheckpoint<'_>) -> MMDiTDiffusers {
        MMDiTDiffusers
    }

    fn export_format(&self) -> MMDiTDiffusers {
        MMDiTDiffusers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::weights::loader::to_f32;
    use burn::tensor::TensorData;
    use crate::layers::attention::QkNorm;
    use crate::models::MMDiTConfig;
    use crate::models::mmdit_config::tiny_test_config;
    use burn::prelude::*;

    fn tiny(qk: QkNorm) -> MMDiTConfig {
        tiny_test_config().with_qk_norm(qk)
    }

    /// A model with every parameter random (the init zeroes the modulations and final layer).
    fn random_model(cfg: &MMDiTConfig, device: &Device) -> MMDiT {
        let m = cfg.init(device).unwrap();
        let mut ck = m.to_checkpoint().unwrap();
        let keys: Vec<String> = ck.tensors().keys().filter(|k| *k != "pos_embed.pos_embed").cloned().collect();
        for (i, k) in keys.iter().enumerate() {
            let shape = ck.get(k).unwrap().shape().to_vec();
            let n: usize = shape.iter().product();
            let vals: Vec<f32> = (0..n).map(|j| ((i * 7919 + j * 104_729) % 1000) as f32 / 5000.0 - 0.1).collect();
            ck.insert(k.clone(), TensorData::new(vals, shape));
        }
        let mut m = m;
        m.load_checkpoint(&ck).unwrap();
        m
    }

    fn inputs(device: &Device) -> (Tensor<4>, Tensor<1>, Tensor<3>, Tensor<2>) {
        (
            crate::test_util::randn([2, 4, 8, 4], 101, device),
            Tensor::from_floats([100.0, 700.0], device),
            crate::test_util::randn([2, 3, 12], 102, device),
            crate::test_util::randn([2, 10], 103, device),
        )
    }

    #[test]
    fn names_follow_diffusers() {
        let map = diffusers_key_map();
        let k = |p: &str| map.checkpoint_key(p);
        assert_eq!(k("pos_embed"), "pos_embed.pos_embed");
        assert_eq!(k("x_embedder.proj.weight"), "pos_embed.proj.weight");
        assert_eq!(k("cond_embedders.0.t_embedder.linear_2.bias"), "time_text_embed.timestep_embedder.linear_2.bias");
        assert_eq!(k("cond_embedders.0.y_embedder.fc1.weight"), "time_text_embed.text_embedder.linear_1.weight");
        assert_eq!(k("stages.0.3.attn.joint.streams.0.qkv.weight"), "transformer_blocks.3.attn.{to_q,to_k,to_v}.weight");
        assert_eq!(
            k("stages.0.3.attn.joint.streams.1.qkv.bias"),
            "transformer_blocks.3.attn.{add_q_proj,add_k_proj,add_v_proj}.bias"
        );
        assert_eq!(k("stages.0.0.attn.joint.streams.0.proj.weight"), "transformer_blocks.0.attn.to_out.0.weight");
        assert_eq!(k("stages.0.0.attn.joint.streams.1.proj.weight"), "transformer_blocks.0.attn.to_add_out.weight");
        assert_eq!(k("stages.0.1.attn.joint.streams.1.k_norm.weight"), "transformer_blocks.1.attn.norm_added_k.weight");
        assert_eq!(k("stages.0.1.attn.context_modulation.linear.weight"), "transformer_blocks.1.norm1_context.linear.weight");
        assert_eq!(k("stages.0.1.conditioning.linear.bias"), "transformer_blocks.1.norm1.linear.bias");
        assert_eq!(k("stages.0.1.conditioning.ada_ln_modulation.linear.bias"), "transformer_blocks.1.norm1.linear.bias");
        assert_eq!(k("stages.0.2.conditioning.attn2.proj.bias"), "transformer_blocks.2.attn2.to_out.0.bias");
        assert_eq!(k("stages.0.10.attn.context_mlp.fc2.bias"), "transformer_blocks.10.ff_context.net.2.bias");
        assert_eq!(k("stages.0.10.mlp.fc1.bias"), "transformer_blocks.10.ff.net.0.proj.bias");
        assert_eq!(k("final_layer.ada_ln_modulation.linear.weight"), "norm_out.linear.weight");
        assert_eq!(k("final_layer.linear.bias"), "proj_out.bias");
    }

    #[test]
    fn export_has_diffusers_keys_and_roundtrips() {
        let device = Device::flex();
        for qk in [QkNorm::None, QkNorm::RmsNorm, QkNorm::LayerNorm] {
            let cfg = tiny(qk);
            let m = random_model(&cfg, &device);
            let ck = m.to_checkpoint().unwrap();
            for key in [
                "transformer_blocks.0.attn.to_q.weight",
                "transformer_blocks.0.attn.add_v_proj.bias",
                "transformer_blocks.0.attn.to_add_out.weight",
                "transformer_blocks.0.ff_context.net.0.proj.weight",
                "transformer_blocks.1.norm1_context.linear.weight",
                "norm_out.linear.bias",
                "pos_embed.pos_embed",
            ] {
                assert!(ck.contains(key), "{qk:?}: {key}");
            }
            // the last block's text stream is pre-only: no output projection or MLP
            assert!(!ck.contains("transformer_blocks.1.attn.to_add_out.weight"));
            assert!(!ck.contains("transformer_blocks.1.ff_context.net.2.bias"));
            assert_eq!(
                ck.get("transformer_blocks.1.norm1_context.linear.weight").unwrap().shape().to_vec(),
                vec![32, 16]
            );
            assert_eq!(ck.get("transformer_blocks.0.attn.to_q.weight").unwrap().shape().to_vec(), vec![16, 16]);
            assert_eq!(ck.contains("transformer_blocks.0.attn.norm_added_q.weight"), qk != QkNorm::None);
            assert_eq!(ck.contains("transformer_blocks.0.attn.norm_q.bias"), qk == QkNorm::LayerNorm);
            // PyTorch's parameter count plus the table buffer
            let total: usize = ck.tensors().values().map(|d| d.shape().iter().product::<usize>()).sum();
            assert_eq!(total, cfg.num_params() + 36 * 16);
            let mut fresh = cfg.init(&device).unwrap();
            fresh.load_checkpoint(&ck).unwrap();
            let (x, t, text, pooled) = inputs(&device);
            let a = m.forward(x.clone(), t.clone(), text.clone(), pooled.clone()).unwrap();
            let b = fresh.forward(x, t, text, pooled).unwrap();
            assert!(a.clone().abs().max().into_scalar::<f32>() > 1e-3);
            assert!(a.equal(b).all().into_scalar::<bool>());
            let again = fresh.to_checkpoint().unwrap();
            for (k, v) in ck.tensors() {
                assert_eq!(to_f32(v), to_f32(again.get(k).unwrap()), "{k}");
            }
        }
    }

    #[test]
    fn dual_attention_blocks_have_attn2_keys_and_roundtrip() {
        let device = Device::flex();
        let cfg = tiny(QkNorm::RmsNorm).with_num_layers(3).with_dual_attention_layers(vec![0, 2]);
        let m = random_model(&cfg, &device);
        let ck = m.to_checkpoint().unwrap();
        for key in [
            "transformer_blocks.0.attn2.to_q.weight",
            "transformer_blocks.0.attn2.to_v.bias",
            "transformer_blocks.0.attn2.to_out.0.weight",
            "transformer_blocks.0.attn2.norm_q.weight",
            "transformer_blocks.2.attn2.norm_k.weight",
        ] {
            assert!(ck.contains(key), "{key}");
        }
        assert!(!ck.tensors().keys().any(|k| k.starts_with("transformer_blocks.1.attn2")));
        let rows = |k: &str| ck.get(k).unwrap().shape()[0];
        assert_eq!(rows("transformer_blocks.0.norm1.linear.weight"), 9 * 16);
        assert_eq!(rows("transformer_blocks.1.norm1.linear.weight"), 6 * 16);
        let total: usize = ck.tensors().values().map(|d| d.shape().iter().product::<usize>()).sum();
        assert_eq!(total, cfg.num_params() + 36 * 16);
        let mut fresh = cfg.init(&device).unwrap();
        fresh.load_checkpoint(&ck).unwrap();
        let again = fresh.to_checkpoint().unwrap();
        for (k, v) in ck.tensors() {
            assert_eq!(to_f32(v), to_f32(again.get(k).unwrap()), "{k}");
        }
        // an MMDiT-X checkpoint does not fit a model without dual attention, and is reported
        // in diffusers' names
        let msg = tiny(QkNorm::RmsNorm).with_num_layers(3).init(&device).unwrap().load_checkpoint(&ck).unwrap_err();
        let msg = msg.to_string();
        assert!(msg.contains("transformer_blocks.0.attn2.to_q.weight"), "{msg}");
        assert!(msg.contains("transformer_blocks.0.norm1.linear.weight"), "{msg}");
    }

    #[test]
    fn halves_are_swapped_into_shift_scale_order() {
        let device = Device::flex();
        let cfg = tiny(QkNorm::None);
        let m = random_model(&cfg, &device);
        let ck = m.to_checkpoint().unwrap();
        // diffusers' norm_out bias is (scale, shift); the crate's is (shift, scale)
        let ours = m.final_layer.ada_ln_modulation.linear.bias.as_ref().unwrap().val();
        let ours = ours.into_data().try_to_vec::<f32>().unwrap();
        let theirs = to_f32(ck.get("norm_out.linear.bias").unwrap());
        assert_eq!(&ours[..16], &theirs[16..]);
        assert_eq!(&ours[16..], &theirs[..16]);
    }

    #[test]
    fn mismatches_list_every_key_and_leave_the_model_unchanged() {
        let device = Device::flex();
        let cfg = tiny(QkNorm::RmsNorm);
        let m = random_model(&cfg, &device);
        let mut ck = m.to_checkpoint().unwrap();
        ck.remove("transformer_blocks.0.attn.norm_added_q.weight");
        ck.remove("transformer_blocks.1.attn.to_k.bias");
        ck.insert("extra.weight", TensorData::new(vec![0.0f32; 2], [2]));
        ck.insert("context_embedder.weight", TensorData::new(vec![0.0f32; 16 * 11], [16, 11]));
        let mut target = cfg.init(&device).unwrap();
        let before = target.to_checkpoint().unwrap();
        let err = target.load_checkpoint(&ck).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::CheckpointMismatch { .. }));
        for needle in [
            "transformer_blocks.0.attn.norm_added_q.weight",
            // the incomplete q/k/v set is not fused: the fused key is missing, the parts unexpected
            "transformer_blocks.1.attn.{to_q,to_k,to_v}.bias",
            "transformer_blocks.1.attn.to_q.bias",
            "extra.weight",
            "context_embedder.weight: model expects [16, 12], checkpoint has [16, 11]",
        ] {
            assert!(msg.contains(needle), "{needle} not in {msg}");
        }
        let after = target.to_checkpoint().unwrap();
        for (k, v) in before.tensors() {
            assert_eq!(to_f32(v), to_f32(after.get(k).unwrap()), "{k} changed");
        }
        // a checkpoint for a model without QK norm does not fit one with it
        let plain = random_model(&tiny(QkNorm::None), &device).to_checkpoint().unwrap();
        let msg = cfg.init(&device).unwrap().load_checkpoint(&plain).unwrap_err().to_string();
        assert!(msg.contains("norm_q.weight"), "{msg}");
    }

    #[test]
    fn table_is_supplied_when_absent() {
        let device = Device::flex();
        let cfg = tiny(QkNorm::None);
        let m = random_model(&cfg, &device);
        let mut ck = m.to_checkpoint().unwrap();
        ck.remove("pos_embed.pos_embed");
        let mut fresh = cfg.init(&device).unwrap();
        fresh.load_checkpoint(&ck).unwrap();
        let table = |m: &MMDiT| m.pos_embed.as_ref().unwrap().val().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(table(&fresh), table(&cfg.init(&device).unwrap()));
    }

    /// Writes `tensors` as one safetensors file through [`Checkpoint::save_safetensors`].
    fn write_safetensors(path: &std::path::Path, tensors: &[(&String, &TensorData)]) {
        let map = tensors.iter().map(|(k, d)| ((*k).clone(), (*d).clone())).collect();
        Checkpoint::from_tensors(map).save_safetensors(path).unwrap();
    }

    #[test]
    fn loads_single_file_sharded_and_directory_checkpoints() {
        let device = Device::flex();
        let cfg = tiny(QkNorm::RmsNorm);
        let m = random_model(&cfg, &device);
        let ck = m.to_checkpoint().unwrap();
        let dir = std::env::temp_dir().join(format!("dt_mmdit_ckpt_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let all: Vec<(&String, &TensorData)> = ck.tensors().iter().collect();
        let single = dir.join("single.safetensors");
        write_safetensors(&single, &all);
        // two shards and diffusers' index file
        let (a, b) = all.split_at(all.len() / 2);
        write_safetensors(&dir.join("diffusion_pytorch_model-00001-of-00002.safetensors"), a);
        write_safetensors(&dir.join("diffusion_pytorch_model-00002-of-00002.safetensors"), b);
        let mut weight_map = serde_json::Map::new();
        for (part, file) in [(a, "00001"), (b, "00002")] {
            for (k, _) in part {
                weight_map.insert((*k).clone(), format!("diffusion_pytorch_model-{file}-of-00002.safetensors").into());
            }
        }
        let index = dir.join("diffusion_pytorch_model.safetensors.index.json");
        std::fs::write(&index, serde_json::json!({"metadata": {}, "weight_map": weight_map}).to_string()).unwrap();
        for path in [single.clone(), index.clone(), dir.clone()] {
            let mut fresh = cfg.init(&device).unwrap();
            fresh.load_weights(&path).unwrap();
            let again = fresh.to_checkpoint().unwrap();
            for (k, v) in ck.tensors() {
                assert_eq!(to_f32(v), to_f32(again.get(k).unwrap()), "{k} from {path:?}");
            }
        }
        let mut fresh = cfg.init(&device).unwrap();
        assert!(matches!(fresh.load_weights(dir.join("missing.safetensors")), Err(Error::Io { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

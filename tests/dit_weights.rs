//! DiT checkpoint loading: error reports, untouched models on failure, round trips.

use burn::prelude::*;
use burn::tensor::TensorData;
use diffusion_transformers::Error;
use diffusion_transformers::models::{DiT, DiTConfig};
use diffusion_transformers::weights::{Checkpoint, DiTCheckpointLayout, load_burnpack, save_burnpack};
use diffusion_transformers::weights::LoadWeights;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn tiny_config() -> DiTConfig {
    // The config of tests/fixtures/dit_official_tiny.json.
    DiTConfig::new()
        .with_input_size(8)
        .with_patch_size(2)
        .with_hidden_size(64)
        .with_depth(2)
        .with_num_heads(4)
        .with_num_classes(10)
}

fn weights_only(mut ck: Checkpoint) -> Checkpoint {
    for p in ["input.", "output.", "intermediate."] {
        ck.take_prefix(p);
    }
    ck
}

fn official() -> Checkpoint {
    weights_only(Checkpoint::from_file(fixture("dit_official_tiny.safetensors")).unwrap())
}

fn param_bytes(m: &DiT) -> Vec<u8> {
    let ck = m.to_checkpoint().unwrap();
    ck.tensors().values().flat_map(|d| d.as_bytes().to_vec()).collect()
}

fn inputs(device: &Device) -> (Tensor<4>, Tensor<1>, Option<Tensor<1, Int>>) {
    let x: Vec<f32> = (0..2 * 4 * 64).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    (
        Tensor::from_data(TensorData::new(x, [2, 4, 8, 8]), device),
        Tensor::from_floats([3.0, 700.0], device),
        Some(Tensor::from_ints([1, 10], device)),
    )
}

#[test]
fn bad_checkpoint_lists_every_problem_and_leaves_model_untouched() {
    let device = Device::flex();
    let mut model = tiny_config().init(&device).unwrap();
    let before = param_bytes(&model);

    let mut ck = official();
    ck.remove("blocks.1.mlp.fc2.bias");
    ck.remove("final_layer.linear.weight");
    ck.insert("blocks.7.extra.weight", TensorData::new(vec![0f32; 4], [2, 2]));
    ck.insert("x_embedder.proj.bias", TensorData::new(vec![0f32; 3], [3]));
    let e = model.load_checkpoint_as(&ck, DiTCheckpointLayout::Official).unwrap_err();
    match &e {
        Error::CheckpointMismatch { missing, unexpected, mismatched } => {
            assert_eq!(missing, &vec!["blocks.1.mlp.fc2.bias".to_string(), "final_layer.linear.weight".to_string()]);
            assert_eq!(unexpected, &vec!["blocks.7.extra.weight".to_string()]);
            assert_eq!(mismatched, &vec![("x_embedder.proj.bias".to_string(), vec![64], vec![3])]);
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = e.to_string();
    for key in ["blocks.1.mlp.fc2.bias", "final_layer.linear.weight", "blocks.7.extra.weight", "x_embedder.proj.bias"] {
        assert!(msg.contains(key), "{msg}");
    }
    assert_eq!(param_bytes(&model), before, "a failed load must not modify the model");

    // A config that does not match the checkpoint is reported the same way.
    let mut wrong = tiny_config().with_depth(3).init(&device).unwrap();
    let e = wrong.load_checkpoint(&official()).unwrap_err().to_string();
    assert!(e.contains("blocks.2.attn.qkv.weight"), "{e}");
}

#[test]
fn unreadable_files_are_errors() {
    let device = Device::flex();
    let mut model = tiny_config().init(&device).unwrap();
    assert!(matches!(model.load_weights("/no/such/file.pt"), Err(Error::Io { .. })));
    assert!(matches!(load_burnpack(&model, "/no/such/file.bpk"), Err(Error::Io { .. })));
}

#[test]
fn official_export_reload_and_burnpack_roundtrip_are_bit_exact() {
    let device = Device::flex();
    let mut model = tiny_config().init(&device).unwrap();
    model.load_checkpoint(&official()).unwrap();
    let (x, t, y) = inputs(&device);
    let reference = model.forward(x.clone(), t.clone(), y.clone()).unwrap().into_data();

    // export under the official names, reload into a fresh model
    let mut again = tiny_config().init(&device).unwrap();
    again.load_checkpoint(&model.to_checkpoint().unwrap()).unwrap();
    assert_eq!(param_bytes(&again), param_bytes(&model));

    // Burn's own format
    let dir = std::env::temp_dir().join(format!("dt_burnpack_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dit.bpk");
    save_burnpack(&model, &path).unwrap();
    let fresh = tiny_config().init(&device).unwrap();
    let loaded = load_burnpack(&fresh, &path).unwrap();
    assert_eq!(param_bytes(&loaded), param_bytes(&model));
    let out = loaded.forward(x, t, y).unwrap().into_data();
    assert_eq!(out.as_bytes(), reference.as_bytes());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn diffusers_copies_collapse_into_an_official_model() {
    // A diffusers-layout checkpoint with identical per-block embedders (as converted from the
    // official weights) loads into the official (shared-embedder) model.
    let device = Device::flex();
    let mut model = tiny_config().with_timestep_freq_shift(1.0).init(&device).unwrap();
    model.load_checkpoint(&official()).unwrap();
    let official = model.to_checkpoint().unwrap();
    let mut diffusers = Checkpoint::new();
    for (k, v) in official.tensors() {
        let key = match k.as_str() {
            "pos_embed" => continue,
            k if k.starts_with("t_embedder.") || k.starts_with("y_embedder.") => {
                let rest = k
                    .replacen("t_embedder.mlp.0", "timestep_embedder.linear_1", 1)
                    .replacen("t_embedder.mlp.2", "timestep_embedder.linear_2", 1)
                    .replacen("y_embedder.", "class_embedder.", 1);
                for i in 0..2 {
                    diffusers.insert(format!("transformer_blocks.{i}.norm1.emb.{rest}"), v.clone());
                }
                continue;
            }
            k if k.starts_with("x_embedder.") => k.replacen("x_embedder.", "pos_embed.", 1),
            "final_layer.linear.weight" => "proj_out_2.weight".into(),
            "final_layer.linear.bias" => "proj_out_2.bias".into(),
            k if k.starts_with("final_layer.adaLN_modulation.1.") => k.replacen("final_layer.adaLN_modulation.1.", "proj_out_1.", 1),
            k => {
                let (i, rest) = k.strip_prefix("blocks.").unwrap().split_once('.').unwrap();
                if let Some(p) = rest.strip_prefix("attn.qkv.") {
                    let d = v.shape()[0] / 3;
                    let all: Vec<f32> = v.clone().try_into_vec::<f32>().unwrap();
                    let row = all.len() / v.shape()[0];
                    for (j, n) in ["to_q", "to_k", "to_v"].iter().enumerate() {
                        let part = all[j * d * row..(j + 1) * d * row].to_vec();
                        let mut shape = v.shape().to_vec();
                        shape[0] = d;
                        diffusers.insert(format!("transformer_blocks.{i}.attn1.{n}.{p}"), TensorData::new(part, shape));
                    }
                    continue;
                }
                let rest = rest
                    .replacen("attn.proj.", "attn1.to_out.0.", 1)
                    .replacen("mlp.fc1.", "ff.net.0.proj.", 1)
                    .replacen("mlp.fc2.", "ff.net.2.", 1)
                    .replacen("adaLN_modulation.1.", "norm1.linear.", 1);
                format!("transformer_blocks.{i}.{rest}")
            }
        };
        diffusers.insert(key, v.clone());
    }
    assert_eq!(DiTCheckpointLayout::detect(&diffusers), DiTCheckpointLayout::Diffusers);
    let mut from_diffusers = tiny_config().with_timestep_freq_shift(1.0).init(&device).unwrap();
    from_diffusers.load_checkpoint(&diffusers).unwrap();
    assert_eq!(param_bytes(&from_diffusers), param_bytes(&model));

    // Differing copies cannot collapse: reported as unexpected keys.
    let key = "transformer_blocks.1.norm1.emb.timestep_embedder.linear_1.bias";
    let n = diffusers.get(key).unwrap().shape()[0];
    diffusers.insert(key, TensorData::new(vec![1f32; n], [n]));
    let e = from_diffusers.load_checkpoint(&diffusers).unwrap_err().to_string();
    assert!(e.contains(key), "{e}");
}

#[test]
fn pytorch_pt_checkpoint_loads_like_safetensors() {
    // tests/data/dit_official_tiny.pt is written by scripts/make_pt_fixture.py from the
    // safetensors fixture (a plain torch.save state dict, like the released DiT files).
    let device = Device::flex();
    let mut from_pt = tiny_config().init(&device).unwrap();
    from_pt.load_weights(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/dit_official_tiny.pt")).unwrap();
    let mut from_st = tiny_config().init(&device).unwrap();
    from_st.load_checkpoint(&official()).unwrap();
    assert_eq!(param_bytes(&from_pt), param_bytes(&from_st));
}

//! Turns an `sd3_pipeline_diffusers` fixture into the diffusers folder `save_pretrained` would
//! write (each component's config and weights, the tokenizer files, the scheduler config), so
//! tests can load it with `Sd3Pipeline::from_pretrained`.

use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use diffusion_transformers::pipeline::{SkipLayerSettings, TextToImageSettings};
use diffusion_transformers::serde_json::{self, Value};
use diffusion_transformers::weights::Checkpoint;

/// The fixture's sidecar and tensors, and the folder written from them.
pub struct Sd3Folder {
    pub dir: PathBuf,
    pub sidecar: Value,
    pub data: Checkpoint,
}

impl Drop for Sd3Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Saves `ck` as two shards `{stem}-0000k-of-00002.safetensors` and the index
/// `{stem}.safetensors.index.json` naming them, as `save_pretrained(max_shard_size=...)`.
fn save_sharded(ck: Checkpoint, dir: &Path, stem: &str) {
    let mut tensors: Vec<(String, TensorData)> = ck.into_tensors().into_iter().collect();
    let second = tensors.split_off(tensors.len() / 2);
    let mut map = serde_json::Map::new();
    for (i, part) in [tensors, second].into_iter().enumerate() {
        let file = format!("{stem}-0000{}-of-00002.safetensors", i + 1);
        for (k, _) in &part {
            map.insert(k.clone(), Value::from(file.clone()));
        }
        Checkpoint::from_tensors(part.into_iter().collect()).save_safetensors(dir.join(&file)).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    write(&dir.join(format!("{stem}.safetensors.index.json")), &index.to_string());
}

/// Writes fixture `name` (in `tests/fixtures`) as a diffusers folder under a fresh temporary
/// directory tagged `tag`; with `sharded`, the transformer and T5 in two shards each.
pub fn write_folder(name: &str, tag: &str, sharded: bool) -> Sd3Folder {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let sidecar: Value = serde_json::from_str(&std::fs::read_to_string(fixtures.join(format!("{name}.json"))).unwrap()).unwrap();
    let mut weights = Checkpoint::from_file(fixtures.join(format!("{name}.safetensors"))).unwrap();
    let dir = std::env::temp_dir().join(format!("dt_sd3_folder_{tag}_{}", std::process::id()));
    let config = &sidecar["config"];
    for (component, file) in [
        ("transformer", "diffusion_pytorch_model.safetensors"),
        ("vae", "diffusion_pytorch_model.safetensors"),
        ("text_encoder", "model.safetensors"),
        ("text_encoder_2", "model.safetensors"),
        ("text_encoder_3", "model.safetensors"),
    ] {
        let ck = Checkpoint::from_tensors(weights.take_prefix(&format!("{component}.")));
        if config[component].is_null() {
            continue;
        }
        write(&dir.join(component).join("config.json"), &config[component].to_string());
        if sharded && matches!(component, "transformer" | "text_encoder_3") {
            save_sharded(ck, &dir.join(component), file.trim_end_matches(".safetensors"));
        } else {
            ck.save_safetensors(dir.join(component).join(file)).unwrap();
        }
    }
    write(&dir.join("scheduler/scheduler_config.json"), &config["scheduler"].to_string());
    for (folder, files) in sidecar["tokenizers"].as_object().unwrap() {
        for (file, text) in files.as_object().unwrap() {
            write(&dir.join(folder).join(file), text.as_str().unwrap());
        }
    }
    Sd3Folder { dir, sidecar, data: weights }
}

impl Sd3Folder {
    /// The pipeline call's settings.
    pub fn settings(&self) -> TextToImageSettings {
        let call = &self.sidecar["call"];
        let num = |k: &str| call[k].as_f64().unwrap();
        let skip = call.get("skip_guidance_layers").and_then(Value::as_array).map(|l| SkipLayerSettings {
            layers: l.iter().map(|i| i.as_u64().unwrap() as usize).collect(),
            scale: num("skip_layer_guidance_scale"),
            start: num("skip_layer_guidance_start"),
            stop: num("skip_layer_guidance_stop"),
        });
        TextToImageSettings {
            num_inference_steps: num("num_inference_steps") as usize,
            guidance_scale: num("guidance_scale"),
            size: Some([num("height") as usize, num("width") as usize]),
            skip_layer_guidance: skip,
            ..TextToImageSettings::default()
        }
    }

    /// The prompts and negative prompts of the call.
    pub fn prompts(&self) -> (Vec<String>, Option<Vec<String>>) {
        let list = |v: &Value| v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect::<Vec<_>>());
        (list(&self.sidecar["call"]["prompt"]).unwrap(), list(&self.sidecar["call"]["negative_prompt"]))
    }

    /// `max_sequence_length` of the call.
    pub fn max_sequence_length(&self) -> usize {
        self.sidecar["call"]["max_sequence_length"].as_u64().unwrap() as usize
    }

    /// A reference tensor (`input.latents`, `output.images`, ...).
    pub fn tensor(&self, key: &str) -> TensorData {
        self.data.get(key).unwrap_or_else(|| panic!("fixture lacks {key}")).clone()
    }
}

//! Kinds `clip_text_transformers`, `t5_encoder_transformers` and `tokenizer_transformers`:
//! transformers' CLIP text transformer, T5 encoder and tokenizers.

use std::sync::atomic::{AtomicUsize, Ordering};

use burn::prelude::*;
use diffusion_transformers::text::{ClipTextConfig, ClipTokenizer, T5EncoderConfig, T5Tokenizer};
use serde_json::Value;

use crate::common::{Fixture, Outcome, all, err};

pub fn clip_text(fx: &Fixture) -> Outcome {
    let with_projection = fx.weights.contains("text_projection.weight");
    let cfg = ClipTextConfig::from_transformers(fx.config(), with_projection).map_err(err)?;
    let mut model = cfg.init(&fx.device).map_err(err)?;
    model.load_checkpoint(&fx.weights).map_err(err)?;
    let out = model.forward(fx.int("input.input_ids")?).map_err(err)?;
    let embeds = out.text_embeds.ok_or("the model has no text_projection")?;
    all([
        fx.compare("output.last_hidden_state", out.last_hidden_state),
        fx.compare("output.penultimate_hidden_state", out.penultimate_hidden_state),
        fx.compare("output.text_embeds", embeds),
    ])
}

pub fn t5_encoder(fx: &Fixture) -> Outcome {
    let mut model = T5EncoderConfig::from_transformers(fx.config()).map_err(err)?.init(&fx.device).map_err(err)?;
    model.load_checkpoint(&fx.weights).map_err(err)?;
    let ids = fx.int::<2>("input.input_ids")?;
    let plain = model.forward(ids.clone(), None).map_err(err)?;
    let masked = model.forward(ids, Some(fx.int("input.attention_mask")?)).map_err(err)?;
    all([fx.compare("output.last_hidden_state", plain), fx.compare("output.last_hidden_state_masked", masked)])
}

pub fn tokenizer(fx: &Fixture) -> Outcome {
    let cfg = fx.config();
    let class = cfg.get("tokenizer_class").and_then(Value::as_str).ok_or("config lacks `tokenizer_class`")?;
    let max_length = cfg.get("max_length").and_then(Value::as_u64).ok_or("config lacks `max_length`")? as usize;
    let files = fx.field("files").and_then(Value::as_object).ok_or("sidecar lacks `files`")?;
    let prompts: Vec<&str> = fx
        .field("prompts")
        .and_then(Value::as_array)
        .ok_or("sidecar lacks `prompts`")?
        .iter()
        .map(|p| p.as_str().ok_or("prompts must be strings"))
        .collect::<Result<_, _>>()?;
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("dt_tokenizer_{}_{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(err)?;
    for (name, text) in files {
        let text = text.as_str().ok_or("files must map names to strings")?;
        std::fs::write(dir.join(name), text).map_err(err)?;
    }
    let batch = match class {
        "CLIPTokenizer" | "CLIPTokenizerFast" => ClipTokenizer::from_dir(&dir).and_then(|t| t.encode(&prompts, max_length)),
        "T5Tokenizer" | "T5TokenizerFast" => T5Tokenizer::from_dir(&dir).and_then(|t| t.encode(&prompts, max_length)),
        other => return Err(format!("unknown tokenizer_class `{other}`")),
    };
    std::fs::remove_dir_all(&dir).map_err(err)?;
    let batch = batch.map_err(err)?;
    let device = &fx.device;
    // Ids must be equal: report the first prompt that differs.
    let exact = |key: &str, got: Tensor<2, Int>| -> Outcome {
        let reference = fx.raw(key)?;
        let got = got.into_data().convert_dtype(burn::tensor::DType::I64);
        if got.shape() != reference.shape() {
            return Err(format!("`{key}`: shape {:?}, reference {:?}", got.shape(), reference.shape()));
        }
        let l = reference.shape()[1];
        let g = got.try_into_vec::<i64>().map_err(|e| format!("{e:?}"))?;
        let r = reference.convert_dtype(burn::tensor::DType::I64).try_into_vec::<i64>().map_err(|e| format!("{e:?}"))?;
        for (i, (a, b)) in g.chunks(l).zip(r.chunks(l)).enumerate() {
            if a != b {
                return Err(format!("`{key}`: prompt {i} {:?}: ids {a:?}, reference {b:?}", prompts[i]));
            }
        }
        Ok(0.0)
    };
    all([exact("output.input_ids", batch.ids(device)), exact("output.attention_mask", batch.mask(device))])
}

//! Kinds `clip_text_transformers`, `t5_encoder_transformers` and `tokenizer_transformers`:
//! transformers' CLIP text transformer, T5 encoder and tokenizers; `clip_text_open_clip`:
//! OpenCLIP's text tower and tokenizer and MicroDiT's caption conditioning.

use std::sync::atomic::{AtomicUsize, Ordering};

use burn::prelude::*;
use diffusion_transformers::text::{ClipTextConfig, ClipTokenizer, MicroDiTTextEncoder, T5EncoderConfig, T5Tokenizer};
use diffusion_transformers::weights::LoadWeights;
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

/// The sidecar's `prompts`.
fn prompts(fx: &Fixture) -> Result<Vec<&str>, String> {
    fx.field("prompts")
        .and_then(Value::as_array)
        .ok_or("sidecar lacks `prompts`")?
        .iter()
        .map(|p| p.as_str().ok_or_else(|| "prompts must be strings".to_string()))
        .collect()
}

/// Runs `f` on a fresh folder holding the sidecar's `files` (name -> text), then removes it.
fn with_files<T>(fx: &Fixture, f: impl FnOnce(&std::path::Path) -> T) -> Result<T, String> {
    let files = fx.field("files").and_then(Value::as_object).ok_or("sidecar lacks `files`")?;
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("dt_tokenizer_{}_{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(err)?;
    for (name, text) in files {
        let text = text.as_str().ok_or("files must map names to strings")?;
        std::fs::write(dir.join(name), text).map_err(err)?;
    }
    let out = f(&dir);
    std::fs::remove_dir_all(&dir).map_err(err)?;
    Ok(out)
}

/// Ids must be equal: reports the first prompt that differs.
fn exact_ids(fx: &Fixture, prompts: &[&str], key: &str, got: Tensor<2, Int>) -> Outcome {
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
}

pub fn tokenizer(fx: &Fixture) -> Outcome {
    let cfg = fx.config();
    let class = cfg.get("tokenizer_class").and_then(Value::as_str).ok_or("config lacks `tokenizer_class`")?;
    let max_length = cfg.get("max_length").and_then(Value::as_u64).ok_or("config lacks `max_length`")? as usize;
    let prompts = prompts(fx)?;
    let batch = with_files(fx, |dir| match class {
        "CLIPTokenizer" | "CLIPTokenizerFast" => ClipTokenizer::from_dir(dir).and_then(|t| t.encode(&prompts, max_length)).map_err(err),
        "T5Tokenizer" | "T5TokenizerFast" => T5Tokenizer::from_dir(dir).and_then(|t| t.encode(&prompts, max_length)).map_err(err),
        other => Err(format!("unknown tokenizer_class `{other}`")),
    })??;
    let device = &fx.device;
    all([
        exact_ids(fx, &prompts, "output.input_ids", batch.ids(device)),
        exact_ids(fx, &prompts, "output.attention_mask", batch.mask(device)),
    ])
}

pub fn clip_text_open_clip(fx: &Fixture) -> Outcome {
    let cfg = ClipTextConfig::from_open_clip(fx.config()).map_err(err)?;
    let mut model = cfg.init(&fx.device).map_err(err)?;
    model.load_checkpoint(&fx.weights).map_err(err)?;
    let (tokenizer, open_clip_bpe) = with_files(fx, |dir| {
        (ClipTokenizer::from_dir(dir), ClipTokenizer::from_open_clip_bpe(dir.join("bpe_simple_vocab_16e6.txt")))
    })?;
    let encoder = MicroDiTTextEncoder::new(model, tokenizer.map_err(err)?);
    let prompts = prompts(fx)?;
    let ids = encoder.tokenize(&prompts).map_err(err)?;
    let bpe_ids = open_clip_bpe.and_then(|t| t.encode_open_clip(&prompts, cfg.max_position_embeddings)).map_err(err)?;
    let n = cfg.num_hidden_layers;
    let mut states = Vec::with_capacity(n);
    for i in 0..n {
        states.push(encoder.model.forward_skip(ids.clone(), n - 1 - i).map_err(err)?.penultimate_hidden_state);
    }
    let out = encoder.model.forward(ids.clone()).map_err(err)?;
    let caption = encoder.encode(&prompts).map_err(err)?;
    all([
        exact_ids(fx, &prompts, "output.input_ids", ids),
        exact_ids(fx, &prompts, "output.input_ids", bpe_ids.ids(&fx.device)),
        fx.compare("output.hidden_states", Tensor::<3>::stack::<4>(states, 0)),
        fx.compare("output.last_hidden_state", out.last_hidden_state),
        fx.compare("output.text_embeds", out.text_embeds.ok_or("the model has no text_projection")?),
        fx.compare("output.microdit_caption", caption.unsqueeze_dim::<4>(1)),
    ])
}

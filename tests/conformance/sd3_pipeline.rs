//! Kind `sd3_pipeline_diffusers`: diffusers' `StableDiffusion3Pipeline` from prompts to images
//! (tiny random components as diffusers' fast pipeline test, tokenizers trained by the
//! generator): token ids, `encode_prompt`'s four tensors, the latents after each flow step
//! with classifier-free (and skip-layer) guidance, the decoded and post-processed images.

use std::sync::atomic::{AtomicUsize, Ordering};

use burn::prelude::*;
use diffusion_transformers::contracts::NullEmbedding;
use diffusion_transformers::models::MMDiTConfig;
use diffusion_transformers::pipeline::{FlowMatchScheduler, Sd3Prompts, SkipLayerSettings, TextToImagePipeline, TextToImageSettings};
use diffusion_transformers::sampling::{Progress, ProgressCallback};
use diffusion_transformers::text::{ClipTextConfig, ClipTokenizer, Sd3PromptOptions, Sd3TextEncoders, T5EncoderConfig, T5Tokenizer};
use diffusion_transformers::vae::AutoencoderKlConfig;
use diffusion_transformers::weights::{Checkpoint, LoadWeights};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

use crate::common::{Fixture, Outcome, all, cfg_usize, err};

/// Records the sample after every step.
struct Trajectory(Vec<Tensor<4>>);

impl ProgressCallback for Trajectory {
    fn on_step(&mut self, _progress: &Progress) {}

    fn on_sample(&mut self, _progress: &Progress, sample: &Tensor<4>) {
        self.0.push(sample.clone());
    }
}

/// The strings of a JSON list (`null`: none).
fn strings(v: Option<&Value>, what: &str) -> Result<Option<Vec<String>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a.iter().map(|s| s.as_str().map(str::to_string).ok_or(format!("`{what}` must hold strings"))).collect::<Result<_, _>>().map(Some),
        Some(_) => Err(format!("`{what}` must be a list of strings")),
    }
}

/// Writes the sidecar's tokenizer files (`tokenizers`: folder -> file -> text) to a new
/// temporary folder.
fn write_tokenizers(fx: &Fixture) -> Result<std::path::PathBuf, String> {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("dt_sd3_pipeline_{}_{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed)));
    let folders = fx.field("tokenizers").and_then(Value::as_object).ok_or("sidecar lacks `tokenizers`")?;
    for (folder, files) in folders {
        let sub = dir.join(folder);
        std::fs::create_dir_all(&sub).map_err(err)?;
        for (name, text) in files.as_object().ok_or("`tokenizers` must map folders to files")? {
            std::fs::write(sub.join(name), text.as_str().ok_or("tokenizer files must be strings")?).map_err(err)?;
        }
    }
    Ok(dir)
}

/// The text encoders and tokenizers of the fixture, each component from its config section
/// and its `NAME.`-prefixed weights.
fn text_encoders(fx: &Fixture, weights: &mut Checkpoint, joint_attention_dim: usize) -> Result<Sd3TextEncoders, String> {
    let cfg = fx.config();
    let dir = write_tokenizers(fx)?;
    let clip = |name: &str, weights: &mut Checkpoint| -> Result<_, String> {
        let ck = Checkpoint::from_tensors(weights.take_prefix(&format!("{name}.")));
        let c = cfg.get(name).ok_or(format!("config lacks `{name}`"))?;
        let mut m = ClipTextConfig::from_transformers(c, true).map_err(err)?.init(&fx.device).map_err(err)?;
        m.load_checkpoint(&ck).map_err(err)?;
        Ok(m)
    };
    let t5 = match cfg.get("text_encoder_3") {
        None | Some(Value::Null) => None,
        Some(c) => {
            let ck = Checkpoint::from_tensors(weights.take_prefix("text_encoder_3."));
            let mut m = T5EncoderConfig::from_transformers(c).map_err(err)?.init(&fx.device).map_err(err)?;
            m.load_checkpoint(&ck).map_err(err)?;
            Some((m, T5Tokenizer::from_dir(dir.join("tokenizer_3")).map_err(err)?))
        }
    };
    let encoders = Sd3TextEncoders {
        clip_l: clip("text_encoder", weights)?,
        tokenizer: ClipTokenizer::from_dir(dir.join("tokenizer")).map_err(err)?,
        clip_g: clip("text_encoder_2", weights)?,
        tokenizer_2: ClipTokenizer::from_dir(dir.join("tokenizer_2")).map_err(err)?,
        t5,
        tokenizer_max_length: 77,
        joint_attention_dim,
    };
    std::fs::remove_dir_all(&dir).map_err(err)?;
    Ok(encoders)
}

/// Token ids must be equal.
fn same_ids(fx: &Fixture, key: &str, got: &[Vec<i64>]) -> Outcome {
    let reference = fx.raw(key)?.convert_dtype(burn::tensor::DType::I64);
    let l = reference.shape()[1];
    let r = reference.try_into_vec::<i64>().map_err(|e| format!("{e:?}"))?;
    let g: Vec<i64> = got.iter().flatten().copied().collect();
    if g != r {
        let row = g.chunks(l).zip(r.chunks(l)).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!("`{key}`: row {row} differs from the reference ids"));
    }
    Ok(0.0)
}

pub fn diffusers(fx: &Fixture) -> Outcome {
    let cfg = fx.config();
    let call = fx.field("call").ok_or("sidecar lacks `call`")?;
    let section = |k: &str| cfg.get(k).ok_or(format!("config lacks `{k}`"));
    let mut weights = fx.weights.clone();

    let tcfg = MMDiTConfig::from_diffusers_config(section("transformer")?).map_err(err)?;
    let mut model = tcfg.init(&fx.device).map_err(err)?;
    model.load_checkpoint(&Checkpoint::from_tensors(weights.take_prefix("transformer."))).map_err(err)?;
    let vae_cfg = AutoencoderKlConfig::from_diffusers_json(&section("vae")?.to_string()).map_err(err)?;
    let mut vae = vae_cfg.init(&fx.device).map_err(err)?;
    vae.load_checkpoint(&Checkpoint::from_tensors(weights.take_prefix("vae."))).map_err(err)?;
    let encoders = text_encoders(fx, &mut weights, tcfg.joint_attention_dim)?;
    if !weights.is_empty() {
        return Err(format!("weights of no component: {:?}", weights.tensors().keys().take(5).collect::<Vec<_>>()));
    }
    let scheduler = FlowMatchScheduler::from_diffusers_config(section("scheduler")?).map_err(err)?;

    let prompts = strings(call.get("prompt"), "prompt")?.ok_or("call lacks `prompt`")?;
    let negative = strings(call.get("negative_prompt"), "negative_prompt")?;
    let max_sequence_length = cfg_usize(call, "max_sequence_length")?;
    let num = |k: &str, d: f64| call.get(k).and_then(Value::as_f64).unwrap_or(d);
    let skip_layer_guidance = match call.get("skip_guidance_layers") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let layers = v.as_array().and_then(|a| a.iter().map(|i| i.as_u64().map(|i| i as usize)).collect::<Option<Vec<_>>>());
            let defaults = SkipLayerSettings::new(Vec::new());
            Some(SkipLayerSettings {
                layers: layers.ok_or("skip_guidance_layers must list block indices")?,
                scale: num("skip_layer_guidance_scale", defaults.scale),
                start: num("skip_layer_guidance_start", defaults.start),
                stop: num("skip_layer_guidance_stop", defaults.stop),
            })
        }
    };
    let settings = TextToImageSettings {
        num_inference_steps: cfg_usize(call, "num_inference_steps")?,
        guidance_scale: num("guidance_scale", 7.0),
        size: Some([cfg_usize(call, "height")?, cfg_usize(call, "width")?]),
        skip_layer_guidance,
        ..TextToImageSettings::default()
    };

    // 1. Token ids of every tokenizer, for the prompts and the negative prompts.
    let p: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let empty = vec![""; p.len()];
    let n: Vec<&str> = negative.as_ref().map_or(empty, |v| v.iter().map(String::as_str).collect());
    let mut results = Vec::new();
    for (side, texts) in [("", &p), ("negative_", &n)] {
        let ids = |tok: &ClipTokenizer| tok.encode(texts, encoders.tokenizer_max_length).map_err(err);
        results.push(same_ids(fx, &format!("intermediate.{side}text_input_ids"), &ids(&encoders.tokenizer)?.input_ids));
        results.push(same_ids(fx, &format!("intermediate.{side}text_input_ids_2"), &ids(&encoders.tokenizer_2)?.input_ids));
        if let Some((_, t5_tok)) = &encoders.t5 {
            let batch = t5_tok.encode(texts, max_sequence_length).map_err(err)?;
            results.push(same_ids(fx, &format!("intermediate.{side}text_input_ids_3"), &batch.input_ids));
        }
    }

    let options = Sd3PromptOptions { max_sequence_length, ..Sd3PromptOptions::default() };
    let default_side = tcfg.sample_size * vae.downsample_factor();
    let pipeline = TextToImagePipeline::new(model, Sd3Prompts { encoders, options }, vae, scheduler, tcfg.patch_size, [default_side; 2]).map_err(err)?;

    // 2. encode_prompt.
    let encoded = pipeline.encode(&p, negative.as_ref().map(|_| n.as_slice()), &settings).map_err(err)?;
    let ((tokens, pooled), null) = &encoded;
    results.push(fx.compare("intermediate.prompt_embeds", tokens.clone()));
    results.push(fx.compare("intermediate.pooled_prompt_embeds", pooled.clone()));
    match null {
        Some((NullEmbedding::Given(t), NullEmbedding::Given(p))) => {
            results.push(fx.compare("intermediate.negative_prompt_embeds", t.clone()));
            results.push(fx.compare("intermediate.negative_pooled_prompt_embeds", p.clone()));
        }
        None if !fx.has("intermediate.negative_prompt_embeds") => {}
        _ => return Err("the negative prompt embeddings and the reference's disagree in presence".into()),
    }

    // 3. The timesteps and the latents after each step.
    let plan = pipeline.plan(&settings).map_err(err)?;
    let timesteps: Vec<f32> = plan.levels.iter().map(|l| l.timestep as f32).collect();
    let steps = timesteps.len();
    results.push(fx.compare("output.timesteps", Tensor::<1>::from_floats(timesteps.as_slice(), &fx.device)));
    let mut trajectory = Trajectory(Vec::new());
    let mut rng = StdRng::seed_from_u64(0); // flow Euler draws no step noise
    let latents = pipeline
        .sample_latents_from(&encoded, &settings, fx.float("input.latents")?, &mut rng, Some(&mut trajectory))
        .map_err(err)?;
    if trajectory.0.len() != steps {
        return Err(format!("{} steps reported, {steps} expected", trajectory.0.len()));
    }
    results.push(fx.compare("intermediate.trajectory", Tensor::stack::<5>(trajectory.0, 0)));

    // 4. Decoding and post-processing.
    let decoded = pipeline.decode_latents(latents).map_err(err)?;
    results.push(fx.compare("output.images", (decoded.clone() / 2.0 + 0.5).clamp(0.0, 1.0)));
    results.push(fx.compare("output.decoded", decoded));
    all(results)
}

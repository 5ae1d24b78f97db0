//! Kinds `vae_diffusers` (diffusers `AutoencoderKL`: encoder posterior, decoder,
//! reconstruction, latent scaling, tiled decoding) and `latent_pipeline_e2e` (tiny DiT + tiny
//! VAE sampled with DDIM and guidance, against diffusers' DiT pipeline loop).

use diffusion_transformers::diffusion::schedule::BetaSchedule;
use diffusion_transformers::models::DiTConfig;
use diffusion_transformers::pipeline::{DitPipeline, PipelineConfig};
use diffusion_transformers::sampling::{Ddim, SamplerKind};
use diffusion_transformers::sampling::NoProgress;
use diffusion_transformers::vae::{AutoencoderKlConfig, DecodeTiling};
use diffusion_transformers::weights::{Checkpoint, DiTCheckpointLayout};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

use crate::common::{Fixture, Outcome, all, cfg_f64, cfg_usize, err};
use diffusion_transformers::weights::LoadWeights;

pub fn diffusers(fx: &Fixture) -> Outcome {
    let config = AutoencoderKlConfig::from_diffusers_json(&fx.config().to_string()).map_err(err)?;
    let mut vae = config.init(&fx.device).map_err(err)?;
    vae.load_checkpoint(&fx.weights).map_err(err)?;

    let image = fx.float::<4>("input.image")?;
    let post = vae.encode(image.clone()).map_err(err)?;
    let mut results = vec![
        fx.compare("output.posterior_mean", post.mean.clone()),
        fx.compare("output.posterior_logvar", post.logvar.clone()),
        fx.compare("output.scaled_mode", vae.scale(post.mode())),
        fx.compare("output.decode", vae.decode(fx.float("input.latents")?).map_err(err)?),
        fx.compare("output.reconstruction", vae.forward(image).map_err(err)?),
    ];
    if fx.has("output.posterior_sample") {
        let noise = fx.float::<4>("input.sample_noise")?;
        results.push(fx.compare("output.posterior_sample", post.mean.clone() + post.std() * noise));
    }
    if fx.has("output.tiled_decode") {
        let factor = fx.field("tile_overlap_factor").and_then(Value::as_f64).ok_or("sidecar lacks tile_overlap_factor")?;
        let tile = (config.sample_size / config.downsample_factor()).max(1);
        let tiling = DecodeTiling::from_overlap_factor(tile, factor);
        results.push(fx.compare("output.tiled_decode", vae.decode_tiled(fx.float("input.tiled_latents")?, &tiling).map_err(err)?));
    }
    all(results)
}

/// Kind `latent_pipeline_e2e`: a diffusers `DiTTransformer2DModel` + `AutoencoderKL` sampled by
/// diffusers' DiT pipeline loop (DDIM, classifier-free guidance) from stored noise, run through
/// the crate's `DitPipeline` (over the generic `LatentDiffusionPipeline`).
pub fn latent_pipeline(fx: &Fixture) -> Outcome {
    let cfg = fx.config();
    let (dit_cfg, vae_cfg, sched) = match (cfg.get("transformer"), cfg.get("vae"), cfg.get("scheduler")) {
        (Some(d), Some(v), Some(s)) => (d, v, s),
        _ => return Err("config needs `transformer`, `vae` and `scheduler`".into()),
    };
    let field = |k: &str| fx.field(k).ok_or_else(|| format!("sidecar lacks `{k}`"));
    let num = |k: &str| field(k).and_then(|v| v.as_f64().ok_or_else(|| format!("`{k}` is not a number")));

    // The transformer in diffusers' layout (per-block embedders, shifted timestep frequencies).
    let heads = cfg_usize(dit_cfg, "num_attention_heads")?;
    let in_ch = cfg_usize(dit_cfg, "in_channels")?;
    let out_ch = dit_cfg.get("out_channels").and_then(Value::as_u64).map_or(in_ch, |v| v as usize);
    let dit_config = DiTConfig::new()
        .with_input_size(cfg_usize(dit_cfg, "sample_size")?)
        .with_patch_size(cfg_usize(dit_cfg, "patch_size")?)
        .with_in_channels(in_ch)
        .with_hidden_size(heads * cfg_usize(dit_cfg, "attention_head_dim")?)
        .with_depth(cfg_usize(dit_cfg, "num_layers")?)
        .with_num_heads(heads)
        .with_num_classes(cfg_usize(dit_cfg, "num_embeds_ada_norm")?)
        .with_learn_sigma(out_ch == 2 * in_ch)
        .with_timestep_freq_shift(1.0)
        .with_per_block_embedders(true);
    let mut weights = fx.weights.clone();
    let dit_weights = Checkpoint::from_tensors(weights.take_prefix("transformer."));
    let vae_weights = Checkpoint::from_tensors(weights.take_prefix("vae."));
    if !weights.is_empty() {
        return Err(format!("weights outside `transformer.` / `vae.`: {:?}", weights.tensors().keys().collect::<Vec<_>>()));
    }
    let mut dit = dit_config.init(&fx.device).map_err(err)?;
    dit.load_checkpoint_as(&dit_weights, DiTCheckpointLayout::Diffusers).map_err(err)?;
    let vae_config = AutoencoderKlConfig::from_diffusers_json(&vae_cfg.to_string()).map_err(err)?;
    let mut vae = vae_config.init(&fx.device).map_err(err)?;
    vae.load_checkpoint(&vae_weights).map_err(err)?;

    // diffusers' DDIMScheduler as the crate's respaced diffusion.
    let str_field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string).ok_or_else(|| format!("scheduler lacks `{k}`"));
    if str_field(sched, "prediction_type")? != "epsilon" {
        return Err("only epsilon-prediction schedulers are supported".into());
    }
    let schedule = BetaSchedule::from_diffusers(
        &str_field(sched, "beta_schedule")?,
        cfg_f64(sched, "beta_start")?,
        cfg_f64(sched, "beta_end")?,
    )
    .map_err(err)?;
    let eta = num("eta")?;
    let config = PipelineConfig::new()
        .with_sampler(SamplerKind::Ddim(Ddim::new(eta).map_err(err)?))
        .with_num_steps(field("num_inference_steps")?.as_u64().ok_or("num_inference_steps")? as usize)
        .with_cfg_scale(num("guidance_scale")?)
        .with_guided_channels(Some(field("guided_channels")?.as_u64().ok_or("guided_channels")? as usize))
        .with_diffusion_steps(cfg_usize(sched, "num_train_timesteps")?)
        .with_noise_schedule(schedule);
    let pipeline = DitPipeline::new(dit, vae, config).map_err(err)?;
    if field("null_class")?.as_u64() != Some(pipeline.num_classes() as u64) {
        return Err("the reference's null class is not the model's num_classes".into());
    }
    // The timesteps the model sees must be the scheduler's.
    let ours: Vec<i64> = pipeline.diffusion().timestep_map().iter().rev().map(|&t| t as i64).collect();
    let theirs = fx.raw("output.timesteps")?.convert_dtype(burn::tensor::DType::I64).try_into_vec::<i64>().map_err(|e| format!("{e:?}"))?;
    if ours != theirs {
        return Err(format!("timesteps {ours:?} differ from the scheduler's {theirs:?}"));
    }

    let labels: Vec<usize> = fx
        .raw("input.class_labels")?
        .convert_dtype(burn::tensor::DType::I64)
        .try_into_vec::<i64>()
        .map_err(|e| format!("{e:?}"))?
        .into_iter()
        .map(|l| l as usize)
        .collect();
    let mut rng = StdRng::seed_from_u64(0); // unused by deterministic DDIM (eta 0)
    let latents = pipeline
        .sample_latents_from(&labels, fx.float("input.noise")?, &mut rng, &mut NoProgress)
        .map_err(err)?;
    let decoded = pipeline.pipeline().decode_latents(latents.clone()).map_err(err)?;
    // The sampled latents of a random-weight DiT reach |z| ~ 100, so they are held to
    // atol + rtol * |ref|; the reported error is the pipeline's output (decoded images).
    fx.compare("output.latents", latents)?;
    all([
        fx.compare("output.decoded", decoded.clone()),
        fx.compare("output.images", (decoded / 2.0 + 0.5).clamp(0.0, 1.0)),
    ])
}

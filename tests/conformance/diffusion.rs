//! Kinds `gaussian_diffusion_official` (facebookresearch/DiT `create_diffusion`),
//! `ddpm_diffusers` and `ddim_diffusers` (diffusers `DDPMScheduler` / `DDIMScheduler`).

use burn::prelude::*;
use diffusion_transformers::diffusion::gaussian::{
    ClipMode, GaussianDiffusion, GaussianDiffusionConfig, LossType, PredictionType, VarianceType,
};
use diffusion_transformers::diffusion::schedule::BetaSchedule;
use diffusion_transformers::diffusion::schedulers::{
    DdimScheduler, DdimStepOptions, DdpmScheduler, DdpmVarianceType, SchedulerConfig, TimestepSpacing,
};
use serde_json::Value;

use crate::common::{Fixture, Outcome, all, compare_data, err};

/// Operations (not schedule arrays) of `gaussian_diffusion_official` are compared with at least
/// this absolute tolerance, as its sidecars state ("ops in float32, compare with atol 1e-4").
const OPS_ATOL: f64 = 1e-4;

fn flag(cfg: &Value, key: &str, default: bool) -> bool {
    cfg.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// `create_diffusion(**config)` with the reference defaults for absent arguments.
fn official_diffusion(cfg: &Value) -> Result<GaussianDiffusion, String> {
    let respacing = cfg.get("timestep_respacing").and_then(Value::as_str).unwrap_or("");
    let schedule = cfg.get("noise_schedule").and_then(Value::as_str).unwrap_or("linear");
    let steps = cfg.get("diffusion_steps").and_then(Value::as_u64).unwrap_or(1000) as usize;
    let loss = if flag(cfg, "use_kl", false) {
        LossType::RescaledKl
    } else if flag(cfg, "rescale_learned_sigmas", false) {
        LossType::RescaledMse
    } else {
        LossType::Mse
    };
    let variance = match (flag(cfg, "learn_sigma", true), flag(cfg, "sigma_small", false)) {
        (true, _) => VarianceType::LearnedRange,
        (false, false) => VarianceType::FixedLarge,
        (false, true) => VarianceType::FixedSmall,
    };
    let prediction = if flag(cfg, "predict_xstart", false) { PredictionType::Sample } else { PredictionType::Epsilon };
    GaussianDiffusionConfig::new()
        .with_diffusion_steps(steps)
        .with_noise_schedule(BetaSchedule::from_name(schedule).map_err(err)?)
        .with_timestep_respacing(respacing.to_string())
        .with_prediction_type(prediction)
        .with_variance_type(variance)
        .with_loss_type(loss)
        .init()
        .map_err(err)
}

fn compare_f64(fx: &Fixture, key: &str, got: &[f64]) -> Outcome {
    compare_data(key, TensorData::new(got.to_vec(), [got.len()]), fx.raw(key)?, fx.atol, fx.rtol)
}

fn compare_op<const D: usize>(fx: &Fixture, key: &str, got: Tensor<D>) -> Outcome {
    compare_data(key, got.into_data(), fx.raw(key)?, fx.atol.max(OPS_ATOL), fx.rtol)
}

fn indices(fx: &Fixture, key: &str) -> Result<Vec<usize>, String> {
    let d = fx.raw(key)?.convert_dtype(burn::tensor::DType::I64);
    let v = d.try_into_vec::<i64>().map_err(|e| format!("`{key}`: {e:?}"))?;
    v.into_iter().map(|i| usize::try_from(i).map_err(|_| format!("`{key}` has a negative entry"))).collect()
}

pub fn gaussian_official(fx: &Fixture) -> Outcome {
    let d = official_diffusion(fx.config())?;
    let s = d.schedule();
    let mut results = vec![];
    let map = indices(fx, "schedule.timestep_map")?;
    if map != d.timestep_map() {
        return Err(format!("timestep_map differs: got {:?}, reference {map:?}", d.timestep_map()));
    }
    for (key, arr) in [
        ("schedule.betas", s.betas()),
        ("schedule.alphas_cumprod", s.alphas_cumprod()),
        ("schedule.alphas_cumprod_prev", s.alphas_cumprod_prev()),
        ("schedule.posterior_variance", s.posterior_variance()),
        ("schedule.posterior_log_variance_clipped", s.posterior_log_variance_clipped()),
        ("schedule.posterior_mean_coef1", s.posterior_mean_coef1()),
        ("schedule.posterior_mean_coef2", s.posterior_mean_coef2()),
    ] {
        if fx.has(key) {
            results.push(compare_f64(fx, key, arr));
        }
    }
    let x0 = fx.float::<4>("input.x0")?;
    let x_t = fx.float::<4>("input.x_t")?;
    let noise = fx.float::<4>("input.noise")?;
    let out = fx.float::<4>("input.model_output")?;
    let t = indices(fx, "input.t")?;
    let q = d.q_sample(x0.clone(), &t, noise.clone()).map_err(err)?;
    results.push(compare_op(fx, "output.q_sample", q));
    for clip in [false, true] {
        let p = d.p_mean_variance(out.clone(), x_t.clone(), &t, ClipMode::from(clip)).map_err(err)?;
        let k = format!("output.p_mean_variance.clip_{}", u8::from(clip));
        results.push(compare_op(fx, &format!("{k}.mean"), p.mean));
        results.push(compare_op(fx, &format!("{k}.variance"), p.variance));
        results.push(compare_op(fx, &format!("{k}.log_variance"), p.log_variance));
        results.push(compare_op(fx, &format!("{k}.pred_xstart"), p.pred_xstart));
    }
    // training_losses(fake, x0, t, noise): x_t is q_sample(x0, t, noise).
    let xt_train = d.q_sample(x0.clone(), &t, noise.clone()).map_err(err)?;
    let losses = d.training_losses_from_output(out.clone(), x0, xt_train, &t, noise).map_err(err)?;
    results.push(compare_op(fx, "output.training_losses.loss", losses.loss));
    // The reference reports `mse` for the MSE losses and `vb` only with learned variances
    // under them (the KL losses report `loss` alone).
    for (key, ours) in [("output.training_losses.mse", losses.mse), ("output.training_losses.vb", losses.vb)] {
        match (fx.has(key), ours) {
            (true, Some(v)) => results.push(compare_op(fx, key, v)),
            (true, None) => return Err(format!("the reference has `{key}`, ours has no such term")),
            (false, _) => {}
        }
    }
    let step_noise = fx.float::<4>("input.step_noise")?;
    let ps = d.p_sample(out.clone(), x_t.clone(), &t, ClipMode::Clamp(1.0), Some(step_noise.clone())).map_err(err)?;
    results.push(compare_op(fx, "output.p_sample", ps.sample));
    for eta in [0u8, 1] {
        let key = format!("output.ddim_sample.eta_{eta}");
        if fx.has(&key) {
            let st = d
                .ddim_sample(out.clone(), x_t.clone(), &t, ClipMode::Clamp(1.0), f64::from(eta), Some(step_noise.clone()))
                .map_err(err)?;
            results.push(compare_op(fx, &key, st.sample));
        }
    }
    all(results)
}

/// `SchedulerConfig` from the sidecar's diffusers constructor arguments (diffusers defaults
/// for absent ones).
fn scheduler_config(cfg: &Value) -> Result<SchedulerConfig, String> {
    let num = |k: &str, d: f64| cfg.get(k).and_then(Value::as_f64).unwrap_or(d);
    let name = cfg.get("beta_schedule").and_then(Value::as_str).unwrap_or("linear");
    let prediction = match cfg.get("prediction_type").and_then(Value::as_str).unwrap_or("epsilon") {
        "epsilon" => PredictionType::Epsilon,
        "sample" => PredictionType::Sample,
        "v_prediction" => PredictionType::VPrediction,
        other => return Err(format!("unknown prediction_type `{other}`")),
    };
    let spacing = match cfg.get("timestep_spacing").and_then(Value::as_str).unwrap_or("leading") {
        "leading" => TimestepSpacing::Leading,
        "trailing" => TimestepSpacing::Trailing,
        "linspace" => TimestepSpacing::Linspace,
        other => return Err(format!("unknown timestep_spacing `{other}`")),
    };
    let variance = match cfg.get("variance_type").and_then(Value::as_str).unwrap_or("fixed_small") {
        "fixed_small" => DdpmVarianceType::FixedSmall,
        "fixed_small_log" => DdpmVarianceType::FixedSmallLog,
        "fixed_large" => DdpmVarianceType::FixedLarge,
        "learned" => DdpmVarianceType::Learned,
        "learned_range" => DdpmVarianceType::LearnedRange,
        other => return Err(format!("unsupported variance_type `{other}`")),
    };
    let schedule = match cfg.get("trained_betas").and_then(Value::as_array) {
        Some(b) => BetaSchedule::Custom { betas: b.iter().filter_map(Value::as_f64).collect() },
        None => BetaSchedule::from_diffusers(name, num("beta_start", 0.0001), num("beta_end", 0.02)).map_err(err)?,
    };
    Ok(SchedulerConfig::new()
        .with_num_train_timesteps(cfg.get("num_train_timesteps").and_then(Value::as_u64).unwrap_or(1000) as usize)
        .with_beta_schedule(schedule)
        .with_prediction_type(prediction)
        .with_clip_sample(flag(cfg, "clip_sample", true))
        .with_clip_sample_range(num("clip_sample_range", 1.0))
        .with_thresholding(flag(cfg, "thresholding", false))
        .with_dynamic_thresholding_ratio(num("dynamic_thresholding_ratio", 0.995))
        .with_sample_max_value(num("sample_max_value", 1.0))
        .with_timestep_spacing(spacing)
        .with_steps_offset(cfg.get("steps_offset").and_then(Value::as_u64).unwrap_or(0) as usize)
        .with_rescale_betas_zero_snr(flag(cfg, "rescale_betas_zero_snr", false))
        .with_variance_type(variance)
        .with_set_alpha_to_one(flag(cfg, "set_alpha_to_one", true)))
}

/// The `j`-th step's timestep, or `None` past the last one.
fn step_timestep(fx: &Fixture, j: usize) -> Result<Option<usize>, String> {
    let key = format!("input.step_timestep.{j}");
    if !fx.has(&key) {
        return Ok(None);
    }
    indices(fx, &key)?.first().copied().map(Some).ok_or_else(|| format!("`{key}` is empty"))
}

fn compare_tables(fx: &Fixture, betas: &[f64], alphas_cumprod: &[f64], timesteps: &[usize]) -> Result<Vec<Outcome>, String> {
    let reference = indices(fx, "output.timesteps")?;
    if reference != timesteps {
        return Err(format!("timesteps differ: got {timesteps:?}, reference {reference:?}"));
    }
    Ok(vec![compare_f64(fx, "output.betas", betas), compare_f64(fx, "output.alphas_cumprod", alphas_cumprod)])
}

fn inference_steps(fx: &Fixture) -> Result<usize, String> {
    fx.config().get("num_inference_steps").and_then(Value::as_u64).map(|v| v as usize).ok_or_else(|| "config lacks num_inference_steps".into())
}

pub fn ddpm_diffusers(fx: &Fixture) -> Outcome {
    let mut s = DdpmScheduler::new(&scheduler_config(fx.config())?).map_err(err)?;
    s.set_timesteps(inference_steps(fx)?).map_err(err)?;
    let mut results = compare_tables(fx, s.betas(), s.alphas_cumprod(), s.timesteps())?;
    let (out, sample) = (fx.float::<4>("input.model_output")?, fx.float::<4>("input.sample")?);
    let mut j = 0;
    while let Some(t) = step_timestep(fx, j)? {
        let key = format!("input.variance_noise.{j}");
        let noise = if fx.has(&key) { Some(fx.float::<4>(&key)?) } else { None };
        let step = s.step(out.clone(), t, sample.clone(), noise).map_err(err)?;
        results.push(fx.compare(&format!("output.prev_sample.{j}"), step.prev_sample));
        j += 1;
    }
    if j == 0 {
        return Err("fixture has no steps".into());
    }
    all(results)
}

pub fn ddim_diffusers(fx: &Fixture) -> Outcome {
    let mut s = DdimScheduler::new(&scheduler_config(fx.config())?).map_err(err)?;
    s.set_timesteps(inference_steps(fx)?).map_err(err)?;
    let mut results = compare_tables(fx, s.betas(), s.alphas_cumprod(), s.timesteps())?;
    let (out, sample) = (fx.float::<4>("input.model_output")?, fx.float::<4>("input.sample")?);
    let eta = fx.config().get("eta").and_then(Value::as_f64).unwrap_or(0.0);
    let options = DdimStepOptions { eta, use_clipped_model_output: flag(fx.config(), "use_clipped_model_output", false) };
    let mut j = 0;
    while let Some(t) = step_timestep(fx, j)? {
        let key = format!("input.variance_noise.{j}");
        let noise = if fx.has(&key) { Some(fx.float::<4>(&key)?) } else { None };
        let step = s.step(out.clone(), t, sample.clone(), options, noise).map_err(err)?;
        results.push(fx.compare(&format!("output.prev_sample.{j}"), step.prev_sample));
        j += 1;
    }
    if j == 0 {
        return Err("fixture has no steps".into());
    }
    all(results)
}

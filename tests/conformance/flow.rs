//! Kind `flow_diffusers`: diffusers' `FlowMatchEulerDiscreteScheduler` (sigmas, timesteps, one
//! Euler step) and the SD3 training utilities (timestep densities from fixed draws, loss
//! weightings, the shift map).

use burn::prelude::*;
use diffusion_transformers::diffusion::{LossWeighting, TimestepDensity, time_shift_tensor};
use diffusion_transformers::sampling::FlowMatchScheduleConfig;

use crate::common::{Fixture, Outcome, all, cfg_f64, cfg_usize, err, to_f64};

/// Applies `density.transform` (the bare formula, unvalidated like the reference) to every
/// element of the fixture tensor `input`.
fn map_draws(fx: &Fixture, input: &str, density: TimestepDensity) -> Result<Tensor<1>, String> {
    let draws = to_f64(fx.raw(input)?);
    let t: Vec<f32> = draws.iter().map(|&x| density.transform(x) as f32).collect();
    let n = t.len();
    Ok(Tensor::from_data(TensorData::new(t, [n]), &fx.device))
}

pub fn diffusers(fx: &Fixture) -> Outcome {
    let cfg = fx.config();
    let shift = cfg_f64(cfg, "shift")?;
    let steps = cfg_usize(cfg, "num_inference_steps")?;
    let schedule = FlowMatchScheduleConfig::new()
        .with_num_train_timesteps(cfg_usize(cfg, "num_train_timesteps")?)
        .with_shift(shift)
        .init(steps)
        .map_err(err)?;
    let d = &fx.device;
    let vec1 = |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), d);
    let mut results = vec![
        fx.compare("output.timesteps", vec1(schedule.timesteps())),
        fx.compare("output.sigmas", vec1(schedule.sigmas())),
    ];

    let index = fx.int::<1>("input.step_index")?.into_data().convert_dtype(burn::tensor::DType::I64);
    let index = index.try_to_vec::<i64>().map_err(|e| format!("{e:?}"))?;
    let index = *index.first().ok_or("empty input.step_index")? as usize;
    let prev = schedule.step(fx.float::<4>("input.model_output")?, index, fx.float::<4>("input.sample")?).map_err(err)?;
    results.push(fx.compare("output.step_prev_sample", prev));

    let logit_normal = TimestepDensity::LogitNormal { location: cfg_f64(cfg, "logit_mean")?, scale: cfg_f64(cfg, "logit_std")? };
    results.push(fx.compare("output.t_logit_normal", map_draws(fx, "input.normal", logit_normal)?));
    let mode = TimestepDensity::Mode { scale: cfg_f64(cfg, "mode_scale")? };
    results.push(fx.compare("output.t_mode", map_draws(fx, "input.uniform", mode)?));
    results.push(fx.compare("output.t_cosmap", map_draws(fx, "input.uniform", TimestepDensity::CosMap)?));

    let sigmas = fx.float::<1>("input.sigmas_for_weighting")?;
    results.push(fx.compare("output.weight_sigma_sqrt", LossWeighting::SigmaSqrt.weights(sigmas.clone())));
    results.push(fx.compare("output.weight_cosmap", LossWeighting::CosMap.weights(sigmas)));

    results.push(fx.compare("output.t_shifted", time_shift_tensor(fx.float::<1>("input.t_unshifted")?, shift).map_err(err)?));
    all(results)
}

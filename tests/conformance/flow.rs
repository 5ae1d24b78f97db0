//! Kind `flow_diffusers`: diffusers' `FlowMatchEulerDiscreteScheduler` (sigmas, timesteps, one
//! Euler step) and the SD3 training utilities (timestep densities from fixed draws, loss
//! weightings, the shift map).

use burn::prelude::*;
use diffusion_transformers::diffusion::{LossWeighting, TimestepDensity, time_shift_tensor};
use diffusion_transformers::diffusion::process::{Process, RectifiedFlowProcess};
use diffusion_transformers::diffusion::timesteps::TimestepSchedule;
use diffusion_transformers::contracts::{Denoiser, RecordedNoise};
use diffusion_transformers::sampling::run::Run;
use diffusion_transformers::sampling::{Euler, Sampler};

use crate::common::{Fixture, Outcome, all, cfg_f64, cfg_usize, err, to_f64};

/// A "model" that returns the fixture's stored output whatever its inputs.
struct Stored(Tensor<4>);

impl Denoiser for Stored {
    type Cond = ();

    fn denoise(&self, _x: Tensor<4>, _t: Tensor<1>, _: &()) -> diffusion_transformers::Result<Tensor<4>> {
        Ok(self.0.clone())
    }
}

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
    let plan = RectifiedFlowProcess::new(cfg_usize(cfg, "num_train_timesteps")?, shift)
        .map_err(err)?
        .plan(steps, &TimestepSchedule::diffusers("FlowMatchEulerDiscreteScheduler").map_err(err)?)
        .map_err(err)?;
    let d = &fx.device;
    let vec1 = |v: Vec<f64>| Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), d);
    let sigmas: Vec<f64> = plan.levels.iter().map(|l| l.sigma).chain(plan.targets.last().map(|l| l.sigma)).collect();
    let mut results = vec![
        fx.compare("output.timesteps", vec1(plan.levels.iter().map(|l| l.timestep).collect())),
        fx.compare("output.sigmas", vec1(sigmas)),
    ];

    let index = fx.int::<1>("input.step_index")?.into_data().convert_dtype(burn::tensor::DType::I64);
    let index = index.try_to_vec::<i64>().map_err(|e| format!("{e:?}"))?;
    let index = *index.first().ok_or("empty input.step_index")? as usize;
    if index >= plan.num_steps() {
        return Err(format!("step index {index} out of range"));
    }
    // Step `index` of the crate's Euler sampler, the model's output replaced by the stored one.
    let sample = fx.float::<4>("input.sample")?;
    let model = Stored(fx.float::<4>("input.model_output")?);
    let mut noise = RecordedNoise::new(Vec::new());
    let mut run = Run::new(&plan, &model, &(), &mut noise, None, sample.dims(), d, plan.num_steps()).map_err(err)?;
    let prev = Euler.step(&mut run, index, sample).map_err(err)?;
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

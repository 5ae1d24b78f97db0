//! Kind `sampler_diffusers`: a whole diffusers scheduler trajectory (any scheduler class and
//! constructor options, read by diffusers' own names) with a tiny diffusers DiT and
//! classifier-free guidance on all channels, the scheduler's step noise replayed.

use burn::prelude::*;
use diffusion_transformers::diffusion::ClipMode;
use diffusion_transformers::diffusion::gaussian::VarianceType;
use diffusion_transformers::diffusion::process::{Coordinates, DiscreteVp, EdmProcess, Plan, Prediction, Process, RectifiedFlowProcess};
use diffusion_transformers::diffusion::schedule::BetaSchedule;
use diffusion_transformers::diffusion::timesteps::{FinalSigma, SigmaSpacing, TimestepSchedule, TimestepSpacing};
use diffusion_transformers::contracts::{GuidedChannels, RecordedNoise};
use diffusion_transformers::sampling::{ClassifierFreeGuidance, Ddim, Ddpm, DpmSolverPp, Euler, EulerAncestral, Heun, Progress, ProgressCallback, Sampler, SamplerKind, SolverType, UniPc, UniPcVariant};
use serde_json::Value;

use crate::common::{Fixture, Outcome, all, cfg_f64, cfg_usize, err, to_f64};

/// Constructor options this arm understands (every other option must be absent).
const KNOWN: [&str; 35] = [
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
    "clip_sample", "clip_sample_range", "thresholding", "dynamic_thresholding_ratio", "sample_max_value",
    "timestep_spacing", "steps_offset", "set_alpha_to_one", "variance_type", "solver_order", "algorithm_type",
    "solver_type", "lower_order_final", "euler_at_final", "use_karras_sigmas", "use_exponential_sigmas",
    "use_flow_sigmas", "flow_shift", "final_sigmas_type", "disable_corrector", "shift", "rescale_betas_zero_snr",
    "lambda_min_clipped", "use_dynamic_shifting", "sigma_min", "sigma_max", "sigma_data", "sigma_schedule", "rho",
];

struct Recorder {
    samples: Vec<Tensor<4>>,
    timesteps: Vec<f64>,
}

impl ProgressCallback for Recorder {
    fn on_step(&mut self, _: &Progress) {}

    fn on_sample(&mut self, p: &Progress, x: &Tensor<4>) {
        self.samples.push(x.clone());
        self.timesteps.push(p.timestep);
    }
}

fn opt<'a>(c: &'a Value, k: &str) -> Option<&'a Value> {
    c.get(k).filter(|v| !v.is_null())
}

fn flag(c: &Value, k: &str, default: bool) -> bool {
    opt(c, k).and_then(Value::as_bool).unwrap_or(default)
}

fn num(c: &Value, k: &str, default: f64) -> f64 {
    opt(c, k).and_then(Value::as_f64).unwrap_or(default)
}

fn string<'a>(c: &'a Value, k: &str, default: &'a str) -> &'a str {
    opt(c, k).and_then(Value::as_str).unwrap_or(default)
}

fn clip(c: &Value, default_clip: bool) -> ClipMode {
    if flag(c, "thresholding", false) {
        ClipMode::DynamicThreshold { ratio: num(c, "dynamic_thresholding_ratio", 0.995), max_value: num(c, "sample_max_value", 1.0) }
    } else if flag(c, "clip_sample", default_clip) {
        ClipMode::Clamp(num(c, "clip_sample_range", 1.0))
    } else {
        ClipMode::Off
    }
}

/// The process, schedule and sampler of a diffusers scheduler.
fn scheduler(class: &str, c: &Value, steps: usize, step_kwargs: &Value) -> Result<(Plan, SamplerKind), String> {
    if let Some(k) = c.as_object().and_then(|o| o.keys().find(|k| !KNOWN.contains(&k.as_str()))) {
        return Err(format!("unsupported scheduler option `{k}`"));
    }
    if flag(c, "rescale_betas_zero_snr", false) || flag(c, "use_dynamic_shifting", false) || num(c, "lambda_min_clipped", f64::NEG_INFINITY).is_finite() {
        return Err("rescale_betas_zero_snr, use_dynamic_shifting and lambda_min_clipped are not supported here".into());
    }
    if let Some(k) = step_kwargs.as_object().and_then(|o| o.keys().find(|k| k.as_str() != "eta")) {
        return Err(format!("unsupported step argument `{k}`"));
    }
    let big = opt(c, "num_train_timesteps").and_then(Value::as_u64).unwrap_or(1000) as usize;
    let mut schedule = TimestepSchedule::diffusers(class).map_err(err)?;
    if let Some(s) = opt(c, "timestep_spacing").and_then(Value::as_str) {
        schedule.timestep_spacing = TimestepSpacing::from_diffusers(s).map_err(err)?;
    }
    schedule.steps_offset = opt(c, "steps_offset").and_then(Value::as_u64).unwrap_or(0) as usize;
    if flag(c, "use_karras_sigmas", false) {
        schedule.sigmas = SigmaSpacing::Karras;
    } else if flag(c, "use_exponential_sigmas", false) {
        schedule.sigmas = SigmaSpacing::Exponential;
        schedule.round_sigma_timesteps = false;
    }
    if class == "DPMSolverMultistepScheduler" && string(c, "beta_schedule", "linear") == "squaredcos_cap_v2" {
        schedule.round_sigma_timesteps = false;
    }
    schedule.final_sigma = match (class, string(c, "final_sigmas_type", "zero")) {
        ("DDIMScheduler", _) => if flag(c, "set_alpha_to_one", true) { FinalSigma::Zero } else { FinalSigma::SigmaMin },
        (_, "zero") => FinalSigma::Zero,
        (_, "sigma_min") => FinalSigma::SigmaMin,
        (_, o) => return Err(format!("unknown final_sigmas_type `{o}`")),
    };
    let order = opt(c, "solver_order").and_then(Value::as_u64).unwrap_or(2) as usize;
    let edm = class.starts_with("EDM");
    if edm {
        schedule.sigmas = match string(c, "sigma_schedule", "karras") {
            "karras" => SigmaSpacing::Karras,
            "exponential" => SigmaSpacing::Exponential,
            o => return Err(format!("unknown sigma_schedule `{o}`")),
        };
    }
    let flow = class.starts_with("FlowMatch") || flag(c, "use_flow_sigmas", false);
    let prediction = Prediction::from_diffusers(string(c, "prediction_type", if flow { "flow_prediction" } else { "epsilon" })).map_err(err)?;
    let default_clip = matches!(class, "DDPMScheduler" | "DDIMScheduler");
    let plan = if edm {
        // diffusers' EDM schedulers: x_0 = c_skip x + c_out F (`epsilon`; `v_prediction` negates
        // c_out), the model seeing c_in x and c_noise = ln(sigma) / 4.
        if string(c, "prediction_type", "epsilon") != "epsilon" {
            return Err("EDM schedulers: only prediction_type `epsilon` (EDM's preconditioned F) is supported".into());
        }
        let (lo, hi) = (num(c, "sigma_min", 0.002), num(c, "sigma_max", 80.0));
        let mut plan = EdmProcess::new(lo, hi, num(c, "rho", 7.0), num(c, "sigma_data", 0.5))
            .map_err(err)?
            .with_clip(clip(c, false))
            .plan(steps, &schedule)
            .map_err(err)?;
        // Their `init_noise_sigma` is sqrt(sigma_max^2 + 1), not EDM's sigma_max.
        plan.init_noise_scale = (hi * hi + 1.0).sqrt();
        plan
    } else if flow {
        let shift = num(c, if class.starts_with("FlowMatch") { "shift" } else { "flow_shift" }, 1.0);
        let process = RectifiedFlowProcess::new(big, shift).map_err(err)?.with_clip(clip(c, default_clip));
        if prediction != Prediction::FlowVelocity {
            return Err("flow sigmas need flow_prediction".into());
        }
        process.plan(steps, &schedule).map_err(err)?
    } else {
        let betas = match opt(c, "trained_betas").and_then(Value::as_array) {
            Some(b) => BetaSchedule::Custom { betas: b.iter().filter_map(Value::as_f64).collect() },
            None => BetaSchedule::from_diffusers(string(c, "beta_schedule", "linear"), num(c, "beta_start", 0.0001), num(c, "beta_end", 0.02))
                .map_err(err)?,
        };
        let coords = if class.starts_with("Euler") { Coordinates::VarianceExploding } else { Coordinates::VariancePreserving };
        let variance = match string(c, "variance_type", "fixed_small") {
            "fixed_small" => VarianceType::FixedSmall,
            "fixed_large" => VarianceType::FixedLarge,
            o => return Err(format!("unsupported variance_type `{o}`")),
        };
        DiscreteVp::diffusers(&betas, big, prediction)
            .map_err(err)?
            .with_coordinates(coords)
            .with_variance(variance)
            .with_clip(clip(c, default_clip))
            .plan(steps, &schedule)
            .map_err(err)?
    };
    let solver_type = string(c, "solver_type", "");
    let sampler = match class {
        "DDPMScheduler" => SamplerKind::Ddpm(Ddpm),
        "DDIMScheduler" => SamplerKind::Ddim(Ddim::new(num(step_kwargs, "eta", 0.0)).map_err(err)?),
        "EulerDiscreteScheduler" | "FlowMatchEulerDiscreteScheduler" | "EDMEulerScheduler" => SamplerKind::Euler(Euler),
        "EulerAncestralDiscreteScheduler" => SamplerKind::EulerAncestral(EulerAncestral),
        "FlowMatchHeunDiscreteScheduler" => SamplerKind::Heun(Heun::new()),
        "DPMSolverMultistepScheduler" | "EDMDPMSolverMultistepScheduler" => {
            let mut s = DpmSolverPp::new(order).map_err(err)?;
            match string(c, "algorithm_type", "dpmsolver++") {
                "dpmsolver++" => {}
                "sde-dpmsolver++" => s = s.sde(),
                o => return Err(format!("unsupported algorithm_type `{o}`")),
            }
            s.solver_type = if solver_type == "heun" { SolverType::Heun } else { SolverType::Midpoint };
            s.lower_order_final = flag(c, "lower_order_final", true);
            s.euler_at_final = flag(c, "euler_at_final", false);
            SamplerKind::DpmSolverPp(s)
        }
        "UniPCMultistepScheduler" => {
            let mut s = UniPc::new(order).map_err(err)?;
            s.variant = if solver_type == "bh1" { UniPcVariant::Bh1 } else { UniPcVariant::Bh2 };
            s.lower_order_final = flag(c, "lower_order_final", true);
            s.disable_corrector = opt(c, "disable_corrector")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_u64).map(|k| k as usize).collect())
                .unwrap_or_default();
            SamplerKind::UniPc(s)
        }
        o => return Err(format!("unsupported scheduler class `{o}`")),
    };
    Ok((plan, sampler))
}

pub fn diffusers(fx: &Fixture) -> Outcome {
    let cfg = fx.config();
    let model = crate::dit::diffusers_model(fx, cfg.get("model").ok_or("config lacks `model`")?, &fx.device)?;
    let sched = cfg.get("scheduler").ok_or("config lacks `scheduler`")?;
    let class = sched.get("class").and_then(Value::as_str).ok_or("scheduler lacks `class`")?;
    let empty = Value::Object(Default::default());
    let step_kwargs = cfg.get("step_kwargs").unwrap_or(&empty);
    let steps = cfg_usize(cfg, "num_inference_steps")?;
    let (plan, sampler) = scheduler(class, sched.get("config").unwrap_or(&empty), steps, step_kwargs)?;
    let scale = cfg_f64(cfg, "guidance_scale")?;
    let null = cfg_usize(cfg, "null_class")?;
    let guided = ClassifierFreeGuidance::new(&model, null, if scale > 1.0 { scale } else { 1.0 })
        .map_err(err)?
        .with_channels(GuidedChannels::All);
    let labels = Some(fx.int::<1>("input.class_labels")?);
    let draws = if fx.has("input.step_noise") {
        let all = fx.float::<5>("input.step_noise")?;
        let n = all.dims()[0];
        (0..n).map(|i| all.clone().narrow(0, i, 1).squeeze_dim::<4>(0)).collect()
    } else {
        Vec::new()
    };
    let mut noise = RecordedNoise::new(draws);
    let mut rec = Recorder { samples: Vec::new(), timesteps: Vec::new() };
    let out = sampler
        .sample_from(&plan, &guided, &labels, fx.float("input.noise")?, &mut noise, Some(&mut rec))
        .map_err(err)?;
    let reference_t = to_f64(fx.raw("schedule.timesteps")?);
    if reference_t.len() != rec.timesteps.len() || reference_t.iter().zip(&rec.timesteps).any(|(a, b)| (a - b).abs() > 1e-3 * a.abs().max(1.0)) {
        return Err(format!("model timesteps {:?} differ from the scheduler's {reference_t:?}", rec.timesteps));
    }
    let steps = Tensor::stack::<5>(rec.samples, 0);
    all([fx.compare("intermediate.x", steps), fx.compare("output.sample", out)])
}

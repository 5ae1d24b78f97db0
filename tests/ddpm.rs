//! Property tests of the Gaussian-diffusion samplers with analytic denoisers: an oracle that
//! knows `x_0` must be recovered exactly, and the exact posterior-mean denoiser of a Gaussian
//! data distribution must give samples with that distribution's moments. Inputs come from
//! local seeded RNGs only.

use burn::prelude::*;
use burn::tensor::DType;
use diffusion_transformers::diffusion::gaussian::{
    ClipMode, GaussianDiffusion, GaussianDiffusionConfig, LossType, PredictionType, VarianceType,
};
use diffusion_transformers::diffusion::process::{Plan, Process};
use diffusion_transformers::diffusion::schedule::{BetaSchedule, NoiseSchedule};
use diffusion_transformers::diffusion::timesteps::TimestepSchedule;
use diffusion_transformers::layers::init::Randomize;
use diffusion_transformers::models::DiTConfig;
use diffusion_transformers::contracts::randn;
use diffusion_transformers::contracts::{Denoiser, GuidedChannels};
use diffusion_transformers::sampling::{ClassifierFreeGuidance, Ddim, Ddpm, DpmSolverPp, Progress, Sampler};
use diffusion_transformers::{Error, Result};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn values<const D: usize>(x: Tensor<D>) -> Vec<f64> {
    x.into_data().convert_dtype(DType::F64).try_into_vec::<f64>().unwrap()
}

fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f64 {
    values(a).iter().zip(values(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Per-batch coefficients `f(abar_t)` `[B, 1, 1, 1]` for the model timesteps `t`.
fn coef(t: &Tensor<1>, ac: &[f64], f: impl Fn(f64) -> f64) -> Tensor<4> {
    let ts = values(t.clone());
    let v: Vec<f32> = ts.iter().map(|&ti| f(ac[ti.round() as usize]) as f32).collect();
    Tensor::from_data(TensorData::new(v, [ts.len(), 1, 1, 1]), &t.device())
}

/// Expresses an `x_0` estimate as the diffusion's prediction type at `x_t`.
fn as_prediction(p: PredictionType, x: Tensor<4>, t: &Tensor<1>, ac: &[f64], x0: Tensor<4>) -> Tensor<4> {
    let eps = (x - coef(t, ac, f64::sqrt) * x0.clone()) / coef(t, ac, |a| (1.0 - a).sqrt());
    match p {
        PredictionType::Epsilon => eps,
        PredictionType::Sample => x0,
        PredictionType::VPrediction => coef(t, ac, f64::sqrt) * eps - coef(t, ac, |a| (1.0 - a).sqrt()) * x0,
    }
}

/// A denoiser that knows the clean sample `x_0`.
struct Oracle {
    x0: Tensor<4>,
    ac: Vec<f64>,
    prediction: PredictionType,
}

impl Denoiser for Oracle {
    type Cond = ();
    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, _: &()) -> Result<Tensor<4>> {
        Ok(as_prediction(self.prediction, x, &t, &self.ac, self.x0.clone()))
    }
}

/// The exact denoiser of data `x_0 ~ N(mu, s^2 I)`:
/// `E[x_0 | x_t] = mu + a s^2 / (a^2 s^2 + 1 - a^2) (x_t - a mu)`, `a = sqrt(abar_t)`.
struct GaussianData {
    mu: f64,
    s: f64,
    ac: Vec<f64>,
}

impl Denoiser for GaussianData {
    type Cond = ();
    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, _: &()) -> Result<Tensor<4>> {
        let (mu, s2) = (self.mu, self.s * self.s);
        let gain = coef(&t, &self.ac, |ab| ab.sqrt() * s2 / (ab * s2 + 1.0 - ab));
        let x0 = (x.clone() - coef(&t, &self.ac, f64::sqrt) * mu) * gain + mu;
        Ok(as_prediction(PredictionType::Epsilon, x, &t, &self.ac, x0))
    }
}

fn original_alphas_cumprod(schedule: &BetaSchedule) -> Vec<f64> {
    NoiseSchedule::from_betas(schedule.betas(1000).unwrap()).unwrap().alphas_cumprod().to_vec()
}

fn diffusion(respacing: &str, schedule: BetaSchedule, prediction: PredictionType, variance: VarianceType) -> GaussianDiffusion {
    GaussianDiffusionConfig::new()
        .with_noise_schedule(schedule)
        .with_timestep_respacing(respacing.into())
        .with_prediction_type(prediction)
        .with_variance_type(variance)
        .init()
        .unwrap()
}

/// One sampling run from a seeded RNG.
/// The diffusion's own timesteps as a sampling plan.
/// DPM-Solver++(2M) first order over the last two steps at every step count.
fn dpm() -> DpmSolverPp {
    DpmSolverPp { first_order_final: 2, ..DpmSolverPp::new(2).unwrap() }
}

fn plan(d: &GaussianDiffusion) -> Plan {
    d.plan(d.num_timesteps(), &TimestepSchedule::new()).unwrap()
}

type SamplerRun<'a> = Box<dyn Fn(&mut StdRng) -> Tensor<4> + 'a>;

#[test]
fn samplers_driven_by_an_oracle_return_x0() {
    let device = Device::flex();
    let x0 = randn([2, 3, 4, 4], &mut StdRng::seed_from_u64(1), &device).clamp(-1.0, 1.0);
    for schedule in [BetaSchedule::Linear, BetaSchedule::SquaredCosCapV2] {
        for prediction in [PredictionType::Epsilon, PredictionType::Sample, PredictionType::VPrediction] {
            let oracle = Oracle { x0: x0.clone(), ac: original_alphas_cumprod(&schedule), prediction };
            let d = diffusion("25", schedule.clone(), prediction, VarianceType::FixedSmall);
            let samplers: [(&str, SamplerRun); 4] = [
                ("ddpm", Box::new(|rng| Ddpm.sample(&plan(&d), &oracle, &(), [2, 3, 4, 4], &device, rng, None).unwrap())),
                ("ddim0", Box::new(|rng| Ddim::new(0.0).unwrap().sample(&plan(&d), &oracle, &(), [2, 3, 4, 4], &device, rng, None).unwrap())),
                ("ddim1", Box::new(|rng| Ddim::new(1.0).unwrap().sample(&plan(&d), &oracle, &(), [2, 3, 4, 4], &device, rng, None).unwrap())),
                ("dpm++2m", Box::new(|rng| dpm().sample(&plan(&d), &oracle, &(), [2, 3, 4, 4], &device, rng, None).unwrap())),
            ];
            for (name, run) in samplers {
                let err = max_abs_diff(run(&mut StdRng::seed_from_u64(7)), x0.clone());
                assert!(err < 1e-3, "{name} {schedule:?} {prediction:?}: {err}");
            }
        }
    }
}

/// Mean and variance of the samples of a sampler on `N(0.5, 0.25)` data.
fn moments(sampler: &impl Sampler, respacing: &str, schedule: BetaSchedule) -> (f64, f64) {
    let model = GaussianData { mu: 0.5, s: 0.5, ac: original_alphas_cumprod(&schedule) };
    let d = diffusion(respacing, schedule, PredictionType::Epsilon, VarianceType::FixedSmall);
    let x = sampler.sample(&plan(&d), &model, &(), [512, 1, 4, 4], &Device::flex(), &mut StdRng::seed_from_u64(3), None);
    let v = values(x.unwrap());
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (mean, v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n)
}

#[test]
fn samplers_reproduce_a_gaussian_data_distribution() {
    let ddim0 = Ddim::new(0.0).unwrap();
    let cases = [
        ("ddpm", moments(&Ddpm, "", BetaSchedule::Linear)),
        ("ddim eta 0", moments(&ddim0, "ddim250", BetaSchedule::Linear)),
        ("ddim eta 1", moments(&Ddim::new(1.0).unwrap(), "", BetaSchedule::Linear)),
        ("dpm-solver++(2m) 25 steps", moments(&dpm(), "25", BetaSchedule::SquaredCosCapV2)),
        ("dpm-solver++(2m) 50 steps", moments(&dpm(), "50", BetaSchedule::Linear)),
    ];
    for (name, (mean, var)) in cases {
        assert!((mean - 0.5).abs() < 0.03, "{name}: mean {mean}");
        assert!((var / 0.25 - 1.0).abs() < 0.05, "{name}: variance {var}");
    }
    // The second-order solver is closer than first-order DDIM at the same 25 steps.
    let dpm = moments(&dpm(), "25", BetaSchedule::SquaredCosCapV2).1;
    let ddim = moments(&ddim0, "25", BetaSchedule::SquaredCosCapV2).1;
    assert!((dpm - 0.25).abs() < 0.5 * (ddim - 0.25).abs(), "dpm {dpm} vs ddim {ddim}");
}

#[test]
fn seeded_sampling_is_reproducible_and_reports_progress() {
    let device = Device::flex();
    let model = GaussianData { mu: 0.0, s: 1.0, ac: original_alphas_cumprod(&BetaSchedule::Linear) };
    let d = diffusion("ddim10", BetaSchedule::Linear, PredictionType::Epsilon, VarianceType::FixedLarge);
    let run = |seed: u64, eta: f64| {
        let mut steps: Vec<Progress> = Vec::new();
        let mut cb = |p: &Progress| steps.push(*p);
        let sampler = Ddim::new(eta).unwrap();
        let x = sampler.sample(&plan(&d), &model, &(), [2, 2, 4, 4], &device, &mut StdRng::seed_from_u64(seed), Some(&mut cb)).unwrap();
        (values(x), steps)
    };
    let (a, steps) = run(11, 0.0);
    assert_eq!(a, run(11, 0.0).0, "DDIM eta = 0 with the same seed must be identical");
    assert_ne!(a, run(12, 0.0).0);
    assert_eq!(run(5, 1.0).0, run(5, 1.0).0);
    assert_eq!(steps.len(), 10);
    assert!(steps.iter().enumerate().all(|(k, p)| p.step == k + 1 && p.total_steps == 10));
    let ts: Vec<f64> = steps.iter().map(|p| p.timestep).collect();
    assert_eq!(ts, vec![900.0, 800.0, 700.0, 600.0, 500.0, 400.0, 300.0, 200.0, 100.0, 0.0]);
    let ddpm = |seed| values(Ddpm.sample(&plan(&d), &model, &(), [1, 2, 4, 4], &device, &mut StdRng::seed_from_u64(seed), None).unwrap());
    assert_eq!(ddpm(4), ddpm(4));
}

#[test]
fn guided_dit_matches_official_forward_with_cfg_and_trains() {
    let device = Device::flex();
    let dit = DiTConfig::new()
        .with_input_size(8)
        .with_hidden_size(32)
        .with_depth(1)
        .with_num_heads(2)
        .with_num_classes(5)
        .init(&device)
        .unwrap()
        .map(&mut Randomize::seeded(9)); // a fresh DiT outputs zeros (zero-initialised gates)
    let x = randn([2, 4, 8, 8], &mut StdRng::seed_from_u64(0), &device);
    let t = Tensor::<1>::from_floats([10.0, 700.0], &device);
    let y = Tensor::<1, Int>::from_ints([1, 3], &device);
    let official = dit
        .forward_with_cfg(
            Tensor::cat(vec![x.clone(), x.clone()], 0),
            Tensor::cat(vec![t.clone(), t.clone()], 0),
            Tensor::cat(vec![y.clone(), Tensor::full([2], 5, &device)], 0),
            4.0,
            3,
        )
        .unwrap()
        .narrow(0, 0, 2);
    let guided = ClassifierFreeGuidance::new(&dit, 5, 4.0).unwrap().with_channels(GuidedChannels::First(3));
    let ours = guided.denoise(x.clone(), t.clone(), &Some(y.clone())).unwrap();
    let cond = dit.forward(x.clone(), t.clone(), Some(y.clone())).unwrap();
    let uncond = dit.forward(x.clone(), t, Some(Tensor::full([2], 5, &device))).unwrap();
    assert!(max_abs_diff(cond.clone(), uncond) > 1e-3, "guidance must have something to act on");
    assert!(max_abs_diff(ours.clone(), cond) > 1e-3, "scale 4 must move the output away from the conditional one");
    assert!(max_abs_diff(ours, official) < 1e-5);

    // The hybrid loss of a real model: per-sample loss = mse + vb.
    let d = GaussianDiffusionConfig::new().with_loss_type(LossType::RescaledMse).init().unwrap();
    let noise = randn([2, 4, 8, 8], &mut StdRng::seed_from_u64(1), &device);
    let tt = d.sample_timesteps(2, &mut StdRng::seed_from_u64(2));
    let l = d.training_losses(&dit, x.clone(), &tt, &Some(y.clone()), noise.clone()).unwrap();
    let (loss, mse, vb) = (values(l.loss), values(l.mse.unwrap()), values(l.vb.unwrap()));
    assert_eq!(loss.len(), 2);
    assert!(loss.iter().zip(mse.iter().zip(&vb)).all(|(l, (m, v))| (l - m - v).abs() < 1e-5 && l.is_finite()));
    // A model whose output is not [B, 2C, ...] is rejected with an error.
    let fixed = GaussianDiffusionConfig::new().with_variance_type(VarianceType::FixedSmall).init().unwrap();
    assert!(matches!(fixed.training_losses(&dit, x, &tt, &Some(y), noise), Err(Error::Shape { .. })));
    // Sampling clips when asked.
    let small = diffusion("ddim2", BetaSchedule::Linear, PredictionType::Epsilon, VarianceType::LearnedRange);
    let out = Ddim::new(0.0).unwrap().sample(&plan(&small).with_clip(ClipMode::Clamp(1.0)), &guided, &Some(Tensor::from_ints([0], &device)), [1, 4, 8, 8], &device, &mut StdRng::seed_from_u64(0), None);
    assert!(values(out.unwrap()).iter().all(|v| v.abs() <= 1.0 + 1e-6));
}

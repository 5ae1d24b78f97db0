//! Statistical tests of the rectified-flow timestep densities: 100k seeded draws of each
//! density pass a one-sample Kolmogorov-Smirnov test against its analytic distribution
//! function at significance 0.001, and the test rejects a wrong distribution.

use burn::prelude::*;
use diffusion_transformers::diffusion::{MODE_SCALE_MAX, TimestepDensity, TimestepSamplerConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;

const N: usize = 100_000;
/// Significance level of every test.
const ALPHA: f64 = 1e-3;

/// Kolmogorov-Smirnov statistic `sup |F_n - F|` of `samples` against `cdf`.
fn ks_statistic(mut samples: Vec<f64>, cdf: impl Fn(f64) -> f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len() as f64;
    samples
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = cdf(x);
            (f - i as f64 / n).max((i + 1) as f64 / n - f)
        })
        .fold(0.0, f64::max)
}

/// Asymptotic critical value of the one-sample KS statistic: `sqrt(-ln(alpha / 2) / 2) / sqrt(n)`.
fn ks_critical(n: usize) -> f64 {
    (-(ALPHA / 2.0).ln() / 2.0).sqrt() / (n as f64).sqrt()
}

fn check(density: TimestepDensity, seed: u64) {
    let samples = density.sample(N, &mut StdRng::seed_from_u64(seed)).unwrap();
    let d = ks_statistic(samples, |t| density.cdf(t).unwrap());
    let crit = ks_critical(N);
    println!("{density:?}: D = {d:.5} (critical {crit:.5})");
    assert!(d < crit, "{density:?}: KS statistic {d:.5} >= critical {crit:.5}");
}

#[test]
fn uniform_passes_ks() {
    check(TimestepDensity::Uniform, 1);
}

#[test]
fn logit_normal_passes_ks() {
    check(TimestepDensity::logit_normal(0.0, 1.0).unwrap(), 2);
    check(TimestepDensity::logit_normal(-0.5, 1.6).unwrap(), 3);
}

#[test]
fn mode_passes_ks_over_its_valid_range() {
    for (i, s) in [1.29, -0.5, MODE_SCALE_MAX, -1.0].into_iter().enumerate() {
        check(TimestepDensity::mode(s).unwrap(), 10 + i as u64);
    }
}

#[test]
fn mode_with_zero_scale_is_uniform() {
    let samples = TimestepDensity::mode(0.0).unwrap().sample(N, &mut StdRng::seed_from_u64(4)).unwrap();
    let d = ks_statistic(samples, |t| t);
    assert!(d < ks_critical(N), "KS statistic {d}");
}

#[test]
fn cosmap_passes_ks() {
    check(TimestepDensity::CosMap, 5);
}

#[test]
fn mode_matches_its_closed_form_quantile() {
    // T = f(U) with f decreasing, so the p-quantile is f(1 - p): compare the empirical
    // quantiles with it.
    let density = TimestepDensity::mode(1.29).unwrap();
    let mut samples = density.sample(N, &mut StdRng::seed_from_u64(6)).unwrap();
    samples.sort_by(f64::total_cmp);
    for p in [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99] {
        let empirical = samples[(p * N as f64) as usize];
        let exact = density.transform(1.0 - p);
        // Quantile standard error sqrt(p (1 - p) / n) / pdf, with a generous factor.
        let se = (p * (1.0 - p) / N as f64).sqrt() / density.pdf(exact).unwrap();
        assert!((empirical - exact).abs() < 5.0 * se, "p = {p}: {empirical} vs {exact}");
    }
}

#[test]
fn shifted_sampler_passes_ks_also_as_f32_tensor() {
    let sampler = TimestepSamplerConfig::new().with_shift(3.0).init().unwrap();
    let t = sampler.sample_tensor(N, &mut StdRng::seed_from_u64(7), &Device::flex());
    let samples: Vec<f64> = t.into_data().try_to_vec::<f32>().unwrap().into_iter().map(f64::from).collect();
    let d = ks_statistic(samples, |t| sampler.cdf(t));
    assert!(d < ks_critical(N), "KS statistic {d}");
}

#[test]
fn ks_rejects_a_wrong_distribution() {
    let samples = TimestepDensity::logit_normal(0.0, 1.0).unwrap().sample(N, &mut StdRng::seed_from_u64(8)).unwrap();
    assert!(ks_statistic(samples.clone(), |t| t) > ks_critical(N));
    let cosmap = TimestepDensity::CosMap;
    assert!(ks_statistic(samples, |t| cosmap.cdf(t).unwrap()) > ks_critical(N));
}

//! Row loops of the LayerNorm fast path ([`super::layer_norm`]): forward and backward over
//! contiguous rows of width `d`, written so that LLVM vectorises them (16 independent
//! accumulators per reduction) and compiled for AVX-512, AVX2+FMA and the baseline.
//!
//! ```text
//! mu = mean(x),  r = 1 / sqrt(mean((x - mu)^2) + eps),  xh = (x - mu) r,  y = xh gamma + beta
//! g = dy gamma,  dx = r (g - mean(g) - xh mean(g xh)),  dgamma += dy xh,  dbeta += dy
//! ```

use crate::cpu::simd::multiversion;

const LANES: usize = 16;

/// `sum(f(i))` over `0..n` with `LANES` partial sums (vectorisable, fixed summation order).
#[inline(always)]
pub(crate) fn lane_sum(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let full = n - n % LANES;
    for base in (0..full).step_by(LANES) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(base + l);
        }
    }
    for i in full..n {
        acc[i - full] += f(i);
    }
    acc.iter().sum()
}

/// Mean and inverse standard deviation of one row (two passes, biased variance).
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let d = x.len();
    let mean = lane_sum(d, |i| x[i]) / d as f32;
    let var = lane_sum(d, |i| {
        let c = x[i] - mean;
        c * c
    }) / d as f32;
    (mean, 1.0 / (var + eps).sqrt())
}

#[inline(always)]
fn forward_loop(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let d = gamma.len();
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let (mean, rstd) = row_stats(xr, eps);
        for (((o, &v), &g), &b) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
            *o = (v - mean) * rstd * g + b;
        }
    }
}

/// `dy` is overwritten by `dx`; `dgamma`, `dbeta` accumulate.
#[inline(always)]
fn backward_loop(x: &[f32], dy: &mut [f32], gamma: &[f32], dgamma: &mut [f32], dbeta: &mut [f32], eps: f32) {
    let d = gamma.len();
    let inv_d = 1.0 / d as f32;
    for (xr, gr) in x.chunks_exact(d).zip(dy.chunks_exact_mut(d)) {
        let (mean, rstd) = row_stats(xr, eps);
        let sum_g = lane_sum(d, |i| gr[i] * gamma[i]);
        let sum_gx = lane_sum(d, |i| gr[i] * gamma[i] * ((xr[i] - mean) * rstd));
        let (a, b) = (sum_g * inv_d, sum_gx * inv_d);
        for i in 0..d {
            let xh = (xr[i] - mean) * rstd;
            let dyi = gr[i];
            dgamma[i] += dyi * xh;
            dbeta[i] += dyi;
            gr[i] = rstd * (dyi * gamma[i] - a - xh * b);
        }
    }
}

multiversion!(
    /// LayerNorm of every `gamma.len()`-wide row of `x` into `y`.
    forward(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) => forward_loop
);

multiversion!(
    /// LayerNorm backward over the rows of `x`: `dy` becomes `dx`; the rows' `dy xh` and `dy`
    /// are added to `dgamma` and `dbeta`.
    backward(x: &[f32], dy: &mut [f32], gamma: &[f32], dgamma: &mut [f32], dbeta: &mut [f32], eps: f32) => backward_loop
);

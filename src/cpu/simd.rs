//! Branch-free `f32` loops for the CPU fast path: a vectorisable `exp`, the two GELUs, the SwiGLU gate,
//! compiled for AVX-512, AVX2+FMA and the baseline and picked at run time.
//!
//! The loops are written so that LLVM vectorises them (selects instead of branches, no
//! float-to-int conversions); `#[target_feature]` wrappers give them the wide registers.

/// `exp(x)` to within 2 ulp (Cephes `expf`: `2^n * p(r)`, `r = x - n ln 2`), NaN propagating,
/// saturating to `0` below -87.3 and `+inf` above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting rounds to nearest
    let xc = if x < -87.336_54 { -87.336_54 } else if x > 88.722_84 { 88.722_84 } else { x };
    // `t` holds `n = round(x log2 e)` in its low mantissa bits: read it back without a
    // float-to-int conversion (which LLVM would not vectorise).
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    // 2^n split as 2^(n/2) * 2^(n - n/2) so that n = 128 does not overflow the exponent field.
    let h = ni >> 1;
    let scale_a = f32::from_bits(((h + 127) as u32) << 23);
    let scale_b = f32::from_bits(((ni - h + 127) as u32) << 23);
    let y = e * scale_a * scale_b;
    let y = if x < -87.336_54 { 0.0 } else { y };
    let y = if x > 88.722_84 { f32::INFINITY } else { y };
    if x.is_nan() { x } else { y }
}

/// tanh-GELU `0.5 x (1 + tanh(u))`, `u = sqrt(2/pi)(x + 0.044715 x^3)`, as `x / (1 + exp(-2u))`.
#[inline(always)]
fn gelu_tanh_one(x: f32) -> f32 {
    const K2: f32 = 2.0 * 0.797_884_56;
    let u2 = (x * x * 0.044715 + 1.0) * x * K2;
    x / (1.0 + exp(-u2))
}

#[inline(always)]
fn gelu_tanh_loop(xs: &mut [f32]) {
    for x in xs {
        *x = gelu_tanh_one(*x);
    }
}

/// `g * d/dx gelu_tanh(x) = g (s + x s (1 - s) du2/dx)`, `s = sigmoid(2u)`.
#[inline(always)]
fn gelu_tanh_grad_one(x: f32, g: f32) -> f32 {
    const K2: f32 = 2.0 * 0.797_884_56;
    const A: f32 = 0.044715;
    let x2 = x * x;
    let u2 = (x2 * A + 1.0) * x * K2;
    let s = 1.0 / (1.0 + exp(-u2));
    let du2 = (x2 * (3.0 * A) + 1.0) * K2;
    g * (s + x * s * (1.0 - s) * du2)
}

#[inline(always)]
fn gelu_tanh_grad_loop(grads: &mut [f32], xs: &[f32]) {
    for (g, &x) in grads.iter_mut().zip(xs) {
        *g = gelu_tanh_grad_one(x, *g);
    }
}

/// Exact GELU `x Phi(x)` from `erfc` (Numerical Recipes' Chebyshev fit, relative error below
/// 1.2e-7 everywhere): `Phi(x) = 1 - erfc(x / sqrt 2) / 2` for `x >= 0` and `erfc(|x| / sqrt 2) / 2`
/// below, so the negative tail keeps its relative accuracy. Returns `(gelu(x), Phi(x))`.
#[inline(always)]
fn gelu_erf_parts(x: f32) -> (f32, f32) {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0.170_872_77f32;
    p = p * t - 0.822_152_23;
    p = p * t + 1.488_515_87;
    p = p * t - 1.135_203_98;
    p = p * t + 0.278_868_07;
    p = p * t - 0.186_288_06;
    p = p * t + 0.096_784_18;
    p = p * t + 0.374_091_96;
    p = p * t + 1.000_023_68;
    p = p * t - 1.265_512_23;
    let half_erfc = 0.5 * t * exp(p - z * z);
    let phi = if x >= 0.0 { 1.0 - half_erfc } else { half_erfc };
    (x * phi, phi)
}

#[inline(always)]
fn gelu_erf_loop(xs: &mut [f32]) {
    for x in xs {
        *x = gelu_erf_parts(*x).0;
    }
}

/// `g * d/dx (x Phi(x)) = g (Phi(x) + x phi(x))`, `phi` the standard normal density.
#[inline(always)]
fn gelu_erf_grad_loop(grads: &mut [f32], xs: &[f32]) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    for (g, &x) in grads.iter_mut().zip(xs) {
        let (_, phi_cdf) = gelu_erf_parts(x);
        *g *= phi_cdf + x * INV_SQRT_2PI * exp(-0.5 * x * x);
    }
}

/// Lanes of the partial maxima and sums of the row reductions: LLVM keeps them in vector
/// registers (one AVX-512 register, two AVX2 ones) where a single accumulator would serialise.
const LANES: usize = 16;

/// Row softmax numerators of attention scores: each `row_len`-long row `s` of `scores` becomes
/// `exp(scale s - m)`, `m = max(scale s)`, and `lse[i]` / `inv_sum[i]` receive the row's
/// `m + ln(sum)` and `1 / sum`.
#[inline(always)]
fn softmax_rows_loop(scores: &mut [f32], row_len: usize, scale: f32, lse: &mut [f32], inv_sum: &mut [f32]) {
    for ((row, lse), inv_sum) in scores.chunks_exact_mut(row_len).zip(lse).zip(inv_sum) {
        let mut acc = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a = if v > *a { v } else { *a };
            }
        }
        let mut max = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        max = acc.iter().fold(max, |m, &v| if v > m { v } else { m });
        let shift = max * scale; // = max(scale s) for scale > 0
        let mut acc = [0.0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (a, v) in acc.iter_mut().zip(c) {
                *v = exp(*v * scale - shift);
                *a += *v;
            }
        }
        let mut sum = 0.0;
        for v in chunks.into_remainder() {
            *v = exp(*v * scale - shift);
            sum += *v;
        }
        sum += acc.iter().sum::<f32>();
        *lse = shift + sum.ln();
        *inv_sum = 1.0 / sum;
    }
}

/// Row softmax from a saved log-sum-exp: each `row_len`-long row `s` of `scores` becomes
/// `exp(scale s - lse[i])`.
#[inline(always)]
fn softmax_from_lse_loop(scores: &mut [f32], row_len: usize, scale: f32, lse: &[f32]) {
    for (row, &lse) in scores.chunks_exact_mut(row_len).zip(lse) {
        for v in row {
            *v = exp(*v * scale - lse);
        }
    }
}

/// The softmax backward on rows: each `row_len`-long row of `dp` becomes
/// `scale p (dp - d[i])` (`p` the probabilities, `d[i] = sum_j p_ij dp_ij`).
#[inline(always)]
fn softmax_grad_rows_loop(dp: &mut [f32], p: &[f32], row_len: usize, d: &[f32], scale: f32) {
    for ((g, p), &d) in dp.chunks_exact_mut(row_len).zip(p.chunks_exact(row_len)).zip(d) {
        for (g, &p) in g.iter_mut().zip(p) {
            *g = (*g - d) * p * scale;
        }
    }
}

/// `sum_i a[i] b[i]` with [`LANES`] partial sums.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    tail + acc.iter().sum::<f32>()
}

/// The weight gradient of one channel `c` of a depthwise convolution (stride 1): with `x` and
/// `dy` the contiguous `[B, C, H, W]` input and upstream gradient and `dims = [B, C, H, W, kh,
/// kw, ph, pw, c]`, `dw[i kw + j] = sum_{b, y, x} dy[b, c, y, x] x[b, c, y + i - ph, x + j - pw]`
/// (zero outside the map).
#[inline(always)]
fn depthwise_weight_grad_loop(dw: &mut [f32], x: &[f32], dy: &[f32], dims: [usize; 9]) {
    let [batch, channels, h, w, kh, kw, ph, pw, c] = dims;
    for i in 0..kh {
        for j in 0..kw {
            // output columns whose input column `col + j - pw` lies in `0..w`
            let (c0, c1) = (pw.saturating_sub(j), (w + pw).saturating_sub(j).min(w));
            let mut sum = 0.0;
            for b in 0..batch {
                let plane = (b * channels + c) * h * w;
                for y in 0..h {
                    let Some(yy) = (y + i).checked_sub(ph).filter(|&yy| yy < h) else { continue };
                    if c0 < c1 {
                        let d = &dy[plane + y * w + c0..plane + y * w + c1];
                        let xs = &x[plane + yy * w + c0 + j - pw..plane + yy * w + c1 + j - pw];
                        sum += dot(d, xs);
                    }
                }
            }
            dw[i * kw + j] = sum;
        }
    }
}

/// The weight and bias gradients of a channels-last depthwise convolution (stride 1) over the
/// rows `first..first + rows` of `dy`, accumulated into `dw` `[kh, kw, C]` and `db` `[C]`: with
/// `x`, `dy` the contiguous `[B, H, W, C]` input and upstream gradient and `dims = [H, W, C,
/// kh, kw, ph, pw, first, rows]`, `dw[i, j, c] += sum dy[b, y, x, c] x[b, y + i - ph, x + j - pw, c]`.
#[inline(always)]
fn depthwise_nhwc_weight_grad_loop(dw: &mut [f32], db: &mut [f32], x: &[f32], dy: &[f32], dims: [usize; 9]) {
    let [h, width, c, kh, kw, ph, pw, first, rows] = dims;
    for r in first..first + rows {
        let (b, y) = (r / h, r % h);
        for ox in 0..width {
            let d = &dy[(r * width + ox) * c..(r * width + ox + 1) * c];
            for (g, &d) in db.iter_mut().zip(d) {
                *g += d;
            }
            for i in 0..kh {
                let Some(yy) = (y + i).checked_sub(ph).filter(|&yy| yy < h) else { continue };
                for j in 0..kw {
                    let Some(xx) = (ox + j).checked_sub(pw).filter(|&xx| xx < width) else { continue };
                    let at = ((b * h + yy) * width + xx) * c;
                    let g = &mut dw[(i * kw + j) * c..(i * kw + j + 1) * c];
                    for ((g, &d), &s) in g.iter_mut().zip(d).zip(&x[at..at + c]) {
                        *g += d * s;
                    }
                }
            }
        }
    }
}

/// SwiGLU gate `silu(a) b = a b / (1 + exp(-a))` into `out`.
#[inline(always)]
fn silu_mul_loop(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a * b / (1.0 + exp(-a));
    }
}

/// SwiGLU gate backward: `g` (the upstream gradient) becomes `da = g b silu'(a)`,
/// `silu'(a) = s (1 + a (1 - s))` with `s = sigmoid(a)`, and `db = g silu(a)` is written.
#[inline(always)]
fn silu_mul_grad_loop(g: &mut [f32], db: &mut [f32], a: &[f32], b: &[f32]) {
    for (((g, db), &a), &b) in g.iter_mut().zip(db.iter_mut()).zip(a).zip(b) {
        let s = 1.0 / (1.0 + exp(-a));
        *db = *g * a * s;
        *g = *g * b * (s * (1.0 + a * (1.0 - s)));
    }
}

/// One AdamW update of every element, in place: with `k = [beta_1, 1 - beta_1, beta_2, 1 -
/// beta_2, 1 - beta_1^t, 1 - beta_2^t, eps, lr, 1 - lr wd]`, `m = beta_1 m + (1 - beta_1) g`,
/// `v = beta_2 v + (1 - beta_2) g^2`, `p = p (1 - lr wd) - lr (m / (1 - beta_1^t)) /
/// (sqrt(v / (1 - beta_2^t)) + eps)`, each operation rounded as Burn's composed `AdamW`
/// rounds it (no fused multiply-adds); `decay` false skips the multiplication by `1 - lr wd`.
#[inline(always)]
fn adamw_loop(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: &[f32; 9], decay: bool) {
    let [b1, f1, b2, f2, bc1, bc2, eps, lr, keep] = *k;
    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        *m = *m * b1 + g * f1;
        *v = *v * b2 + (g * g) * f2;
        let delta = (*m / bc1) / ((*v / bc2).sqrt() + eps);
        let kept = if decay { *p * keep } else { *p };
        *p = kept - delta * lr;
    }
}

/// The instruction sets the [`multiversion`] loops may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Isa {
    /// The target's baseline (SSE2 on x86-64).
    Baseline,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512F (with AVX2 and FMA).
    Avx512,
}

/// The best instruction set of this CPU, capped by the environment variable `DT_CPU_ISA`
/// (`avx512`, `avx2` or `baseline`; read once per process), so a machine with AVX-512 can time
/// the code paths of an AVX2-only or older CPU. An unknown value is ignored.
pub(crate) fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let cap = std::env::var("DT_CPU_ISA").ok();
        detect_isa().min(isa_cap(cap.as_deref()))
    })
}

/// The cap a `DT_CPU_ISA` value sets (none for an unset or unknown value).
fn isa_cap(value: Option<&str>) -> Isa {
    match value {
        Some("baseline") => Isa::Baseline,
        Some("avx2") => Isa::Avx2,
        _ => Isa::Avx512,
    }
}

fn detect_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        if avx2 && std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if avx2 {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// Defines `$name` running `$body` compiled for the best instruction set [`isa`] allows.
macro_rules! multiversion {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) => $body:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) { $body($($arg),*) }
                match $crate::cpu::simd::isa() {
                    // SAFETY: `isa` reports only what the CPU supports (runtime detection).
                    $crate::cpu::simd::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::cpu::simd::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::cpu::simd::Isa::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

multiversion!(
    /// One AdamW update of every element, in place (see `adamw_loop`).
    adamw_inplace(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: &[f32; 9], decay: bool) => adamw_loop
);

multiversion!(
    /// tanh-GELU of every element, in place.
    gelu_tanh_inplace(xs: &mut [f32]) => gelu_tanh_loop
);

multiversion!(
    /// The GELU backward: each `grads[i]` becomes `grads[i] * gelu_tanh'(xs[i])`.
    gelu_tanh_grad_inplace(grads: &mut [f32], xs: &[f32]) => gelu_tanh_grad_loop
);

multiversion!(
    /// Exact (erf) GELU of every element, in place.
    gelu_erf_inplace(xs: &mut [f32]) => gelu_erf_loop
);

multiversion!(
    /// The exact GELU backward: each `grads[i]` becomes `grads[i] * gelu'(xs[i])`.
    gelu_erf_grad_inplace(grads: &mut [f32], xs: &[f32]) => gelu_erf_grad_loop
);

multiversion!(
    /// Attention softmax numerators in place, with each row's log-sum-exp and inverse sum (see
    /// `softmax_rows_loop`).
    softmax_rows(scores: &mut [f32], row_len: usize, scale: f32, lse: &mut [f32], inv_sum: &mut [f32]) => softmax_rows_loop
);

multiversion!(
    /// Attention probabilities `exp(scale s - lse[i])` in place.
    softmax_from_lse(scores: &mut [f32], row_len: usize, scale: f32, lse: &[f32]) => softmax_from_lse_loop
);

multiversion!(
    /// The softmax backward `scale p (dp - d[i])` in place of `dp`.
    softmax_grad_rows(dp: &mut [f32], p: &[f32], row_len: usize, d: &[f32], scale: f32) => softmax_grad_rows_loop
);

multiversion!(
    /// The depthwise-convolution weight gradient of one channel (see
    /// `depthwise_weight_grad_loop`).
    depthwise_weight_grad(dw: &mut [f32], x: &[f32], dy: &[f32], dims: [usize; 9]) => depthwise_weight_grad_loop
);

multiversion!(
    /// Weight and bias gradients of a channels-last depthwise convolution over some rows (see
    /// `depthwise_nhwc_weight_grad_loop`).
    depthwise_nhwc_weight_grad(dw: &mut [f32], db: &mut [f32], x: &[f32], dy: &[f32], dims: [usize; 9]) => depthwise_nhwc_weight_grad_loop
);

multiversion!(
    /// The SwiGLU gate `silu(a) b` of every element into `out`.
    silu_mul(out: &mut [f32], a: &[f32], b: &[f32]) => silu_mul_loop
);

multiversion!(
    /// The SwiGLU gate backward: `g` becomes `d/da`, `db` receives `d/db` (see
    /// `silu_mul_grad_loop`).
    silu_mul_grad(g: &mut [f32], db: &mut [f32], a: &[f32], b: &[f32]) => silu_mul_grad_loop
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isa_cap_lowers_the_detected_set_only() {
        assert_eq!(isa_cap(None), Isa::Avx512);
        assert_eq!(isa_cap(Some("avx2")), Isa::Avx2);
        assert_eq!(isa_cap(Some("baseline")), Isa::Baseline);
        assert_eq!(isa_cap(Some("sse9")), Isa::Avx512);
        assert!(isa() <= detect_isa());
    }

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_std() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.0 {
            worst = worst.max(ulps(exp(x), x.exp()));
            x += 0.000_97;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn gelu_tanh_matches_the_tanh_formula() {
        let mut xs: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.005).collect();
        let expected: Vec<f32> = xs
            .iter()
            .map(|&x| {
                let x = x as f64;
                (0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x)).tanh())) as f32
            })
            .collect();
        gelu_tanh_inplace(&mut xs);
        for (got, want) in xs.iter().zip(&expected) {
            assert!((got - want).abs() <= 2e-7 + 2e-6 * want.abs(), "{got} vs {want}");
        }
    }

    #[test]
    fn exact_gelu_matches_the_erf_formula() {
        let mut xs: Vec<f32> = (-3000..3000).map(|i| i as f32 * 0.005).collect();
        let erf = |x: f64| {
            // erf by its Taylor series / continued fraction is overkill here: use 1 - erfc with
            // the complementary series of f64 libm through the identity erf(x) = 2 Phi(x sqrt2) - 1.
            libm_erf(x)
        };
        let expected: Vec<f64> = xs.iter().map(|&x| 0.5 * x as f64 * (1.0 + erf(x as f64 / 2f64.sqrt()))).collect();
        let grads_expected: Vec<f64> = xs
            .iter()
            .map(|&x| {
                let x = x as f64;
                0.5 * (1.0 + erf(x / 2f64.sqrt())) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
            })
            .collect();
        let mut grads = vec![1.0f32; xs.len()];
        gelu_erf_grad_inplace(&mut grads, &xs);
        gelu_erf_inplace(&mut xs);
        for ((got, want), (g, gw)) in xs.iter().zip(&expected).zip(grads.iter().zip(&grads_expected)) {
            assert!((*got as f64 - want).abs() <= 1e-7 + 5e-7 * want.abs(), "{got} vs {want}");
            assert!((*g as f64 - gw).abs() <= 1e-6, "{g} vs {gw}");
        }
    }

    /// erf in f64 to ~1e-15 (Abramowitz-Stegun 7.1.5 series for |x| < 3, continued fraction beyond).
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let v = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            2.0 / std::f64::consts::PI.sqrt() * sum
        } else {
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        v.copysign(x)
    }
}

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

/// Channels-last depthwise convolution (stride 1) of the output rows `first..` that `out`
/// holds (`W C` values per row, `B H` rows): with `x` the contiguous `[B, H, W, C]` input,
/// `w` the kernel `[kh, kw, C]`, `bias` `[C]` (or empty) and `dims = [H, W, C, kh, kw, ph, pw,
/// first]`, `out[b, y, x, c] = bias[c] + sum_{i, j} w[i, j, c] x[b, y + i - ph, x + j - pw, c]`
/// (zero outside the map).
///
/// Register-blocked: a tile of [`DW_PIXELS`] neighbouring output pixels by [`DW_LANES`]
/// channels accumulates in registers over every tap, so each tap costs one weight load and
/// one input load per pixel (no load and store of the output per tap). Pixels whose taps
/// reach over the row's left or right edge accumulate one at a time, [`DW_EDGE_BLOCKS`] tiles
/// of channels at once (still in registers); a last block of fewer channels than a tile takes
/// the checked path. Each output is summed in the same order either way (bias, then the taps row by row).
#[inline(always)]
fn depthwise_nhwc_rows_loop(out: &mut [f32], x: &[f32], w: &[f32], bias: &[f32], dims: [usize; 8]) {
    let [h, width, c, kh, kw, ph, pw, first] = dims;
    for (r, row) in out.chunks_exact_mut(width * c).enumerate() {
        let (b, y) = ((first + r) / h, (first + r) % h);
        // the input rows `(b, y + i - ph)` inside the map, with their tap row `i`
        let rows: Vec<(usize, usize)> =
            (0..kh).filter_map(|i| (y + i).checked_sub(ph).filter(|&yy| yy < h).map(|yy| (i, (b * h + yy) * width))).collect();
        let mut c0 = 0;
        while c0 < c {
            let full = (c - c0) / DW_LANES;
            if full == 0 {
                let tile = DwTile { x, w, bias, c, c0, ox: 0, kw, pw };
                tile.checked(&rows, row, [width, c - c0, width]);
                break;
            }
            // register tiles of DW_LANES channels; edge pixels take DW_EDGE_BLOCKS of them at
            // once where there are that many, for independent accumulators
            let blocks = if full >= DW_EDGE_BLOCKS { DW_EDGE_BLOCKS } else { 1 };
            let mut ox = 0;
            while ox < width {
                if ox >= pw && ox + DW_PIXELS + kw - 1 <= width + pw {
                    for k in 0..blocks {
                        let cb = c0 + k * DW_LANES;
                        let tile = DwTile { x, w, bias, c, c0: cb, ox, kw, pw };
                        for (p, a) in tile.inside(&rows).iter().enumerate() {
                            row[(ox + p) * c + cb..][..DW_LANES].copy_from_slice(a);
                        }
                    }
                    ox += DW_PIXELS;
                } else {
                    let tile = DwTile { x, w, bias, c, c0, ox, kw, pw };
                    let o = &mut row[ox * c + c0..][..blocks * DW_LANES];
                    if blocks == DW_EDGE_BLOCKS {
                        o.copy_from_slice(tile.edge::<DW_EDGE_BLOCKS>(&rows, width).as_flattened());
                    } else {
                        o.copy_from_slice(tile.edge::<1>(&rows, width).as_flattened());
                    }
                    ox += 1;
                }
            }
            c0 += blocks * DW_LANES;
        }
    }
}

/// Channels per register tile of [`depthwise_nhwc_rows_loop`] (one AVX-512 register, two AVX2).
const DW_LANES: usize = 16;
/// Output pixels per register tile of [`depthwise_nhwc_rows_loop`].
const DW_PIXELS: usize = 8;
/// Register tiles of channels that [`depthwise_nhwc_rows_loop`] accumulates at once for one
/// pixel near the row's edges.
const DW_EDGE_BLOCKS: usize = 4;

/// One register tile of [`depthwise_nhwc_rows_loop`]: channels `c0..` of the output pixels
/// `ox..` of one row.
struct DwTile<'a> {
    x: &'a [f32],
    w: &'a [f32],
    bias: &'a [f32],
    c: usize,
    c0: usize,
    ox: usize,
    kw: usize,
    pw: usize,
}

impl DwTile<'_> {
    /// A full tile whose taps all fall inside the row: `rows` are `(i, first element of the
    /// input row / C)`.
    #[inline(always)]
    fn inside(&self, rows: &[(usize, usize)]) -> [[f32; DW_LANES]; DW_PIXELS] {
        let (c, c0, kw) = (self.c, self.c0, self.kw);
        let mut acc = [[0.0f32; DW_LANES]; DW_PIXELS];
        if !self.bias.is_empty() {
            let b: &[f32; DW_LANES] = self.bias[c0..c0 + DW_LANES].try_into().expect("bias lanes");
            acc = [*b; DW_PIXELS];
        }
        // every input the tile reads in one row: pixels ox - pw .. ox - pw + P + kw - 1
        let span = (DW_PIXELS + kw - 2) * c + DW_LANES;
        for &(i, base) in rows {
            let xr = &self.x[(base + self.ox - self.pw) * c + c0..][..span];
            let wr = &self.w[i * kw * c + c0..][..(kw - 1) * c + DW_LANES];
            for j in 0..kw {
                let wt: &[f32; DW_LANES] = wr[j * c..j * c + DW_LANES].try_into().expect("weight lanes");
                for (p, a) in acc.iter_mut().enumerate() {
                    let at = (p + j) * c;
                    // SAFETY: `at + DW_LANES <= (P - 1 + kw - 1) * c + DW_LANES = span = xr.len()`
                    // (p < P, j < kw); one check per row above instead of one per tap here.
                    let xs = unsafe { &*(xr.as_ptr().add(at) as *const [f32; DW_LANES]) };
                    for l in 0..DW_LANES {
                        a[l] += wt[l] * xs[l];
                    }
                }
            }
        }
        acc
    }

    /// The one pixel `ox` near the row's edges, `N` register tiles of channels from `c0`: its
    /// taps outside the row are skipped.
    #[inline(always)]
    fn edge<const N: usize>(&self, rows: &[(usize, usize)], width: usize) -> [[f32; DW_LANES]; N] {
        let (c, c0) = (self.c, self.c0);
        let mut acc = [[0.0f32; DW_LANES]; N];
        if !self.bias.is_empty() {
            acc.as_flattened_mut().copy_from_slice(&self.bias[c0..c0 + N * DW_LANES]);
        }
        for &(i, base) in rows {
            for j in 0..self.kw {
                let Some(xx) = (self.ox + j).checked_sub(self.pw).filter(|&xx| xx < width) else { continue };
                let k = (i * self.kw + j) * c + c0;
                let at = (base + xx) * c + c0;
                let (wt, xs) = (&self.w[k..k + N * DW_LANES], &self.x[at..at + N * DW_LANES]);
                for (b, a) in acc.iter_mut().enumerate() {
                    let wt: &[f32; DW_LANES] = wt[b * DW_LANES..][..DW_LANES].try_into().expect("weight lanes");
                    let xs: &[f32; DW_LANES] = xs[b * DW_LANES..][..DW_LANES].try_into().expect("input lanes");
                    for l in 0..DW_LANES {
                        a[l] += wt[l] * xs[l];
                    }
                }
            }
        }
        acc
    }

    /// Channels `c0..c0 + lanes` (fewer than a register tile) of the `n` pixels from `ox`,
    /// with the row's edges checked, written into `out` (those pixels' full `C` values).
    #[inline(always)]
    fn checked(&self, rows: &[(usize, usize)], out: &mut [f32], [n, lanes, width]: [usize; 3]) {
        let (c, c0) = (self.c, self.c0);
        for p in 0..n {
            let o = &mut out[p * c + c0..p * c + c0 + lanes];
            if self.bias.is_empty() {
                o.fill(0.0);
            } else {
                o.copy_from_slice(&self.bias[c0..c0 + lanes]);
            }
            for &(i, base) in rows {
                for j in 0..self.kw {
                    let Some(xx) = (self.ox + p + j).checked_sub(self.pw).filter(|&xx| xx < width) else { continue };
                    let at = (base + xx) * c + c0;
                    let k = (i * self.kw + j) * c + c0;
                    for ((o, &s), &wt) in o.iter_mut().zip(&self.x[at..at + lanes]).zip(&self.w[k..k + lanes]) {
                        *o += wt * s;
                    }
                }
            }
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

/// Defines `$name` running `$body` compiled for the best instruction set of this CPU.
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
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports the enabled features (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
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
    /// Output rows of a channels-last depthwise convolution (see `depthwise_nhwc_rows_loop`).
    depthwise_nhwc_rows(out: &mut [f32], x: &[f32], w: &[f32], bias: &[f32], dims: [usize; 8]) => depthwise_nhwc_rows_loop
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

//! The channels-last depthwise convolution's forward kernel (stride 1), register-blocked;
//! [`crate::cpu::depthwise_conv2d_nhwc`] runs it (its input gradient too, with the flipped
//! kernel).

use crate::cpu::simd::multiversion;

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

multiversion!(
    /// Output rows of a channels-last depthwise convolution (see `depthwise_nhwc_rows_loop`).
    depthwise_nhwc_rows(out: &mut [f32], x: &[f32], w: &[f32], bias: &[f32], dims: [usize; 8]) => depthwise_nhwc_rows_loop
);

//! Fixed 2-D sin-cos position embeddings (MAE/DiT `get_2d_sincos_pos_embed`).
//!
//! Ordering, as the official code: the first half of the channels encodes the **column**
//! (w) coordinate, the second half the **row** (h) coordinate; within each half the sines come
//! first, then the cosines. Tokens are row-major over the grid. Computed in f64 (as NumPy
//! does) and converted to f32.

use burn::prelude::*;

use crate::error::{Result, ensure_config};

/// 1-D sin-cos embedding of `positions`: `[len(positions), dim]`, `[sin | cos]`, row-major.
/// Frequencies are `1 / 10000^(i / (dim/2))`, `i < dim/2`.
pub fn sincos_1d(dim: usize, positions: &[f64]) -> Vec<f64> {
    let half = dim / 2;
    let omega: Vec<f64> =
        (0..half).map(|i| 1.0 / 10000f64.powf(i as f64 / half as f64)).collect();
    let mut out = Vec::with_capacity(positions.len() * dim);
    for &p in positions {
        out.extend(omega.iter().map(|w| (p * w).sin()));
        out.extend(omega.iter().map(|w| (p * w).cos()));
    }
    out
}

/// 2-D table for arbitrary coordinates along each axis: `[rows.len() * cols.len(), dim]`
/// (row-major, token `i * cols.len() + j` is at `(rows[i], cols[j])`), as a flat vector.
///
/// Errors unless `dim` is a positive multiple of 4.
pub fn sincos_2d_from_coords(dim: usize, rows: &[f64], cols: &[f64]) -> Result<Vec<f32>> {
    ensure_config(dim > 0 && dim % 4 == 0, || {
        format!("2-D sin-cos embedding width must be a positive multiple of 4, got {dim}")
    })?;
    let half = dim / 2;
    let emb_w = sincos_1d(half, cols);
    let emb_h = sincos_1d(half, rows);
    let mut out = Vec::with_capacity(rows.len() * cols.len() * dim);
    for i in 0..rows.len() {
        for j in 0..cols.len() {
            out.extend(emb_w[j * half..(j + 1) * half].iter().map(|v| *v as f32));
            out.extend(emb_h[i * half..(i + 1) * half].iter().map(|v| *v as f32));
        }
    }
    Ok(out)
}

/// The DiT table for a `grid_h x grid_w` grid of integer positions.
///
/// # Shapes
/// - output: `[grid_h * grid_w, dim]`
pub fn sincos_2d(dim: usize, grid: [usize; 2], device: &Device) -> Result<Tensor<2>> {
    let [gh, gw] = grid;
    ensure_config(gh > 0 && gw > 0, || format!("grid must be non-empty, got {grid:?}"))?;
    let rows: Vec<f64> = (0..gh).map(|v| v as f64).collect();
    let cols: Vec<f64> = (0..gw).map(|v| v as f64).collect();
    let data = sincos_2d_from_coords(dim, &rows, &cols)?;
    Ok(Tensor::from_data(TensorData::new(data, [gh * gw, dim]), device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_sin_then_cos_columns_first() {
        let device = Device::flex();
        let t = sincos_2d(8, [2, 3], &device).unwrap();
        assert_eq!(t.dims(), [6, 8]);
        let v = t.into_data().try_to_vec::<f32>().unwrap();
        // token (i=1, j=2) = index 5: first half encodes column 2, second half row 1.
        let tok = &v[5 * 8..6 * 8];
        let (w0, w1): (f64, f64) = (1.0, 1.0 / 100.0); // omega for half=4 -> dim 4: i/2 -> 1, 1/100
        let exp = [
            (2.0 * w0).sin(), (2.0 * w1).sin(), (2.0 * w0).cos(), (2.0 * w1).cos(),
            (1.0 * w0).sin(), (1.0 * w1).sin(), (1.0 * w0).cos(), (1.0 * w1).cos(),
        ];
        for (a, b) in tok.iter().zip(exp) {
            assert!((*a as f64 - b).abs() < 1e-6, "{tok:?}");
        }
    }

    #[test]
    fn rejects_bad_dims() {
        let device = Device::flex();
        assert!(sincos_2d(6, [2, 2], &device).is_err());
        assert!(sincos_2d(8, [0, 2], &device).is_err());
    }
}

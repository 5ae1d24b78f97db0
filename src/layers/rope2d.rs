//! 2-D rotary position embedding (RoPE) over a token grid, as U-DiT computes it
//! (`precompute_freqs_cis_2d` + `apply_rotary_emb` in the official `udit_models.py`).
//!
//! A head of width `Dh` is seen as `Dh / 2` adjacent channel pairs `(2j, 2j + 1)`, each a
//! complex number that is rotated by an angle. Pairs alternate between the two axes: pair `j`
//! rotates by `x * f[j / 2]` when `j` is even and by `y * f[j / 2]` when `j` is odd, with
//! `f[i] = 1 / theta^(4i / Dh)` for `i < Dh / 4`, `x` the column and `y` the row of the
//! token. The dot product of a rotated query and key therefore depends on their relative
//! offset `(dx, dy)` only.

use burn::prelude::*;

use crate::error::{Error, Result, ensure_config};

/// Default RoPE base, as the official code.
pub const ROPE_THETA: f64 = 10000.0;

/// Cosine and sine tables of a 2-D RoPE for one head width and one token grid.
///
/// The official code assumes a square grid (it takes the side as `int(sqrt(N))`); this type
/// takes the real `[rows, cols]`, which is the same thing for square grids and the natural
/// generalisation for rectangular ones (token `n` sits at row `n / cols`, column `n % cols`).
#[derive(Debug, Clone)]
pub struct Rope2d {
    /// `cos` of the rotation angles, `[N, Dh / 2]`.
    pub cos: Tensor<2>,
    /// `sin` of the rotation angles, `[N, Dh / 2]`.
    pub sin: Tensor<2>,
    /// `[rows, cols]` of the token grid.
    pub grid: [usize; 2],
    /// Head width `Dh`.
    pub head_dim: usize,
}

impl Rope2d {
    /// Tables for heads of width `head_dim` over a `[rows, cols]` grid with base `theta`.
    ///
    /// Angles are computed in f32 in the reference's order of operations.
    ///
    /// # Errors
    /// `head_dim` not a positive multiple of 4 (two axes times complex pairs), an empty grid,
    /// or a non-positive `theta`.
    pub fn new(head_dim: usize, grid: [usize; 2], theta: f64, device: &Device) -> Result<Self> {
        ensure_config(head_dim > 0 && head_dim.is_multiple_of(4), || {
            format!("2-D RoPE needs a head width that is a positive multiple of 4, got {head_dim}")
        })?;
        ensure_config(grid[0] > 0 && grid[1] > 0, || format!("2-D RoPE needs a non-empty grid, got {grid:?}"))?;
        ensure_config(theta > 0.0 && theta.is_finite(), || format!("RoPE theta must be positive, got {theta}"))?;
        let n = grid[0] * grid[1];
        let pairs = head_dim / 2;
        let theta = theta as f32;
        let freqs: Vec<f32> = (0..head_dim / 4).map(|i| 1.0 / theta.powf((4 * i) as f32 / head_dim as f32)).collect();
        let mut cos = Vec::with_capacity(n * pairs);
        let mut sin = Vec::with_capacity(n * pairs);
        for token in 0..n {
            let (y, x) = ((token / grid[1]) as f32, (token % grid[1]) as f32);
            for j in 0..pairs {
                let pos = if j % 2 == 0 { x } else { y };
                let angle = pos * freqs[j / 2];
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Self {
            cos: Tensor::from_data(TensorData::new(cos, [n, pairs]), device),
            sin: Tensor::from_data(TensorData::new(sin, [n, pairs]), device),
            grid,
            head_dim,
        })
    }

    /// Number of tokens `N` the tables cover.
    pub fn num_tokens(&self) -> usize {
        self.grid[0] * self.grid[1]
    }

    /// Rotate queries or keys (every head and batch entry alike).
    ///
    /// # Shapes
    /// - `x`: `[B, H, N, Dh]` -> `[B, H, N, Dh]`
    ///
    /// # Errors
    /// `N` or `Dh` differing from the tables'.
    pub fn apply(&self, x: Tensor<4>) -> Result<Tensor<4>> {
        let [_, _, n, dh] = x.dims();
        if n != self.num_tokens() || dh != self.head_dim {
            return Err(Error::Shape {
                name: "x".into(),
                expected: format!("[_, _, {}, {}]", self.num_tokens(), self.head_dim),
                got: format!("{:?}", x.dims()),
            });
        }
        Ok(crate::cpu::rope_rotate(x, &self.cos, &self.sin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    fn data(shape: [usize; 4], seed: u64) -> Vec<f32> {
        let len: usize = shape.iter().product();
        (0..len).map(|i| (((i as u64 * 7919 + seed * 104729) % 1000) as f32 / 500.0) - 1.0).collect()
    }

    #[test]
    fn angles_follow_the_reference_layout() {
        let device = Device::flex();
        // Dh = 8: pairs (x f0, y f0, x f1, y f1), f = [1, 1/100]; grid 3 x 4.
        let rope = Rope2d::new(8, [3, 4], ROPE_THETA, &device).unwrap();
        let cos = rope.cos.into_data().try_to_vec::<f32>().unwrap();
        // token 6 = row 1, column 2
        let row = &cos[6 * 4..7 * 4];
        let expect = [2f32.cos(), 1f32.cos(), 0.02f32.cos(), 0.01f32.cos()];
        for (a, b) in row.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{row:?}");
        }
    }

    #[test]
    fn rotation_keeps_norms_and_depends_on_relative_offset_only() {
        let device = Device::flex();
        let grid = [4, 4];
        let rope = Rope2d::new(8, grid, ROPE_THETA, &device).unwrap();
        // the same q at every token and the same k at every token
        let q1: Vec<f32> = data([1, 1, 1, 8], 1);
        let k1: Vec<f32> = data([1, 1, 1, 8], 2);
        let rep = |v: &Vec<f32>| -> Tensor<4> {
            let all: Vec<f32> = (0..16).flat_map(|_| v.clone()).collect();
            Tensor::from_data(TensorData::new(all, [1, 1, 16, 8]), &device)
        };
        let (q, k) = (rope.apply(rep(&q1)).unwrap(), rope.apply(rep(&k1)).unwrap());
        let norm_before = rep(&q1).square().sum_dim(3);
        let norm_after = q.clone().square().sum_dim(3);
        norm_after.into_data().assert_approx_eq::<f32>(&norm_before.into_data(), Tolerance::absolute(1e-5));
        let scores = q.matmul(k.swap_dims(2, 3)).reshape([16, 16]).into_data().try_to_vec::<f32>().unwrap();
        // token (r, c) = r * 4 + c; offsets (1, 1): (0,0)->(1,1) equals (2,1)->(3,2)
        let s = |a: usize, b: usize| scores[a * 16 + b];
        assert!((s(0, 5) - s(9, 14)).abs() < 1e-5);
        assert!((s(5, 0) - s(14, 9)).abs() < 1e-5);
        // a different offset gives a different score
        assert!((s(0, 5) - s(0, 6)).abs() > 1e-4);
    }

    #[test]
    fn bad_sizes_are_errors() {
        let device = Device::flex();
        assert!(Rope2d::new(6, [2, 2], ROPE_THETA, &device).is_err());
        assert!(Rope2d::new(0, [2, 2], ROPE_THETA, &device).is_err());
        assert!(Rope2d::new(8, [0, 2], ROPE_THETA, &device).is_err());
        let rope = Rope2d::new(8, [2, 2], ROPE_THETA, &device).unwrap();
        assert!(rope.apply(Tensor::zeros([1, 1, 5, 8], &device)).is_err());
        assert!(rope.apply(Tensor::zeros([1, 1, 4, 12], &device)).is_err());
    }
}

//! A procedurally generated, class-conditional image dataset: coloured shapes at random
//! positions, sizes and rotations, made in code from a seed (no download).
//!
//! Each class has its own colour, so colour alone identifies the class. With
//! [`ShapesDataset::with_random_colours`] the shape and the background get random colours
//! instead (same shapes, positions and rotations): a classifier trained on those can only use
//! the silhouette (the quickstart's shape-only judge).

use std::f32::consts::PI;

use burn::prelude::*;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::contracts::TrainRng;

/// The ten classes: a shape and its colour (RGB in [0, 1]).
pub const CLASSES: [(&str, [f32; 3]); 10] = [
    ("red circle", [0.95, 0.15, 0.15]),
    ("green square", [0.15, 0.85, 0.2]),
    ("blue triangle", [0.2, 0.35, 0.95]),
    ("yellow cross", [0.95, 0.9, 0.15]),
    ("magenta ring", [0.9, 0.2, 0.85]),
    ("cyan diamond", [0.15, 0.9, 0.9]),
    ("orange bar", [1.0, 0.55, 0.1]),
    ("white star", [0.95, 0.95, 0.95]),
    ("purple hexagon", [0.55, 0.25, 0.9]),
    ("lime crescent", [0.6, 1.0, 0.3]),
];

/// Whether the point `(x, y)` in shape coordinates (the shape spans about [-1, 1]) is inside
/// the shape of `class`.
fn inside(class: usize, x: f32, y: f32) -> bool {
    let r = (x * x + y * y).sqrt();
    match class {
        0 => r <= 1.0,
        1 => x.abs() <= 0.8 && y.abs() <= 0.8,
        2 => y >= -0.7 && y <= 0.9 && x.abs() <= (0.9 - y) * 0.6,
        3 => (x.abs() <= 0.3 && y.abs() <= 1.0) || (y.abs() <= 0.3 && x.abs() <= 1.0),
        4 => (0.55..=1.0).contains(&r),
        5 => x.abs() / 0.55 + y.abs() <= 1.0, // a lozenge (a square would match class 1 rotated)
        6 => x.abs() <= 1.0 && y.abs() <= 0.3,
        7 => {
            let a = y.atan2(x);
            let k = ((a * 5.0 / (2.0 * PI)).rem_euclid(1.0) - 0.5).abs() * 2.0; // 1 at the tips
            r <= 0.45 + 0.55 * k.powi(2)
        }
        8 => {
            let (ax, ay) = (x.abs(), y.abs());
            ay <= 0.85 && ax * 0.866 + ay * 0.5 <= 0.85
        }
        9 => r <= 1.0 && ((x - 0.45).powi(2) + y * y).sqrt() > 0.75,
        _ => false,
    }
}

/// A random `(background, shape)` colour pair at least 0.5 apart.
fn random_colour_pair<R: Rng>(rng: &mut R) -> ([f32; 3], [f32; 3]) {
    loop {
        let a: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..1.0));
        let b: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..1.0));
        if a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f32>() >= 0.25 {
            return (a, b);
        }
    }
}

/// `len` images of `size x size` RGB in `[-1, 1]`; image `i` is a pure function of
/// `(seed, i)`, so any subset can be drawn in any order.
#[derive(Debug, Clone)]
pub struct ShapesDataset {
    /// Seed of the whole dataset.
    pub seed: u64,
    /// Number of images.
    pub len: usize,
    /// Height = width.
    pub size: usize,
    /// Random shape and background colours instead of the class colours
    /// ([`with_random_colours`](Self::with_random_colours)).
    pub random_colours: bool,
}

impl ShapesDataset {
    /// A dataset of `len` images of `size x size` (size at least 8).
    pub fn new(seed: u64, len: usize, size: usize) -> Result<Self> {
        if size < 8 || len == 0 {
            return Err(Error::InvalidConfig(format!("shapes dataset needs size >= 8 and len > 0, got {size}, {len}")));
        }
        Ok(Self { seed, len, size, random_colours: false })
    }

    /// The same images with random colours: the shape and the background of each image get
    /// independent uniform RGB colours at least 0.5 apart (Euclidean, in `[0, 1]^3`), so the
    /// class shows only in the silhouette. Positions, sizes and rotations are unchanged.
    pub fn with_random_colours(mut self, random: bool) -> Self {
        self.random_colours = random;
        self
    }

    /// Number of classes (10).
    pub fn num_classes(&self) -> usize {
        CLASSES.len()
    }

    /// Image `index` as `(pixels [3 * size * size] channel-major in [-1, 1], label)`.
    pub fn get(&self, index: usize) -> (Vec<f32>, usize) {
        let mut rng = TrainRng::seed_from_u64(self.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let class = index % CLASSES.len();
        let s = self.size as f32;
        let radius = rng.random_range(0.22..0.36) * s;
        let cx = rng.random_range(radius * 0.9..s - radius * 0.9);
        let cy = rng.random_range(radius * 0.9..s - radius * 0.9);
        let theta = rng.random_range(0.0..2.0 * PI);
        let (sin, cos) = theta.sin_cos();
        let background = rng.random_range(0.0..0.15f32);
        let (background, color) = if self.random_colours {
            random_colour_pair(&mut rng)
        } else {
            ([background; 3], CLASSES[class].1)
        };
        let n = self.size * self.size;
        let mut out = vec![0f32; 3 * n];
        for py in 0..self.size {
            for px in 0..self.size {
                // 2x2 supersampling for soft edges
                let mut cover = 0.0;
                for (ox, oy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                    let dx = (px as f32 + ox - cx) / radius;
                    let dy = (py as f32 + oy - cy) / radius;
                    let (x, y) = (cos * dx + sin * dy, -sin * dx + cos * dy);
                    if inside(class, x, y) {
                        cover += 0.25;
                    }
                }
                for c in 0..3 {
                    let v = background[c] * (1.0 - cover) + color[c] * cover;
                    out[c * n + py * self.size + px] = v * 2.0 - 1.0;
                }
            }
        }
        (out, class)
    }

    /// A batch of images `[B, 3, size, size]` and labels `[B]`.
    pub fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let mut pixels = Vec::with_capacity(indices.len() * 3 * self.size * self.size);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let (p, l) = self.get(i % self.len);
            pixels.extend(p);
            labels.push(l as i64);
        }
        let b = indices.len();
        (
            Tensor::from_data(TensorData::new(pixels, [b, 3, self.size, self.size]), device),
            Tensor::from_data(TensorData::new(labels, [b]), device),
        )
    }

    /// A random batch drawn with `rng`.
    pub fn sample_batch<R: Rng>(&self, batch: usize, rng: &mut R, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let idx: Vec<usize> = (0..batch).map(|_| rng.random_range(0..self.len)).collect();
        self.batch(&idx, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_balanced_and_in_range() {
        let ds = ShapesDataset::new(3, 100, 32).unwrap();
        let (a, la) = ds.get(17);
        let (b, lb) = ds.get(17);
        assert_eq!(a, b);
        assert_eq!(la, lb);
        assert_ne!(ds.get(27).0, a, "same class, different placement");
        assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
        for class in 0..10 {
            let (img, l) = ds.get(class);
            assert_eq!(l, class);
            // every shape covers a visible area
            let lit = img[..32 * 32].iter().zip(&img[32 * 32..2 * 32 * 32]).zip(&img[2 * 32 * 32..])
                .filter(|((r, g), b)| **r > -0.3 || **g > -0.3 || **b > -0.3)
                .count();
            assert!(lit > 40, "class {class}: {lit} lit pixels");
        }
        assert!(ShapesDataset::new(0, 10, 4).is_err());
    }

    #[test]
    fn random_colours_keep_the_silhouette() {
        let plain = ShapesDataset::new(5, 100, 16).unwrap();
        let random = plain.clone().with_random_colours(true);
        let n = 16 * 16;
        let mut colours = Vec::new();
        for i in 0..20 {
            let ((a, la), (b, lb)) = (plain.get(i), random.get(i));
            assert_eq!(la, lb);
            assert!(b.iter().all(|v| (-1.0..=1.0).contains(v)));
            // The silhouette: which pixels differ from the corner (background) pixel.
            let mask = |img: &[f32]| -> Vec<bool> {
                (0..n).map(|p| (0..3).map(|c| (img[c * n + p] - img[c * n]).abs()).sum::<f32>() > 0.3).collect()
            };
            let (ma, mb) = (mask(&a), mask(&b));
            let agree = ma.iter().zip(&mb).filter(|(x, y)| x == y).count();
            assert!(agree as f32 >= 0.9 * n as f32, "image {i}: masks agree on {agree}/{n} pixels");
            colours.push((b[0], b[n], b[2 * n]));
        }
        // Colours vary across images of the same class (indices 0 and 10).
        assert_ne!(colours[0], colours[10]);
    }
}

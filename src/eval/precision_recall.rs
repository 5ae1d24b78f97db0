//! Improved precision and recall (Kynkaanniemi et al. 2019) as the ADM evaluator computes them
//! (its `ManifoldEstimator`, `k = 3`): each feature set spans a manifold, the union of balls
//! around its points whose radius is the distance to the point's `k`-th nearest neighbour in
//! the same set (the point itself not counted);
//!
//! - precision = fraction of sample features inside the reference manifold,
//! - recall = fraction of reference features inside the sample manifold.
//!
//! Squared Euclidean distances are computed in float32 in blocks on the features' device
//! (`|a|^2 - 2 a.b + |b|^2`, clamped at 0, as ADM); a point on a ball's boundary counts as inside
//! (ADM's `<=`; prdc's `<` differs only on exact ties).

use burn::prelude::*;

use crate::error::{Error, Result};

/// Settings of [`precision_recall`]; the defaults are the ADM evaluator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifoldConfig {
    /// Neighbourhood size `k`. Default: 3.
    pub k: usize,
    /// Rows and columns of one distance block (bounds memory: `block^2` floats). Default: 10,000.
    pub block: usize,
}

impl Default for ManifoldConfig {
    fn default() -> Self {
        Self { k: 3, block: 10_000 }
    }
}

/// `[a, b]` squared distances between the rows of `a` `[a, D]` and `b` `[b, D]`.
fn sq_distances(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let na = a.clone().square().sum_dim(1);
    let nb = b.clone().square().sum_dim(1).transpose();
    (na - a.matmul(b.transpose()) * 2.0 + nb).clamp_min(0.0)
}

fn blocks(n: usize, size: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).step_by(size.max(1)).map(move |s| (s, size.max(1).min(n - s)))
}

/// The squared distance of every row of `features` `[N, D]` to its `k`-th nearest other row.
///
/// # Errors
/// [`Error::InvalidArgument`] unless `N > k`.
pub fn knn_radii(features: &Tensor<2>, config: ManifoldConfig) -> Result<Tensor<1>> {
    let [n, _] = features.dims();
    if config.k == 0 || n <= config.k {
        return Err(Error::InvalidArgument(format!("{}-nearest-neighbour radii need more than {} features, got {n}", config.k, config.k)));
    }
    let radii = blocks(n, config.block)
        .map(|(start, len)| {
            let d = sq_distances(features.clone().narrow(0, start, len), features.clone());
            // the k + 1 smallest (the row itself first), descending: the first is the k-th neighbour
            d.neg().topk(config.k + 1, 1).narrow(1, config.k, 1).neg().flatten(0, 1)
        })
        .collect();
    Ok(Tensor::cat(radii, 0))
}

/// `(precision, recall)` of `samples` `[N2, D]` against `reference` `[N1, D]` (same device).
///
/// # Errors
/// [`Error::Shape`] for different feature widths; as [`knn_radii`] for too few features.
pub fn precision_recall(reference: &Tensor<2>, samples: &Tensor<2>, config: ManifoldConfig) -> Result<(f64, f64)> {
    let ([n1, d1], [n2, d2]) = (reference.dims(), samples.dims());
    crate::error::ensure_dims("samples", [n2, d2], [None, Some(d1)])?;
    let (r1, r2) = (knn_radii(reference, config)?, knn_radii(samples, config)?);
    let mut sample_in = vec![false; n2];
    let mut reference_in = vec![false; n1];
    for (s1, l1) in blocks(n1, config.block) {
        let a = reference.clone().narrow(0, s1, l1);
        for (s2, l2) in blocks(n2, config.block) {
            let d = sq_distances(a.clone(), samples.clone().narrow(0, s2, l2));
            let ra = r1.clone().narrow(0, s1, l1).unsqueeze_dim::<2>(1).expand([l1, l2]);
            let rb = r2.clone().narrow(0, s2, l2).unsqueeze_dim::<2>(0).expand([l1, l2]);
            // via integers: backends store bools differently (wgpu as u32)
            let bools = |t: Tensor<2, Bool>| t.int().into_data().iter::<i64>().map(|v| v != 0).collect::<Vec<_>>();
            for (k, v) in bools(d.clone().lower_equal(ra).any_dim(0)).into_iter().enumerate() {
                sample_in[s2 + k] |= v;
            }
            for (k, v) in bools(d.lower_equal(rb).any_dim(1)).into_iter().enumerate() {
                reference_in[s1 + k] |= v;
            }
        }
    }
    let frac = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / v.len() as f64;
    Ok((frac(&sample_in), frac(&reference_in)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[[f32; 2]]) -> Tensor<2> {
        let v: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(v, [rows.len(), 2]), &Device::flex())
    }

    #[test]
    fn radii_skip_the_point_itself() {
        let x = t(&[[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [6.0, 0.0]]);
        let r = knn_radii(&x, ManifoldConfig { k: 1, block: 3 }).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(r, vec![1.0, 1.0, 4.0, 9.0]);
        assert!(knn_radii(&x, ManifoldConfig { k: 4, block: 3 }).is_err());
    }

    #[test]
    fn far_samples_have_no_precision_and_no_recall() {
        let reference = t(&[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]);
        let near = t(&[[0.5, 0.5], [0.2, 0.1], [0.9, 0.8], [0.1, 0.9]]);
        let far = t(&[[100.0, 0.0], [101.0, 0.0], [100.0, 1.0], [101.0, 1.0]]);
        let cfg = ManifoldConfig { k: 1, block: 3 };
        // every near sample lies within 1 (the squared 1-NN radius) of a corner: precision 1;
        // the samples' own radii are 0.25, 0.25, 0.25 and 0.32, and corner (1, 0) is at least
        // 0.5 from every sample, so it is the one reference point not covered: recall 3/4
        assert_eq!(precision_recall(&reference, &near, cfg).unwrap(), (1.0, 0.75));
        assert_eq!(precision_recall(&reference, &far, cfg).unwrap(), (0.0, 0.0));
        assert!(precision_recall(&reference, &Tensor::zeros([4, 3], &Device::flex()), cfg).is_err());
    }
}

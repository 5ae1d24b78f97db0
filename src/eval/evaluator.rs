//! The whole evaluation of a sample batch against a reference batch, as the ADM evaluator
//! reports it: Inception features of both `.npz` batches (streamed, batch by batch), then
//! FID (pool features), sFID (spatial features), the Inception Score of the samples (10
//! splits) and precision/recall (pool features, k = 3).
//!
//! Reference statistics stored in the reference batch (`mu`, `sigma`, `mu_s`, `sigma_s`, as the
//! ADM batches carry them) are used as given, exactly as the ADM evaluator does; note that those
//! were computed by the TensorFlow graph, whose resize differs slightly from pytorch-fid's, so
//! [`Evaluator::evaluate`] can also recompute them from the reference images.

use std::path::Path;

use burn::prelude::*;

use super::frechet::GaussianStats;
use super::inception::InceptionV3;
use super::inception_score::inception_score;
use super::npz::NpzReader;
use super::precision_recall::{ManifoldConfig, precision_recall};
use crate::error::{Error, Result};

/// Inception features of a set of images, row-major, on the host.
#[derive(Debug, Clone, Default)]
pub struct BatchFeatures {
    /// Number of images.
    pub count: usize,
    /// `[count, 2048]` pool features.
    pub pool: Vec<f32>,
    /// `[count, 2023]` spatial (sFID) features.
    pub spatial: Vec<f32>,
    /// `[count, num_classes]` logits.
    pub logits: Vec<f32>,
}

impl BatchFeatures {
    /// FID statistics (pool features).
    ///
    /// # Errors
    /// As [`GaussianStats::from_features`].
    pub fn pool_stats(&self) -> Result<GaussianStats> {
        GaussianStats::from_features(&self.pool, 2048)
    }

    /// sFID statistics (spatial features).
    ///
    /// # Errors
    /// As [`GaussianStats::from_features`].
    pub fn spatial_stats(&self) -> Result<GaussianStats> {
        GaussianStats::from_features(&self.spatial, self.spatial.len() / self.count.max(1))
    }
}

/// The numbers the papers report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalReport {
    /// Frechet Inception Distance (pool features).
    pub fid: f64,
    /// Spatial FID (Mixed_6d 1x1-branch features).
    pub sfid: f64,
    /// Inception Score of the samples (mean over splits).
    pub inception_score: f64,
    /// Standard deviation of the Inception Score over splits.
    pub inception_score_std: f64,
    /// Fraction of samples inside the reference manifold.
    pub precision: f64,
    /// Fraction of reference images inside the sample manifold.
    pub recall: f64,
}

/// Runs [`InceptionV3`] over image batches and computes an [`EvalReport`].
#[derive(Debug, Clone)]
pub struct Evaluator {
    net: InceptionV3,
    device: Device,
    batch_size: usize,
    /// Inception Score splits. Default: 10.
    pub splits: usize,
    /// Precision/recall settings. Default: ADM's (k = 3).
    pub manifold: ManifoldConfig,
}

impl Evaluator {
    /// An evaluator running `net` on `device`, `batch_size` images per forward.
    pub fn new(net: InceptionV3, device: &Device, batch_size: usize) -> Self {
        Self { net, device: device.clone(), batch_size: batch_size.max(1), splits: 10, manifold: ManifoldConfig::default() }
    }

    /// Features of `n` uint8 images `[n, h, w, 3]` (values / 255, as pytorch-fid reads images).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `bytes` is not `n * h * w * 3` long; as
    /// [`InceptionV3::forward`].
    pub fn features_of_images(&self, bytes: &[u8], n: usize, h: usize, w: usize) -> Result<BatchFeatures> {
        if bytes.len() != n * h * w * 3 {
            return Err(Error::InvalidArgument(format!("{n} images of {h}x{w}x3 need {} bytes, got {}", n * h * w * 3, bytes.len())));
        }
        let x: Vec<f32> = bytes.iter().map(|&b| b as f32 / 255.0).collect();
        let x = Tensor::<4>::from_data(TensorData::new(x, [n, h, w, 3]), &self.device).permute([0, 3, 1, 2]);
        let f = self.net.forward(x)?;
        let host = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().map_err(|e| Error::Numerical(format!("{e:?}")));
        Ok(BatchFeatures { count: n, pool: host(f.pool)?, spatial: host(f.spatial)?, logits: host(f.logits)? })
    }

    /// Features of every image of `arr_0` in the `.npz` batch `path`; `progress(done, total)`
    /// is called after every forward.
    ///
    /// # Errors
    /// As [`NpzReader::for_each_image_batch`] and [`InceptionV3::forward`].
    pub fn features_of_npz(&self, path: impl AsRef<Path>, progress: &mut dyn FnMut(usize, usize)) -> Result<BatchFeatures> {
        let mut npz = NpzReader::open(path)?;
        let header = npz.header("arr_0")?;
        let [n, h, w] = match header.shape[..] {
            [n, h, w, 3] => [n, h, w],
            _ => [0, 0, 0], // rejected with a clear message by for_each_image_batch
        };
        let mut all = BatchFeatures::default();
        npz.for_each_image_batch("arr_0", self.batch_size, |bytes, k| {
            let f = self.features_of_images(bytes, k, h, w)?;
            all.count += k;
            all.pool.extend(f.pool);
            all.spatial.extend(f.spatial);
            all.logits.extend(f.logits);
            progress(all.count, n);
            Ok(())
        })?;
        Ok(all)
    }

    /// The report for `samples` against `reference` features. `reference_stats` (FID and sFID
    /// statistics of the reference) replace those computed from `reference` when given.
    ///
    /// # Errors
    /// As the metrics ([`GaussianStats`], [`inception_score`], [`precision_recall`]).
    pub fn evaluate(
        &self,
        samples: &BatchFeatures,
        reference: &BatchFeatures,
        reference_stats: Option<(GaussianStats, GaussianStats)>,
    ) -> Result<EvalReport> {
        let (ref_pool, ref_spatial) = match reference_stats {
            Some(s) => s,
            None => (reference.pool_stats()?, reference.spatial_stats()?),
        };
        let fid = samples.pool_stats()?.frechet_distance(&ref_pool)?;
        let sfid = samples.spatial_stats()?.frechet_distance(&ref_spatial)?;
        let classes = samples.logits.len() / samples.count.max(1);
        let (is_mean, is_std) = inception_score(&samples.logits, classes, self.splits.min(samples.count))?;
        let on_device = |f: &BatchFeatures| Tensor::<2>::from_data(TensorData::new(f.pool.clone(), [f.count, 2048]), &self.device);
        let (precision, recall) = precision_recall(&on_device(reference), &on_device(samples), self.manifold)?;
        Ok(EvalReport { fid, sfid, inception_score: is_mean, inception_score_std: is_std, precision, recall })
    }

    /// The FID and sFID statistics stored in a reference batch (`mu`, `sigma`, `mu_s`,
    /// `sigma_s`), if it has all four.
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable file.
    pub fn stored_reference_stats(path: impl AsRef<Path>) -> Result<Option<(GaussianStats, GaussianStats)>> {
        let path = path.as_ref();
        let npz = NpzReader::open(path)?;
        if !["mu", "sigma", "mu_s", "sigma_s"].iter().all(|k| npz.contains(k)) {
            return Ok(None);
        }
        Ok(Some((GaussianStats::read_npz(path, "mu", "sigma")?, GaussianStats::read_npz(path, "mu_s", "sigma_s")?)))
    }
}

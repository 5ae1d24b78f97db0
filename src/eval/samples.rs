//! A large sample set written to disk shard by shard, so that sampling can be split over
//! devices (or processes) and resumed after an interruption, then gathered into the ADM
//! evaluator's `.npz` (`arr_0`: uint8 `[N, H, W, 3]`, optionally `arr_1`: int64 labels), as
//! DiT's `sample_ddp.py` and `create_npz_from_sample_folder` do.
//!
//! The directory holds `plan.json` (the sample count, shard size, image size and a free-form
//! settings string; resuming with other values is refused) and one `shard_NNNNNN.npy` per
//! finished shard, written to a temporary name and renamed, so a shard file is either
//! complete or absent. Shard `i` holds samples `[i * shard_size, min((i + 1) * shard_size, N))`;
//! worker `rank` of `world` takes the shards with `i % world == rank`.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::npz::{NpyDtype, NpyHeader, NpzWriter};
use crate::error::{Error, Result};
use crate::pipeline::RgbImage;

/// What a sample directory is for; stored as `plan.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Plan {
    total: usize,
    shard_size: usize,
    height: usize,
    width: usize,
    settings: String,
}

/// A resumable, sharded on-disk sample set (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct SampleShards {
    dir: PathBuf,
    plan: Plan,
}

fn write_err(path: &Path, e: impl ToString) -> Error {
    Error::Write { path: path.to_path_buf(), reason: e.to_string() }
}

impl SampleShards {
    /// Open (creating it if needed) the sample directory `dir` for `total` images of
    /// `[height, width]` in shards of `shard_size`; `settings` describes how they are drawn
    /// (model, sampler, guidance, seed...) so that a resume cannot mix two sample sets.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero sizes or a directory planned with other values,
    /// [`Error::Write`] / [`Error::Io`] for file system failures.
    pub fn open(dir: impl AsRef<Path>, total: usize, shard_size: usize, size: [usize; 2], settings: &str) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if total == 0 || shard_size == 0 || size[0] == 0 || size[1] == 0 {
            return Err(Error::InvalidArgument(format!(
                "a sample set needs positive sizes, got {total} images of {size:?} in shards of {shard_size}"
            )));
        }
        let plan = Plan { total, shard_size, height: size[0], width: size[1], settings: settings.to_string() };
        std::fs::create_dir_all(&dir).map_err(|e| write_err(&dir, e))?;
        let plan_path = dir.join("plan.json");
        if plan_path.exists() {
            let text = std::fs::read_to_string(&plan_path).map_err(|e| Error::Io { path: plan_path.clone(), reason: e.to_string() })?;
            let old: Plan = serde_json::from_str(&text).map_err(|e| Error::Io { path: plan_path.clone(), reason: e.to_string() })?;
            if old != plan {
                return Err(Error::InvalidArgument(format!(
                    "{} holds another sample set ({old:?}); asked for {plan:?}: use another directory",
                    dir.display()
                )));
            }
        } else {
            let text = serde_json::to_string_pretty(&plan).expect("plan serialises");
            std::fs::write(&plan_path, text).map_err(|e| write_err(&plan_path, e))?;
        }
        Ok(Self { dir, plan })
    }

    /// Number of shards.
    pub fn num_shards(&self) -> usize {
        self.plan.total.div_ceil(self.plan.shard_size)
    }

    /// Total number of samples.
    pub fn total(&self) -> usize {
        self.plan.total
    }

    /// The sample indices of shard `i`.
    pub fn shard_range(&self, i: usize) -> std::ops::Range<usize> {
        let start = (i * self.plan.shard_size).min(self.plan.total);
        start..(start + self.plan.shard_size).min(self.plan.total)
    }

    fn shard_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("shard_{i:06}.npy"))
    }

    /// Whether shard `i` has been written.
    pub fn is_done(&self, i: usize) -> bool {
        self.shard_path(i).exists()
    }

    /// Shards of worker `rank` (of `world`) not written yet, in order.
    pub fn pending(&self, rank: usize, world: usize) -> Vec<usize> {
        (0..self.num_shards()).filter(|i| i % world.max(1) == rank && !self.is_done(*i)).collect()
    }

    /// Samples in finished shards.
    pub fn completed(&self) -> usize {
        (0..self.num_shards()).filter(|i| self.is_done(*i)).map(|i| self.shard_range(i).len()).sum()
    }

    /// Write shard `i` (atomically: a temporary file renamed into place).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a wrong image count or size, [`Error::Write`] on I/O
    /// failure.
    pub fn write_shard(&self, i: usize, images: &[RgbImage]) -> Result<()> {
        let (h, w) = (self.plan.height, self.plan.width);
        let want = self.shard_range(i).len();
        if i >= self.num_shards() || images.len() != want {
            return Err(Error::InvalidArgument(format!("shard {i} of {} takes {want} images, got {}", self.num_shards(), images.len())));
        }
        if let Some(bad) = images.iter().find(|im| im.height() != h || im.width() != w) {
            return Err(Error::InvalidArgument(format!("sample images must be {h}x{w}, got {}x{}", bad.height(), bad.width())));
        }
        let path = self.shard_path(i);
        let tmp = path.with_extension("npy.partial");
        let mut f = File::create(&tmp).map_err(|e| write_err(&tmp, e))?;
        f.write_all(&NpyHeader { dtype: NpyDtype::U8, shape: vec![want, h, w, 3] }.encode()).map_err(|e| write_err(&tmp, e))?;
        for im in images {
            f.write_all(im.as_raw()).map_err(|e| write_err(&tmp, e))?;
        }
        f.sync_all().map_err(|e| write_err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| write_err(&path, e))
    }

    /// Gather every shard into the `.npz` `out` (`arr_0`; `arr_1` = `labels` if given).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] while shards are missing or for a wrong label count,
    /// [`Error::Io`] / [`Error::Write`] on I/O failure or a damaged shard.
    pub fn write_npz(&self, out: impl AsRef<Path>, labels: Option<&[usize]>) -> Result<()> {
        let missing = self.pending(0, 1).len();
        if missing > 0 {
            return Err(Error::InvalidArgument(format!("{missing} of {} shards are not written yet", self.num_shards())));
        }
        if let Some(l) = labels.filter(|l| l.len() != self.plan.total) {
            return Err(Error::InvalidArgument(format!("{} labels for {} samples", l.len(), self.plan.total)));
        }
        let (h, w) = (self.plan.height, self.plan.width);
        let mut npz = NpzWriter::create(out)?;
        npz.start_array("arr_0", &NpyHeader { dtype: NpyDtype::U8, shape: vec![self.plan.total, h, w, 3] })?;
        let mut buf = vec![0u8; 1 << 20];
        for i in 0..self.num_shards() {
            let path = self.shard_path(i);
            let io = |e: String| Error::Io { path: path.clone(), reason: e };
            let mut r = BufReader::new(File::open(&path).map_err(|e| io(e.to_string()))?);
            let header = NpyHeader::read(&mut r).map_err(io)?;
            if header.shape != [self.shard_range(i).len(), h, w, 3] {
                return Err(io(format!("damaged shard of shape {:?}", header.shape)));
            }
            let mut left = header.len();
            while left > 0 {
                let k = left.min(buf.len());
                r.read_exact(&mut buf[..k]).map_err(|e| io(format!("truncated shard: {e}")))?;
                npz.write(&buf[..k])?;
                left -= k;
            }
        }
        if let Some(labels) = labels {
            let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
            npz.write_i64("arr_1", &v, &[v.len()])?;
        }
        npz.finish()
    }
}

/// Class labels of `total` samples: class-balanced (`i % num_classes`, every class equally
/// often when `num_classes` divides `total`) or drawn uniformly from `seed` (DiT's
/// `sample_ddp.py`).
pub fn class_labels(total: usize, num_classes: usize, balanced: bool, seed: u64) -> Vec<usize> {
    if num_classes == 0 {
        return Vec::new();
    }
    if balanced {
        return (0..total).map(|i| i % num_classes).collect();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    (0..total).map(|_| rng.random_range(0..num_classes)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::npz::NpzReader;

    fn image(v: u8) -> RgbImage {
        RgbImage::new(2, 3, vec![v; 18]).unwrap()
    }

    #[test]
    fn shards_resume_and_gather_into_npz() {
        let dir = std::env::temp_dir().join(format!("dt_shards_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = SampleShards::open(&dir, 5, 2, [3, 2], "ddpm-250 cfg 1.5").unwrap();
        assert_eq!((s.num_shards(), s.shard_range(2)), (3, 4..5));
        assert_eq!((s.pending(0, 2), s.pending(1, 2)), (vec![0, 2], vec![1]));
        s.write_shard(0, &[image(0), image(1)]).unwrap();
        assert!(s.write_shard(2, &[image(4), image(5)]).is_err()); // the last shard holds one image
        assert!(s.write_shard(1, &[image(2), RgbImage::new(3, 3, vec![0; 27]).unwrap()]).is_err());
        assert!(s.write_npz(dir.join("out.npz"), None).is_err());

        // "interrupted": a reopened set only has the missing shards to do
        let s = SampleShards::open(&dir, 5, 2, [3, 2], "ddpm-250 cfg 1.5").unwrap();
        assert!(SampleShards::open(&dir, 5, 2, [3, 2], "ddim-50").is_err());
        assert_eq!((s.pending(0, 1), s.completed()), (vec![1, 2], 2));
        s.write_shard(1, &[image(2), image(3)]).unwrap();
        s.write_shard(2, &[image(4)]).unwrap();
        let labels = class_labels(5, 3, true, 0);
        assert_eq!(labels, vec![0, 1, 2, 0, 1]);
        s.write_npz(dir.join("out.npz"), Some(&labels)).unwrap();

        let mut r = NpzReader::open(dir.join("out.npz")).unwrap();
        let mut firsts = Vec::new();
        r.for_each_image_batch("arr_0", 10, |b, n| {
            firsts.extend((0..n).map(|k| b[k * 18]));
            Ok(())
        })
        .unwrap();
        assert_eq!(firsts, vec![0, 1, 2, 3, 4]);
        assert_eq!(r.read_f64("arr_1").unwrap().0, vec![0.0, 1.0, 2.0, 0.0, 1.0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn random_labels_are_seeded() {
        let a = class_labels(100, 10, false, 7);
        assert_eq!(a, class_labels(100, 10, false, 7));
        assert!(a.iter().all(|&l| l < 10) && a != class_labels(100, 10, false, 8));
    }
}

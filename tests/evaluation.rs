//! End to end: a small sample set is written shard by shard, gathered into an ADM-style
//! `.npz`, and evaluated against a reference batch with the FID Inception (the conformance
//! fixture's random weights): FID, sFID, Inception Score, precision and recall.
#![cfg(feature = "eval")]

use std::path::PathBuf;

use burn::prelude::*;
use diffusion_transformers::eval::{Evaluator, InceptionV3Config, NpzWriter, SampleShards, class_labels};
use diffusion_transformers::pipeline::RgbImage;
use diffusion_transformers::weights::{Checkpoint, LoadWeights};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn fixture_inception(device: &Device) -> diffusion_transformers::eval::InceptionV3 {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inception_fid_64px.safetensors");
    let mut ck = Checkpoint::from_file(path).unwrap();
    for p in ["input.", "output."] {
        ck.take_prefix(p);
    }
    let mut net = InceptionV3Config::new().init(device).unwrap();
    net.load_checkpoint(&ck).unwrap();
    net
}

/// Smooth random images (a colour gradient plus noise), `size` x `size`.
fn images(n: usize, size: usize, seed: u64) -> Vec<RgbImage> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let (a, b, c): (f32, f32, f32) = (rng.random(), rng.random(), rng.random());
            let data = (0..size * size * 3)
                .map(|k| {
                    let (y, x, ch) = (k / (3 * size), (k / 3) % size, k % 3);
                    let v = [a, b, c][ch] * 200.0 * (x + y) as f32 / (2 * size) as f32 + rng.random::<f32>() * 55.0;
                    v as u8
                })
                .collect();
            RgbImage::new(size, size, data).unwrap()
        })
        .collect()
}

#[test]
fn evaluate_small_sample_set_end_to_end() {
    let device = Device::flex();
    let dir = std::env::temp_dir().join(format!("dt_evaluation_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (n, size) = (8, 40);

    // samples: drawn by two "devices" shard by shard, then gathered
    let samples = images(n, size, 1);
    let shards = SampleShards::open(dir.join("shards"), n, 3, [size, size], "test").unwrap();
    for rank in 0..2 {
        for i in shards.pending(rank, 2) {
            shards.write_shard(i, &samples[shards.shard_range(i)]).unwrap();
        }
    }
    let labels = class_labels(n, 4, true, 0);
    shards.write_npz(dir.join("samples.npz"), Some(&labels)).unwrap();

    // reference batch: other images
    let mut w = NpzWriter::create(dir.join("ref.npz")).unwrap();
    let reference = images(n, size, 2);
    w.start_array("arr_0", &diffusion_transformers::eval::NpyHeader { dtype: diffusion_transformers::eval::NpyDtype::U8, shape: vec![n, size, size, 3] }).unwrap();
    for im in &reference {
        w.write(im.as_raw()).unwrap();
    }
    w.finish().unwrap();

    let mut evaluator = Evaluator::new(fixture_inception(&device), &device, 5);
    evaluator.splits = 2;
    let mut calls = Vec::new();
    let s = evaluator.features_of_npz(dir.join("samples.npz"), &mut |done, total| calls.push((done, total))).unwrap();
    assert_eq!(calls, vec![(5, 8), (8, 8)]);
    assert_eq!((s.count, s.pool.len(), s.spatial.len(), s.logits.len()), (n, n * 2048, n * 2023, n * 1008));
    let r = evaluator.features_of_npz(dir.join("ref.npz"), &mut |_, _| {}).unwrap();

    let report = evaluator.evaluate(&s, &r, None).unwrap();
    println!("{report:?}");
    assert!(report.fid > 0.0 && report.sfid > 0.0, "{report:?}");
    assert!(report.inception_score >= 1.0 && report.inception_score_std >= 0.0, "{report:?}");
    assert!((0.0..=1.0).contains(&report.precision) && (0.0..=1.0).contains(&report.recall), "{report:?}");

    // a set against itself: distances 0 up to rounding, precision and recall 1. The covariances
    // of 8 samples are rank-deficient, and the square roots of their null-space eigenvalues
    // (rounding noise, ~eps * |S|) leave an error of ~1e-6 tr(S): relative to 2 tr(S), not absolute
    let same = evaluator.evaluate(&s, &s, None).unwrap();
    let scale = |st: diffusion_transformers::eval::GaussianStats| {
        2.0 * (0..st.dim()).map(|i| st.sigma[i * st.dim() + i]).sum::<f64>()
    };
    let (fid_scale, sfid_scale) = (scale(s.pool_stats().unwrap()), scale(s.spatial_stats().unwrap()));
    assert!(same.fid.abs() < 1e-5 * fid_scale && same.sfid.abs() < 1e-5 * sfid_scale, "{same:?} {fid_scale} {sfid_scale}");
    assert_eq!((same.precision, same.recall), (1.0, 1.0));

    // statistics stored in the reference batch (as ADM's) are used as given
    let (pool, spatial) = (r.pool_stats().unwrap(), r.spatial_stats().unwrap());
    let mut w = NpzWriter::create(dir.join("ref_stats.npz")).unwrap();
    w.write_f64("mu", &pool.mu, &[2048]).unwrap();
    w.write_f64("sigma", &pool.sigma, &[2048, 2048]).unwrap();
    w.write_f64("mu_s", &spatial.mu, &[spatial.dim()]).unwrap();
    w.write_f64("sigma_s", &spatial.sigma, &[spatial.dim(), spatial.dim()]).unwrap();
    w.finish().unwrap();
    let stored = Evaluator::stored_reference_stats(dir.join("ref_stats.npz")).unwrap().expect("all four arrays");
    assert!(Evaluator::stored_reference_stats(dir.join("ref.npz")).unwrap().is_none());
    let again = evaluator.evaluate(&s, &r, Some(stored)).unwrap();
    assert!((again.fid - report.fid).abs() < 1e-9 && (again.sfid - report.sfid).abs() < 1e-9);
    std::fs::remove_dir_all(&dir).unwrap();
}

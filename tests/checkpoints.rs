//! Checkpoints never lose a run: a diverged run's weights are never saved (nor replace the last
//! good checkpoint), a resumed older checkpoint branches instead of overwriting the original's
//! later steps, and a full disk leaves every earlier checkpoint intact and no temporaries.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::*;
use burn::tensor::TensorData;
use diffusion_transformers::Error;
use diffusion_transformers::diffusion::RectifiedFlowConfig;
use diffusion_transformers::models::DiT;
use diffusion_transformers::training::checkpoint::{latest_checkpoint, read_verified_state};
use diffusion_transformers::training::{OptimizerConfig, Trainer, TrainerConfig};

fn config(lr: f64, keep: usize) -> TrainerConfig {
    TrainerConfig {
        optimizer: OptimizerConfig { lr, ..Default::default() },
        ema_decay: 0.9,
        ema_warmup: false,
        seed: 4,
        keep_checkpoints: keep,
        gradient_checkpointing: false,
    }
}

fn batch(device: &Device) -> (Tensor<4>, Option<Tensor<1, Int>>) {
    let x: Vec<f32> = (0..4 * 3 * 64).map(|i| ((i * 37 % 97) as f32 / 48.0) - 1.0).collect();
    (Tensor::from_data(TensorData::new(x, [4, 3, 8, 8]), device), Some(Tensor::from_ints([0, 1, 2, 3], device)))
}

fn model(device: &Device) -> DiT {
    common::tiny_dit_config().init(device).unwrap()
}

fn train(trainer: &mut Trainer<DiT>, steps: usize, device: &Device) {
    let flow = RectifiedFlowConfig::new().init().unwrap();
    let (x, y) = batch(device);
    for _ in 0..steps {
        trainer.train_step(&flow, x.clone(), &y).unwrap();
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dt_checkpoints_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn entries(root: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn a_blown_up_run_never_replaces_the_last_good_checkpoint() {
    let device = Device::flex().autodiff();
    let root = tmp("blowup");
    let mut good = Trainer::new(model(&device), config(1e-3, 1)).unwrap();
    train(&mut good, 2, &device);
    let kept = good.save_checkpoint(&root, serde_json::json!("good")).unwrap();
    drop(good);

    // The same run continues with a learning rate that explodes the weights (finite, ~1e5).
    let (mut exploded, _) = Trainer::resume(model(&device), config(1e5, 1), &root).unwrap();
    train(&mut exploded, 1, &device);
    let e = exploded.save_checkpoint(&root, serde_json::Value::Null).unwrap_err();
    assert!(matches!(e, Error::Numerical(_)) && e.to_string().contains("step 3"), "{e}");
    // keep = 1, yet the good checkpoint is still the newest and intact.
    assert_eq!(entries(&root), ["latest", "step-00000002"]);
    assert_eq!(latest_checkpoint(&root).unwrap(), kept);
    assert_eq!(read_verified_state(&kept).unwrap().metadata, "good");
    // Without the bound, finite weights can be saved (the caller's choice).
    let forced = exploded.with_weight_bound(None).save_checkpoint(&root, serde_json::Value::Null).unwrap();
    assert_eq!(forced, root.join("step-00000003"));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn resuming_an_older_step_branches_instead_of_overwriting() {
    let device = Device::flex().autodiff();
    let root = tmp("branch");
    let mut original = Trainer::new(model(&device), config(1e-3, 5)).unwrap();
    train(&mut original, 2, &device);
    let at2 = original.save_checkpoint(&root, serde_json::json!(2)).unwrap();
    train(&mut original, 2, &device);
    let at4 = original.save_checkpoint(&root, serde_json::json!(4)).unwrap();
    let original_run = original.run().clone();

    // Resume the newest: the same run continues.
    let (same, _) = Trainer::resume(model(&device), config(1e-3, 5), &root).unwrap();
    assert_eq!(same.run(), &original_run);

    // Resume step 2 and continue to step 3: a branch, refused in the original's root.
    let (mut branch, meta) = Trainer::resume_from(model(&device), config(1e-3, 5), &at2).unwrap();
    assert_eq!(meta, 2);
    assert!(branch.resumed().unwrap().branched);
    assert_ne!(branch.run().id, original_run.id);
    assert_eq!(branch.run().ancestors, vec![(original_run.id.clone(), 2)]);
    train(&mut branch, 1, &device);
    let e = branch.save_checkpoint(&root, serde_json::json!(3)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("step-00000004"), "{e}");
    assert_eq!(entries(&root), ["latest", "step-00000002", "step-00000004"]);
    assert_eq!(read_verified_state(&at4).unwrap().metadata, 4);

    // Into its own root, the branch saves; the original is untouched.
    let other = tmp("branch_other");
    branch.save_checkpoint(&other, serde_json::json!(3)).unwrap();
    assert_eq!(latest_checkpoint(&root).unwrap(), at4);

    // With the explicit flag it replaces the original's continuation.
    let branch = branch.with_overwrite(true);
    let saved = branch.save_checkpoint(&root, serde_json::json!(3)).unwrap();
    assert_eq!(entries(&root), ["latest", "step-00000002", "step-00000003"]);
    assert_eq!(latest_checkpoint(&root).unwrap(), saved);
    let (resumed, meta) = Trainer::resume(model(&device), config(1e-3, 5), &root).unwrap();
    assert_eq!((resumed.step(), meta), (3, serde_json::json!(3)));
    assert_eq!(resumed.run(), branch.run());
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}

/// A tmpfs of `bytes` mounted at a fresh directory, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(name: &str, bytes: u64) -> Result<Self, String> {
        let dir = tmp(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Self(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

#[test]
fn a_full_disk_loses_nothing_and_leaves_no_temporaries() {
    let device = Device::flex().autodiff();
    let mut trainer = Trainer::new(model(&device), config(1e-3, 1)).unwrap();
    train(&mut trainer, 1, &device);
    // Size one checkpoint on the ordinary disk.
    let probe = tmp("probe");
    let one = dir_size(&trainer.save_checkpoint(&probe, serde_json::Value::Null).unwrap());
    std::fs::remove_dir_all(&probe).unwrap();

    // Room for one checkpoint and a half: the first save fits, the second cannot.
    let disk = match SmallDisk::mount("full_disk", (one * 3 / 2).div_ceil(4096) * 4096 + 8192) {
        Ok(d) => d,
        Err(reason) => {
            println!("skipped: cannot mount a small tmpfs ({reason}); run as root to simulate a full disk");
            return;
        }
    };
    let root = disk.0.join("run");
    let first = trainer.save_checkpoint(&root, serde_json::json!("first")).unwrap();
    train(&mut trainer, 1, &device);
    for _ in 0..3 {
        let e = trainer.save_checkpoint(&root, serde_json::Value::Null).unwrap_err();
        assert!(matches!(e, Error::Write { .. }), "{e}");
        // The failed save cleaned up after itself: the disk is not left full.
        assert_eq!(entries(&root), ["latest", "step-00000001"]);
    }
    assert_eq!(latest_checkpoint(&root).unwrap(), first);
    assert_eq!(read_verified_state(&first).unwrap().metadata, "first");
    let (resumed, _) = Trainer::resume(model(&device), config(1e-3, 1), &root).unwrap();
    assert_eq!(resumed.step(), 1);

    // A temporary left by a crashed process is removed by the next save.
    std::fs::create_dir_all(root.join(".step-00000009.tmp-1")).unwrap();
    std::fs::write(root.join(".step-00000009.tmp-1/model.bpk"), vec![0u8; (one / 2) as usize]).unwrap_or(());
    std::fs::remove_dir_all(&first).unwrap(); // make room (as `keep` would after a save)
    let second = trainer.save_checkpoint(&root, serde_json::Value::Null).unwrap();
    assert_eq!(entries(&root), ["latest", "step-00000002"]);
    assert_eq!(read_verified_state(&second).unwrap().step, 2);
}

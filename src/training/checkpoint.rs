//! Crash-safe training checkpoints.
//!
//! A checkpoint is a directory `step-NNNNNNNN/` holding `model.bpk`, `ema.bpk`, `optim.bin`
//! and `state.json` (step, RNG state, user metadata, and the size and FNV-1a hash of every
//! other file). It is written under a temporary name and renamed into place; then the file
//! `latest` (itself written to a temporary file and renamed) is pointed at it, and older
//! checkpoints beyond `keep` are removed. A crash at any point leaves the previous checkpoint
//! and `latest` intact; a truncated or corrupted file is detected by its hash on load.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What `state.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimisation steps taken.
    pub step: u64,
    /// Training RNG state.
    pub rng: [u64; 4],
    /// EMA updates taken.
    pub ema_updates: u64,
    /// Free-form metadata (e.g. the model config as JSON).
    pub metadata: serde_json::Value,
    /// `(file name, size in bytes, FNV-1a 64 hash)` of every payload file.
    pub files: Vec<(String, u64, u64)>,
}

pub(crate) fn io(path: &Path, e: impl ToString) -> Error {
    Error::Io { path: path.to_path_buf(), reason: e.to_string() }
}

fn write_err(path: &Path, e: impl ToString) -> Error {
    Error::Write { path: path.to_path_buf(), reason: e.to_string() }
}

/// FNV-1a 64-bit hash.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Name of the checkpoint directory of `step`.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Write a checkpoint directory atomically: `write_payload(tmp_dir)` writes the payload files,
/// then the manifest is added, the directory renamed into place and `latest` updated. Returns
/// the checkpoint's path.
pub fn write_checkpoint(
    root: &Path,
    mut state: CheckpointState,
    keep: usize,
    write_payload: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    fs::create_dir_all(root).map_err(|e| write_err(root, e))?;
    let name = step_dir_name(state.step);
    let tmp = root.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| write_err(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| write_err(&tmp, e))?;
    write_payload(&tmp)?;
    let mut files = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(&tmp).map_err(|e| io(&tmp, e))?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let bytes = fs::read(entry.path()).map_err(|e| io(&entry.path(), e))?;
        files.push((entry.file_name().to_string_lossy().into_owned(), bytes.len() as u64, fnv1a(&bytes)));
    }
    state.files = files;
    let json = serde_json::to_vec_pretty(&state).map_err(|e| write_err(&tmp, e))?;
    let state_path = tmp.join("state.json");
    fs::write(&state_path, json).map_err(|e| write_err(&state_path, e))?;
    sync_dir(&tmp);
    let final_dir = root.join(&name);
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir).map_err(|e| write_err(&final_dir, e))?;
    }
    fs::rename(&tmp, &final_dir).map_err(|e| write_err(&final_dir, e))?;
    let latest_tmp = root.join(".latest.tmp");
    fs::write(&latest_tmp, &name).map_err(|e| write_err(&latest_tmp, e))?;
    fs::rename(&latest_tmp, root.join("latest")).map_err(|e| write_err(root, e))?;
    sync_dir(root);
    prune(root, keep, &name);
    Ok(final_dir)
}

fn sync_dir(dir: &Path) {
    // Best effort: make the renames durable where the platform allows opening directories.
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

fn prune(root: &Path, keep: usize, newest: &str) {
    let Ok(rd) = fs::read_dir(root) else { return };
    let mut dirs: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-") && n.as_str() != newest)
        .collect();
    dirs.sort();
    let excess = (dirs.len() + 1).saturating_sub(keep.max(1));
    for d in dirs.into_iter().take(excess) {
        let _ = fs::remove_dir_all(root.join(d));
    }
}

/// The directory `latest` points to under `root`.
pub fn latest_checkpoint(root: &Path) -> Result<PathBuf> {
    let latest = root.join("latest");
    let name = fs::read_to_string(&latest).map_err(|e| io(&latest, format!("no checkpoint here ({e})")))?;
    Ok(root.join(name.trim()))
}

/// Read `state.json` of a checkpoint directory and verify every payload file's size and hash.
pub fn read_verified_state(dir: &Path) -> Result<CheckpointState> {
    let state_path = dir.join("state.json");
    let text = fs::read(&state_path).map_err(|e| io(&state_path, e))?;
    let state: CheckpointState =
        serde_json::from_slice(&text).map_err(|e| io(&state_path, format!("corrupted checkpoint manifest: {e}")))?;
    for (name, size, hash) in &state.files {
        let p = dir.join(name);
        let bytes = fs::read(&p).map_err(|e| io(&p, e))?;
        if bytes.len() as u64 != *size {
            return Err(io(&p, format!("truncated checkpoint file: {} bytes, expected {size}", bytes.len())));
        }
        if fnv1a(&bytes) != *hash {
            return Err(io(&p, "corrupted checkpoint file (hash mismatch)"));
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> CheckpointState {
        CheckpointState { step, rng: [1, 2, 3, 4], ema_updates: 0, metadata: serde_json::Value::Null, files: vec![] }
    }

    #[test]
    fn atomic_write_prune_and_verify() {
        let root = std::env::temp_dir().join(format!("dt_ckpt_{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for step in [1, 2, 3] {
            write_checkpoint(&root, state(step), 2, |d| {
                fs::write(d.join("a.bin"), vec![step as u8; 100]).map_err(|e| write_err(d, e))
            })
            .unwrap();
        }
        assert_eq!(latest_checkpoint(&root).unwrap(), root.join("step-00000003"));
        assert!(!root.join("step-00000001").exists());
        assert!(root.join("step-00000002").exists());
        assert_eq!(read_verified_state(&root.join("step-00000003")).unwrap().step, 3);

        // A failing payload writer leaves the previous checkpoint current.
        let r = write_checkpoint(&root, state(4), 2, |_| Err(Error::Numerical("boom".into())));
        assert!(r.is_err());
        assert_eq!(latest_checkpoint(&root).unwrap(), root.join("step-00000003"));

        // Truncation and corruption are detected.
        let f = root.join("step-00000003/a.bin");
        fs::write(&f, vec![3u8; 50]).unwrap();
        assert!(read_verified_state(&root.join("step-00000003")).unwrap_err().to_string().contains("truncated"));
        fs::write(&f, vec![9u8; 100]).unwrap();
        assert!(read_verified_state(&root.join("step-00000003")).unwrap_err().to_string().contains("corrupted"));
        assert!(read_verified_state(&root.join("step-00000002")).is_ok());
        fs::remove_dir_all(&root).unwrap();
    }
}

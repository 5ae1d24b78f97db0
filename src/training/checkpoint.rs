//! Crash-safe, durable training checkpoints with a run identity.
//!
//! A checkpoint is a directory `step-NNNNNNNN/` (`step-NNNNNNNN.K/` when the same step is saved
//! again) holding `model.bpk`, `ema.bpk`, `optim.bin` and `state.json` (step, RNG state, the
//! run's identity, user metadata, and the size and FNV-1a hash of every other file).
//!
//! **Durability.** A save writes everything into a temporary directory, fsyncs every file and
//! the directory, renames it to a name not used before, fsyncs the root, and then points the
//! file `latest` at it (temporary file, fsync, rename, fsync). Nothing existing is deleted
//! before the new checkpoint is durable, so a crash (or power loss) at any point leaves every
//! earlier checkpoint intact. A failed save (a full disk, say) removes its temporary; every save
//! also removes temporaries that a crashed process left behind. Truncated or corrupted files
//! are detected by their hash on load.
//!
//! **Run identity.** Every checkpoint records the id of the run that wrote it and the
//! `(run, step)` points the run descends from ([`RunId`]). Saving into a root refuses to
//! overwrite or interleave with the history of another run: when a run is resumed from an
//! older checkpoint (a branch) its saves conflict with the original run's later steps, and the
//! save fails with [`Error::InvalidArgument`] unless overwriting was asked for explicitly
//! (`overwrite`); then the other run's later checkpoints are removed, after the new one is
//! durable. Saving the branch into another root keeps both histories.
//!
//! **Pruning.** After a save, the oldest checkpoints of the run's history beyond `keep` are
//! removed; the new checkpoint (which passed the trainer's numerical guard) always stays.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::durable::{remove_temporaries, sync_dir, sync_tree, write_atomic, write_err};

/// The identity of a training run: a random id, and the checkpoints (run id, step) it
/// descends from, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunId {
    /// Random id of the run (empty in checkpoints written before run identities existed).
    pub id: String,
    /// `(run id, step)` of every checkpoint this run branched from, oldest first.
    pub ancestors: Vec<(String, u64)>,
}

impl RunId {
    /// A new run with a random id and no ancestors.
    pub fn fresh() -> Self {
        Self { id: format!("{:016x}", rand::random::<u64>()), ancestors: vec![] }
    }

    /// A new run that continues the run `parent` from its checkpoint at `step`.
    pub fn branch(parent: &RunId, step: u64) -> Self {
        let mut ancestors = parent.ancestors.clone();
        ancestors.push((parent.id.clone(), step));
        Self { ancestors, ..Self::fresh() }
    }

    /// Whether the checkpoint at `step` of run `id` is part of this run's history.
    pub fn owns(&self, id: &str, step: u64) -> bool {
        (!self.id.is_empty() && id == self.id) || self.ancestors.iter().any(|(a, s)| a == id && step <= *s)
    }
}

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
    /// The run that wrote the checkpoint.
    #[serde(default)]
    pub run: RunId,
}

/// How [`write_checkpoint`] treats the existing checkpoints of its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    /// Checkpoints of the run's history to keep (at least 1: the new one).
    pub keep: usize,
    /// Remove the later checkpoints of other runs in the same root instead of refusing.
    pub overwrite: bool,
}

pub(crate) fn io(path: &Path, e: impl ToString) -> Error {
    Error::Io { path: path.to_path_buf(), reason: e.to_string() }
}

/// FNV-1a 64-bit hash.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Name of the first checkpoint directory of `step`.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// `(step, save index)` of a checkpoint directory name, `None` for anything else.
fn parse_dir_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("step-")?;
    let (step, k) = match rest.split_once('.') {
        Some((s, k)) => (s, k.parse().ok()?),
        None => (rest, 0),
    };
    Some((step.parse().ok()?, k))
}

/// A checkpoint directory found under a root.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub path: PathBuf,
    pub order: (u64, u64),
}

/// The checkpoint directories under `root`, oldest first (by step, then save index).
pub(crate) fn list_checkpoints(root: &Path) -> Vec<Listed> {
    let Ok(rd) = fs::read_dir(root) else { return vec![] };
    let mut out: Vec<Listed> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let order = parse_dir_name(&e.file_name().to_string_lossy())?;
            e.path().is_dir().then(|| Listed { path: e.path(), order })
        })
        .collect();
    out.sort_by_key(|c| c.order);
    out
}

/// Reads `state.json` without verifying the payload.
fn read_manifest(dir: &Path) -> Result<CheckpointState> {
    let state_path = dir.join("state.json");
    let text = fs::read(&state_path).map_err(|e| io(&state_path, e))?;
    serde_json::from_slice(&text).map_err(|e| io(&state_path, format!("corrupted checkpoint manifest: {e}")))
}

/// Write a checkpoint directory atomically and durably (see the [module docs](self)):
/// `write_payload(tmp_dir)` writes the payload files, then the manifest is added, everything
/// fsynced, the directory renamed into place and `latest` updated. Returns the checkpoint's
/// path.
///
/// # Errors
/// [`Error::InvalidArgument`] when the root holds later checkpoints of another run and
/// `options.overwrite` is false (nothing is written); [`Error::Write`] when writing fails (the
/// temporary is removed, every earlier checkpoint stays); any error of `write_payload`.
pub fn write_checkpoint(
    root: &Path,
    mut state: CheckpointState,
    options: &SaveOptions,
    write_payload: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    fs::create_dir_all(root).map_err(|e| write_err(root, e))?;
    remove_temporaries(root);
    let existing = list_checkpoints(root);
    let conflicts: Vec<(Listed, CheckpointState)> = existing
        .iter()
        .filter_map(|c| read_manifest(&c.path).ok().map(|m| (c.clone(), m)))
        .filter(|(_, m)| !state.run.owns(&m.run.id, m.step))
        .collect();
    if !conflicts.is_empty() && !options.overwrite {
        let list: Vec<String> =
            conflicts.iter().map(|(c, m)| format!("{} (run {:?})", c.path.display(), m.run.id)).collect();
        return Err(Error::InvalidArgument(format!(
            "saving step {} of run {:?} into `{}` would mix it with another run's history: {}. Save the              branch into another directory, or allow overwriting those checkpoints explicitly",
            state.step,
            state.run.id,
            root.display(),
            list.join(", ")
        )));
    }

    let tmp = root.join(format!(".{}.tmp-{}", step_dir_name(state.step), std::process::id()));
    let written = (|| {
        fs::create_dir_all(&tmp).map_err(|e| write_err(&tmp, e))?;
        write_payload(&tmp)?;
        let mut entries: Vec<_> = fs::read_dir(&tmp).map_err(|e| io(&tmp, e))?.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        let mut files = Vec::new();
        for entry in entries {
            let bytes = fs::read(entry.path()).map_err(|e| io(&entry.path(), e))?;
            files.push((entry.file_name().to_string_lossy().into_owned(), bytes.len() as u64, fnv1a(&bytes)));
        }
        state.files = files;
        let json = serde_json::to_vec_pretty(&state).map_err(|e| write_err(&tmp, e))?;
        let state_path = tmp.join("state.json");
        fs::write(&state_path, json).map_err(|e| write_err(&state_path, e))?;
        sync_tree(&tmp)
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }

    // A name never used: a second save of the same step gets `step-N.K`.
    let base = step_dir_name(state.step);
    let name = (0u64..)
        .map(|k| if k == 0 { base.clone() } else { format!("{base}.{k}") })
        .find(|n| !root.join(n).exists())
        .expect("some free name");
    let final_dir = root.join(&name);
    if let Err(e) = fs::rename(&tmp, &final_dir) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(write_err(&final_dir, e));
    }
    sync_dir(root);
    write_atomic(&root.join("latest"), name.as_bytes())?;

    // Only now that the new checkpoint is durable: overwritten history, then pruning.
    for (c, _) in &conflicts {
        let _ = fs::remove_dir_all(&c.path);
    }
    let ours: Vec<Listed> = list_checkpoints(root).into_iter().filter(|c| c.path != final_dir).collect();
    let excess = (ours.len() + 1).saturating_sub(options.keep.max(1));
    for c in ours.into_iter().take(excess) {
        let _ = fs::remove_dir_all(&c.path);
    }
    sync_dir(root);
    Ok(final_dir)
}

/// The directory `latest` points to under `root`.
pub fn latest_checkpoint(root: &Path) -> Result<PathBuf> {
    let latest = root.join("latest");
    let name = fs::read_to_string(&latest).map_err(|e| io(&latest, format!("no checkpoint here ({e})")))?;
    Ok(root.join(name.trim()))
}

/// Read `state.json` of a checkpoint directory and verify every payload file's size and hash.
pub fn read_verified_state(dir: &Path) -> Result<CheckpointState> {
    let state = read_manifest(dir)?;
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

/// Whether a checkpoint with a later `(step, save index)` than `dir` exists beside it whose
/// manifest reads: resuming `dir` then continues from an older point of the history (a branch).
pub(crate) fn has_later_checkpoint(dir: &Path) -> bool {
    let (Some(root), Some(order)) = (dir.parent(), dir.file_name().and_then(|n| parse_dir_name(&n.to_string_lossy())))
    else {
        return false;
    };
    list_checkpoints(root).iter().any(|c| c.order > order && read_manifest(&c.path).is_ok())
}

/// Moves a damaged checkpoint aside (`damaged-<name>`), so that it is neither resumed, pruned
/// nor mistaken for the run's newest state; returns its new path.
pub(crate) fn quarantine(dir: &Path) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let target = dir.with_file_name(format!("damaged-{name}"));
    match fs::rename(dir, &target) {
        Ok(()) => target,
        Err(_) => dir.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64, run: &RunId) -> CheckpointState {
        CheckpointState {
            step,
            rng: [1, 2, 3, 4],
            ema_updates: 0,
            metadata: serde_json::Value::Null,
            files: vec![],
            run: run.clone(),
        }
    }

    fn payload(byte: u8) -> impl FnOnce(&Path) -> Result<()> {
        move |d: &Path| fs::write(d.join("a.bin"), vec![byte; 100]).map_err(|e| write_err(d, e))
    }

    fn root(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("dt_ckpt_{name}_{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        root
    }

    fn names(root: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    const KEEP2: SaveOptions = SaveOptions { keep: 2, overwrite: false };

    #[test]
    fn atomic_write_prune_and_verify() {
        let root = root("basic");
        let run = RunId::fresh();
        for step in [1, 2, 3] {
            write_checkpoint(&root, state(step, &run), &KEEP2, payload(step as u8)).unwrap();
        }
        assert_eq!(latest_checkpoint(&root).unwrap(), root.join("step-00000003"));
        assert_eq!(names(&root), ["latest", "step-00000002", "step-00000003"]);
        assert_eq!(read_verified_state(&root.join("step-00000003")).unwrap().step, 3);

        // A failing payload writer leaves the previous checkpoint current and no temporary.
        let r = write_checkpoint(&root, state(4, &run), &KEEP2, |d| {
            fs::write(d.join("partial.bin"), [0u8; 10]).unwrap();
            Err(Error::Write { path: d.to_path_buf(), reason: "No space left on device (os error 28)".into() })
        });
        assert!(matches!(r, Err(Error::Write { .. })));
        assert_eq!(latest_checkpoint(&root).unwrap(), root.join("step-00000003"));
        assert_eq!(names(&root), ["latest", "step-00000002", "step-00000003"]);

        // Truncation and corruption are detected.
        let f = root.join("step-00000003/a.bin");
        fs::write(&f, vec![3u8; 50]).unwrap();
        assert!(read_verified_state(&root.join("step-00000003")).unwrap_err().to_string().contains("truncated"));
        fs::write(&f, vec![9u8; 100]).unwrap();
        assert!(read_verified_state(&root.join("step-00000003")).unwrap_err().to_string().contains("corrupted"));
        assert!(read_verified_state(&root.join("step-00000002")).is_ok());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn resaving_a_step_never_removes_it_first_and_stale_temporaries_go() {
        let root = root("resave");
        let run = RunId::fresh();
        write_checkpoint(&root, state(5, &run), &KEEP2, payload(1)).unwrap();
        // Left behind by a crashed process.
        fs::create_dir_all(root.join(".step-00000009.tmp-4242")).unwrap();
        fs::write(root.join(".latest.tmp-4242"), "x").unwrap();
        let again = write_checkpoint(&root, state(5, &run), &KEEP2, payload(2)).unwrap();
        assert_eq!(again, root.join("step-00000005.1"));
        assert_eq!(latest_checkpoint(&root).unwrap(), again);
        assert_eq!(names(&root), ["latest", "step-00000005", "step-00000005.1"]);
        let third = write_checkpoint(&root, state(5, &run), &KEEP2, payload(3)).unwrap();
        assert_eq!(names(&root), ["latest", "step-00000005.1", "step-00000005.2"]);
        assert_eq!(fs::read(third.join("a.bin")).unwrap(), vec![3u8; 100]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_branch_never_overwrites_another_runs_history_silently() {
        let root = root("branch");
        let original = RunId::fresh();
        let keep5 = SaveOptions { keep: 5, overwrite: false };
        for step in [10, 20, 30] {
            write_checkpoint(&root, state(step, &original), &keep5, payload(step as u8)).unwrap();
        }
        // Resumed from step 10 and continued to step 20: refused, nothing written.
        let branch = RunId::branch(&original, 10);
        assert!(branch.owns(&original.id, 10) && !branch.owns(&original.id, 20));
        let e = write_checkpoint(&root, state(20, &branch), &keep5, payload(99)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("step-00000030"), "{e}");
        assert_eq!(names(&root), ["latest", "step-00000010", "step-00000020", "step-00000030"]);
        assert_eq!(fs::read(root.join("step-00000020/a.bin")).unwrap(), vec![20u8; 100]);
        // A fresh, unrelated run is refused too.
        assert!(write_checkpoint(&root, state(1, &RunId::fresh()), &keep5, payload(1)).is_err());
        // Into another root: both histories kept.
        let other = root.with_extension("branch");
        let _ = fs::remove_dir_all(&other);
        write_checkpoint(&other, state(20, &branch), &keep5, payload(99)).unwrap();
        // Explicit overwrite: the original's later steps go once the branch's save is durable.
        let overwrite = SaveOptions { keep: 5, overwrite: true };
        let d = write_checkpoint(&root, state(20, &branch), &overwrite, payload(99)).unwrap();
        assert_eq!(d, root.join("step-00000020.1"));
        assert_eq!(names(&root), ["latest", "step-00000010", "step-00000020.1"]);
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&other).unwrap();
    }
}

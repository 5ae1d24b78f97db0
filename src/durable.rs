//! Durable file-system steps for every save (training checkpoints, exported weights): fsync of
//! files and directories, atomic writes and pointer files, and removal of temporaries left by a
//! crashed or failed save.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

pub(crate) fn write_err(path: &Path, e: impl ToString) -> Error {
    Error::Write { path: path.to_path_buf(), reason: e.to_string() }
}

/// Flushes `file`'s contents to stable storage.
pub(crate) fn sync_file(file: &Path) -> Result<()> {
    fs::File::open(file).and_then(|f| f.sync_all()).map_err(|e| write_err(file, format!("fsync failed: {e}")))
}

/// Flushes a directory's entries (creations, renames) to stable storage. Best effort: some
/// platforms cannot open a directory; Linux and macOS can.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Flushes every regular file directly in `dir`, then `dir` itself.
pub(crate) fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| write_err(dir, e))? {
        let entry = entry.map_err(|e| write_err(dir, e))?;
        if entry.file_type().map_err(|e| write_err(&entry.path(), e))?.is_file() {
            sync_file(&entry.path())?;
        }
    }
    sync_dir(dir);
    Ok(())
}

/// Replaces `path` with `contents` atomically and durably: temporary file, fsync, rename,
/// fsync of the directory. A crash leaves either the old or the new contents.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(write_err(path, e));
    }
    sync_dir(dir);
    Ok(())
}

/// Whether `name` is a temporary of a checkpoint save (`.step-N.tmp-PID`, `.latest.tmp-PID`).
pub(crate) fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Removes every save temporary under `root`: a save that crashed (or failed on a full disk)
/// must not keep the disk full. One process writes a checkpoint root at a time, so no
/// temporary is in use when this runs.
pub(crate) fn remove_temporaries(root: &Path) {
    let Ok(rd) = fs::read_dir(root) else { return };
    for entry in rd.filter_map(|e| e.ok()) {
        if is_temporary(&entry.file_name().to_string_lossy()) {
            let p = entry.path();
            let _ = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        }
    }
}

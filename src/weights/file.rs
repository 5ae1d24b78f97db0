//! An open checkpoint file shared by the tensors it holds: positioned reads, or a read-only
//! memory mapping whose pages tensors can share ([`LazyCheckpoint::open_mapped`]).
//!
//! [`LazyCheckpoint::open_mapped`]: crate::weights::LazyCheckpoint::open_mapped

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use memmap2::Mmap;

use crate::error::{Error, Result};

pub(crate) fn io_err(path: &Path, reason: impl ToString) -> Error {
    Error::Io { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Granularity of the page ranges [`SharedFile::release`] hands back: a multiple of every
/// common page size (4 KiB, 16 KiB, 64 KiB), so a range rounded inwards to it is page-aligned.
const RELEASE_GRANULE: usize = 64 << 10;

/// An open file shared by the tensors it holds.
pub(crate) struct SharedFile {
    pub(crate) path: PathBuf,
    pub(crate) file: Mutex<File>,
    /// The whole file, memory-mapped ([`LazyCheckpoint::open_mapped`](crate::weights::LazyCheckpoint::open_mapped)).
    pub(crate) map: Option<Mapping>,
}

/// A read-only shared mapping, and the same pages as a reference-counted buffer whose slices
/// keep the mapping alive (Burn's [`Bytes::from_shared`](burn::tensor::Bytes::from_shared) takes one).
pub(crate) struct Mapping {
    map: Arc<Mmap>,
    pub(crate) bytes: bytes::Bytes,
}

/// The owner `bytes::Bytes::from_owner` keeps: the mapping, unmapped when the last slice goes.
struct MapOwner(Arc<Mmap>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SharedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedFile").field("path", &self.path).field("mapped", &self.map.is_some()).finish()
    }
}

impl SharedFile {
    pub(crate) fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut file = self.file.lock().map_err(|_| io_err(&self.path, "file lock poisoned"))?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| io_err(&self.path, e))?;
        file.read_exact(&mut buf).map_err(|e| io_err(&self.path, e))?;
        Ok(buf)
    }

    /// Bytes `offset..offset + len` of the mapping, shared; `None` unless the file is mapped
    /// and the range starts on a multiple of `align`.
    pub(crate) fn shared(&self, offset: u64, len: usize, align: usize) -> Option<bytes::Bytes> {
        let m = self.map.as_ref()?;
        let start = usize::try_from(offset).ok()?;
        let range = start..start.checked_add(len)?;
        let slice = m.bytes.get(range.clone())?;
        (slice.as_ptr() as usize).is_multiple_of(align).then(|| m.bytes.slice(range))
    }

    /// Unmaps from this process the whole pages inside `offset..offset + len` (the page cache
    /// keeps them; a later access faults them back in from the file).
    pub(crate) fn release(&self, offset: u64, len: usize) {
        let Some(m) = &self.map else { return };
        let Ok(start) = usize::try_from(offset) else { return };
        let (from, to) = (start.next_multiple_of(RELEASE_GRANULE), (start + len) / RELEASE_GRANULE * RELEASE_GRANULE);
        #[cfg(unix)]
        if from < to && to <= m.map.len() {
            // SAFETY: the mapping is shared and read-only, so dropping its pages discards no
            // data: a later read faults the same file pages back in. A failure only leaves
            // the pages resident, so it is ignored.
            let _ = unsafe { m.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from) };
        }
        #[cfg(not(unix))]
        let _ = (from, to);
    }
}

/// When [`LazyCheckpoint`](crate::weights::LazyCheckpoint)'s openers memory-map a safetensors file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Map {
    /// Only when the system proves the file immutable (a sealed memfd, an fs-verity file),
    /// so the mapping cannot change or vanish under safe code; the rest is read.
    IfImmutable,
    /// Always (the caller promises the file stays unchanged: [`LazyCheckpoint::open_mapped`](crate::weights::LazyCheckpoint::open_mapped)).
    Always,
}

/// Maps `file` of `size` bytes as `map` asks; `None` where it is not to be (or cannot be
/// proven safe to be) mapped.
pub(crate) fn map_file(path: &Path, file: &File, size: u64, map: Map) -> Result<Option<Mapping>> {
    let mapped = match map {
        Map::IfImmutable => memmap2::MmapOptions::new().map_if_safe(file).ok(),
        // SAFETY: the caller of `LazyCheckpoint::open_mapped` promised the file stays unchanged.
        Map::Always => Some(unsafe { Mmap::map(file) }.map_err(|e| io_err(path, format!("cannot map: {e}")))?),
    };
    let Some(mapped) = mapped else { return Ok(None) };
    if mapped.len() as u64 != size {
        return Err(io_err(path, format!("the file changed size while opened ({size} then {} bytes)", mapped.len())));
    }
    let map = Arc::new(mapped);
    Ok(Some(Mapping { bytes: bytes::Bytes::from_owner(MapOwner(map.clone())), map }))
}

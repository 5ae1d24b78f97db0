//! A checkpoint opened but not read: every tensor's name, shape and dtype from the file's
//! headers, and its bytes read only when the loader asks for them, one tensor at a time.
//!
//! `.safetensors` files (single or sharded through an index JSON) are read with one positioned
//! read per tensor straight into that tensor's buffer, or, opened with
//! [`LazyCheckpoint::open_mapped`], memory-mapped: a tensor is then handed out as the file's own
//! pages ([`LazyTensor::mapped`]), with no copy. `torch.save` files (`pytorch` feature)
//! through Burn's PyTorch reader, which also reads each tensor from the file on demand and
//! refuses, at open, any tensor that would materialise more than 10 GiB. The fix-ups a format
//! needs (fusing q/k/v rows, swapping row halves, reshaping, renaming) are recorded on the
//! [`LazyTensor`] and run on the raw bytes when it is read, so they work in any dtype and never
//! hold more than the tensor being read.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::tensor::{AllocationProperty, Bytes, DType, TensorData};

use crate::error::{Error, Result};
use crate::weights::checkpoint::Checkpoint;
use crate::weights::file::{Map, SharedFile, io_err, map_file};

/// Largest safetensors header accepted (the format's own reference reader uses 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// Where a tensor's bytes come from, and what is done to them on the way.
#[derive(Debug, Clone)]
enum Source<'a> {
    /// A byte range of a file.
    File { file: Arc<SharedFile>, offset: u64 },
    /// Data in memory (a [`Checkpoint`]'s, or supplied from a model).
    Data(Cow<'a, TensorData>),
    /// A tensor of a PyTorch file, read on demand by Burn's reader.
    #[cfg(feature = "pytorch")]
    Pytorch(Arc<PathBuf>, burn::store::burn_pack::Tensor),
    /// Several tensors' rows, concatenated.
    Rows(Vec<LazyTensor<'a>>),
    /// A tensor whose two row halves are exchanged.
    SwapHalves(Box<LazyTensor<'a>>),
    /// A byte range of another tensor (a block of its rows).
    Bytes(Box<LazyTensor<'a>>, std::ops::Range<usize>),
    /// A 2-d tensor, transposed.
    Transposed(Box<LazyTensor<'a>>),
}

/// One tensor of a [`LazyCheckpoint`]: shape and dtype known, bytes not yet read.
#[derive(Debug, Clone)]
pub struct LazyTensor<'a> {
    shape: Vec<usize>,
    dtype: DType,
    source: Source<'a>,
}

impl<'a> LazyTensor<'a> {
    /// A tensor already in memory.
    pub fn from_data(data: TensorData) -> Self {
        Self { shape: data.shape().to_vec(), dtype: data.dtype(), source: Source::Data(Cow::Owned(data)) }
    }

    /// A tensor borrowed from memory (copied when read).
    pub fn from_ref(data: &'a TensorData) -> Self {
        Self { shape: data.shape().to_vec(), dtype: data.dtype(), source: Source::Data(Cow::Borrowed(data)) }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The dtype the file stores.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Bytes the tensor occupies.
    pub fn byte_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }

    /// The tensor as the pages of its memory-mapped file, in its stored dtype, with no copy:
    /// `Some` only for a tensor of a file opened with [`LazyCheckpoint::open_mapped`], taken
    /// whole or as a [row block](Self::row_block) with no other fix-up, and starting at an
    /// address aligned for its dtype (safetensors does not require that). The data keeps the
    /// mapping alive; a backend that keeps host bytes (flex) uses them in place, and a write
    /// to them copies first (copy-on-write), never touching the file.
    pub fn mapped(&self) -> Option<TensorData> {
        let Source::File { file, offset } = &self.source else { return None };
        let shared = file.shared(*offset, self.byte_len(), self.dtype.size().max(1))?;
        let bytes = Bytes::from_shared(shared, AllocationProperty::File);
        TensorData::try_from_bytes(bytes, self.shape.clone(), self.dtype).ok()
    }

    /// Hands the pages of a [`mapped`](Self::mapped) tensor back to the page cache once its
    /// data has been copied (converted, transposed, uploaded to a device), so a load's
    /// resident memory does not grow with the file; does nothing for other tensors. Data
    /// still sharing the pages stays valid: they are faulted back in on access.
    pub fn release(&self) {
        match &self.source {
            Source::File { file, offset } => file.release(*offset, self.byte_len()),
            Source::Rows(parts) => parts.iter().for_each(LazyTensor::release),
            _ => {}
        }
    }

    /// The tensor's bytes as the blocks of rows it is made of, in order, each with its row
    /// count (a 0-d tensor counts as one row), for a copy that writes them straight into their
    /// destination: the parts of a [row concatenation](Self::concat_rows) each on its own,
    /// and a part in a memory-mapped file as the file's pages (no copy; aligned or not);
    /// anything else read.
    ///
    /// # Errors
    /// [`Error::Io`] when a file cannot be read.
    pub(crate) fn row_blocks(&self) -> Result<Vec<(bytes::Bytes, usize)>> {
        let rows = self.shape.first().copied().unwrap_or(1);
        match &self.source {
            Source::Rows(parts) => {
                let mut out = Vec::with_capacity(parts.len());
                for p in parts {
                    out.extend(p.row_blocks()?);
                }
                Ok(out)
            }
            Source::File { file, offset } => match file.shared(*offset, self.byte_len(), 1) {
                Some(pages) => Ok(vec![(pages, rows)]),
                None => Ok(vec![(self.read_bytes()?.into(), rows)]),
            },
            _ => Ok(vec![(self.read_bytes()?.into(), rows)]),
        }
    }

    /// Read the tensor, in its stored dtype, into memory of its own (a copy, also for a
    /// mapped file: see [`mapped`](Self::mapped) for the pages themselves).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read.
    pub fn read(&self) -> Result<TensorData> {
        let bytes = self.read_bytes()?;
        let len = bytes.len();
        TensorData::try_from_bytes_vec(bytes, self.shape.clone(), self.dtype).map_err(|e| Error::Io {
            path: PathBuf::from("<checkpoint>"),
            reason: format!("{len} bytes read for a tensor of shape {:?}: {e}", self.shape),
        })
    }

    fn read_bytes(&self) -> Result<Vec<u8>> {
        match &self.source {
            Source::File { file, offset } => file.read_at(*offset, self.byte_len()),
            Source::Data(data) => Ok(data.as_bytes().to_vec()),
            #[cfg(feature = "pytorch")]
            Source::Pytorch(path, t) => burn::store::bridge::to_data(t)
                .map(|d| d.as_bytes().to_vec())
                .map_err(|e| io_err(path, format!("tensor `{}`: {e}", t.name))),
            Source::Rows(parts) => {
                let mut out = Vec::with_capacity(self.byte_len());
                for p in parts {
                    out.extend_from_slice(&p.read_bytes()?);
                }
                Ok(out)
            }
            Source::SwapHalves(inner) => {
                let mut bytes = inner.read_bytes()?;
                let half = bytes.len() / 2;
                let (a, b) = bytes.split_at_mut(half);
                a.swap_with_slice(b);
                Ok(bytes)
            }
            Source::Bytes(inner, range) => Ok(inner.read_bytes()?[range.clone()].to_vec()),
            Source::Transposed(inner) => {
                let bytes = inner.read_bytes()?;
                let (rows, cols, size) = (inner.shape[0], inner.shape[1], self.dtype.size());
                let mut out = vec![0u8; bytes.len()];
                for r in 0..rows {
                    for c in 0..cols {
                        let (from, to) = ((r * cols + c) * size, (c * rows + r) * size);
                        out[to..to + size].copy_from_slice(&bytes[from..from + size]);
                    }
                }
                Ok(out)
            }
        }
    }

    /// The same elements under another shape with as many elements; `None` otherwise.
    pub fn reshaped(mut self, shape: Vec<usize>) -> Option<Self> {
        (shape.iter().product::<usize>() == self.shape.iter().product::<usize>()).then(|| {
            self.shape = shape;
            self
        })
    }

    /// The rows (first dimension) of `parts` concatenated, read lazily; `None` unless all are
    /// at least 1-d, share the trailing dimensions and the dtype.
    pub fn concat_rows(parts: Vec<Self>) -> Option<Self> {
        let first = parts.first()?;
        let (_, tail) = first.shape.split_first()?;
        let fits = |p: &Self| p.dtype == first.dtype && p.shape.split_first().is_some_and(|(_, t)| t == tail);
        if !parts.iter().all(fits) {
            return None;
        }
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        Some(Self { shape, dtype: first.dtype, source: Source::Rows(parts) })
    }

    /// Row block `index` of `count` equal blocks (e.g. the key rows of a fused `[3D, D]`
    /// in-projection); a file's block is read alone, with no read of the rest. `None` for a
    /// 0-d tensor, `index >= count` or rows not divisible by `count`.
    pub fn row_block(self, index: usize, count: usize) -> Option<Self> {
        let rows = *self.shape.first()?;
        if count == 0 || index >= count || rows % count != 0 {
            return None;
        }
        let mut shape = self.shape.clone();
        shape[0] = rows / count;
        let len = shape.iter().product::<usize>() * self.dtype.size();
        let start = index * len;
        let source = match self.source {
            Source::File { file, offset } => Source::File { file, offset: offset + start as u64 },
            _ => Source::Bytes(Box::new(self.clone()), start..start + len),
        };
        Some(Self { shape, dtype: self.dtype, source })
    }

    /// The transpose of a 2-d tensor (e.g. a projection stored `[in, out]` for a parameter
    /// `[out, in]`); `None` for other ranks.
    pub fn transposed(self) -> Option<Self> {
        let [rows, cols] = self.shape[..] else { return None };
        Some(Self { shape: vec![cols, rows], dtype: self.dtype, source: Source::Transposed(Box::new(self)) })
    }

    /// The tensor with the two halves of its rows exchanged (e.g. `(scale, shift)` ->
    /// `(shift, scale)`); `None` for a 0-d tensor or an odd number of rows.
    pub fn swap_row_halves(self) -> Option<Self> {
        let rows = *self.shape.first()?;
        (rows % 2 == 0).then(|| Self { shape: self.shape.clone(), dtype: self.dtype, source: Source::SwapHalves(Box::new(self)) })
    }
}

/// A checkpoint's tensors by name, opened but not read (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct LazyCheckpoint<'a> {
    tensors: BTreeMap<String, LazyTensor<'a>>,
}

impl<'a> From<&'a Checkpoint> for LazyCheckpoint<'a> {
    fn from(ck: &'a Checkpoint) -> Self {
        Self { tensors: ck.tensors().iter().map(|(k, v)| (k.clone(), LazyTensor::from_ref(v))).collect() }
    }
}

impl From<Checkpoint> for LazyCheckpoint<'static> {
    fn from(ck: Checkpoint) -> Self {
        Self { tensors: ck.into_tensors().into_iter().map(|(k, v)| (k, LazyTensor::from_data(v))).collect() }
    }
}

impl<'a> LazyCheckpoint<'a> {
    /// Read every tensor into memory.
    ///
    /// # Errors
    /// [`Error::Io`] when a file cannot be read.
    pub fn read_all(&self) -> Result<Checkpoint> {
        let tensors = self.tensors.iter().map(|(k, t)| Ok((k.clone(), t.read()?))).collect::<Result<_>>()?;
        Ok(Checkpoint::from_tensors(tensors))
    }

    /// The tensors.
    pub fn tensors(&self) -> &BTreeMap<String, LazyTensor<'a>> {
        &self.tensors
    }

    /// The tensor names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// One tensor by name.
    pub fn get(&self, key: &str) -> Option<&LazyTensor<'a>> {
        self.tensors.get(key)
    }

    /// Whether a key is present.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// Insert (or replace) a tensor.
    pub fn insert(&mut self, key: impl Into<String>, tensor: LazyTensor<'a>) {
        self.tensors.insert(key.into(), tensor);
    }

    /// Remove a tensor.
    pub fn remove(&mut self, key: &str) -> Option<LazyTensor<'a>> {
        self.tensors.remove(key)
    }

    /// Rename every key with `f` (a key mapped to an existing one replaces it).
    pub fn rename(&mut self, f: impl Fn(&str) -> String) {
        self.tensors = std::mem::take(&mut self.tensors).into_iter().map(|(k, v)| (f(&k), v)).collect();
    }

    /// Keep only the tensors under `prefix`, with the prefix stripped.
    pub fn retain_prefix(&mut self, prefix: &str) {
        self.tensors = std::mem::take(&mut self.tensors)
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|rest| (rest.to_string(), v)))
            .collect();
    }

    /// Replaces the tensors `parts` by their rows concatenated under `fused` (e.g. diffusers'
    /// separate `to_q`/`to_k`/`to_v` into a fused qkv projection). Does nothing unless every
    /// part is present and all fit together, so a malformed checkpoint is reported by the load.
    pub fn fuse_rows(&mut self, parts: &[String], fused: String) {
        let Some(got) = parts.iter().map(|k| self.tensors.get(k).cloned()).collect::<Option<Vec<_>>>() else { return };
        if let Some(t) = LazyTensor::concat_rows(got) {
            for k in parts {
                self.tensors.remove(k);
            }
            self.tensors.insert(fused, t);
        }
    }

    /// Replaces the tensor `fused` by equal row blocks under `parts` (in order; the inverse of
    /// [`fuse_rows`](Self::fuse_rows), e.g. a fused `in_proj_weight` into `q`, `k`, `v`).
    /// Does nothing unless `fused` is present and its rows divide evenly, so a malformed
    /// checkpoint is reported by the load.
    pub fn split_rows(&mut self, fused: &str, parts: &[String]) {
        let Some(t) = self.tensors.get(fused) else { return };
        let blocks: Option<Vec<_>> = (0..parts.len()).map(|i| t.clone().row_block(i, parts.len())).collect();
        if let Some(blocks) = blocks {
            self.tensors.remove(fused);
            self.tensors.extend(parts.iter().cloned().zip(blocks));
        }
    }

    /// Exchanges the two row halves of `key`; leaves a missing or odd-sized tensor alone.
    pub fn swap_row_halves(&mut self, key: &str) {
        if let Some(t) = self.tensors.get(key).and_then(|t| t.clone().swap_row_halves()) {
            self.tensors.insert(key.to_string(), t);
        }
    }

    /// Open a checkpoint, reading headers only: `.safetensors`; `.json` (a sharded-safetensors
    /// index such as `diffusion_pytorch_model.safetensors.index.json`, whose `weight_map` names
    /// the shards); `.pt`/`.pth`/`.bin`/`.ckpt` (`pytorch` feature). A directory is searched
    /// for `diffusion_pytorch_model.safetensors`, then its index JSON, then
    /// `model.safetensors` and its index.
    ///
    /// Tensors are read from the files with positioned reads, except from a file the system
    /// proves immutable (a sealed memfd, an fs-verity file: `memmap2::MmapOptions::map_if_safe`),
    /// which is memory-mapped as by [`open_mapped`](Self::open_mapped) with no contract to
    /// keep, since nothing can change it.
    ///
    /// # Errors
    /// [`Error::Io`] for a missing or unreadable file, an unknown extension or a malformed
    /// header (offsets outside the file, byte lengths that disagree with shape and dtype).
    pub fn open(path: impl AsRef<Path>) -> Result<LazyCheckpoint<'static>> {
        open_any(path.as_ref(), Map::IfImmutable)
    }

    /// [`open`](Self::open), memory-mapping every `.safetensors` file (PyTorch files are read
    /// as by `open`): [`LazyTensor::mapped`] then hands tensors out as the file's pages, so a
    /// backend that keeps host bytes (flex) loads them with no copy and the load's own
    /// memory stays near zero, as with safetensors' and PyTorch's mapped loads. The mapping
    /// lives as long as any tensor loaded from it.
    ///
    /// # Safety
    /// The same contract as [`memmap2::Mmap::map`] (and candle's `MmapedSafetensors::new`):
    /// the files must not be modified or truncated while anything loaded from them is alive.
    /// A file truncated under the mapping makes the next access to a lost page raise
    /// `SIGBUS` (the process dies), and a file rewritten in place changes the loaded values
    /// under code that assumes them immutable. Replacing a file by renaming a new one over it
    /// is safe (the mapping keeps the old one); this crate's own writers
    /// ([`Checkpoint::save_safetensors`]) do that. [`open`](Self::open) maps only files the
    /// system proves immutable and reads the rest, with no such contract.
    ///
    /// # Errors
    /// As [`open`](Self::open), and [`Error::Io`] when a file cannot be mapped.
    pub unsafe fn open_mapped(path: impl AsRef<Path>) -> Result<LazyCheckpoint<'static>> {
        open_any(path.as_ref(), Map::Always)
    }
}

fn open_any(path: &Path, map: Map) -> Result<LazyCheckpoint<'static>> {
    if path.is_dir() {
        for name in [
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.safetensors.index.json",
            "model.safetensors",
            "model.safetensors.index.json",
        ] {
            let p = path.join(name);
            if p.exists() {
                return open_any(&p, map);
            }
        }
        return Err(io_err(path, "directory holds no (diffusion_pytorch_)model.safetensors[.index.json]"));
    }
    if !path.exists() {
        return Err(io_err(path, "no such file"));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "safetensors" => open_safetensors(path, map),
        "json" => open_sharded(path, map),
        "pt" | "pth" | "bin" | "ckpt" => open_pytorch(path),
        _ => Err(io_err(path, "unknown checkpoint extension (expected .safetensors, .json index, .pt/.pth/.bin)")),
    }
}

fn safetensors_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F64" => DType::F64,
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "I16" => DType::I16,
        "I8" => DType::I8,
        "U64" => DType::U64,
        "U32" => DType::U32,
        "U16" => DType::U16,
        "U8" => DType::U8,
        "BOOL" => DType::Bool(burn::tensor::BoolStore::Native),
        _ => return None,
    })
}

/// Parses a safetensors header and checks every tensor's byte range against the file.
fn open_safetensors(path: &Path, map: Map) -> Result<LazyCheckpoint<'static>> {
    let mut file = File::open(path).map_err(|e| io_err(path, e))?;
    let size = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| io_err(path, format!("no safetensors header: {e}")))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER || header_len > size - 8 {
        return Err(io_err(path, format!("safetensors header length {header_len} exceeds the file or the 100 MB limit")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| io_err(path, e))?;
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| io_err(path, format!("safetensors header: {e}")))?;
    let data_start = 8 + header_len;
    let data_len = size - data_start;
    let map = map_file(path, &file, size, map)?;
    let shared = Arc::new(SharedFile { path: path.to_path_buf(), file: Mutex::new(file), map });
    let mut tensors = BTreeMap::new();
    for (key, entry) in json {
        if key == "__metadata__" {
            continue;
        }
        let bad = |why: &str| io_err(path, format!("tensor `{key}`: {why}"));
        let dtype = entry.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("no dtype"))?;
        let dtype = safetensors_dtype(dtype).ok_or_else(|| bad(&format!("unsupported dtype {dtype}")))?;
        let as_u64s = |field: &str| -> Result<Vec<u64>> {
            entry
                .get(field)
                .and_then(|v| v.as_array())
                .and_then(|a| a.iter().map(|x| x.as_u64()).collect::<Option<Vec<u64>>>())
                .ok_or_else(|| bad(&format!("no valid `{field}`")))
        };
        let shape: Vec<usize> = as_u64s("shape")?.into_iter().map(|d| d as usize).collect();
        let offsets = as_u64s("data_offsets")?;
        let [start, end] = offsets[..] else { return Err(bad("data_offsets is not [start, end]")) };
        let want = shape
            .iter()
            .try_fold(dtype.size(), |acc, d| acc.checked_mul(*d))
            .ok_or_else(|| bad("shape overflows"))?;
        if start > end || end > data_len || (end - start) as usize != want {
            return Err(bad(&format!(
                "bytes [{start}, {end}) do not hold shape {shape:?} of {dtype:?} within the file's {data_len} data bytes"
            )));
        }
        tensors.insert(
            key,
            LazyTensor { shape, dtype, source: Source::File { file: shared.clone(), offset: data_start + start } },
        );
    }
    Ok(LazyCheckpoint { tensors })
}

fn open_sharded(index: &Path, mode: Map) -> Result<LazyCheckpoint<'static>> {
    let text = std::fs::read_to_string(index).map_err(|e| io_err(index, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| io_err(index, e))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| io_err(index, "index JSON has no `weight_map` object"))?;
    let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
    shards.sort_unstable();
    shards.dedup();
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut out = LazyCheckpoint::default();
    for shard in shards {
        out.tensors.extend(open_safetensors(&dir.join(shard), mode)?.tensors);
    }
    let missing: Vec<&String> = map.keys().filter(|k| !out.tensors.contains_key(*k)).collect();
    if !missing.is_empty() {
        return Err(io_err(index, format!("shards lack tensors named in the index: {missing:?}")));
    }
    Ok(out)
}

#[cfg(feature = "pytorch")]
fn open_pytorch(path: &Path) -> Result<LazyCheckpoint<'static>> {
    use burn::store::ModuleStore;
    // Keep the file's own indices (`mlp.2` stays `mlp.2`); the key maps expect them.
    let mut store = burn::store::PytorchStore::from_file(path).map_indices_contiguous(false);
    let all = store.get_all_tensors().map_err(|e| io_err(path, e))?;
    let shared = Arc::new(path.to_path_buf());
    let tensors = all
        .iter()
        .map(|(k, t)| {
            let source = Source::Pytorch(shared.clone(), t.clone());
            let tensor = LazyTensor { shape: t.shape.to_vec(), dtype: t.dtype, source };
            (k.clone(), tensor)
        })
        .collect();
    Ok(LazyCheckpoint { tensors })
}

#[cfg(not(feature = "pytorch"))]
fn open_pytorch(path: &Path) -> Result<LazyCheckpoint<'static>> {
    Err(io_err(path, "reading PyTorch files needs the crate feature `pytorch`"))
}

#[cfg(test)]
#[path = "lazy_tests.rs"]
mod tests;

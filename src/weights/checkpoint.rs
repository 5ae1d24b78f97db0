//! A checkpoint held in memory: named tensors in their file's own layout (PyTorch layout for
//! foreign checkpoints), read from `.safetensors`, sharded safetensors (an index JSON) or,
//! with the `pytorch` feature, `torch.save` files.

use std::collections::BTreeMap;
use std::path::Path;

use burn::store::{ModuleStore, SafetensorsStore, bridge};
use burn::tensor::{DType, TensorData};

use crate::error::{Error, Result};

/// Named tensors read from a checkpoint file.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    tensors: BTreeMap<String, TensorData>,
}

fn io_err(path: &Path, reason: impl ToString) -> Error {
    Error::Io { path: path.to_path_buf(), reason: reason.to_string() }
}

fn read_store<S: ModuleStore>(path: &Path, mut store: S) -> Result<BTreeMap<String, TensorData>> {
    let all = store.get_all_tensors().map_err(|e| io_err(path, e))?;
    all.iter()
        .map(|(k, t)| Ok((k.clone(), bridge::to_data(t).map_err(|e| io_err(path, format!("{k}: {e}")))?)))
        .collect()
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read a checkpoint, choosing the format by extension: `.safetensors`; `.json`
    /// (a sharded-safetensors index such as `diffusion_pytorch_model.safetensors.index.json`,
    /// whose `weight_map` names the shards); `.pt`/`.pth`/`.bin`/`.ckpt` (`pytorch` feature).
    /// A directory is searched for `diffusion_pytorch_model.safetensors`, then its index JSON,
    /// then `model.safetensors`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            return Self::from_dir(path);
        }
        if !path.exists() {
            return Err(io_err(path, "no such file"));
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "safetensors" => Self::read_safetensors(path),
            "json" => Self::read_sharded(path),
            "pt" | "pth" | "bin" | "ckpt" => Self::read_pytorch(path),
            _ => Err(io_err(path, "unknown checkpoint extension (expected .safetensors, .json index, .pt/.pth/.bin)")),
        }
    }

    fn from_dir(dir: &Path) -> Result<Self> {
        for name in [
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.safetensors.index.json",
            "model.safetensors",
            "model.safetensors.index.json",
        ] {
            let p = dir.join(name);
            if p.exists() {
                return Self::from_file(p);
            }
        }
        Err(io_err(dir, "directory holds no (diffusion_pytorch_)model.safetensors[.index.json]"))
    }

    fn read_safetensors(path: &Path) -> Result<Self> {
        // Read the bytes ourselves so a missing/unreadable file is an I/O error, not a panic.
        let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
        let tensors = read_store(path, SafetensorsStore::from_bytes(Some(bytes)))?;
        Ok(Self { tensors })
    }

    fn read_sharded(index: &Path) -> Result<Self> {
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
        let mut out = Self::new();
        for shard in shards {
            out.tensors.extend(Self::read_safetensors(&dir.join(shard))?.tensors);
        }
        let missing: Vec<&String> = map.keys().filter(|k| !out.tensors.contains_key(*k)).collect();
        if !missing.is_empty() {
            return Err(io_err(index, format!("shards lack tensors named in the index: {missing:?}")));
        }
        Ok(out)
    }

    #[cfg(feature = "pytorch")]
    fn read_pytorch(path: &Path) -> Result<Self> {
        // Keep the file's own indices (`mlp.2` stays `mlp.2`); the key maps expect them.
        let store = burn::store::PytorchStore::from_file(path).map_indices_contiguous(false);
        let tensors = read_store(path, store)?;
        Ok(Self { tensors })
    }

    #[cfg(not(feature = "pytorch"))]
    fn read_pytorch(path: &Path) -> Result<Self> {
        Err(io_err(path, "reading PyTorch files needs the crate feature `pytorch`"))
    }

    /// Write the tensors as one `.safetensors` file (keys sorted; float, integer and bool
    /// tensors keep their dtype). Written to a temporary file and renamed, so an interrupted
    /// save never leaves a truncated file under `path`.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let werr = |e: &dyn std::fmt::Display| Error::Write { path: path.to_path_buf(), reason: e.to_string() };
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (key, t) in &self.tensors {
            let dtype = match t.dtype() {
                DType::F64 => "F64",
                DType::F32 => "F32",
                DType::F16 => "F16",
                DType::BF16 => "BF16",
                DType::I64 => "I64",
                DType::I32 => "I32",
                DType::I16 => "I16",
                DType::I8 => "I8",
                DType::U8 => "U8",
                DType::Bool(_) => "BOOL",
                other => return Err(werr(&format!("tensor `{key}` has dtype {other:?}, which safetensors cannot hold"))),
            };
            let start = data.len();
            data.extend_from_slice(t.as_bytes());
            header.insert(
                key.clone(),
                serde_json::json!({"dtype": dtype, "shape": t.shape().to_vec(), "data_offsets": [start, data.len()]}),
            );
        }
        let mut head = serde_json::to_vec(&serde_json::Value::Object(header)).map_err(|e| werr(&e))?;
        head.resize(head.len().div_ceil(8) * 8, b' '); // the format pads the header to 8 bytes
        let mut bytes = (head.len() as u64).to_le_bytes().to_vec();
        bytes.extend(head);
        bytes.extend(data);
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::write(&tmp, bytes).map_err(|e| werr(&e))?;
        std::fs::rename(&tmp, path).map_err(|e| werr(&e))
    }

    /// Wrap an existing map of tensors.
    pub fn from_tensors(tensors: BTreeMap<String, TensorData>) -> Self {
        Self { tensors }
    }

    /// The tensors.
    pub fn tensors(&self) -> &BTreeMap<String, TensorData> {
        &self.tensors
    }

    /// Consume into the map of tensors.
    pub fn into_tensors(self) -> BTreeMap<String, TensorData> {
        self.tensors
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
    pub fn get(&self, key: &str) -> Option<&TensorData> {
        self.tensors.get(key)
    }

    /// Whether a key is present.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// Insert (or replace) a tensor.
    pub fn insert(&mut self, key: impl Into<String>, data: TensorData) {
        self.tensors.insert(key.into(), data);
    }

    /// Remove a tensor.
    pub fn remove(&mut self, key: &str) -> Option<TensorData> {
        self.tensors.remove(key)
    }

    /// Remove every tensor whose key starts with `prefix` and return them keyed without it.
    pub fn take_prefix(&mut self, prefix: &str) -> BTreeMap<String, TensorData> {
        let keys: Vec<String> = self.tensors.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        keys.into_iter()
            .map(|k| {
                let v = self.tensors.remove(&k).expect("key listed");
                (k[prefix.len()..].to_string(), v)
            })
            .collect()
    }

    /// Keep only the tensors under `prefix` (e.g. `"ema."` or `"model."` of a training
    /// checkpoint), with the prefix stripped.
    pub fn sub_checkpoint(mut self, prefix: &str) -> Self {
        Self { tensors: self.take_prefix(prefix) }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_unknown_files_are_errors() {
        assert!(matches!(Checkpoint::from_file("/nonexistent/x.safetensors"), Err(Error::Io { .. })));
        let dir = std::env::temp_dir().join("dt_ckpt_test_unknown_ext");
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("w.xyz");
        std::fs::write(&f, b"nope").unwrap();
        assert!(matches!(Checkpoint::from_file(&f), Err(Error::Io { .. })));
        let g = dir.join("garbage.safetensors");
        std::fs::write(&g, b"not a safetensors file").unwrap();
        assert!(matches!(Checkpoint::from_file(&g), Err(Error::Io { .. })));
        let empty = dir.join("empty_dir");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(matches!(Checkpoint::from_file(&empty), Err(Error::Io { .. })));
    }

    #[test]
    fn safetensors_roundtrip_keeps_dtypes() {
        let mut c = Checkpoint::new();
        c.insert("a.weight", TensorData::new(vec![1.5f32, -2.0, 3.25, 0.0], [2, 2]));
        c.insert("b.index", TensorData::new(vec![7i64, -1], [2]));
        let path = std::env::temp_dir().join(format!("dt_ckpt_rt_{}.safetensors", std::process::id()));
        c.save_safetensors(&path).unwrap();
        let back = Checkpoint::from_file(&path).unwrap();
        for (k, v) in c.tensors() {
            let w = back.get(k).unwrap();
            assert_eq!((w.dtype(), w.shape(), w.as_bytes()), (v.dtype(), v.shape(), v.as_bytes()), "{k}");
        }
        std::fs::remove_file(&path).unwrap();
        assert!(c.save_safetensors("/no/such/dir/x.safetensors").is_err());
    }

    #[test]
    fn prefixes() {
        let mut c = Checkpoint::new();
        c.insert("input.x", TensorData::from([1.0f32]));
        c.insert("w", TensorData::from([2.0f32]));
        let inputs = c.take_prefix("input.");
        assert!(inputs.contains_key("x"));
        assert_eq!(c.len(), 1);
        assert!(c.contains("w"));
    }
}

//! A checkpoint held in memory: named tensors in their file's own layout (PyTorch layout for
//! foreign checkpoints), read whole from any file [`LazyCheckpoint::open`] reads, built in
//! code, or exported from a model; written as `.safetensors`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{DType, TensorData};

use crate::error::{Error, Result};
use crate::weights::lazy::LazyCheckpoint;

/// Named tensors read from a checkpoint file.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    tensors: BTreeMap<String, TensorData>,
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read a whole checkpoint into memory (formats: [`LazyCheckpoint::open`]). To load a
    /// model, prefer [`LoadWeights::load_weights`](crate::weights::LoadWeights::load_weights),
    /// which streams the file instead.
    ///
    /// # Errors
    /// [`Error::Io`] for a missing, unreadable or malformed file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        LazyCheckpoint::open(path)?.read_all()
    }

    /// Write the tensors as one `.safetensors` file (keys sorted; float, integer and bool
    /// tensors keep their dtype). Written to a temporary file, fsynced, renamed and the folder
    /// fsynced (a failed write removes the temporary), so an interrupted
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
        crate::durable::write_atomic(path, &bytes)
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

    #[test]
    fn saves_are_atomic_and_leave_no_temporary() {
        let dir = std::env::temp_dir().join(format!("dt_ckpt_atomic_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ck = Checkpoint::new();
        ck.insert("w".to_string(), TensorData::new(vec![1.0f32, 2.0], [2]));
        let path = dir.join("a.safetensors");
        ck.save_safetensors(&path).unwrap();
        ck.insert("w".to_string(), TensorData::new(vec![3.0f32, 4.0, 5.0], [3]));
        ck.save_safetensors(&path).unwrap(); // replaces the old file in one rename
        let back = Checkpoint::from_file(&path).unwrap();
        assert_eq!(back.tensors()["w"].shape().to_vec(), vec![3]);
        let names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, vec!["a.safetensors".to_string()], "no temporary left behind");
        // a save that cannot be written is an error and leaves nothing
        assert!(matches!(ck.save_safetensors(dir.join("missing/b.safetensors")), Err(Error::Write { .. })));
        assert!(!dir.join("missing").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

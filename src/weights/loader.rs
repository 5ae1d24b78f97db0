//! Key maps by rules ([`KeyMap`]), eager row helpers for exports, and Burn's own format
//! (burnpack) for bit-exact save and reload.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{DType, TensorData};

use crate::error::{Error, Result};
use crate::weights::checkpoint::Checkpoint;

/// Segment-aligned renames from module paths to checkpoint keys.
///
/// A rule `("t_embedder.linear_1", "t_embedder.mlp.0")` rewrites every occurrence of those
/// whole dotted segments, wherever they sit in the path (`blocks.3.x` matches rule `x` too).
/// Rules apply in order.
#[derive(Debug, Clone, Default)]
pub struct KeyMap {
    rules: Vec<(String, String)>,
}

impl KeyMap {
    /// A key map from `(module segment(s), checkpoint segment(s))` rules.
    pub fn new<S: Into<String>>(rules: impl IntoIterator<Item = (S, S)>) -> Self {
        Self { rules: rules.into_iter().map(|(a, b)| (a.into(), b.into())).collect() }
    }

    /// Append more rules.
    pub fn with_rules<S: Into<String>>(mut self, rules: impl IntoIterator<Item = (S, S)>) -> Self {
        self.rules.extend(rules.into_iter().map(|(a, b)| (a.into(), b.into())));
        self
    }

    /// The checkpoint key of a module path.
    pub fn checkpoint_key(&self, module_path: &str) -> String {
        let mut s = format!(".{module_path}.");
        for (from, to) in &self.rules {
            s = s.replace(&format!(".{from}."), &format!(".{to}."));
        }
        s[1..s.len() - 1].to_string()
    }
}

/// Splits the rows of `fused` into `parts.len()` equal blocks stored under `parts` (in
/// order), removing `fused`; the dtype is kept (the inverse of
/// [`LazyCheckpoint::fuse_rows`](crate::weights::LazyCheckpoint::fuse_rows), for exports).
pub(crate) fn split_rows(checkpoint: &mut Checkpoint, fused: &str, parts: &[String]) -> Result<()> {
    let data = checkpoint
        .remove(fused)
        .ok_or_else(|| Error::InvalidArgument(format!("no tensor `{fused}` to split")))?;
    let shape = data.shape().to_vec();
    let n = parts.len();
    if shape.is_empty() || n == 0 || shape[0] % n != 0 {
        return Err(Error::InvalidArgument(format!("cannot split `{fused}` of shape {shape:?} into {n} row blocks")));
    }
    let dtype = data.dtype();
    let bytes = data.as_bytes();
    let chunk = bytes.len() / n;
    for (i, key) in parts.iter().enumerate() {
        let mut s = shape.clone();
        s[0] /= n;
        checkpoint.insert(key.clone(), TensorData::from_bytes_vec(bytes[i * chunk..(i + 1) * chunk].to_vec(), s, dtype));
    }
    Ok(())
}

/// Exchanges the two row halves of `key` in place (dtype kept); leaves a missing or odd-sized
/// tensor alone.
pub(crate) fn swap_row_halves(checkpoint: &mut Checkpoint, key: &str) {
    let Some(data) = checkpoint.remove(key) else { return };
    let shape = data.shape().to_vec();
    if shape.first().is_some_and(|r| r % 2 == 0) {
        let dtype = data.dtype();
        let mut bytes = data.as_bytes().to_vec();
        let half = bytes.len() / 2;
        let (a, b) = bytes.split_at_mut(half);
        a.swap_with_slice(b);
        checkpoint.insert(key, TensorData::from_bytes_vec(bytes, shape, dtype));
    } else {
        checkpoint.insert(key, data);
    }
}

/// The values of `data` as f32 (empty if they cannot be converted).
pub(crate) fn to_f32(data: &TensorData) -> Vec<f32> {
    data.clone().convert_dtype(DType::F32).try_into_vec::<f32>().unwrap_or_default()
}

/// Save a module in Burn's own format (burnpack), bit-exactly.
///
/// # Errors
/// [`Error::Write`] when the file cannot be written.
pub fn save_burnpack<M: Module>(module: &M, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    module.clone().save_file(path).map_err(|e| Error::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Load a module saved by [`save_burnpack`] into a copy of `module` (same architecture).
///
/// # Errors
/// [`Error::Io`] when the file is missing or does not fit the module.
pub fn load_burnpack<M: Module>(module: &M, path: impl AsRef<Path>) -> Result<M> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(Error::Io { path: path.to_path_buf(), reason: "no such file".into() });
    }
    module.clone().try_load_file(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_swap_keep_the_dtype() {
        let mut ck = Checkpoint::new();
        let vals: Vec<half::bf16> = (0..12).map(|i| half::bf16::from_f32(i as f32)).collect();
        ck.insert("qkv", TensorData::new(vals, [6, 2]));
        let names: Vec<String> = ["q", "k", "v"].iter().map(|s| s.to_string()).collect();
        split_rows(&mut ck, "qkv", &names).unwrap();
        let k = ck.get("k").unwrap();
        assert_eq!((k.dtype(), k.shape().to_vec()), (DType::BF16, vec![2, 2]));
        assert_eq!(to_f32(k), vec![4.0, 5.0, 6.0, 7.0]);
        assert!(split_rows(&mut ck, "qkv", &names).is_err());
        swap_row_halves(&mut ck, "k");
        assert_eq!(to_f32(ck.get("k").unwrap()), vec![6.0, 7.0, 4.0, 5.0]);
        ck.insert("odd", TensorData::new(vec![1.0f32; 3], [3]));
        swap_row_halves(&mut ck, "odd");
        assert_eq!(ck.get("odd").unwrap().shape().to_vec(), vec![3]);
    }

    #[test]
    fn keymap_is_segment_aligned() {
        let m = KeyMap::new([("linear_1", "mlp.0"), ("ada_ln_modulation.linear", "adaLN_modulation.1")]);
        assert_eq!(m.checkpoint_key("t_embedder.linear_1.weight"), "t_embedder.mlp.0.weight");
        assert_eq!(m.checkpoint_key("blocks.3.ada_ln_modulation.linear.bias"), "blocks.3.adaLN_modulation.1.bias");
        assert_eq!(m.checkpoint_key("x.linear_10.weight"), "x.linear_10.weight");
    }
}

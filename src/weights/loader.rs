//! Loading a checkpoint into any module of the crate through a key map, with complete error
//! reports, plus Burn's own format (burnpack) for bit-exact save and reload.

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::Module;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, bridge};
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

/// Load `checkpoint` (PyTorch layout: linear weights `[out, in]`, norms `weight`/`bias`) into
/// a copy of `module` and return it; `key_of` maps each parameter's module path (with
/// PyTorch's parameter names, e.g. `norm1.weight`) to its checkpoint key.
///
/// Every parameter must be found with the right shape and every checkpoint tensor must be
/// used; otherwise the error lists all missing, unexpected and mis-shaped keys. `module`
/// itself is never modified. Tensors are converted to the parameter's dtype.
pub fn load_module<M: Module + Clone>(
    module: &M,
    checkpoint: &Checkpoint,
    key_of: impl Fn(&str) -> String,
) -> Result<M> {
    let expected = module.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true);
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    let mut used = BTreeSet::new();
    let mut tensors = Vec::with_capacity(expected.len());
    for param in &expected {
        let key = key_of(&param.name);
        match checkpoint.get(&key) {
            None => missing.push(key),
            Some(data) => {
                used.insert(key.clone());
                let want: Vec<usize> = param.shape.to_vec();
                let got: Vec<usize> = data.shape().to_vec();
                if want != got {
                    mismatched.push((key, want, got));
                } else {
                    let data = data.clone().convert_dtype(param.dtype);
                    tensors.push(bridge::from_data(data, param.name.clone(), None));
                }
            }
        }
    }
    let unexpected: Vec<String> =
        checkpoint.tensors().keys().filter(|k| !used.contains(*k)).cloned().collect();
    if !(missing.is_empty() && unexpected.is_empty() && mismatched.is_empty()) {
        return Err(Error::CheckpointMismatch { missing, unexpected, mismatched });
    }
    let mut out = module.clone();
    let res = out.apply(tensors, None, Some(Box::new(PyTorchToBurnAdapter)), true);
    if !res.errors.is_empty() || !res.missing.is_empty() || !res.unused.is_empty() {
        return Err(Error::CheckpointMismatch {
            missing: res.missing.iter().map(|(p, _)| p.clone()).collect(),
            unexpected: res.unused.clone(),
            mismatched: res
                .errors
                .iter()
                .map(|e| (format!("{e:?}"), Vec::new(), Vec::new()))
                .collect(),
        });
    }
    Ok(out)
}

/// The module's parameters as a [`Checkpoint`] in PyTorch layout under `key_of` names: the
/// inverse of [`load_module`], for exporting to the reference implementations.
pub fn export_module<M: Module>(module: &M, key_of: impl Fn(&str) -> String) -> Result<Checkpoint> {
    let mut out = Checkpoint::new();
    for t in module.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true) {
        let key = key_of(&t.name);
        let data = bridge::into_data(t)
            .map_err(|e| Error::InvalidArgument(format!("cannot read parameter {key}: {e}")))?;
        out.insert(key, data);
    }
    Ok(out)
}

/// Concatenates the rows (first dimension) of the tensors `parts` into one tensor stored under
/// `fused`, removing the parts (e.g. diffusers' separate `to_q`/`to_k`/`to_v` into the crate's
/// fused qkv projection). Does nothing unless every part is present and all have the same
/// trailing dimensions, so a malformed checkpoint is reported by [`load_module`] instead.
/// Data is converted to f32 (the load converts it to the parameter's dtype).
pub(crate) fn fuse_rows(checkpoint: &mut Checkpoint, parts: &[String], fused: String) {
    let Some(first) = parts.first().and_then(|k| checkpoint.get(k)) else { return };
    let Some((_, tail)) = first.shape().split_first() else { return };
    let tail = tail.to_vec();
    let fits = |k: &String| {
        checkpoint.get(k).is_some_and(|d| d.shape().split_first().is_some_and(|(_, t)| *t == tail[..]))
    };
    if !parts.iter().all(fits) {
        return;
    }
    let parts: Vec<TensorData> = parts.iter().map(|k| checkpoint.remove(k).expect("checked")).collect();
    let mut shape = parts[0].shape().to_vec();
    shape[0] = parts.iter().map(|p| p.shape()[0]).sum();
    let data: Vec<f32> = parts.iter().flat_map(to_f32).collect();
    checkpoint.insert(fused, TensorData::new(data, shape));
}

/// The inverse of [`fuse_rows`]: splits the rows of `fused` into `parts.len()` equal blocks
/// stored under `parts` (in order), removing `fused`.
pub(crate) fn split_rows(checkpoint: &mut Checkpoint, fused: &str, parts: &[String]) -> Result<()> {
    let data = checkpoint
        .remove(fused)
        .ok_or_else(|| Error::InvalidArgument(format!("no tensor `{fused}` to split")))?;
    let shape = data.shape().to_vec();
    let n = parts.len();
    if shape.is_empty() || n == 0 || shape[0] % n != 0 {
        return Err(Error::InvalidArgument(format!("cannot split `{fused}` of shape {shape:?} into {n} row blocks")));
    }
    let values = to_f32(&data);
    let chunk = values.len() / n;
    for (i, key) in parts.iter().enumerate() {
        let mut s = shape.clone();
        s[0] /= n;
        checkpoint.insert(key.clone(), TensorData::new(values[i * chunk..(i + 1) * chunk].to_vec(), s));
    }
    Ok(())
}

/// The values of `data` as f32 (empty if they cannot be converted).
pub(crate) fn to_f32(data: &TensorData) -> Vec<f32> {
    data.clone().convert_dtype(DType::F32).try_into_vec::<f32>().unwrap_or_default()
}

/// Save a module in Burn's own format (burnpack), bit-exactly.
pub fn save_burnpack<M: Module>(module: &M, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    module.clone().save_file(path).map_err(|e| Error::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Load a module saved by [`save_burnpack`] into a copy of `module` (same architecture).
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
    fn fuse_and_split_rows_roundtrip() {
        let mut ck = Checkpoint::new();
        let names: Vec<String> = ["q", "k", "v"].iter().map(|s| s.to_string()).collect();
        for (i, n) in names.iter().enumerate() {
            let base = i as f32 * 10.0;
            ck.insert(n.clone(), TensorData::new(vec![base, base + 1.0, base + 2.0, base + 3.0], [2, 2]));
        }
        fuse_rows(&mut ck, &names, "qkv".into());
        assert_eq!(ck.len(), 1);
        let fused = ck.get("qkv").unwrap();
        assert_eq!(fused.shape().to_vec(), vec![6, 2]);
        assert_eq!(to_f32(fused), vec![0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0, 20.0, 21.0, 22.0, 23.0]);
        split_rows(&mut ck, "qkv", &names).unwrap();
        assert_eq!(to_f32(ck.get("k").unwrap()), vec![10.0, 11.0, 12.0, 13.0]);
        assert_eq!(ck.get("v").unwrap().shape().to_vec(), vec![2, 2]);
        assert!(split_rows(&mut ck, "qkv", &names).is_err());
        // a part with other trailing dims (or a missing part) leaves everything as it was
        ck.insert("v", TensorData::new(vec![0.0f32; 6], [2, 3]));
        fuse_rows(&mut ck, &names, "qkv".into());
        assert_eq!(ck.len(), 3);
        ck.remove("v");
        fuse_rows(&mut ck, &names, "qkv".into());
        assert_eq!(ck.len(), 2);
        // 0-d tensors cannot be row-concatenated
        ck.insert("v", TensorData::new(vec![1.0f32], Vec::<usize>::new()));
        ck.insert("q", TensorData::new(vec![1.0f32], Vec::<usize>::new()));
        fuse_rows(&mut ck, &names, "qkv".into());
        assert!(!ck.contains("qkv"));
    }

    #[test]
    fn keymap_is_segment_aligned() {
        let m = KeyMap::new([("linear_1", "mlp.0"), ("ada_ln_modulation.linear", "adaLN_modulation.1")]);
        assert_eq!(m.checkpoint_key("t_embedder.linear_1.weight"), "t_embedder.mlp.0.weight");
        assert_eq!(m.checkpoint_key("blocks.3.ada_ln_modulation.linear.bias"), "blocks.3.adaLN_modulation.1.bias");
        assert_eq!(m.checkpoint_key("x.linear_10.weight"), "x.linear_10.weight");
    }
}

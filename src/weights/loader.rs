//! Loading a checkpoint into any module of the crate through a key map, with complete error
//! reports, plus Burn's own format (burnpack) for bit-exact save and reload.

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::Module;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, bridge};

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
    fn keymap_is_segment_aligned() {
        let m = KeyMap::new([("linear_1", "mlp.0"), ("ada_ln_modulation.linear", "adaLN_modulation.1")]);
        assert_eq!(m.checkpoint_key("t_embedder.linear_1.weight"), "t_embedder.mlp.0.weight");
        assert_eq!(m.checkpoint_key("blocks.3.ada_ln_modulation.linear.bias"), "blocks.3.adaLN_modulation.1.bias");
        assert_eq!(m.checkpoint_key("x.linear_10.weight"), "x.linear_10.weight");
    }
}

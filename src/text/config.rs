//! Reading transformers' `config.json` by its own option names, with the reference's defaults
//! for absent options.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// Typed access to the options of a JSON config; an absent or `null` option takes the given
/// default, an option of the wrong type is an [`Error::InvalidConfig`] naming it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsonConfig<'a> {
    value: &'a Value,
}

impl<'a> JsonConfig<'a> {
    pub(crate) fn new(value: &'a Value) -> Self {
        Self { value }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    fn wrong(key: &str, what: &str, v: &Value) -> Error {
        Error::InvalidConfig(format!("option `{key}` must be {what}, got {v}"))
    }

    pub(crate) fn usize(&self, key: &str, default: usize) -> Result<usize> {
        self.get(key).map_or(Ok(default), |v| v.as_u64().map(|x| x as usize).ok_or_else(|| Self::wrong(key, "a non-negative integer", v)))
    }

    pub(crate) fn i64(&self, key: &str, default: i64) -> Result<i64> {
        self.get(key).map_or(Ok(default), |v| v.as_i64().ok_or_else(|| Self::wrong(key, "an integer", v)))
    }

    pub(crate) fn f64(&self, key: &str, default: f64) -> Result<f64> {
        self.get(key).map_or(Ok(default), |v| v.as_f64().ok_or_else(|| Self::wrong(key, "a number", v)))
    }

    pub(crate) fn bool(&self, key: &str, default: bool) -> Result<bool> {
        self.get(key).map_or(Ok(default), |v| v.as_bool().ok_or_else(|| Self::wrong(key, "true or false", v)))
    }

    /// A nested object (`Value::Null` when absent, so its options take their defaults).
    pub(crate) fn object(&self, key: &str) -> Result<JsonConfig<'a>> {
        static NULL: Value = Value::Null;
        match self.get(key) {
            None => Ok(JsonConfig::new(&NULL)),
            Some(v) if v.is_object() => Ok(JsonConfig::new(v)),
            Some(v) => Err(Self::wrong(key, "an object", v)),
        }
    }

    /// Whether the option is present (and not `null`).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn string(&self, key: &str, default: &str) -> Result<String> {
        self.get(key).map_or(Ok(default.to_string()), |v| {
            v.as_str().map(str::to_string).ok_or_else(|| Self::wrong(key, "a string", v))
        })
    }
}

/// Parse a JSON file.
pub(crate) fn read_config_file(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_path_buf(), reason: e.to_string() })?;
    serde_json::from_str(&text).map_err(|e| Error::Io { path: path.to_path_buf(), reason: e.to_string() })
}

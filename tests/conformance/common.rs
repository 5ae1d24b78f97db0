//! Fixture loading and comparison shared by every kind of the conformance test.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::prelude::*;
use burn::tensor::FloatDType;
use diffusion_transformers::weights::Checkpoint;
use serde_json::Value;

/// Prefixes of non-weight tensors in a fixture file.
const DATA_PREFIXES: [&str; 5] = ["input.", "output.", "intermediate.", "schedule.", "eval_state."];

/// Prefixes of the tensors a kind must use: a fixture holding one its kind never reads fails.
const MUST_USE_PREFIXES: [&str; 3] = ["input.", "output.", "intermediate."];

/// One fixture: its sidecar, its data tensors (keys keep their prefix) and its weights.
pub struct Fixture {
    pub sidecar: Value,
    pub data: BTreeMap<String, TensorData>,
    pub weights: Checkpoint,
    pub atol: f64,
    pub rtol: f64,
    pub device: Device,
    /// Keys of `data` read so far (through [`Fixture::raw`] and the accessors built on it).
    used: RefCell<BTreeSet<String>>,
}

pub type Outcome = Result<f64, String>;

impl Fixture {
    pub fn load(json: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(json).map_err(|e| format!("cannot read sidecar: {e}"))?;
        let sidecar: Value = serde_json::from_str(&text).map_err(|e| format!("bad sidecar JSON: {e}"))?;
        let st: PathBuf = json.with_extension("safetensors");
        let mut weights = Checkpoint::from_file(&st).map_err(|e| e.to_string())?;
        let mut data = BTreeMap::new();
        for p in DATA_PREFIXES {
            for (k, v) in weights.take_prefix(p) {
                data.insert(format!("{p}{k}"), v);
            }
        }
        let tol = sidecar.get("tolerance");
        let num = |k: &str, d: f64| tol.and_then(|t| t.get(k)).and_then(Value::as_f64).unwrap_or(d);
        Ok(Self {
            atol: num("atol", 1e-4),
            rtol: num("rtol", 1e-4),
            sidecar,
            data,
            weights,
            device: device()?,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    pub fn kind(&self) -> &str {
        self.sidecar.get("kind").and_then(Value::as_str).unwrap_or("<none>")
    }

    pub fn config(&self) -> &Value {
        self.sidecar.get("config").unwrap_or(&Value::Null)
    }

    /// A field of the sidecar (top level).
    pub fn field(&self, key: &str) -> Option<&Value> {
        self.sidecar.get(key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.data.contains_key(key)
    }

    pub fn raw(&self, key: &str) -> Result<TensorData, String> {
        let d = self.data.get(key).cloned().ok_or_else(|| format!("fixture has no tensor `{key}`"))?;
        self.used.borrow_mut().insert(key.to_string());
        Ok(d)
    }

    /// Fails when the fixture holds an `input.`/`output.`/`intermediate.` tensor that the kind
    /// never read, so that nothing in a fixture is silently ignored.
    pub fn check_all_used(&self) -> Result<(), String> {
        let used = self.used.borrow();
        let unused: Vec<&str> = self
            .data
            .keys()
            .filter(|k| MUST_USE_PREFIXES.iter().any(|p| k.starts_with(p)) && !used.contains(*k))
            .map(String::as_str)
            .collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(format!("kind `{}` ignores the fixture tensors {}", self.kind(), unused.join(", ")))
        }
    }

    pub fn float<const D: usize>(&self, key: &str) -> Result<Tensor<D>, String> {
        let d = self.raw(key)?;
        if d.shape().len() != D {
            return Err(format!("`{key}` has rank {}, expected {D}", d.shape().len()));
        }
        Ok(Tensor::<D>::from_data(d.convert_dtype(burn::tensor::DType::F32), &self.device))
    }

    /// Timesteps `[B]` (stored as integers or floats) as an f32 tensor whatever the device's
    /// float dtype, as diffusers' pipelines keep them: bf16 would round 999 to 1000.
    pub fn timesteps(&self, key: &str) -> Result<Tensor<1>, String> {
        let d = self.raw(key)?;
        if d.shape().len() != 1 {
            return Err(format!("`{key}` has rank {}, expected 1", d.shape().len()));
        }
        let dtype = burn::tensor::DType::F32;
        Ok(Tensor::<1>::from_data(d.convert_dtype(dtype), (&self.device, dtype)))
    }

    pub fn int<const D: usize>(&self, key: &str) -> Result<Tensor<D, Int>, String> {
        let d = self.raw(key)?;
        if d.shape().len() != D {
            return Err(format!("`{key}` has rank {}, expected {D}", d.shape().len()));
        }
        Ok(Tensor::<D, Int>::from_data(d.convert_dtype(burn::tensor::DType::I64), &self.device))
    }

    /// Compare `got` with the reference tensor `key`: every element must satisfy
    /// `|got - ref| <= atol + rtol * |ref|`. Returns the max abs error.
    pub fn compare<const D: usize>(&self, key: &str, got: Tensor<D>) -> Outcome {
        let reference = self.raw(key)?;
        compare_data(key, got.into_data(), reference, self.atol, self.rtol)
    }
}

/// The device every fixture runs on, from `DT_DEVICE` (`flex`, the default; `ndarray`, `wgpu`,
/// `cuda`). A backend whose cargo feature is not compiled in is an error that names the feature.
/// With `DT_DTYPE=f16|bf16` the device's float dtype is configured before any tensor exists.
pub fn device() -> Result<Device, String> {
    static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let name = std::env::var("DT_DEVICE").unwrap_or_else(|_| "flex".into());
            let mut device = device_named(&name)?;
            if let Some(dtype) = reduced_precision()? {
                if !device.supports_dtype(dtype) {
                    return Err(format!("DT_DEVICE={name} does not support {dtype:?}"));
                }
                device.configure(dtype).map_err(|e| format!("cannot configure {name} for {dtype:?}: {e}"))?;
            }
            Ok(device)
        })
        .clone()
}

/// `DT_DTYPE`: `f32` (the default, `None`), `f16` or `bf16`. In f16/bf16 the harness measures
/// rather than checks: a comparison fails only on a shape mismatch or a non-finite value, and
/// the errors against the (f32) reference are reported ([`take_relative_error`]).
pub fn reduced_precision() -> Result<Option<FloatDType>, String> {
    match std::env::var("DT_DTYPE").as_deref() {
        Err(_) | Ok("f32") => Ok(None),
        Ok("f16") => Ok(Some(FloatDType::F16)),
        Ok("bf16") => Ok(Some(FloatDType::BF16)),
        Ok(other) => Err(format!("unknown DT_DTYPE `{other}` (expected f32, f16 or bf16)")),
    }
}

fn measuring() -> bool {
    matches!(reduced_precision(), Ok(Some(_)))
}

thread_local! {
    /// Largest `max |ours - ref| / max |ref|` of the comparisons since the last take.
    static RELATIVE: Cell<f64> = const { Cell::new(0.0) };
}

/// The largest normwise relative error (`max |ours - ref| / max |ref|` of one compared tensor)
/// since the last call, then reset (measuring mode only).
pub fn take_relative_error() -> f64 {
    RELATIVE.with(|r| r.replace(0.0))
}

fn device_named(name: &str) -> Result<Device, String> {
    match name {
        "flex" => Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)] // burn 0.22 deprecates ndarray in favour of flex; it is still a backend users pick
        "ndarray" => Ok(Device::ndarray()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        feature if ["ndarray", "wgpu", "cuda"].contains(&feature) => Err(format!(
            "DT_DEVICE={name} needs the `{feature}` feature: cargo test --test conformance --features {feature}"
        )),
        other => Err(format!("unknown DT_DEVICE `{other}` (expected flex, ndarray, wgpu or cuda)")),
    }
}

pub fn to_f64(d: TensorData) -> Vec<f64> {
    d.convert_dtype(burn::tensor::DType::F64).try_into_vec::<f64>().expect("f64 data")
}

pub fn compare_data(key: &str, got: TensorData, reference: TensorData, atol: f64, rtol: f64) -> Outcome {
    if got.shape() != reference.shape() {
        return Err(format!("`{key}`: shape {:?}, reference {:?}", got.shape(), reference.shape()));
    }
    let (g, r) = (to_f64(got), to_f64(reference));
    let measuring = measuring();
    let (mut max_err, mut max_ref): (f64, f64) = (0.0, 0.0);
    for (i, (a, b)) in g.iter().zip(&r).enumerate() {
        let err = (a - b).abs();
        if measuring && !a.is_finite() && b.is_finite() {
            return Err(format!("`{key}`[{i}]: got {a}, reference {b}"));
        }
        if !measuring && !(err <= atol + rtol * b.abs()) {
            return Err(format!("`{key}`[{i}]: got {a}, reference {b} (|err| {err:.3e} > atol {atol:e} + rtol {rtol:e} * |ref|)"));
        }
        max_err = max_err.max(err);
        max_ref = max_ref.max(b.abs());
    }
    if measuring && max_ref > 0.0 {
        RELATIVE.with(|rel| rel.set(rel.get().max(max_err / max_ref)));
    }
    Ok(max_err)
}

/// Integer/usize/float config accessors with a clear error for missing fields.
pub fn cfg_usize(cfg: &Value, key: &str) -> Result<usize, String> {
    cfg.get(key).and_then(Value::as_u64).map(|v| v as usize).ok_or_else(|| format!("config lacks integer `{key}`"))
}

pub fn cfg_f64(cfg: &Value, key: &str) -> Result<f64, String> {
    cfg.get(key).and_then(Value::as_f64).ok_or_else(|| format!("config lacks number `{key}`"))
}

pub fn cfg_bool(cfg: &Value, key: &str) -> Result<bool, String> {
    cfg.get(key).and_then(Value::as_bool).ok_or_else(|| format!("config lacks bool `{key}`"))
}


/// Run several comparisons, returning the largest error or the first failure.
pub fn all(results: impl IntoIterator<Item = Outcome>) -> Outcome {
    let mut max: f64 = 0.0;
    for r in results {
        max = max.max(r?);
    }
    Ok(max)
}

pub fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

//! One loader for every model: a checkpoint format is a [`CheckpointFormat`] (key map, load
//! fix-ups, export fix-ups), and [`load`] / [`export`] do the rest for any module.
//!
//! # How a load runs
//! 1. The file is opened as a [`LazyCheckpoint`]: names, shapes and dtypes from its headers,
//!    no tensor data.
//! 2. [`CheckpointFormat::prepare`] rewrites it lazily (fuse q/k/v rows, drop or rename keys,
//!    supply fixed buffers); the fix-ups run on each tensor's bytes when it is read.
//! 3. Every parameter's checkpoint key ([`CheckpointFormat::key`]) is looked up and its shape
//!    and kind (float/int/bool) compared, from the headers alone. Any missing, unexpected or
//!    mis-shaped key fails the load with all of them listed, before any data is read, and the
//!    model is untouched.
//! 4. Tensors are read a batch of at most [`BATCH_BYTES`] at a time, converted from the
//!    file's dtype to the parameter's (bf16/f16 are never widened on the way), `Linear`
//!    weights transposed from PyTorch's `[out, in]` to Burn's `[in, out]` (row layout: see
//!    below for the column layout), and moved into the
//!    model in place, each replacing (and freeing) the parameter it loads. Peak memory is the
//!    model plus one batch; on a GPU device each tensor goes straight to the device.
//!
//! # Memory-mapped files
//! From a checkpoint opened with [`LazyCheckpoint::open_mapped`], a tensor that needs no
//! fix-up is not read at all: its data is the file's own pages ([`LazyTensor::mapped`]). On
//! a backend that keeps host bytes (flex), a parameter in the file's dtype and layout then
//! *is* those pages, with no copy (copy-on-write if it is later modified, e.g. by an
//! optimizer); a converted or transposed one is written straight from the pages into its
//! own memory, and a GPU backend uploads from them. Pages copied from are handed back to the
//! page cache as the load goes ([`LazyTensor::release`]), so a load's resident memory is
//! the model's plus one batch, as with reads.
//!
//! A tensor that is copied (transposed, converted, or fused from several, e.g. q/k/v) is
//! written in one pass from the file's pages (or a read) into memory of its own, split over
//! the CPU threads, and on Linux into transparent huge pages when it is 2 MiB or more, so its
//! first write faults 512 times fewer pages (`weights::buffer`).
//!
//! `Linear` weights in Burn's default row layout are copied (a cache-blocked transpose). A
//! `Linear` built with [`LinearLayout::Col`](crate::weights::LinearLayout) keeps the file's
//! `[out, in]` data and is loaded with no transpose (from a mapped file: no copy), and
//! [`LoadOptions::linear_layout`] loads row-layout weights the same way, as transposed views
//! of the file's data; flex's matrix product is slower on those views at few rows (see
//! [`weights::layout`](crate::weights::layout) for when to choose it).
//!
//! Once step 3 has passed, only an I/O error (a file changed or truncated under the load, a
//! failing disk) can still fail the load; the model then holds the tensors loaded before it
//! and its own values for the rest, and the error says so.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use std::collections::HashMap;

use burn::store::{BurnToPyTorchAdapter, ModuleAdapter, ModuleContext, ModuleSnapshot, bridge};
use burn::tensor::{Bool, DType, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::weights::apply::set_params;
use crate::weights::buffer::Buffer;
use crate::weights::checkpoint::Checkpoint;
use crate::weights::copy::{concat_into, threads_for, transpose_into};
use crate::weights::layout::{ExportAdapter, Handoff, LoadOptions, VisitPath, col_linear_weights, load_transposes};
use crate::weights::lazy::{LazyCheckpoint, LazyTensor};

/// Largest amount of tensor data read ahead of moving it into the model (64 MiB; a single
/// larger tensor is read alone).
pub const BATCH_BYTES: usize = 64 << 20;

/// How model `M`'s parameters are named and laid out in one checkpoint format.
///
/// Module paths use PyTorch's parameter names (`norm.weight`, not Burn's `gamma`) and
/// PyTorch's layout (linear weights `[out, in]`); Burn's conversions are applied by the loader.
pub trait CheckpointFormat<M> {
    /// The checkpoint key of a module parameter path.
    fn key(&self, module_path: &str) -> String;

    /// Rewrites a checkpoint into the names and layouts [`key`](Self::key) expects, before the
    /// keys are checked: fused projections, renamed legacy keys, buffers supplied from
    /// `model`. Work on the [`LazyCheckpoint`]'s lazy operations so no data is read here.
    ///
    /// # Errors
    /// A checkpoint that cannot be in this format at all (with a hint what to do instead).
    fn prepare(&self, model: &M, checkpoint: &mut LazyCheckpoint<'_>) -> Result<()> {
        let _ = (model, checkpoint);
        Ok(())
    }

    /// The inverse of [`prepare`](Self::prepare) for [`export`]: rewrites the exported
    /// tensors (under [`key`](Self::key) names) into the file's layout.
    ///
    /// # Errors
    /// Exported tensors that cannot be rewritten.
    fn finish_export(&self, model: &M, checkpoint: &mut Checkpoint) -> Result<()> {
        let _ = (model, checkpoint);
        Ok(())
    }
}

/// A format given by its key function alone (no fix-ups).
#[derive(Debug, Clone, Copy)]
pub struct KeyFn<F>(pub F);

impl<M, F: Fn(&str) -> String> CheckpointFormat<M> for KeyFn<F> {
    fn key(&self, module_path: &str) -> String {
        (self.0)(module_path)
    }
}

/// Whether a source of `dtype` converts to a parameter of dtype `param` (numbers convert
/// among themselves; bools only to bools; quantized data not at all).
fn converts(param: DType, dtype: DType) -> bool {
    let kind = |d: DType| match d {
        DType::Bool(_) => 1,
        DType::QFloat(_) => 2,
        _ => 0,
    };
    kind(param) == kind(dtype) && kind(dtype) != 2
}

/// One parameter as the checkpoint holds it.
struct Expected {
    /// Burn module path.
    path: String,
    /// PyTorch name.
    name: String,
    /// PyTorch-layout shape.
    shape: Vec<usize>,
    dtype: DType,
    /// A `Linear` weight: stored `[out, in]`, a parameter `[in, out]`.
    linear_weight: bool,
    /// Its load mapper transposes (a `Linear` built `Col`).
    col: bool,
}

/// Every parameter's PyTorch name, PyTorch-layout shape and dtype, without reading or
/// initialising it: a parameter still lazily initialised (as freshly built models are) stays
/// so, and the load replaces it without ever drawing its random init.
fn expected_params<M: Module>(model: &M) -> Vec<Expected> {
    let mut v = ParamLister { at: VisitPath::default(), out: Vec::new() };
    model.visit(&mut v);
    v.out
}

/// A module visitor listing parameters by their metadata (the paths and container stack
/// Burn's collector builds, with enum variants skipped, and its PyTorch adapter applied).
struct ParamLister {
    at: VisitPath,
    out: Vec<Expected>,
}

impl ParamLister {
    fn list<T: burn::module::Parameter>(&mut self, param: &Param<T>, value: impl Fn(&T) -> DType, default: DType, col: bool) {
        let dtype = if param.is_initialized() { value(&param.val()) } else { default };
        let mut shape = param.lazy_shape();
        let two_d = shape.num_dims() == 2;
        if col && !param.is_initialized() {
            // a lazy parameter's shape is its initialiser's, before the `Col` mapper's transpose
            shape.reverse();
        }
        let unread = || Err(burn::store::burn_pack::Error::ValidationError("metadata only".into()));
        let path = self.at.path.join(".");
        let t = bridge::deferred(path.clone(), dtype, shape, None, unread);
        let linear_weight = self.at.at_linear_weight() && two_d;
        let t = BurnToPyTorchAdapter.adapt(t, ModuleContext::new(&self.at.containers));
        self.out.push(Expected { path, name: t.name, shape: t.shape.to_vec(), dtype: t.dtype, linear_weight, col });
    }
}

impl ModuleVisitor for ParamLister {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.at.exit(container_type);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let default = param.lazy_device().settings().float_dtype.into();
        let col = self.at.in_linear() && load_transposes(param);
        self.list(param, |t| t.dtype(), default, col);
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<D, Int>>) {
        let default = param.lazy_device().settings().int_dtype.into();
        self.list(param, |t| t.dtype(), default, false);
    }

    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<D, Bool>>) {
        let default = param.lazy_device().settings().bool_dtype.into();
        self.list(param, |t| t.dtype(), default, false);
    }
}

/// Load `checkpoint` in `format` into `model`, in place (see the [module docs](self)).
///
/// # Errors
/// [`Error::CheckpointMismatch`] listing every missing, unexpected and mis-shaped key (in the
/// checkpoint's naming) with the model untouched; errors of [`CheckpointFormat::prepare`]
/// (model untouched); [`Error::Io`] if reading fails after validation (model partly loaded).
pub fn load<M: Module, F: CheckpointFormat<M> + ?Sized>(
    model: &mut M,
    checkpoint: LazyCheckpoint<'_>,
    format: &F,
) -> Result<()> {
    load_with(model, checkpoint, format, &LoadOptions::default())
}

/// [`load`] with [`LoadOptions`] (e.g. `Linear` weights as views of a mapped file's pages).
///
/// # Errors
/// As [`load`].
pub fn load_with<M: Module, F: CheckpointFormat<M> + ?Sized>(
    model: &mut M,
    mut checkpoint: LazyCheckpoint<'_>,
    format: &F,
    options: &LoadOptions,
) -> Result<()> {
    format.prepare(model, &mut checkpoint)?;
    let expected = expected_params(model);
    let (mut missing, mut mismatched, mut plan) = (Vec::new(), Vec::new(), Vec::new());
    for Expected { path, name, shape, dtype, linear_weight, col } in expected {
        let key = format.key(&name);
        match checkpoint.remove(&key) {
            None => missing.push(key),
            Some(t) if t.shape() != shape || !converts(dtype, t.dtype()) => {
                let key = if t.shape() == shape { format!("{key} (dtype {:?} for {dtype:?})", t.dtype()) } else { key };
                mismatched.push((key, shape, t.shape().to_vec()));
            }
            Some(t) => plan.push((path, key, dtype, Handoff::of(linear_weight, col, options), t)),
        }
    }
    let unexpected: Vec<String> = checkpoint.keys().map(str::to_string).collect();
    if !(missing.is_empty() && unexpected.is_empty() && mismatched.is_empty()) {
        return Err(Error::CheckpointMismatch { missing, unexpected, mismatched });
    }
    drop(checkpoint);
    let (mut batch, mut shared) = (HashMap::new(), Vec::new());
    let (mut bytes, mut loaded, total) = (0, 0, plan.len());
    for (path, key, dtype, handoff, tensor) in plan {
        let fail = |e| partial(e, &key, loaded, total);
        let transpose = handoff == Handoff::Transpose;
        let as_is = tensor.dtype() == dtype && !transpose;
        let data = match as_is.then(|| tensor.mapped()).flatten() {
            Some(data) => {
                shared.push(tensor);
                data
            }
            None => {
                let data = write(&tensor, dtype, transpose).map_err(|e| fail(in_key(e, &key)))?;
                tensor.release();
                data
            }
        };
        bytes += data.as_bytes().len();
        batch.insert(path, (data, handoff == Handoff::View));
        if bytes >= BATCH_BYTES {
            loaded += apply(model, std::mem::take(&mut batch), &mut shared)?;
            bytes = 0;
        }
    }
    apply(model, batch, &mut shared)?;
    Ok(())
}

/// A tensor in memory of its own as its parameter holds it: converted to the parameter's
/// dtype and, with `transpose` (a row-layout `Linear` weight), transposed from `[out, in]`
/// to `[in, out]`. The row
/// blocks it is made of (a mapped file's pages, or reads; the parts of a fused q/k/v) are
/// written straight into the result, in one pass split over the threads, into huge-page
/// memory when large ([`Buffer`]); a dtype conversion goes through one converted copy first.
fn write(tensor: &LazyTensor<'_>, dtype: DType, transpose: bool) -> Result<TensorData> {
    let shape = tensor.shape().to_vec();
    let (blocks, converted);
    let parts: Vec<(&[u8], usize)> = if tensor.dtype() == dtype {
        blocks = tensor.row_blocks()?;
        blocks.iter().map(|(b, rows)| (&b[..], *rows)).collect()
    } else {
        let data = tensor.read()?.try_cast(dtype).map_err(|e| Error::InvalidArgument(format!("cannot convert: {e}")))?;
        if !transpose {
            return Ok(data);
        }
        converted = data;
        vec![(converted.as_bytes(), shape[0])]
    };
    let len = shape.iter().product::<usize>() * dtype.size();
    let mut buffer = Buffer::zeroed(len);
    let threads = threads_for(len);
    if !transpose {
        concat_into(&parts.iter().map(|p| p.0).collect::<Vec<_>>(), buffer.as_mut_slice(), threads);
        return Ok(buffer.into_data(shape, dtype));
    }
    let [rows, cols] = shape[..] else { return Err(Error::InvalidArgument("a Linear weight that is not 2-d".into())) };
    if !transpose_into(&parts, cols, dtype.size(), buffer.as_mut_slice(), threads) {
        return Err(Error::InvalidArgument(format!("cannot transpose a Linear weight of dtype {dtype:?}")));
    }
    Ok(buffer.into_data(vec![cols, rows], dtype))
}

/// An error about one tensor, naming its key (I/O errors already name their file).
fn in_key(e: Error, key: &str) -> Error {
    match e {
        Error::InvalidArgument(why) => Error::InvalidArgument(format!("`{key}`: {why}")),
        other => other,
    }
}

/// An error after validation, noting that the model is partly loaded.
fn partial(e: Error, key: &str, loaded: usize, total: usize) -> Error {
    let note = format!("reading `{key}` failed after {loaded} of {total} tensors were loaded; the model is partly loaded");
    match e {
        Error::Io { path, reason } => Error::Io { path, reason: format!("{reason} ({note})") },
        other => Error::InvalidArgument(format!("{other} ({note})")),
    }
}

/// Moves `batch` into `model`, then hands back the pages of the memory-mapped tensors in
/// `shared` (a backend that copied them has its own copy now; one that kept them, flex, has
/// not touched them yet, and faults them back in on use). Every tensor was validated, so a
/// leftover is a bug here.
fn apply<M: Module>(model: &mut M, batch: HashMap<String, (TensorData, bool)>, shared: &mut Vec<LazyTensor<'_>>) -> Result<usize> {
    let n = batch.len();
    let unused = set_params(model, batch);
    for t in shared.drain(..) {
        t.release();
    }
    if !unused.is_empty() {
        return Err(Error::InvalidArgument(format!("internal: validated tensors did not apply: {unused:?}")));
    }
    Ok(n)
}

/// The module's parameters as a [`Checkpoint`] in `format`: the inverse of [`load`].
///
/// # Errors
/// A parameter that cannot be read back, or [`CheckpointFormat::finish_export`]'s errors.
pub fn export<M: Module, F: CheckpointFormat<M> + ?Sized>(model: &M, format: &F) -> Result<Checkpoint> {
    let mut out = Checkpoint::new();
    let adapter = ExportAdapter { col: col_linear_weights(model) };
    for t in model.collect(None, Some(Box::new(adapter)), true) {
        let key = format.key(&t.name);
        let data = bridge::into_data(t).map_err(|e| Error::InvalidArgument(format!("cannot read parameter {key}: {e}")))?;
        out.insert(key, data);
    }
    format.finish_export(model, &mut out)?;
    Ok(out)
}

/// A model with checkpoint formats: the loading and export methods, the same for every model.
///
/// ```no_run
/// use diffusion_transformers::models::DiTConfig;
/// use diffusion_transformers::weights::LoadWeights;
/// # fn main() -> diffusion_transformers::Result<()> {
/// let device = burn::tensor::Device::flex();
/// let mut dit = DiTConfig::from_name("DiT-XL/2")?.init(&device)?;
/// dit.load_weights("DiT-XL-2-256x256.pt")?; // official or diffusers layout, detected
/// let official = dit.to_checkpoint()?;      // the official layout
/// official.save_safetensors("dit.safetensors")?;
/// # Ok(())
/// # }
/// ```
pub trait LoadWeights: Module + Sized {
    /// The model's checkpoint format(s).
    type Format: CheckpointFormat<Self>;

    /// The format to read `checkpoint` in (detected from its keys where a model has several).
    fn format_of(&self, checkpoint: &LazyCheckpoint<'_>) -> Self::Format;

    /// The format [`to_checkpoint`](Self::to_checkpoint) writes.
    fn export_format(&self) -> Self::Format;

    /// Load an opened checkpoint in the given format, or one that converts into it (see
    /// [`load`]).
    ///
    /// # Errors
    /// As [`load`].
    fn load_lazy_as(&mut self, checkpoint: LazyCheckpoint<'_>, format: impl Into<Self::Format>) -> Result<()> {
        load(self, checkpoint, &format.into())
    }

    /// Load an opened checkpoint in its detected format (see [`load`]).
    ///
    /// # Errors
    /// As [`load`].
    fn load_lazy(&mut self, checkpoint: LazyCheckpoint<'_>) -> Result<()> {
        self.load_lazy_with(checkpoint, LoadOptions::default())
    }

    /// Load an opened checkpoint in its detected format, with [`LoadOptions`] (see
    /// [`load_with`]).
    ///
    /// # Errors
    /// As [`load`].
    fn load_lazy_with(&mut self, checkpoint: LazyCheckpoint<'_>, options: LoadOptions) -> Result<()> {
        let format = self.format_of(&checkpoint);
        load_with(self, checkpoint, &format, &options)
    }

    /// Stream a checkpoint file into the model (formats: [`LazyCheckpoint::open`]).
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable files, then as [`load`].
    fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.load_lazy(LazyCheckpoint::open(path)?)
    }

    /// Load an in-memory checkpoint in its detected format.
    ///
    /// # Errors
    /// As [`load`].
    fn load_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        self.load_lazy(checkpoint.into())
    }

    /// Load an in-memory checkpoint in the given format, or one that converts into it.
    ///
    /// # Errors
    /// As [`load`].
    fn load_checkpoint_as(&mut self, checkpoint: &Checkpoint, format: impl Into<Self::Format>) -> Result<()> {
        load(self, checkpoint.into(), &format.into())
    }

    /// The parameters in [`export_format`](Self::export_format) (PyTorch layout), e.g. to
    /// save with [`Checkpoint::save_safetensors`] for the reference implementation.
    ///
    /// # Errors
    /// As [`export`].
    fn to_checkpoint(&self) -> Result<Checkpoint> {
        export(self, &self.export_format())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::models::MMDiT;
    use crate::models::mmdit_config::tiny_test_config;
    use crate::weights::loader::to_f32;
    use burn::tensor::TensorData;

    /// A tiny MM-DiT's checkpoint with non-trivial values everywhere (the init zeroes the
    /// modulations).
    pub(crate) fn varied_checkpoint(model: &MMDiT) -> Checkpoint {
        let mut ck = model.to_checkpoint().unwrap();
        for (i, (k, v)) in ck.clone().into_tensors().into_iter().enumerate() {
            let n = v.num_elements();
            let vals: Vec<f32> = (0..n).map(|j| ((i * 31 + j * 7) % 101) as f32 / 50.0 - 1.0).collect();
            ck.insert(k, TensorData::new(vals, v.shape().to_vec()));
        }
        ck
    }

    #[test]
    fn a_mapped_load_shares_the_file_and_equals_a_read_load() {
        let device = burn::tensor::Device::flex();
        let cfg = tiny_test_config();
        let ck = varied_checkpoint(&cfg.init(&device).unwrap());
        let dir = std::env::temp_dir().join(format!("dt_mapped_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("w.safetensors");
        ck.save_safetensors(&file).unwrap();
        let on_disk = std::fs::read(&file).unwrap();

        let mut read: MMDiT = cfg.init(&device).unwrap();
        read.load_weights(&file).unwrap();
        // SAFETY: the test's own file, not modified while mapped.
        let lazy = unsafe { LazyCheckpoint::open_mapped(&file) }.unwrap();
        let in_file = lazy.get("context_embedder.bias").unwrap().mapped().unwrap().as_bytes().as_ptr();
        let mut mapped: MMDiT = cfg.init(&device).unwrap();
        mapped.load_lazy(lazy).unwrap();
        let (a, b) = (read.to_checkpoint().unwrap(), mapped.to_checkpoint().unwrap());
        assert_eq!(a.len(), b.len());
        for (k, v) in a.tensors() {
            assert_eq!(to_f32(v), to_f32(b.get(k).unwrap()), "{k}");
        }

        // the bias parameter is the file's own memory (taken out of the model, so unshared)
        let bias = mapped.context_embedder.as_ref().unwrap().bias.as_ref().unwrap().val();
        drop(mapped);
        let data = bias.into_data();
        assert_eq!(data.as_bytes().as_ptr(), in_file, "the parameter was copied");
        // modifying it copies first and leaves the file alone
        let before = data.try_to_vec::<f32>().unwrap();
        let bumped = Tensor::<1>::from_data(data, &device).add_scalar(1.0).into_data().try_to_vec::<f32>().unwrap();
        assert!(bumped.iter().zip(&before).all(|(b, a)| *b == a + 1.0));
        assert_eq!(std::fs::read(&file).unwrap(), on_disk);

        // a mismatch found from the headers leaves the model untouched, as for a read load
        let mut broken = ck.clone();
        broken.remove("context_embedder.weight");
        broken.save_safetensors(&file).unwrap(); // replaced by a rename: the mapping keeps the old file
        // SAFETY: as above.
        let err = read.load_lazy(unsafe { LazyCheckpoint::open_mapped(&file) }.unwrap()).unwrap_err().to_string();
        assert!(err.contains("context_embedder.weight"), "{err}");
        let after = read.to_checkpoint().unwrap();
        for (k, v) in a.tensors() {
            assert_eq!(to_f32(v), to_f32(after.get(k).unwrap()), "{k} changed");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_optimizer_step_on_mapped_parameters_leaves_the_file_alone() {
        use burn::optim::{AdamWConfig, GradientsParams};
        let device = burn::tensor::Device::flex().autodiff();
        let dir = std::env::temp_dir().join(format!("dt_mapped_optim_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("w.safetensors");
        let mut ck = Checkpoint::new();
        ck.insert("weight", TensorData::new((0..12).map(|i| i as f32 / 10.0).collect::<Vec<_>>(), [3, 4]));
        ck.insert("bias", TensorData::new(vec![0.5f32, -0.5, 1.0], [3]));
        ck.save_safetensors(&file).unwrap();
        let on_disk = std::fs::read(&file).unwrap();

        let mut linear = burn::nn::LinearConfig::new(4, 3).init(&device);
        // SAFETY: the test's own file, not modified while mapped.
        let lazy = unsafe { LazyCheckpoint::open_mapped(&file) }.unwrap();
        assert!(lazy.get("bias").unwrap().mapped().is_some(), "the bias is loaded from the pages");
        load(&mut linear, lazy, &KeyFn(|p: &str| p.to_string())).unwrap();
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32; 8], [2, 4]), &device);
        let grads = GradientsParams::from_grads(linear.forward(x).sum().backward(), &linear);
        let linear = AdamWConfig::new().init().step(0.1, linear, grads);
        let bias = linear.bias.as_ref().unwrap().val().into_data().try_to_vec::<f32>().unwrap();
        assert!(bias.iter().zip([0.5f32, -0.5, 1.0]).all(|(b, a)| (b - a).abs() > 0.05), "{bias:?}");
        assert_eq!(std::fs::read(&file).unwrap(), on_disk);
        drop(linear);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn bf16_checkpoint(ck: &Checkpoint) -> Checkpoint {
        let tensors = ck.tensors().iter().map(|(k, v)| (k.clone(), v.clone().convert_dtype(DType::BF16))).collect();
        Checkpoint::from_tensors(tensors)
    }

    #[test]
    fn streams_a_bf16_file_and_checks_headers_first() {
        let device = burn::tensor::Device::flex();
        let cfg = tiny_test_config();
        let ck = varied_checkpoint(&cfg.init(&device).unwrap());
        let half = bf16_checkpoint(&ck);
        let dir = std::env::temp_dir().join(format!("dt_stream_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("w.safetensors");
        half.save_safetensors(&file).unwrap();

        let mut model: MMDiT = cfg.init(&device).unwrap();
        model.load_weights(&file).unwrap();
        let back = model.to_checkpoint().unwrap();
        for (k, v) in half.tensors() {
            let got = back.get(k).unwrap();
            assert_eq!(got.dtype(), DType::F32, "{k}: converted to the model's dtype");
            assert_eq!(to_f32(got), to_f32(v), "{k}");
        }

        // a mis-shaped and a missing key: reported from the headers, the model untouched
        let mut broken = half.clone();
        broken.insert("proj_out.bias", TensorData::new(vec![half::bf16::ZERO; 3], [3]));
        broken.remove("context_embedder.weight");
        broken.save_safetensors(&file).unwrap();
        let err = model.load_weights(&file).unwrap_err().to_string();
        assert!(err.contains("proj_out.bias") && err.contains("context_embedder.weight"), "{err}");
        let after = model.to_checkpoint().unwrap();
        for (k, v) in back.tensors() {
            assert_eq!(to_f32(v), to_f32(after.get(k).unwrap()), "{k} changed");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The memory layout of `Linear` weights, and the load option that chooses it.
//!
//! PyTorch stores a linear weight `[out, in]`; Burn's [`Linear`](burn::nn::Linear) computes
//! with a `[in, out]` weight. In Burn's default [`LinearLayout::Row`] that weight is row-major
//! `[in, out]` memory, so loading one transposes (copies) it. In [`LinearLayout::Col`] the
//! parameter keeps the `[out, in]` data and computes through a transposed view of it (its
//! load and save mappers transpose), so a load needs no transpose: from a memory-mapped file
//! ([`LazyCheckpoint::open_mapped`](crate::weights::LazyCheckpoint::open_mapped)) the weight
//! *is* the file's pages, as in PyTorch.
//!
//! The loader detects each `Linear`'s layout from its parameter (whether its load mapper
//! transposes), so a model built with `LinearLayout::Col` loads and exports correctly, and
//! [`LoadOptions::linear_layout`] gives the weights of `Linear`s built in row layout (every
//! model of this crate) the column-major memory at load time: each is then a transposed
//! view of the file's `[out, in]` data, the same memory and matrix products as `Col`.
//!
//! # When to choose `Col`
//! It saves the transpose of every `Linear` weight at load (most of a transformer's bytes:
//! from a mapped file, the whole copy; SD3-medium f32 then loads in 2 s of CPU instead of
//! 9), but flex's matrix product on the transposed view is about 10% slower at SD3's
//! sampling shapes (more at 512 rows in bf16): `docs/benchmarks.md` (loading, sixth
//! measurement). On the CPU that is the load's saving again after one or two SD3-medium
//! steps, so choose it where the load dominates (inspecting, converting or exporting a
//! checkpoint, a few forwards) and keep `Row` for sampling runs of many steps and training.

use std::collections::HashSet;

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::{BurnToPyTorchAdapter, ModuleAdapter, ModuleContext, burn_pack};
use burn::tensor::Tensor;

pub use burn::nn::LinearLayout;

/// The container type Burn's `Module` derive gives `burn::nn::Linear`.
const LINEAR: &str = "Struct:Linear";

/// Options of a checkpoint load ([`load_with`](crate::weights::load_with),
/// [`LoadWeights::load_lazy_with`](crate::weights::LoadWeights::load_lazy_with)).
///
/// ```no_run
/// use diffusion_transformers::models::MMDiTConfig;
/// use diffusion_transformers::weights::{LazyCheckpoint, LinearLayout, LoadOptions, LoadWeights};
/// # fn main() -> diffusion_transformers::Result<()> {
/// let device = burn::tensor::Device::flex();
/// let mut model = MMDiTConfig::sd3_medium().init(&device)?;
/// // SAFETY: the file is not modified while the model is alive.
/// let file = unsafe { LazyCheckpoint::open_mapped("sd3_medium.safetensors")? };
/// // every Linear weight becomes a view of the file's pages: no transpose, no copy
/// model.load_lazy_with(file, LoadOptions::new().with_linear_layout(LinearLayout::Col))?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// The memory the weights of `Linear`s built in [`LinearLayout::Row`] (Burn's default)
    /// are loaded into: `Row` (the default) transposes each into row-major `[in, out]`
    /// memory of its own; `Col` keeps the checkpoint's `[out, in]` data (from a mapped
    /// file: its pages, no copy) and the parameter is a transposed view of it, as in a
    /// `Linear` built `Col` (see the [module docs](self) for the cost). `Linear`s built
    /// `Col` are loaded without a transpose either way.
    pub linear_layout: LinearLayout,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { linear_layout: LinearLayout::Row }
    }
}

impl LoadOptions {
    /// The default options (`Linear` weights in row layout).
    pub fn new() -> Self {
        Self::default()
    }

    /// With [`linear_layout`](Self::linear_layout) set.
    pub fn with_linear_layout(mut self, layout: LinearLayout) -> Self {
        self.linear_layout = layout;
        self
    }

    /// Whether row-layout `Linear` weights are loaded as column-major views.
    pub(crate) fn col(&self) -> bool {
        matches!(self.linear_layout, LinearLayout::Col)
    }
}

/// How the loader hands a parameter its tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handoff {
    /// As the checkpoint holds it (not a `Linear` weight).
    Plain,
    /// A row-layout `Linear` weight: transposed into `[in, out]` memory of its own.
    Transpose,
    /// A `Linear` weight built `Col`: `[out, in]` as stored; its load mapper makes the view.
    Stored,
    /// A row-layout `Linear` weight loaded with [`LoadOptions::linear_layout`] `Col`: `[out,
    /// in]` as stored, then a transposed view of it.
    View,
}

impl Handoff {
    /// The way to load a parameter: `linear` for a `Linear` weight, `col` when its load
    /// mapper transposes (built `Col`).
    pub(crate) fn of(linear: bool, col: bool, options: &LoadOptions) -> Self {
        match (linear, col) {
            (false, _) => Self::Plain,
            (true, true) => Self::Stored,
            (true, false) if options.col() => Self::View,
            (true, false) => Self::Transpose,
        }
    }
}

/// Whether `param`'s load mapper transposes a 2-d tensor (a `Linear` built with
/// [`LinearLayout::Col`]), probed on a `[1, 2]` tensor on its device: the parameter itself is
/// neither initialised nor changed.
pub(crate) fn load_transposes<const D: usize>(param: &Param<Tensor<D>>) -> bool {
    if D != 2 {
        return false;
    }
    let mut dims = [1usize; D];
    dims[D - 1] = 2;
    let probe = Tensor::<D>::zeros(dims, &param.lazy_device());
    let loaded = param.clone().transform_for_load(probe, param.id);
    loaded.val().dims() != dims
}

/// The module paths of every `Linear` weight built [`LinearLayout::Col`].
pub(crate) fn col_linear_weights<M: Module>(model: &M) -> HashSet<String> {
    let mut v = ColFinder { at: VisitPath::default(), out: HashSet::new() };
    model.visit(&mut v);
    v.out
}

struct ColFinder {
    at: VisitPath,
    out: HashSet<String>,
}

/// Where a [`ModuleVisitor`] is: the parameter path and the container stack Burn's collector
/// builds (enum variants are containers, not path segments).
#[derive(Default)]
pub(crate) struct VisitPath {
    /// Path segments, outermost first.
    pub(crate) path: Vec<String>,
    /// Container types (`Struct:Linear`, `Enum:...`), outermost first.
    pub(crate) containers: Vec<String>,
}

impl VisitPath {
    /// [`ModuleVisitor::enter_module`].
    pub(crate) fn enter(&mut self, name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }

    /// [`ModuleVisitor::exit_module`].
    pub(crate) fn exit(&mut self, container_type: &str) {
        self.containers.pop();
        if !container_type.starts_with("Enum:") {
            self.path.pop();
        }
    }

    /// Whether the visitor is inside a Burn `Linear`.
    pub(crate) fn in_linear(&self) -> bool {
        ModuleContext::new(&self.containers).module_type() == Some(LINEAR)
    }

    /// Whether the visitor is at a `Linear`'s `weight`.
    pub(crate) fn at_linear_weight(&self) -> bool {
        self.in_linear() && self.path.last().is_some_and(|p| p == "weight")
    }
}

impl ModuleVisitor for ColFinder {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.at.exit(container_type);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.at.at_linear_weight() && load_transposes(param) {
            self.out.insert(self.at.path.join("."));
        }
    }
}

/// Burn's PyTorch export adapter, except that the weights of `Linear`s built `Col` (which
/// their save mapper already hands out `[out, in]`) are not transposed again.
#[derive(Debug, Clone)]
pub(crate) struct ExportAdapter {
    /// Module paths of the `Col` `Linear` weights.
    pub(crate) col: HashSet<String>,
}

impl ModuleAdapter for ExportAdapter {
    fn adapt(&self, tensor: burn_pack::Tensor, ctx: ModuleContext<'_>) -> burn_pack::Tensor {
        if self.col.contains(&tensor.name) { tensor } else { BurnToPyTorchAdapter.adapt(tensor, ctx) }
    }

    fn get_alternative_param_name(&self, param_name: &str, container_type: &str) -> Option<String> {
        BurnToPyTorchAdapter.get_alternative_param_name(param_name, container_type)
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;

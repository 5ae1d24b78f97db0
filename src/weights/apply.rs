//! Moving loaded tensors into a module's parameters, by module path, in place: the last step
//! of [`load`](crate::weights::load). Each tensor is taken by value into its parameter (no
//! copy; memory-mapped data stays shared), keeping the parameter's id, device and
//! `require_grad`, and the parameter it replaces is freed.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::weights::layout::VisitPath;

/// Tensors by Burn module path (enum variants skipped, as [`ModuleSnapshot`] names them),
/// each with whether the parameter is its transposed view, moved into the parameters they
/// name by [`set_params`].
///
/// [`ModuleSnapshot`]: burn::store::ModuleSnapshot
struct ParamSetter {
    at: VisitPath,
    tensors: HashMap<String, (TensorData, bool)>,
}

impl ParamSetter {
    fn take(&mut self) -> Option<(TensorData, bool)> {
        if self.tensors.is_empty() {
            return None;
        }
        self.tensors.remove(&self.at.path.join("."))
    }
}

impl ModuleMapper for ParamSetter {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.at.exit(container_type);
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((data, view)) = self.take() else { return param };
        let dtype = data.dtype();
        let (id, tensor) = (param.id, Tensor::from_data(data, (&param.lazy_device(), dtype)));
        // a view swaps the last two dimensions (metadata only: the data is not moved)
        param.transform_for_load(if view { tensor.transpose() } else { tensor }, id)
    }

    fn map_int<const D: usize>(&mut self, param: Param<Tensor<D, Int>>) -> Param<Tensor<D, Int>> {
        let Some((data, _)) = self.take() else { return param };
        let dtype = data.dtype();
        let (id, tensor) = (param.id, Tensor::from_data(data, (&param.lazy_device(), dtype)));
        param.transform_for_load(tensor, id)
    }

    fn map_bool<const D: usize>(&mut self, param: Param<Tensor<D, Bool>>) -> Param<Tensor<D, Bool>> {
        let Some((data, _)) = self.take() else { return param };
        let dtype = data.dtype();
        let (id, tensor) = (param.id, Tensor::from_data(data, (&param.lazy_device(), dtype)));
        param.transform_for_load(tensor, id)
    }
}

/// Moves `tensors` (by module path, each in its parameter's dtype and in the shape its load
/// mapper expects, or in the transposed shape where flagged as a view) into `model`; returns
/// the paths that named no parameter.
pub(crate) fn set_params<M: Module>(model: &mut M, tensors: HashMap<String, (TensorData, bool)>) -> Vec<String> {
    let mut setter = ParamSetter { at: VisitPath::default(), tensors };
    // The clone shares every tensor (reference counts), so it costs no tensor memory.
    *model = model.clone().map(&mut setter);
    setter.tensors.into_keys().collect()
}

//! The numerical guard of training: gradients are checked before every update, weights before
//! every checkpoint.
//!
//! - **Gradients.** [`check_gradients`] fails when some gradient's *square* is not finite
//!   (NaN, infinity, or `|g| > 1.8e19`). AdamW's state is `m = b1 m + (1 - b1) g` and
//!   `v = b2 v + (1 - b2) g^2`, convex combinations of values already checked, so an update
//!   that passed the check keeps the optimizer state finite; saved optimizer state is therefore
//!   finite whenever every step passed.
//! - **Weights.** [`check_weights`] fails when a parameter is not finite or, optionally, larger
//!   in magnitude than a bound: a learning-rate blow-up produces finite but huge weights, and
//!   saving those as the newest checkpoint (pruning the good ones) would lose the run.
//!
//! Each check reads back one small vector (two values per parameter tensor) and names the first
//! offending parameter by its module path.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::error::{Error, Result};

/// Collects `[sum(0 * v), max |v|]` of every float parameter (or its gradient), with its path.
struct Probe<'a> {
    grads: Option<&'a GradientsParams>,
    path: Vec<String>,
    names: Vec<String>,
    probes: Vec<Tensor<1>>,
}

impl ModuleVisitor for Probe<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = match self.grads {
            Some(grads) => match grads.get::<D>(param.id) {
                // The square, so that gradients whose square overflows count as non-finite.
                Some(g) => g.square(),
                None => return,
            },
            None => param.val().detach(),
        };
        if value.dims().contains(&0) {
            return;
        }
        let finite = value.clone().mul_scalar(0.0).sum();
        // Gradients need only the finiteness probe; weights also their magnitude.
        let magnitude = if self.grads.is_some() { finite.clone() } else { value.abs().max() };
        self.names.push(self.path.join("."));
        self.probes.push(Tensor::cat(vec![finite, magnitude], 0));
    }
}

/// `(path, non-finite?, max |v|)` of every probed tensor.
fn probe<M: Module>(model: &M, grads: Option<&GradientsParams>) -> Vec<(String, bool, f32)> {
    let mut p = Probe { grads, path: vec![], names: vec![], probes: vec![] };
    model.visit(&mut p);
    if p.probes.is_empty() {
        return vec![];
    }
    // One read-back: parameters live on one device, gradients on the model's device.
    let device = p.probes[0].device();
    let all = Tensor::cat(p.probes.into_iter().map(|t| t.to_device(&device)).collect(), 0);
    let values = all.into_data().try_into_vec_as::<f32>().unwrap_or_default();
    p.names.into_iter().zip(values.chunks(2)).map(|(n, v)| (n, !v[0].is_finite(), v[1])).collect()
}

/// Fails with [`Error::Numerical`] naming `what`, the first non-finite parameter of `model`,
/// or the first whose magnitude exceeds `max_abs`.
pub fn check_weights<M: Module>(model: &M, what: &str, max_abs: Option<f32>) -> Result<()> {
    for (name, non_finite, magnitude) in probe(model, None) {
        if non_finite {
            return Err(Error::Numerical(format!("{what}: parameter `{name}` holds NaN or infinite values")));
        }
        if let Some(bound) = max_abs
            && magnitude > bound
        {
            return Err(Error::Numerical(format!(
                "{what}: parameter `{name}` reached |w| = {magnitude:e}, above the guard's bound {bound:e} \
                 (a diverged run?)"
            )));
        }
    }
    Ok(())
}

/// Fails with [`Error::Numerical`] naming `step` and the first parameter of `model` whose
/// gradient in `grads` (or its square) is not finite.
pub fn check_gradients<M: Module>(model: &M, grads: &GradientsParams, step: u64) -> Result<()> {
    match probe(model, Some(grads)).into_iter().find(|(_, non_finite, _)| *non_finite) {
        Some((name, ..)) => Err(Error::Numerical(format!(
            "gradient of `{name}` is not finite (or its square overflows) at step {step}"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[derive(Module, Debug)]
    struct Two {
        a: Linear,
        b: Linear,
    }

    #[test]
    fn names_the_bad_parameter() {
        let device = Device::flex();
        let mut m = Two { a: LinearConfig::new(2, 2).init(&device), b: LinearConfig::new(2, 2).init(&device) };
        assert!(check_weights(&m, "save", Some(10.0)).is_ok());
        m.b.weight = m.b.weight.map(|w| w.mul_scalar(0.0).add_scalar(100.0));
        let e = check_weights(&m, "save", Some(10.0)).unwrap_err().to_string();
        assert!(e.contains("`b.weight`") && e.contains("1e2"), "{e}");
        assert!(check_weights(&m, "save", None).is_ok());
        m.a.bias = m.a.bias.map(|b| b.map(|b| b.mul_scalar(f32::NAN)));
        let e = check_weights(&m, "save", None).unwrap_err().to_string();
        assert!(e.contains("`a.bias`") && e.contains("NaN"), "{e}");
    }
}

//! Exponential moving average of a model's parameters (DiT keeps one with decay 0.9999).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

/// An EMA copy of a model, `ema = decay * ema + (1 - decay) * online`, matched by parameter id.
#[derive(Debug, Clone)]
pub struct Ema<M: Module> {
    /// The averaged model (inference mode, no autodiff).
    pub model: M,
    /// Decay per update.
    pub decay: f64,
    /// Use `min(decay, (1 + n) / (10 + n))` for the n-th update, so short runs are not dominated
    /// by the initialisation.
    pub warmup: bool,
    /// Updates so far.
    pub updates: u64,
}

/// The online model's parameters (without autodiff) and whether each is trained (on a model
/// without autodiff, every parameter counts as trained).
struct Collect(HashMap<ParamId, (Tensor<1>, bool)>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        // Only an autodiff model tells trained parameters from frozen ones.
        let val = p.val();
        let trained = !val.is_autodiff() || p.is_require_grad();
        self.0.insert(p.id, (val.without_autodiff().flatten::<1>(0, D - 1), trained));
    }
}

struct Update<'a> {
    online: &'a HashMap<ParamId, (Tensor<1>, bool)>,
    decay: f64,
}

impl ModuleMapper for Update<'_> {
    /// Averages a trained parameter; copies a frozen one (DiT's fixed position table): its
    /// average would only gather rounding, `d x + (1 - d) x != x` in floats.
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((src, trained)) = self.online.get(&p.id) else { return p };
        let (src, trained, decay) = (src.clone(), *trained, self.decay);
        p.map(|ema| {
            let shape = ema.shape();
            if trained { ema * decay + src.reshape(shape) * (1.0 - decay) } else { src.reshape(shape) }
        })
    }
}

impl<M: Module> Ema<M> {
    /// Start the average at the model's current parameters.
    pub fn new(model: &M, decay: f64) -> Self {
        Self { model: model.valid(), decay, warmup: false, updates: 0 }
    }

    /// The decay the next update uses.
    pub fn current_decay(&self) -> f64 {
        if self.warmup {
            let n = self.updates as f64;
            self.decay.min((1.0 + n) / (10.0 + n))
        } else {
            self.decay
        }
    }

    /// Move the average towards `online`.
    pub fn update(&mut self, online: &M) {
        let mut c = Collect(HashMap::new());
        online.visit(&mut c);
        let decay = self.current_decay();
        self.model = self.model.clone().map(&mut Update { online: &c.0, decay });
        self.updates += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::init::{WeightInit, linear};

    #[test]
    fn copies_frozen_parameters_exactly() {
        let device = Device::flex().autodiff();
        let mut online = linear(8, 16, true, WeightInit::XavierUniform, &device);
        online.weight = online.weight.set_require_grad(false);
        let mut ema = Ema::new(&online, 0.999);
        for _ in 0..300 {
            ema.update(&online);
        }
        // averaging a constant in f32 drifts by some ulps (DiT's position table by 2e-5 in 7500 updates)
        let frozen = online.weight.val().without_autodiff().into_data();
        assert_eq!(ema.model.weight.val().into_data(), frozen);
    }

    #[test]
    fn moves_towards_online_weights() {
        let device = Device::flex();
        let online = linear(2, 2, true, WeightInit::Zeros, &device);
        let mut ema = Ema::new(&online, 0.5);
        let mut moved = online.clone();
        moved.weight = moved.weight.map(|w| w.ones_like());
        ema.update(&moved);
        let w = ema.model.weight.val().into_data().try_to_vec::<f32>().unwrap();
        assert!(w.iter().all(|v| (*v - 0.5).abs() < 1e-6), "{w:?}");
        ema.update(&moved);
        let w = ema.model.weight.val().into_data().try_to_vec::<f32>().unwrap();
        assert!(w.iter().all(|v| (*v - 0.75).abs() < 1e-6), "{w:?}");
    }
}

//! Kind `train_step_diffusers`: optimizer steps of diffusers' `DiTTransformer2DModel` under
//! the rectified-flow objective, against PyTorch's `AdamW` with per-parameter gradient
//! clipping and an EMA (`scripts/gen_train_step.py`). The steps run through the crate's
//! `Trainer` with the fixture's batches, times and noise; the losses, the trained weights and
//! the EMA weights are compared (the reference weights loaded into a second model through the
//! public loader, then both compared parameter by parameter).

use std::cell::Cell;

use burn::prelude::*;
use diffusion_transformers::contracts::{Objective, TrainRng};
use diffusion_transformers::diffusion::{RectifiedFlow, RectifiedFlowConfig};
use diffusion_transformers::models::DiT;
use diffusion_transformers::training::{OptimizerConfig, Trainer, TrainerConfig};
use diffusion_transformers::weights::{Checkpoint, DiTCheckpointLayout, KeyFn, LoadWeights, export};
use serde_json::Value;

use crate::common::{Fixture, Outcome, all, cfg_f64, cfg_usize, compare_data, err};
use crate::dit::diffusers_model;

/// The flow loss at the fixture's stored times and noise, one pair per step in order.
struct StoredDraws {
    flow: RectifiedFlow,
    draws: Vec<(Tensor<1>, Tensor<4>)>,
    step: Cell<usize>,
}

impl Objective<DiT> for StoredDraws {
    fn loss(&self, model: &DiT, x0: Tensor<4>, cond: &Option<Tensor<1, Int>>, _: &mut TrainRng) -> diffusion_transformers::Result<Tensor<1>> {
        let (t, noise) = self.draws[self.step.get()].clone();
        self.step.set(self.step.get() + 1);
        Ok(self.flow.loss_at(model, x0, cond, t, noise)?.loss)
    }
}

pub fn diffusers(fx: &Fixture) -> Outcome {
    let train = fx.field("training").ok_or("sidecar lacks `training`")?;
    let steps = cfg_usize(train, "steps")?;
    let betas = train.get("betas").and_then(Value::as_array).ok_or("training lacks `betas`")?;
    let beta = |i: usize| betas.get(i).and_then(Value::as_f64).map(|b| b as f32).ok_or("bad `betas`");
    let device = fx.device.clone().autodiff();
    let model = diffusers_model(fx, fx.config(), &device)?;
    let optimizer = OptimizerConfig {
        lr: cfg_f64(train, "lr")?,
        beta_1: beta(0)?,
        beta_2: beta(1)?,
        epsilon: cfg_f64(train, "eps")? as f32,
        weight_decay: cfg_f64(train, "weight_decay")? as f32,
        grad_clip_norm: Some(cfg_f64(train, "max_grad_norm")? as f32),
        ..Default::default()
    };
    let config = TrainerConfig {
        optimizer,
        ema_decay: cfg_f64(train, "ema_decay")?,
        ema_warmup: false,
        seed: 0,
        keep_checkpoints: 1,
        gradient_checkpointing: false,
    };
    let mut trainer = Trainer::new(model, config).map_err(err)?;
    let flow = RectifiedFlowConfig::new().with_timestep_scale(cfg_f64(train, "timestep_scale")?).init().map_err(err)?;
    let on = |t: Tensor<4>| t.to_device(&device);
    let mut draws = Vec::with_capacity(steps);
    for s in 0..steps {
        draws.push((fx.float::<1>(&format!("input.t.{s}"))?.to_device(&device), on(fx.float(&format!("input.noise.{s}"))?)));
    }
    let objective = StoredDraws { flow, draws, step: Cell::new(0) };
    let mut losses = Vec::with_capacity(steps);
    for s in 0..steps {
        let x0 = on(fx.float(&format!("input.x0.{s}"))?);
        let y = fx.int::<1>(&format!("input.y.{s}"))?.to_device(&device);
        losses.push(trainer.train_step(&objective, x0, &Some(y)).map_err(err)?);
    }
    let mut results = vec![fx.compare("output.loss", Tensor::<1>::from_data(TensorData::new(losses, [steps]), &fx.device))];
    // The references load into a model of the same config through the public loader (diffusers'
    // layout); then both models are compared parameter by parameter under their module paths.
    // Weights within `param_atol` (Adam moves near-zero gradient components by about `lr` in
    // either direction, so they are compared to a fraction of a step), the losses within the
    // fixture's tolerance.
    let param_atol = cfg_f64(train, "param_atol")?;
    let by_path = KeyFn(|path: &str| path.to_string());
    for (prefix, trained) in [("output.params.", trainer.model()), ("output.ema.", trainer.ema_model())] {
        let mut reference = Checkpoint::new();
        let keys: Vec<String> = fx.data.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        for key in keys {
            reference.insert(&key[prefix.len()..], fx.raw(&key)?);
        }
        let mut expected = diffusers_model(fx, fx.config(), &fx.device)?;
        expected.load_checkpoint_as(&reference, DiTCheckpointLayout::Diffusers).map_err(|e| format!("`{prefix}*`: {e}"))?;
        let (got, want) = (export(trained, &by_path).map_err(err)?, export(&expected, &by_path).map_err(err)?);
        for (path, value) in want.tensors() {
            let mine = got.get(path).ok_or_else(|| format!("the trained model has no parameter `{path}`"))?;
            results.push(compare_data(&format!("{prefix}{path}"), mine.clone(), value.clone(), param_atol, fx.rtol));
        }
    }
    all(results)
}

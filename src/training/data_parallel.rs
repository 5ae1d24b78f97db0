//! Data-parallel training on several devices with Burn's own multi-device support.
//!
//! A [`DataParallelTrainer`] wraps a [`Trainer`]: every step cuts the batch into one equal shard
//! per device, runs the objective on a replica of the model on each device (one thread per
//! device), combines the gradients with Burn, and takes one optimizer update, so EMA, gradient
//! clipping, the NaN/inf guard, the learning-rate schedule and checkpoints work as with one
//! device. Two ways to combine gradients ([`GradientSync`]):
//!
//! - [`GradientSync::AllReduce`]: distributed data parallel. Each device keeps a persistent
//!   replica whose parameters are marked distributed (`Tensor::set_distributed`); Burn's
//!   autodiff all-reduces (mean) every gradient across the devices during `backward`, through
//!   the collective server that a `burn::tensor::distributed::DistributedContext` starts. Every
//!   replica then applies the same update with its own copy of the optimizer state. Burn 0.22
//!   implements collectives on CUDA (NCCL) and remote devices only.
//! - [`GradientSync::Accumulate`]: the model is forked to the other devices every step, and the
//!   per-device gradients go to the main device, where Burn's
//!   [`ModuleOptimizer::step_multi`] accumulates them and applies one update. Works on every
//!   backend, including CPU devices, at the cost of sending the parameters to every device each
//!   step. Each shard's loss is divided by the number of devices, so the accumulated gradient
//!   is the gradient of the mean loss over the whole batch.
//!
//! Either way, a step on `n` devices with a batch of `B` samples follows the gradient of the
//! objective's mean loss over all `B` samples, the same gradient as one device training on the
//! whole batch (up to float rounding).
//!
//! ```no_run
//! use burn::prelude::*;
//! use diffusion_transformers::diffusion::RectifiedFlowConfig;
//! use diffusion_transformers::models::DiTConfig;
//! use diffusion_transformers::training::{DataParallelTrainer, Trainer, TrainerConfig};
//!
//! # fn main() -> diffusion_transformers::Result<()> {
//! // e.g. `Device::enumerate(DeviceType::Cuda).autodiff().into_vec()` with the `cuda` feature.
//! let devices = vec![Device::flex().autodiff(), Device::flex().autodiff()];
//! let model = DiTConfig::from_name("DiT-S/2")?.with_learn_sigma(false).init(&devices[0])?;
//! let trainer = Trainer::new(model, TrainerConfig::default())?;
//! let mut dp = DataParallelTrainer::new(trainer, devices)?;
//! let objective = RectifiedFlowConfig::new().init()?;
//! let x0 = Tensor::<4>::zeros([8, 4, 32, 32], &dp.devices()[0]);
//! let labels = Some(Tensor::<1, Int>::zeros([8], &dp.devices()[0]));
//! let loss = dp.train_step(&objective, x0, &labels)?; // 4 samples per device
//! dp.save_checkpoint("checkpoints", serde_json::json!({ "loss": loss }))?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::{GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::prelude::*;
use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};
use rand::{RngCore, SeedableRng};

use crate::contracts::{BatchShard, Denoiser, Objective, TrainRng};
use crate::error::{Error, Result};
use crate::training::guard::check_gradients;
use crate::training::trainer::{Trainer, checkpointed};

/// How a [`DataParallelTrainer`] combines the gradients of its devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradientSync {
    /// Burn's collective all-reduce (mean) inside `backward`, persistent replicas, one
    /// optimizer state per device. CUDA and remote devices only (Burn 0.22); see
    /// [`supports_all_reduce`].
    AllReduce,
    /// Burn's multi-device optimizer step: gradients from every device accumulated on the
    /// main device, one update there, replicas forked from it each step. Every backend.
    Accumulate,
}

impl GradientSync {
    /// [`AllReduce`](Self::AllReduce) when there are several distinct devices and all of them
    /// support collectives, [`Accumulate`](Self::Accumulate) otherwise.
    pub fn auto(devices: &[Device]) -> Self {
        let distinct = devices.iter().enumerate().all(|(i, d)| !devices[..i].contains(d));
        if devices.len() > 1 && distinct && devices.iter().all(supports_all_reduce) {
            Self::AllReduce
        } else {
            Self::Accumulate
        }
    }
}

/// Whether Burn 0.22 can run collective operations (all-reduce) on `device`.
///
/// Burn's backend catalog (`burn-backend-extension` `catalog.rs`) marks only the CubeCL and
/// remote backends as collective-capable, and of the CubeCL runtimes only CUDA implements
/// `all_reduce` (with NCCL); Flex, NdArray and LibTorch leave `DistributedOps::all_reduce`
/// unimplemented. Burn exposes no query for this, so the device's description is inspected.
/// A remote device counts as capable; its server must host CUDA devices.
pub fn supports_all_reduce(device: &Device) -> bool {
    let description = format!("{device:?}");
    description.contains("Cube(Cuda(") || description.contains("Remote(")
}

/// Set while an all-reduce trainer is alive: Burn keeps one collective server per backend in a
/// process-wide map, so two all-reduce trainers at once would share (and tear down) one server.
static ALL_REDUCE_ACTIVE: AtomicBool = AtomicBool::new(false);

/// Owns Burn's collective server for the lifetime of an all-reduce trainer.
struct AllReduceSession {
    _context: DistributedContext,
}

impl Drop for AllReduceSession {
    fn drop(&mut self) {
        // `_context` is dropped (closing Burn's server) right after this body.
        ALL_REDUCE_ACTIVE.store(false, Ordering::SeqCst);
    }
}

/// Marks every float parameter as distributed, so Burn's autodiff all-reduces its gradient.
struct MarkDistributed;

impl ModuleMapper for MarkDistributed {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.set_distributed(id), mapper)
    }
}

/// A [`Trainer`] that trains on several devices at once; see the [module docs](self).
pub struct DataParallelTrainer<M: Module + Denoiser> {
    trainer: Trainer<M>,
    devices: Vec<Device>,
    sync: GradientSync,
    /// All-reduce only: the replicas on `devices[1..]` and their optimizers.
    replicas: Vec<M>,
    replica_optims: Vec<ModuleOptimizer>,
    session: Option<AllReduceSession>,
}

impl<M: Module + Denoiser> DataParallelTrainer<M> {
    /// Train `trainer`'s model on `devices` (autodiff devices; the model must live on the
    /// first), combining gradients as [`GradientSync::auto`] picks. `trainer` may be fresh or
    /// resumed from a checkpoint ([`Trainer::resume`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty device list, a device without autodiff, or a
    /// model that does not live on `devices[0]`.
    pub fn new(trainer: Trainer<M>, devices: Vec<Device>) -> Result<Self> {
        let sync = GradientSync::auto(&devices);
        Self::with_gradient_sync(trainer, devices, sync)
    }

    /// Like [`new`](Self::new) with an explicit [`GradientSync`].
    ///
    /// # Errors
    /// As [`new`](Self::new); for [`GradientSync::AllReduce`] on several devices also a device
    /// listed twice, a device without collective support ([`supports_all_reduce`]), or another
    /// all-reduce trainer alive in the process.
    pub fn with_gradient_sync(trainer: Trainer<M>, devices: Vec<Device>, sync: GradientSync) -> Result<Self> {
        let Some(main) = devices.first() else {
            return Err(Error::InvalidArgument("data-parallel training needs at least one device".into()));
        };
        if let Some(d) = devices.iter().find(|d| !d.is_autodiff()) {
            return Err(Error::InvalidArgument(format!(
                "data-parallel training needs autodiff devices (`device.autodiff()`), got {d:?}"
            )));
        }
        let model_devices = trainer.model().devices();
        if model_devices.iter().any(|d| d != main) {
            return Err(Error::InvalidArgument(format!(
                "the model lives on {:?}; list that device first (got {main:?} first)",
                model_devices.iter().collect::<Vec<_>>()
            )));
        }
        let mut dp = Self { trainer, devices, sync, replicas: vec![], replica_optims: vec![], session: None };
        if sync == GradientSync::AllReduce && dp.devices.len() > 1 {
            dp.start_all_reduce()?;
        }
        Ok(dp)
    }

    fn start_all_reduce(&mut self) -> Result<()> {
        let devices = &self.devices;
        if let Some(d) = devices.iter().find(|d| !supports_all_reduce(d)) {
            return Err(Error::InvalidArgument(format!(
                "Burn 0.22 cannot all-reduce on {d:?}: collectives exist on CUDA (NCCL) and remote \
                 devices only; use GradientSync::Accumulate"
            )));
        }
        if let Some((i, d)) = devices.iter().enumerate().find(|(i, d)| devices[..*i].contains(d)) {
            return Err(Error::InvalidArgument(format!(
                "all-reduce needs distinct devices; device {i} ({d:?}) is listed twice"
            )));
        }
        if ALL_REDUCE_ACTIVE.swap(true, Ordering::SeqCst) {
            return Err(Error::InvalidArgument(
                "another all-reduce data-parallel trainer is alive in this process".into(),
            ));
        }
        let config = DistributedConfig { all_reduce_op: ReduceOperation::Mean };
        let session = AllReduceSession { _context: DistributedContext::init(devices.clone(), config) };
        // The parameters are marked distributed at the start of every step (see `train_step`).
        self.replicas = devices[1..].iter().map(|d| self.trainer.model().clone().fork(d)).collect();
        self.replica_optims = vec![self.trainer.optim.clone(); devices.len() - 1];
        self.session = Some(session);
        Ok(())
    }

    /// The devices, the main one first.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// How gradients are combined.
    pub fn gradient_sync(&self) -> GradientSync {
        self.sync
    }

    /// The wrapped trainer (its model is the replica on the main device).
    pub fn trainer(&self) -> &Trainer<M> {
        &self.trainer
    }

    /// The online model on the main device.
    pub fn model(&self) -> &M {
        self.trainer.model()
    }

    /// The persistent replicas on the other devices ([`GradientSync::AllReduce`]); empty with
    /// [`GradientSync::Accumulate`], whose replicas only exist during a step.
    pub fn replicas(&self) -> &[M] {
        &self.replicas
    }

    /// The EMA model.
    pub fn ema_model(&self) -> &M {
        self.trainer.ema_model()
    }

    /// Optimisation steps taken.
    pub fn step(&self) -> u64 {
        self.trainer.step()
    }

    /// The training RNG (e.g. to draw a batch reproducibly).
    pub fn rng(&mut self) -> &mut TrainRng {
        self.trainer.rng()
    }

    /// Save a checkpoint of the main replica, exactly as [`Trainer::save_checkpoint`]; resume
    /// with [`Trainer::resume`] and wrap the result again.
    pub fn save_checkpoint(&self, root: impl AsRef<Path>, metadata: serde_json::Value) -> Result<PathBuf> {
        self.trainer.save_checkpoint(root, metadata)
    }

    /// The wrapped trainer, for single-device training or inspection. With
    /// [`GradientSync::AllReduce`], its parameters stay marked distributed, which is harmless once
    /// the collective server is gone (it is closed here).
    pub fn into_trainer(self) -> Trainer<M> {
        self.trainer
    }

    /// One optimisation step on `x0` (and `cond`), split evenly over the devices: each device
    /// evaluates `objective` on its shard, the gradients are averaged with Burn, and one
    /// AdamW update is taken at the scheduled learning rate, followed by the EMA update.
    /// Returns the loss averaged over the shards.
    ///
    /// With one device this is exactly [`Trainer::train_step`]. With several, shard `i` draws
    /// its noise and timesteps from its own RNG, seeded from the trainer's RNG in device order
    /// (so checkpoints resume exactly); results then differ from a one-device run only by those
    /// draws. Every parameter must take part in every shard's loss.
    ///
    /// # Errors
    /// [`Error::Shape`] when the batch is empty or not divisible by the number of devices, or
    /// `cond` holds another number of samples; [`Error::Numerical`] (naming the device and the
    /// step) when the batch, a shard's loss or a gradient is not finite, before any parameter
    /// changes; any error of the objective. The trainer is unchanged after an error, except for
    /// its RNG.
    pub fn train_step<O>(&mut self, objective: &O, x0: Tensor<4>, cond: &M::Cond) -> Result<f32>
    where
        O: Objective<M> + Sync,
        M::Cond: BatchShard + Send,
    {
        let n = self.devices.len();
        if n == 1 {
            return self.trainer.train_step(objective, x0, cond);
        }
        let dims = x0.dims();
        let batch = dims[0];
        if batch == 0 || batch % n != 0 {
            return Err(Error::Shape {
                name: "x0".into(),
                expected: format!("a non-empty batch divisible by the {n} devices"),
                got: format!("{dims:?}"),
            });
        }
        self.trainer.check_step_input(&x0)?;
        let per = batch / n;
        let mut shards = Vec::with_capacity(n);
        for (i, device) in self.devices.iter().enumerate() {
            let x = x0.clone().narrow(0, i * per, per).to_device(device);
            let x = if self.trainer.config.gradient_checkpointing { checkpointed(x) } else { x };
            shards.push((x, cond.shard(batch, i * per, per, device)?));
        }
        let rngs: Vec<TrainRng> = (0..n).map(|_| TrainRng::seed_from_u64(self.trainer.rng.next_u64())).collect();

        // Replicas: the main model, then one per other device.
        let main = self.trainer.model.take().expect("model present between steps");
        let models: Vec<M> = match self.sync {
            // Marked afresh each step, as Burn's own gradient-sync tests do: a backward pass
            // consumes the parameters' distributed graph roots.
            GradientSync::AllReduce => std::iter::once(main)
                .chain(std::mem::take(&mut self.replicas))
                .map(|m| m.map(&mut MarkDistributed))
                .collect(),
            GradientSync::Accumulate => {
                let others: Vec<M> = self.devices[1..].iter().map(|d| main.clone().fork(d)).collect();
                std::iter::once(main).chain(others).collect()
            }
        };

        // Phase 1: every device computes its loss; nothing is differentiated until all losses
        // are known to be finite (an all-reduce backward needs every device to take part).
        let work: Vec<_> = models.into_iter().zip(shards).zip(rngs).collect();
        let evaluated = on_each_device(work, |((model, (x, c)), mut rng)| {
            let loss = objective.loss(&model, x, &c, &mut rng).map(|loss| {
                let value = loss.clone().into_scalar::<f32>();
                (loss, value)
            });
            (model, loss)
        });
        let mut models = Vec::with_capacity(n);
        let mut losses = Vec::with_capacity(n);
        let mut failure = None;
        for (i, (model, loss)) in evaluated.into_iter().enumerate() {
            models.push(model);
            match loss {
                Ok((_, v)) if !v.is_finite() && failure.is_none() => {
                    failure = Some(Error::Numerical(format!(
                        "loss is {v} on device {i} ({:?}) at step {}",
                        self.devices[i], self.trainer.step
                    )));
                }
                Ok(loss) => losses.push(loss),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            self.restore(models);
            return Err(e);
        }
        let value = losses.iter().map(|(_, v)| v).sum::<f32>() / n as f32;
        let lr = self.trainer.config.optimizer.lr_at(self.trainer.step);

        // Phase 2: backward and update.
        let model = match self.sync {
            GradientSync::AllReduce => {
                // Burn all-reduces (mean) each gradient inside `backward`, which returns once
                // every device has submitted its gradients; the (identical) gradients are
                // checked, then each replica applies the identical update.
                let work: Vec<_> = models.into_iter().zip(losses).collect();
                let results = on_each_device(work, |(model, (loss, _))| {
                    let grads = GradientsParams::from_grads(loss.backward(), &model);
                    (model, grads)
                });
                if let Err(e) = check_gradients(&results[0].0, &results[0].1, self.trainer.step) {
                    self.restore(results.into_iter().map(|(m, _)| m).collect());
                    return Err(e);
                }
                let optims = std::iter::once(&mut self.trainer.optim).chain(self.replica_optims.iter_mut());
                let work: Vec<_> = results.into_iter().zip(optims).collect();
                let mut updated = on_each_device(work, |((model, grads), optim)| optim.step(lr, model, grads));
                let main = updated.remove(0);
                self.replicas = updated;
                main
            }
            GradientSync::Accumulate => {
                let main_device = self.devices[0].clone();
                let work: Vec<_> = models.into_iter().zip(losses).collect();
                let mut results = on_each_device(work, |(model, (loss, _))| {
                    // Mean of the shard means = mean over the batch, once Burn sums them.
                    let grads = GradientsParams::from_grads(loss.div_scalar(n as f32).backward(), &model);
                    let grads = grads.to_device(&main_device, &model);
                    (model, grads)
                });
                let checked = results.iter().try_for_each(|(_, g)| check_gradients(&results[0].0, g, self.trainer.step));
                if let Err(e) = checked {
                    self.restore(results.into_iter().map(|(m, _)| m).collect());
                    return Err(e);
                }
                let grads = results.iter_mut().map(|(_, g)| (std::mem::take(g), main_device.clone())).collect();
                let (main, _) = results.swap_remove(0);
                self.trainer.optim.step_multi(lr, main, MultiGradientsParams { grads })
            }
        };
        self.trainer.ema.update(&model);
        self.trainer.model = Some(model);
        self.trainer.step += 1;
        Ok(value)
    }

    /// Puts the replicas back after a failed step.
    fn restore(&mut self, mut models: Vec<M>) {
        let rest = models.split_off(1);
        self.trainer.model = models.pop();
        if self.sync == GradientSync::AllReduce {
            self.replicas = rest;
        }
    }
}

/// Runs `f` on every item, each in its own thread (one per device), and returns the results in
/// order. A panic in a worker is re-raised here.
fn on_each_device<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items.into_iter().map(|item| s.spawn(move || f(item))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::MicroDiTCond;

    #[test]
    fn cpu_devices_accumulate() {
        let flex = Device::flex().autodiff();
        assert!(!supports_all_reduce(&flex), "{flex:?}");
        assert_eq!(GradientSync::auto(&[flex.clone(), flex.clone()]), GradientSync::Accumulate);
        assert_eq!(GradientSync::auto(&[flex]), GradientSync::Accumulate);
    }

    #[test]
    fn conditioning_shards() {
        let device = Device::flex();
        let y = Some(Tensor::<1, Int>::from_ints([0, 1, 2, 3], &device));
        let part = y.shard(4, 2, 2, &device).unwrap().unwrap();
        assert_eq!(part.into_data().iter::<i64>().collect::<Vec<_>>(), vec![2, 3]);
        let ctx = (Tensor::<3>::zeros([4, 5, 6], &device), Tensor::<2>::zeros([4, 6], &device));
        let (a, b) = ctx.shard(4, 0, 1, &device).unwrap();
        assert_eq!((a.dims(), b.dims()), ([1, 5, 6], [1, 6]));
        let caption = MicroDiTCond::Caption(Tensor::zeros([4, 3, 2], &device));
        assert!(caption.shard(4, 3, 1, &device).is_ok());
        assert!(matches!(caption.shard(8, 0, 4, &device), Err(Error::Shape { .. })));
        assert!(().shard(4, 0, 2, &device).is_ok());
        let none: Option<Tensor<1, Int>> = None;
        assert!(none.shard(4, 0, 2, &device).unwrap().is_none());
    }
}

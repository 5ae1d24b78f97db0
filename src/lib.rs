//! # diffusion-transformers
//!
//! Diffusion transformers on [Burn](https://burn.dev) 0.22: DiT, with the shared layers, blocks,
//! checkpoint loading and (in later modules) schedules and samplers. Every model matches its
//! reference implementation to float precision and runs on every Burn backend; pick one with a
//! crate feature (`flex`, `ndarray`, `cuda`, `wgpu`) and a runtime [`burn::tensor::Device`].
//!
//! ```no_run
//! use burn::prelude::*;
//! use diffusion_transformers::models::DiTConfig;
//!
//! # fn main() -> Result<(), diffusion_transformers::Error> {
//! let device = Device::flex();
//! let model = DiTConfig::from_name("DiT-S/2")?.init(&device)?;
//! let x = Tensor::<4>::zeros([1, 4, 32, 32], &device);
//! let t = Tensor::<1>::from_floats([500.0], &device);
//! let y = Tensor::<1, Int>::from_ints([207], &device);
//! let eps_and_sigma = model.forward(x, t, Some(y))?; // [1, 8, 32, 32]
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod blocks;
pub mod contracts;
pub mod data;
pub mod diffusion;
mod durable;
pub mod error;
#[cfg(feature = "eval")]
pub mod eval;
pub mod cpu;
pub mod layers;
pub mod models;
pub mod pipeline;
pub mod sampling;
pub mod text;
pub mod training;
pub mod vae;
pub mod weights;
pub mod validate;
#[cfg(test)]
mod test_util;

pub use error::{Error, Result};

/// The Burn this crate is built on: a downstream crate can use `diffusion_transformers::burn`
/// (tensors, devices, modules) without its own `burn` dependency or version pin.
pub use burn;
/// The `rand` whose traits the samplers and trainers take (`Rng`, `SeedableRng`, `StdRng`).
pub use rand;
/// The JSON value type of checkpoint metadata (`save_checkpoint(dir, serde_json::json!(...))`).
pub use serde_json;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

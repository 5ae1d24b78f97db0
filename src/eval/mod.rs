//! Sample-quality evaluation as the diffusion papers measure it (`eval` feature): FID, sFID,
//! Inception Score and improved precision/recall on the FID Inception-v3, reading and writing
//! the ADM evaluator's `.npz` batches, and resumable sharded sample writing for large sample
//! sets (DiT's `sample_ddp.py`).
//!
//! - [`inception`]: the pytorch-fid network (pool features, logits, spatial features).
//! - [`frechet`]: [`GaussianStats`] and the Frechet distance (FID, sFID), float64.
//! - [`mod@inception_score`]: the Inception Score over splits.
//! - [`mod@precision_recall`]: k-nearest-neighbour manifolds (k = 3).
//! - [`npz`]: `.npy` / `.npz` reading (streamed) and writing.
//! - [`samples`]: [`SampleShards`], a resumable on-disk sample set and its `.npz`.
//! - [`evaluator`]: [`Evaluator`], features of a whole `.npz` batch and the full report.
//!
//! See `docs/evaluation.md` for the end-to-end protocol (DiT-XL/2's FID 2.27).

pub mod evaluator;
pub mod frechet;
pub mod inception;
pub mod inception_blocks;
pub mod inception_score;
pub mod npz;
pub mod precision_recall;
pub mod samples;

pub use evaluator::{BatchFeatures, EvalReport, Evaluator};
pub use frechet::{GaussianStats, frechet_distance};
pub use inception::{InceptionFeatures, InceptionPytorchFid, InceptionV3, InceptionV3Config};
pub use inception_score::inception_score;
pub use npz::{NpyDtype, NpyHeader, NpzReader, NpzWriter};
pub use precision_recall::{ManifoldConfig, knn_radii, precision_recall};
pub use samples::{SampleShards, class_labels};

//! Datasets: a procedural class-conditional shapes dataset (no download) and, with the
//! `images` feature, a loader for a folder of images with one sub-folder per class.

pub mod shapes;

pub use shapes::{CLASSES, ShapesDataset};

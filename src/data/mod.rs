//! Datasets: a procedural class-conditional shapes dataset (no download) and, with the
//! `images` feature, a loader for a folder of images with one sub-folder per class.

#[cfg(feature = "images")]
pub mod folder;
pub mod shapes;

#[cfg(feature = "images")]
pub use folder::ImageFolder;
pub use shapes::{CLASSES, ShapesDataset};

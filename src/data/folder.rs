//! A user's own images as a class-conditional dataset: `root/<class name>/<image>.png|jpg`,
//! one sub-folder per class (classes sorted by name), resized to a square and scaled to
//! `[-1, 1]`.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use image::imageops::FilterType;

use crate::error::{Error, Result};

/// Images from a folder tree, loaded into memory.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    /// Class names (sub-folder names, sorted); the label of a class is its index.
    pub classes: Vec<String>,
    /// `(pixels [3 * size * size] channel-major in [-1, 1], label)` per image.
    pub items: Vec<(Vec<f32>, usize)>,
    /// Height = width of every image.
    pub size: usize,
}

fn io(path: &Path, e: impl ToString) -> Error {
    Error::Io { path: path.to_path_buf(), reason: e.to_string() }
}

impl ImageFolder {
    /// Load every `.png`/`.jpg`/`.jpeg` under `root/<class>/`, resized to `size x size`
    /// (Lanczos). Errors on an unreadable folder or image, or a folder without images.
    pub fn load(root: impl AsRef<Path>, size: usize) -> Result<Self> {
        let root = root.as_ref();
        if size == 0 {
            return Err(Error::InvalidConfig("image size must be positive".into()));
        }
        let mut classes: Vec<(String, PathBuf)> = std::fs::read_dir(root)
            .map_err(|e| io(root, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        classes.sort();
        let mut items = Vec::new();
        for (label, (_, dir)) in classes.iter().enumerate() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                        matches!(x.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                    })
                })
                .collect();
            files.sort();
            for f in files {
                let img = image::open(&f).map_err(|e| io(&f, e))?;
                let rgb = img.resize_exact(size as u32, size as u32, FilterType::Lanczos3).to_rgb8();
                let n = size * size;
                let mut px = vec![0f32; 3 * n];
                for (i, p) in rgb.pixels().enumerate() {
                    for c in 0..3 {
                        px[c * n + i] = p[c] as f32 / 127.5 - 1.0;
                    }
                }
                items.push((px, label));
            }
        }
        if items.is_empty() {
            return Err(io(root, "no .png/.jpg images found in class sub-folders"));
        }
        Ok(Self { classes: classes.into_iter().map(|(n, _)| n).collect(), items, size })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// A batch `[B, 3, size, size]` and labels `[B]` (indices wrap around).
    pub fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let mut pixels = Vec::with_capacity(indices.len() * 3 * self.size * self.size);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let (p, l) = &self.items[i % self.items.len()];
            pixels.extend_from_slice(p);
            labels.push(*l as i64);
        }
        let b = indices.len();
        (
            Tensor::from_data(TensorData::new(pixels, [b, 3, self.size, self.size]), device),
            Tensor::from_data(TensorData::new(labels, [b]), device),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_class_folders() {
        let root = std::env::temp_dir().join(format!("dt_folder_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (class, color) in [("b_blue", [0u8, 0, 255]), ("a_red", [255, 0, 0])] {
            std::fs::create_dir_all(root.join(class)).unwrap();
            image::RgbImage::from_pixel(10, 6, image::Rgb(color)).save(root.join(class).join("x.png")).unwrap();
        }
        std::fs::write(root.join("a_red/notes.txt"), "ignored").unwrap();
        let ds = ImageFolder::load(&root, 4).unwrap();
        assert_eq!(ds.classes, vec!["a_red", "b_blue"]);
        assert_eq!(ds.len(), 2);
        let (x, y) = ds.batch(&[0, 1], &Device::flex());
        assert_eq!(x.dims(), [2, 3, 4, 4]);
        assert_eq!(y.into_data().convert::<i64>().try_to_vec::<i64>().unwrap(), vec![0, 1]);
        let v = ds.items[0].0[0];
        assert!((v - 1.0).abs() < 1e-6, "red channel of the red image is 1, got {v}");
        std::fs::write(root.join("a_red/broken.png"), b"not a png").unwrap();
        assert!(matches!(ImageFolder::load(&root, 4), Err(Error::Io { .. })));
        assert!(ImageFolder::load(root.join("missing"), 4).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
